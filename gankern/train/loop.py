"""The trainer core: a loop that runs phases (D step(s), lazy regularization, G step) over model objects.

Every random draw that must agree between ranks or survive a restart (data order, flips, latents, labels, instance
noise) comes from a generator seeded by (seed, step, tag) and is drawn for the *global* batch, then sliced per rank
and per accumulation round; torch's global RNG (used inside ops, e.g. WGAN-GP's interpolation) is reseeded from
(seed, rank, step) at every step. So a run resumed from step k continues exactly like the uninterrupted run, and N
ranks x B/N images step like one process with B images (BatchNorm statistics apart: they are per rank).

DDP: gradients are averaged over ranks with one all-reduce per optimizer step (as StyleGAN2-ADA does), which works
with the double backward of the penalties and with requires_grad toggled between phases.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as tdist

from .. import losses
from ..data import InfiniteLoader, open_dataset
from ..models import build
from . import checkpoint, fastops
from .config import RunConfig
from .outputs import JsonlLog, Progress, plot_run, save_grid

Stats = dict[str, torch.Tensor]


class NonFiniteError(RuntimeError):
    """A loss or a weight became NaN/Inf; the message names the step and the tensor."""


@dataclass
class Phase:
    """One phase of a training step: ``run(step)`` every ``interval`` steps, returning scalar stats."""
    name: str
    interval: int
    run: Callable[[int], Stats]


@dataclass
class Dist:
    """This process's place in a (torchrun) job."""
    rank: int = 0
    world: int = 1
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))

    @staticmethod
    def from_env(device: str | None = None) -> "Dist":
        """Join the torchrun job described by RANK/WORLD_SIZE/LOCAL_RANK (gloo on the CPU, nccl on GPUs)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
        cuda = torch.cuda.is_available() and device != "cpu"
        dev = torch.device(device) if device else torch.device(f"cuda:{local}" if cuda else "cpu")
        if cuda and dev.type == "cuda":
            torch.cuda.set_device(dev)
        if world > 1 and not tdist.is_initialized():
            tdist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        return Dist(rank, world, dev)


def _seed(*parts) -> int:
    return int.from_bytes(hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=7).digest(), "little")


class Trainer:
    """Builds data, G, D, G_ema, optimizers and gradient scalers from a RunConfig and trains them in ``run_dir``.

    ``Trainer(cfg, run_dir).train()``; ``Trainer(cfg, run_dir).resume()`` continues from the newest checkpoint.
    """

    def __init__(self, cfg: RunConfig, run_dir: str, dist: Dist | None = None, progress: bool = True):
        self.cfg, self.run_dir = cfg.validate(), run_dir
        self.dist = dist or Dist.from_env()
        self.rank0 = self.dist.rank == 0
        t, dev = cfg.train, self.dist.device
        self.dataset = open_dataset(t.data, t.resolution, t.channels or None, t.labels_file or None,
                                    t.subfolder_labels)
        self.num_classes = self.dataset.num_classes if cfg.model.cond != "none" else 0
        torch.manual_seed(t.seed)                                      # same initial weights on every rank
        G, D = build(cfg.model, t.resolution, self.dataset.channels, self.num_classes)
        self.G, self.D = G.to(dev), D.to(dev)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        o = cfg.opt
        make = {"adam": lambda p, lr, b: torch.optim.Adam(p, lr, betas=b),
                "rmsprop": lambda p, lr, b: torch.optim.RMSprop(p, lr)}[o.kind]
        self.opt = {"G": make(self.G.parameters(), o.g_lr, o.g_betas), "D": make(self.D.parameters(), o.d_lr,
                                                                                   o.d_betas)}
        self.scaler = {n: torch.amp.GradScaler(dev.type, enabled=t.amp == "fp16") for n in "GD"}
        self.amp_dtype = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[t.amp]
        self.step, self.nimg = 0, 0
        self.total_steps = max(1, math.ceil(t.kimg * 1000 / t.batch))
        self.loader = self._make_loader(0)
        self.log = JsonlLog(os.path.join(run_dir, "metrics.jsonl"))
        self.progress = progress and self.rank0
        self.metrics = t.metrics if t.metrics != "auto" else ("digits-fid" if t.data == "digits" else "none")
        lazy = cfg.loss.reg_interval > 1 and (cfg.loss.r1 > 0 or cfg.loss.gp > 0)
        self.phases = [Phase("D", 1, self.d_phase)] + \
            ([Phase("Dreg", cfg.loss.reg_interval, self.dreg_phase)] if lazy else []) + [Phase("G", 1, self.g_phase)]

    # ------------------------------------------------------------------------------------------- randomness
    def _make_loader(self, start: int) -> InfiniteLoader:
        t = self.cfg.train
        return InfiniteLoader(self.dataset, t.batch, self.dist.rank, self.dist.world, t.seed, start,
                              self.dist.device, t.workers, t.mirror)

    def _global(self, step: int, tag: str, draw: Callable[[torch.Generator, int], torch.Tensor]) -> torch.Tensor:
        """draw(generator, global_batch) sliced to this rank's rows, on the device."""
        g = torch.Generator().manual_seed(_seed(self.cfg.train.seed, step, tag))
        b = self.cfg.train.batch // self.dist.world
        return draw(g, self.cfg.train.batch)[self.dist.rank * b:(self.dist.rank + 1) * b].to(self.dist.device)

    def latents(self, step: int, tag: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """z (B / world, z_dim) and fake labels (B / world,) or None, fixed by (seed, step, tag)."""
        z = self._global(step, tag + "/z", lambda g, n: torch.randn(n, self.cfg.model.z_dim, generator=g))
        y = self._global(step, tag + "/y", lambda g, n: torch.randint(0, self.num_classes, (n,), generator=g)) \
            if self.num_classes else None
        return z, y

    def noise(self, step: int, tag: str, like: torch.Tensor) -> torch.Tensor | None:
        """Instance noise (Sonderby et al. 2016) for the rank's batch ``like`` (B / world, ...): sigma * N(0, I) with
        sigma annealed linearly to 0 over the run; None when off."""
        sigma = self.cfg.loss.instance_noise * max(0.0, 1.0 - step / self.total_steps)
        if sigma == 0:
            return None
        n = self._global(step, tag, lambda g, b: torch.randn(b, *like.shape[1:], generator=g))
        return sigma * n.to(like.dtype)

    # ----------------------------------------------------------------------------------------------- phases
    def _chunks(self, *ts):
        """Split the rank's batch into train.accum rounds: yields tuples of slices (None stays None)."""
        a = self.cfg.train.accum
        for i in range(a):
            yield tuple(None if t is None else t.chunk(a)[i] for t in ts)

    def _autocast(self):
        dt = self.amp_dtype
        return torch.autocast(self.dist.device.type, dtype=dt or torch.float32, enabled=dt is not None)

    def _optimize(self, name: str, step: int, rounds) -> Stats:
        """One optimizer step of ``name`` (G or D) over the accumulation rounds (each yields (loss, stats))."""
        net, other = (self.G, self.D) if name == "G" else (self.D, self.G)
        net.requires_grad_(True)
        other.requires_grad_(False)
        opt, scaler, a = self.opt[name], self.scaler[name], self.cfg.train.accum
        opt.zero_grad(set_to_none=True)
        total: Stats = {}
        for loss, stats in rounds:
            self._check_finite(step, stats)
            scaler.scale(loss / a).backward()
            for k, v in stats.items():
                total[k] = total.get(k, 0) + v.detach().float() / a
        self._allreduce_grads(net)
        scaler.unscale_(opt)
        grads = [p.grad for p in net.parameters() if p.grad is not None]
        total[f"{name}/gnorm"] = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        scaler.step(opt)
        scaler.update()
        return total

    def _allreduce_grads(self, net: torch.nn.Module) -> None:
        if self.dist.world == 1:
            return
        params = [p for p in net.parameters() if p.requires_grad]
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params])
        tdist.all_reduce(flat)
        flat /= self.dist.world
        off = 0
        for p in params:
            p.grad = flat[off:off + p.numel()].view_as(p).clone()
            off += p.numel()

    def _penalty(self, real, y, fake, yf, scale: float) -> Stats:
        """R1 and/or WGAN-GP terms (already weighted, times ``scale``), through gankern's penalty ops."""
        lc, out = self.cfg.loss, {}
        if lc.r1 > 0:
            x = real.detach().requires_grad_(True)
            out["D/r1"] = fastops.r1_penalty(self.D(x, y), x) * (lc.r1 / 2) * scale
        if lc.gp > 0:
            args = (y,) if self.num_classes else ()
            gp = fastops.gradient_penalty(self.D, real.detach(), fake.detach().to(real.dtype), 1.0, *args)
            out["D/gp"] = gp * lc.gp * scale
        return out

    def d_phase(self, step: int) -> Stats:
        """n_critic D steps, each on a fresh real batch; the penalties join here when reg_interval is 1."""
        lc, stats = self.cfg.loss, {}
        inline = self.cfg.loss.reg_interval == 1
        for i in range(self.cfg.opt.n_critic):
            real, y = next(self.loader)
            y = y if self.num_classes else None
            z, yf = self.latents(step, f"D{i}")
            self._last_real = (real, y)

            def rounds():
                nr, nf = self.noise(step, f"D{i}/nr", real), self.noise(step, f"D{i}/nf", real)
                for r, yr, zz, yy, nrr, nff in self._chunks(real, y, z, yf, nr, nf):
                    with self._autocast():
                        with torch.no_grad():
                            fake = self.G(zz, yy)
                        lr = self.D(r if nrr is None else r + nrr, yr)
                        lf = self.D(fake if nff is None else fake + nff, yy)
                        loss = losses.d_loss(lc.name, lr, lf, lc.real_target)
                        s = {"D/loss": loss, "D/real": lr.float().mean(), "D/fake": lf.float().mean()}
                        if inline:
                            pen = self._penalty(r, yr, fake, yy, 1.0)
                            s.update(pen)
                            loss = loss + sum(pen.values())
                    yield loss, s
            stats = self._optimize("D", step, rounds())
            if lc.clip > 0:
                with torch.no_grad():
                    for p in self.D.parameters():
                        p.clamp_(-lc.clip, lc.clip)
        return stats

    def dreg_phase(self, step: int) -> Stats:
        """Lazy regularization (StyleGAN2): the penalties alone, every reg_interval steps, scaled by the interval."""
        real, y = self._last_real
        z, yf = self.latents(step, "Dreg")

        def rounds():
            for r, yr, zz, yy in self._chunks(real, y, z, yf):
                with self._autocast():
                    with torch.no_grad():
                        fake = self.G(zz, yy)
                    pen = self._penalty(r, yr, fake, yy, float(self.cfg.loss.reg_interval))
                yield sum(pen.values()), pen
        return {k.replace("D/", "Dreg/"): v for k, v in self._optimize("D", step, rounds()).items()}

    def g_phase(self, step: int) -> Stats:
        z, yf = self.latents(step, "G")

        def rounds():
            nf = self.noise(step, "G/nf", self._last_real[0])
            for zz, yy, nff in self._chunks(z, yf, nf):
                with self._autocast():
                    fake = self.G(zz, yy)
                    lf = self.D(fake if nff is None else fake + nff, yy)
                    loss = losses.g_loss(self.cfg.loss.name, lf)
                yield loss, {"G/loss": loss}
        return self._optimize("G", step, rounds())

    @torch.no_grad()
    def update_ema(self) -> None:
        """G_ema <- lerp(G, G_ema, beta); half-life ema_kimg, ramped up as min(ema_kimg, nimg * ema_rampup)."""
        t = self.cfg.train
        ema_nimg = t.ema_kimg * 1000
        if t.ema_rampup > 0:
            ema_nimg = min(ema_nimg, self.nimg * t.ema_rampup)
        beta = 0.5 ** (t.batch / max(ema_nimg, 1e-8)) if t.ema_kimg > 0 else 0.0
        for pe, p in zip(self.G_ema.parameters(), self.G.parameters()):
            pe.copy_(p.detach().lerp(pe, beta))
        for be, b in zip(self.G_ema.buffers(), self.G.buffers()):
            be.copy_(b)

    # ----------------------------------------------------------------------------------------- safety net
    def _check_finite(self, step: int, stats: Stats) -> None:
        names = list(stats)
        ok = torch.stack([torch.isfinite(stats[k].detach()).all() for k in names])
        if not bool(ok.all()):
            bad = names[int((~ok).nonzero()[0])]
            self._fail(step, f"loss '{bad}' = {stats[bad].item()}")

    def check_weights(self) -> None:
        """Raise NonFiniteError naming the first NaN/Inf parameter or buffer of G, D or G_ema."""
        named = [(f"{m}.{n}", t) for m, net in (("G", self.G), ("D", self.D), ("G_ema", self.G_ema))
                 for n, t in list(net.named_parameters()) + list(net.named_buffers()) if t.is_floating_point()]
        ok = torch.stack([torch.isfinite(t.detach()).all() for _, t in named])
        if not bool(ok.all()):
            self._fail(self.step, f"tensor '{named[int((~ok).nonzero()[0])][0]}'")

    def _fail(self, step: int, what: str) -> None:
        path = os.path.join(self.run_dir, f"nonfinite-step{step:08d}.pt")
        if self.rank0:
            checkpoint.save(self.state_dict(), path)
        raise NonFiniteError(f"step {step}: {what} is not finite (NaN/Inf); the state at this point was saved to "
                             f"{path} for inspection. Lower the learning rates, or use amp=off / bf16.")

    # -------------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        """Everything a resume needs (plain tensors, numbers and strings: loadable with weights_only=True)."""
        return {
            "G": self.G.state_dict(), "D": self.D.state_dict(), "G_ema": self.G_ema.state_dict(),
            "opt_G": self.opt["G"].state_dict(), "opt_D": self.opt["D"].state_dict(),
            "scaler_G": self.scaler["G"].state_dict(), "scaler_D": self.scaler["D"].state_dict(),
            "step": self.step, "nimg": self.nimg, "loader_position": self.loader.position,
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "aug": {"instance_noise_sigma": self.cfg.loss.instance_noise * max(0.0, 1 - self.step / self.total_steps),
                    "mirror": self.cfg.train.mirror},
            "penalty": {"r1": self.cfg.loss.r1, "gp": self.cfg.loss.gp, "reg_interval": self.cfg.loss.reg_interval},
            "config": self.cfg.to_json(), "fastops": json.dumps(fastops.SOURCES),
            "channels": self.dataset.channels, "num_classes": self.num_classes,
        }

    def load_state_dict(self, s: dict) -> None:
        self.G.load_state_dict(s["G"])
        self.D.load_state_dict(s["D"])
        self.G_ema.load_state_dict(s["G_ema"])
        for n in "GD":
            self.opt[n].load_state_dict(s[f"opt_{n}"])
            self.scaler[n].load_state_dict(s[f"scaler_{n}"])
        self.step, self.nimg = int(s["step"]), int(s["nimg"])
        self.loader = self._make_loader(int(s["loader_position"]))
        torch.set_rng_state(s["rng_cpu"].cpu())
        if torch.cuda.is_available() and s["rng_cuda"]:
            torch.cuda.set_rng_state_all([t.cpu() for t in s["rng_cuda"]])

    def save_checkpoint(self) -> str | None:
        if not self.rank0:
            return None
        return checkpoint.save_step(self.state_dict(), self.run_dir, self.step, self.cfg.train.keep)

    def resume(self) -> "Trainer":
        """Load the newest checkpoint of run_dir and drop the metric rows written after it."""
        path = checkpoint.latest(self.run_dir)
        if path is None:
            raise FileNotFoundError(f"{self.run_dir}: no checkpoint to resume from (ckpt-*.pt)")
        self.load_state_dict(checkpoint.load(path, self.dist.device))
        if self.rank0:
            self.log.truncate(self.step)
            print(f"resumed {self.run_dir} at step {self.step} ({self.nimg / 1000:.1f} kimg) from {path}")
        return self

    # --------------------------------------------------------------------------------------- snapshots
    @torch.no_grad()
    def sample(self, n: int, seed: int, truncation: float | None = None, net: torch.nn.Module | None = None):
        """n images (n, C, R, R) from G_ema (or ``net``) with latents fixed by seed; labels cycle 0..K-1."""
        net = net or self.G_ema
        return generate(net, n, self.cfg.model.z_dim, self.num_classes, seed, truncation, self.dist.device)

    def snapshot(self) -> dict:
        """Grid of G_ema on fixed latents, FID/KID (digits-fid), and the loss plot; returns the metric row."""
        t = self.cfg.train
        grid = os.path.join(self.run_dir, f"fakes{self.step:08d}.png")
        images = self.sample(t.grid, _seed(t.seed, "grid") % 2 ** 31)
        save_grid(images, grid)
        save_grid(images, os.path.join(self.run_dir, "fakes-latest.png"))
        row = {}
        if self.metrics == "digits-fid":
            from .digits_features import fid_kid
            row = fid_kid(self.sample(t.metric_samples, _seed(t.seed, "metric") % 2 ** 31), t.resolution)
            row = {"step": self.step, "kimg": self.nimg / 1000, **{k: round(v, 5) for k, v in row.items()}}
            self.log.append(row)
        plot_run(self.log.rows(), os.path.join(self.run_dir, "plot.png"))
        return row

    # -------------------------------------------------------------------------------------------- loop
    def train(self) -> dict:
        """Run the phases until train.kimg; returns the last JSONL row."""
        t = self.cfg.train
        if self.rank0:
            os.makedirs(self.run_dir, exist_ok=True)
            _write_atomic(os.path.join(self.run_dir, "config.json"), self.cfg.to_json())
            _write_atomic(os.path.join(self.run_dir, "run.json"), json.dumps(
                {"fastops": fastops.SOURCES, "world": self.dist.world, "device": str(self.dist.device),
                 "torch": torch.__version__, "total_steps": self.total_steps}, indent=2))
            if self.step == 0:
                self.save_checkpoint()                     # a run killed before its first tick resumes too
                self.snapshot()
        bar = Progress(self.total_steps, t.batch, self.step, self.progress)
        acc: dict[str, float] = {}
        n_acc, t_tick, s_tick, last = 0, time.time(), self.step, {}
        while self.step < self.total_steps:
            torch.manual_seed(_seed(t.seed, "rank", self.dist.rank, self.step) % 2 ** 63)
            stats: Stats = {}
            for ph in self.phases:
                if self.step % ph.interval == 0:
                    stats.update(ph.run(self.step))
            self.update_ema()
            self.step += 1
            self.nimg += t.batch
            for k, v in stats.items():
                acc[k] = acc.get(k, 0.0) + float(v)
            n_acc += 1
            end = self.step == self.total_steps
            if self.step % t.log_steps == 0 or end:
                self.check_weights()
                dt = time.time() - t_tick
                last = {"step": self.step, "kimg": self.nimg / 1000,
                        "img_per_s": round((self.step - s_tick) * t.batch / max(dt, 1e-9), 2),
                        **{k: round(v / n_acc, 6) for k, v in sorted(acc.items())}}
                if self.rank0:
                    self.log.append(last)
                acc, n_acc, t_tick, s_tick = {}, 0, time.time(), self.step
            if self.rank0 and (self.step % t.snap_steps == 0 or end):
                row = self.snapshot()
                if row and self.progress:
                    bar.update(self.step, force=True)
                    print(f"\nstep {self.step}: " + " ".join(f"{k}={v:.4g}" for k, v in row.items()
                                                             if k not in ("step", "kimg")))
            if self.step % t.ckpt_steps == 0 or end:
                self.save_checkpoint()
            bar.update(self.step, " ".join(f"{k}={float(v):.3f}" for k, v in stats.items() if k.endswith("loss")))
        bar.close()
        return last


@torch.no_grad()
def generate(G: torch.nn.Module, n: int, z_dim: int, num_classes: int, seed: int, truncation: float | None = None,
             device: torch.device | str = "cpu", labels: torch.Tensor | None = None) -> torch.Tensor:
    """n images from G (eval mode) with z ~ N(0, I) fixed by seed; with ``truncation`` t, entries of z with |z| > t are
    redrawn (BigGAN's truncation trick). Labels cycle 0..K-1 unless given. Returns (n, C, R, R) in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, z_dim, generator=g)
    if truncation is not None:
        for _ in range(100):
            bad = z.abs() > truncation
            if not bad.any():
                break
            z[bad] = torch.randn(int(bad.sum()), generator=g)
        z = z.clamp(-truncation, truncation)
    y = None
    if num_classes:
        y = labels if labels is not None else torch.arange(n) % num_classes
        y = y.to(device)
    was = G.training
    G.eval()
    out = torch.cat([G(z[i:i + 256].to(device), None if y is None else y[i:i + 256]).float()
                     for i in range(0, n, 256)])
    G.train(was)
    return out


def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
