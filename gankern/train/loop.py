"""The trainer core: runs a recipe's phases (data, not methods) with accumulation, DDP, AMP, batched spectral norm,
G_ema, logging and checkpoints. What a GAN family computes lives in its recipe (gankern/train/recipes/).

Random draws that must agree between ranks or survive a restart (data order, flips, latents, labels) come from
generators seeded by (seed, step, tag), drawn for the *global* batch and sliced per rank and round; recipes seed
theirs from ``Batch.seed``; torch's global RNG (used inside ops) is reseeded from (seed, rank, step) every step. So a
resumed run continues exactly like the uninterrupted one. DDP: one all-reduce of the gradients per optimizer step
(as StyleGAN2-ADA does). Host syncs: none per step (fp16's scaler apart); stats are read once per ``log_steps``.
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
import sys
import time

import torch

from ..data import open_dataset
from ..nn.spectral_norm import SpectralNorm, SpectralNormGroup
from . import checkpoint
from .config import RunConfig
from .dist import Dist, derive_seed
from .feed import Feed
from .outputs import JsonlLog, Progress, tensorboard_available
from .snapshots import generate, log_tick, snapshot, start_outputs  # noqa: F401  (generate: gankern.train's API)
from .stats import NonFiniteError, Stats, StatsWindow  # noqa: F401  (NonFiniteError: gankern.train's API)
from .recipes import RECIPES, Batch, Env, Phase


class Trainer:
    """Builds data, the recipe's nets, G_ema, optimizers and gradient scalers from a RunConfig; trains in run_dir.

    ``Trainer(cfg, run_dir).train()``; ``Trainer(cfg, run_dir).resume()`` continues from the newest checkpoint.
    ``tensorboard``: also write TensorBoard events (default: when tensorboard is installed).
    """

    def __init__(self, cfg: RunConfig, run_dir: str, dist: Dist | None = None, progress: bool = True,
                 tensorboard: bool | None = None):
        self.cfg, self.run_dir = cfg.validate(), run_dir
        self.dist = dist or Dist.from_env()
        self.rank0 = self.dist.rank == 0
        t, dev = cfg.train, self.dist.device
        self.dataset = open_dataset(t.data, t.resolution, t.channels or None, t.labels_file or None, t.subfolder_labels)
        self.amp_dtype = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[t.amp]
        self.total_steps = max(1, math.ceil(t.kimg * 1000 / t.batch))
        self.env = Env(dev, self.dist.rank, self.dist.world, self.dataset.num_classes, self.dataset.channels,
                       t.resolution, self.total_steps, t.seed, self._autocast, self._backward)
        torch.manual_seed(t.seed)                                      # same initial weights on every rank
        self.recipe = r = RECIPES[cfg.recipe](cfg.options, self.env)
        self.nets, self.num_classes = {n: m.to(dev) for n, m in r.nets.items()}, r.num_classes
        self.G_ema = copy.deepcopy(self.nets[r.ema]).eval().requires_grad_(False) if r.ema else None
        self.opt = r.opt = {n: spec.build(self.nets[n].parameters()) for n, spec in r.optimizers.items()}
        self.scaler = {n: torch.amp.GradScaler(dev.type, enabled=t.amp == "fp16") for n in self.opt}
        self.sn = {n: SpectralNormGroup(self.nets[n]) for n in self.opt       # trained nets with gankern's SN
                   if any(isinstance(x, SpectralNorm) for x in self.nets[n].modules())}
        self.step, self.nimg = 0, 0
        self.set_batch(t.batch)
        self.feed = Feed(self.dataset, t, self.dist, r.z_dim, r.num_classes)
        self.log = JsonlLog(os.path.join(run_dir, "metrics.jsonl"))
        self.tensorboard = tensorboard_available() if tensorboard is None else tensorboard
        self.tb, self.resumed, self.progress = None, False, progress and self.rank0   # tb: TensorBoard writer (rank 0)
        self.metrics = t.metrics if t.metrics != "auto" else ("digits-fid" if t.data == "digits" else "none")
        self.window = StatsWindow(dev)

    def set_batch(self, batch: int) -> None:
        """Checks the recipe's phases (unique names, a net with an optimizer, rounds dividing ``batch`` over the ranks);
        counts the steps left at ``batch`` (a run's length is in images: train.kimg; the batch may change)."""
        r, t = self.recipe, self.cfg.train
        bad = [p.name for p in r.phases if p.net not in self.opt or batch % (self.dist.world * (p.accum or t.accum))]
        if bad or len({p.name for p in r.phases}) < len(r.phases) or _KEYS & set(self.nets):
            raise ValueError(f"recipe '{self.cfg.recipe}': phases need unique names, a net with an optimizer and rounds"
                             f" that divide the batch of a rank ({batch}), nets a name not in {sorted(_KEYS)}; {bad}")
        self.total_steps = self.env.total_steps = self.step + math.ceil(max(0, t.kimg * 1000 - self.nimg) / batch)

    def _autocast(self):
        return torch.autocast(self.dist.device.type, self.amp_dtype or torch.float32, bool(self.amp_dtype))

    def _backward(self, loss: torch.Tensor) -> None:
        # the batched spectral norm's W / sigma is one graph node shared by every round of the step: keep it
        self._scaler.scale(loss).backward(retain_graph=self._keep_graph)

    def run_phase(self, ph: Phase, step: int) -> Stats:
        """``ph.repeats`` optimizer steps of ``ph.net``, each over ``ph.accum`` rounds of the recipe's loss, inside
        one batched spectral-norm update of every net (the others' weights do not require grad: no graph); returns
        stats averaged over rounds and repeats."""
        net, t, a = self.nets[ph.net], self.cfg.train, ph.accum or self.cfg.train.accum
        for m in self.nets.values():
            m.requires_grad_(m is net)
        opt, self._scaler, self._keep_graph = self.opt[ph.net], self.scaler[ph.net], ph.net in self.sn
        total: Stats = {}
        for i in range(ph.repeats):
            (real, c), (z, c_gen) = self.feed.real(i), self.feed.latents(step, f"{ph.name}{i}")
            opt.zero_grad(set_to_none=True)
            with contextlib.ExitStack() as groups:          # every SN net: one batched update per optimizer step
                for g in self.sn.values():
                    groups.enter_context(g.cached())
                for j in range(a):
                    rr, cc, zz, cg = (None if v is None else v.chunk(a)[j] for v in (real, c, z, c_gen))
                    b = Batch(rr, cc, zz, cg, derive_seed(t.seed, step, ph.name, i, j, self.dist.rank))
                    for k, v in self.recipe.accumulate_gradients(ph.name, b, ph.interval / a).items():
                        total[k] = total.get(k, 0) + v.detach().float() / (a * ph.repeats)
            self.dist.average_grads(net)
            self._scaler.unscale_(opt)
            grads = [torch.linalg.vector_norm(p.grad) for p in net.parameters() if p.grad is not None]
            if grads:
                total[f"{ph.name}/gnorm"] = total.get(f"{ph.name}/gnorm", 0) + torch.stack(grads).norm() / ph.repeats
            self._scaler.step(opt)
            self._scaler.update()
            self.recipe.after_step(ph.name, step)
        return total

    @torch.no_grad()
    def update_ema(self) -> None:
        """G_ema <- lerp(G, G_ema, beta); half-life ema_kimg, ramped up as min(ema_kimg, nimg * ema_rampup)."""
        t, src = self.cfg.train, self.nets.get(self.recipe.ema)
        if src is None:
            return
        ema_nimg = min(t.ema_kimg * 1000, self.nimg * t.ema_rampup) if t.ema_rampup > 0 else t.ema_kimg * 1000
        beta = 0.5 ** (self.feed.batch / max(ema_nimg, 1e-8)) if t.ema_kimg > 0 else 0.0
        for pe, p in zip(self.G_ema.parameters(), src.parameters()):
            pe.copy_(p.detach().lerp(pe, beta))
        for be, b in zip(self.G_ema.buffers(), src.buffers()):
            be.copy_(b)

    def state_dict(self) -> dict:
        """Everything a resume needs (plain tensors, numbers and strings: loadable with weights_only=True)."""
        return {
            **{n: m.state_dict() for n, m in self.nets.items()},
            **({"G_ema": self.G_ema.state_dict()} if self.G_ema is not None else {}),
            **{f"opt_{n}": o.state_dict() for n, o in self.opt.items()},
            **{f"scaler_{n}": s.state_dict() for n, s in self.scaler.items()},
            "recipe": self.recipe.state_dict(), "config": self.cfg.to_json(),
            "step": self.step, "nimg": self.nimg, "loader_position": self.feed.position,
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "channels": self.dataset.channels, "num_classes": self.num_classes,
        }

    def load_state_dict(self, s: dict) -> None:
        for n, m in self.nets.items():
            m.load_state_dict(s[n])
        if self.G_ema is not None:
            self.G_ema.load_state_dict(s["G_ema"])
        for n in self.opt:
            self.opt[n].load_state_dict(s[f"opt_{n}"])
            self.scaler[n].load_state_dict(s[f"scaler_{n}"])
        self.recipe.load_state_dict(s["recipe"])
        self.step, self.nimg, r = int(s["step"]), int(s["nimg"]), self.recipe
        self.set_batch(self.cfg.train.batch)
        self.feed = Feed(self.dataset, self.cfg.train, self.dist, r.z_dim, r.num_classes, int(s["loader_position"]))
        torch.set_rng_state(s["rng_cpu"].cpu())
        if torch.cuda.is_available() and s["rng_cuda"]:
            torch.cuda.set_rng_state_all([t.cpu() for t in s["rng_cuda"]])

    def save_checkpoint(self) -> str | None:
        return checkpoint.save_step(self.state_dict(), self.run_dir, self.step, self.cfg.train.keep) \
            if self.rank0 else None

    def resume(self) -> "Trainer":
        """Load run_dir's newest checkpoint that loads (naming corrupt newer ones); drop the log rows after it."""
        path, state, skipped = checkpoint.load_newest(self.run_dir, self.dist.device)
        self.load_state_dict(state)
        self.resumed = True
        if self.rank0:
            for msg in skipped:
                print(f"warning: checkpoint {msg}; using the previous one", file=sys.stderr)
            self.log.truncate(self.step if self.step else -1)
            print(f"resumed {self.run_dir} at step {self.step} ({self.nimg / 1000:.1f} kimg) from {path}")
        return self

    def train(self) -> dict:
        """Run the phases until train.kimg; returns the last JSONL row."""
        t = self.cfg.train
        if self.rank0:
            start_outputs(self)
            if self.step == 0:
                self.save_checkpoint()                     # a run killed before its first tick resumes too
                snapshot(self, None)
        bar = Progress(self.nimg + (self.total_steps - self.step) * t.batch, self.nimg, self.progress)
        t_tick, n_tick, last, info = time.time(), self.nimg, {}, ""
        while self.step < self.total_steps:
            torch.manual_seed(derive_seed(t.seed, "rank", self.dist.rank, self.step))
            if (b := self.recipe.batch or t.batch) != self.feed.batch:       # a recipe's own (PGGAN's per resolution)
                self.set_batch(b)
            self.feed.next_step(b)
            stats = {}
            for ph in self.recipe.phases:
                if self.step % ph.interval == 0:
                    stats.update(self.run_phase(ph, self.step))
            self.window.add(self.step, stats)
            self.update_ema()
            self.step += 1
            self.nimg += b
            end = self.step == self.total_steps
            if self.step % t.log_steps == 0 or end:          # the one host sync of the window
                last = log_tick(self, (self.nimg - n_tick) / max(time.time() - t_tick, 1e-9))
                t_tick, n_tick = time.time(), self.nimg
                info = " ".join(f"{k}={v:.3f}" for k, v in last.items() if k.endswith("loss"))
            if self.rank0 and (self.step % t.snap_steps == 0 or end):
                snapshot(self, bar)
            if self.step % t.ckpt_steps == 0 or end:
                self.save_checkpoint()
            bar.update(self.nimg, info)
        bar.close()
        if self.tb:
            self.tb.close()
        return last


_KEYS = {"G_ema", "recipe", "config", "step", "nimg", "loader_position", "rng_cpu", "rng_cuda", "channels",
         "num_classes"}
