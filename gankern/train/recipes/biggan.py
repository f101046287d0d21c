"""BigGAN / BigGAN-deep training, as BigGAN-PyTorch's (BG) train.py and train_fns.py do it.

Per training step: ``num_D_steps`` D steps (phase ``D``, Phase.repeats; each on a fresh real batch), then one G step;
each optimizer step sums the trainer's accumulation rounds (BG's num_D_accumulations / num_G_accumulations: the
trainer's ``accum``, the same for both nets). Hinge loss; D sees fakes and reals in one call (BG's G_D). TTUR Adam
with betas (0, 0.999) and eps 1e-6 (BG's 128 px script). BigGAN's orthogonal regularization of G (``G_ortho``, the
off-diagonal form on every weight of 2+ dims except the shared class embedding, as BG's ``utils.ortho`` with its
blacklist; ``D_ortho`` for D): added once per optimizer step, spread over the rounds by their gains. Spectral norm:
the trainer's one SpectralNormGroup per net per optimizer step (nothing here).

EMA with ``ema_start``: the trainer keeps G_ema; before ``ema_start`` optimizer steps of G, BG's ema copies G into
G_ema at every step (decay 0). See :meth:`BigGANRecipe.after_step` for how that is done here.

Sampling (:meth:`BigGANRecipe.generate`): G in eval mode after standing statistics (BG's accumulate_stats, 16
batches), truncation by resampling (BigGAN's trick; the latents arrive truncated or are truncated here), classes as
given; :func:`sample_sheet` is BG's sample sheet (one row per class, ``samples_per_class`` columns).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...models import biggan as B
from .base import Batch, Env, OptSpec, Phase, Recipe


@dataclass
class Options:
    """BigGAN's hyperparameters under BigGAN-PyTorch's flag names; 0 / -1 / "" take the preset's value."""
    preset: str = "auto"        # 32 | 64 | 128 | tiny; auto: the run's resolution on a GPU, tiny on the CPU
    deep: bool = False          # BigGAN-deep [model=BigGANdeep]
    G_ch: int = 0               # G width multiplier (0: the preset's)
    D_ch: int = 0               # D width multiplier (0: the preset's)
    dim_z: int = 0              # z size (0: the preset's; hier rounds it down to a multiple of the chunks)
    shared_dim: int = -1        # shared class embedding size (-1: the preset's; 0: dim_z, as BG)
    G_shared: int = -1          # 1: one shared class embedding, 0: an embedding per CBN (-1: the preset's)
    hier: int = -1              # 1: skip-z, 0: z once (-1: the preset's)
    G_attn: str = ""            # BG's syntax: "64", "32_64", "0" (none); "": the preset's
    D_attn: str = ""
    G_lr: float = 1e-4
    D_lr: float = 4e-4
    G_B1: float = 0.0
    G_B2: float = 0.999
    D_B1: float = 0.0
    D_B2: float = 0.999
    adam_eps: float = 1e-6      # both optimizers (BG's 128 px script; BG's default 1e-8)
    num_D_steps: int = 2        # D steps per G step (the BigGAN paper; BG's scripts use 1)
    G_ortho: float = 1e-4       # orthogonal regularization of G (0: off)
    D_ortho: float = 0.0
    ema_start: int = 20000      # G_ema is a copy of G before this many G steps (BG's 128 px script)
    accumulate_stats: bool = True   # standing statistics before sampling
    num_standing_accumulations: int = 16
    standing_batch: int = 64    # batch of each standing-statistics pass (BG: its G batch)
    samples_per_class: int = 10     # sample sheets: columns (one row per class)

    def validate(self) -> None:
        for name in ("num_D_steps", "num_standing_accumulations", "standing_batch", "samples_per_class"):
            if getattr(self, name) < 1:
                raise ValueError(f"recipe.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("ema_start", "G_ortho", "D_ortho"):
            if getattr(self, name) < 0:
                raise ValueError(f"recipe.{name} must be >= 0, got {getattr(self, name)}")
        if self.preset not in ("auto", *B.PRESETS):
            raise ValueError(f"recipe.preset must be auto or one of {', '.join(B.PRESETS)}, not {self.preset!r}")


def model_config(o: Options, resolution: int, channels: int, num_classes: int, device: str) -> B.BigGANConfig:
    """The BigGANConfig of ``o`` for the run's data (``num_classes`` 0: one class, an unconditional run)."""
    name = o.preset
    if name == "auto":
        name = "tiny" if device == "cpu" else str(resolution)
    changes = dict(resolution=resolution, channels=channels, n_classes=max(num_classes, 1))
    for opt, field in (("G_ch", "g_ch"), ("D_ch", "d_ch"), ("dim_z", "z_dim")):
        if getattr(o, opt):
            changes[field] = getattr(o, opt)
    if o.shared_dim >= 0:
        changes["shared_dim"] = o.shared_dim
    for opt, field in (("G_shared", "shared"), ("hier", "hier")):
        v = getattr(o, opt)
        if v not in (-1, 0, 1):
            raise ValueError(f"recipe.{opt} must be 1, 0 or -1 (the preset's), not {v}")
        if v >= 0:
            changes[field] = bool(v)
    for opt, field in (("G_attn", "g_attn"), ("D_attn", "d_attn")):
        s = getattr(o, opt)
        if s:
            try:
                changes[field] = tuple(int(t) for t in s.split("_") if int(t) > 0)
            except ValueError:
                raise ValueError(f"recipe.{opt} is BG's list of resolutions joined by '_' (e.g. 64, 32_64, 0), "
                                 f"not {s!r}") from None
    if resolution not in B._G_WIDTHS:
        raise ValueError(f"BigGAN trains at {', '.join(map(str, sorted(B._G_WIDTHS)))} px, not {resolution}")
    cfg = B.preset(name, deep=o.deep)
    if cfg.resolution != resolution and "g_attn" not in changes:   # the preset's attention at this resolution
        changes["g_attn"] = tuple(a * resolution // cfg.resolution for a in cfg.g_attn)
        changes["d_attn"] = changes.get("d_attn", tuple(a * resolution // cfg.resolution for a in cfg.d_attn))
    return dataclasses.replace(cfg, **changes).check()


def _unwrap(net: nn.Module) -> nn.Module:
    return getattr(net, "module", net)


class BigGANRecipe(Recipe):
    """BigGAN-PyTorch's training of BigGAN / BigGAN-deep; see the module docstring."""
    Options = Options
    ema = "G"

    def __init__(self, options: Options, env: Env):
        super().__init__(options, env)
        o = self.o = options
        o.validate()
        self.num_classes = env.num_classes      # 0 (unlabelled data): G and D see class 0 throughout
        self.cfg = model_config(o, env.resolution, env.channels, env.num_classes, torch.device(env.device).type)
        G, D = B.build(self.cfg)
        if env.world > 1 and torch.device(env.device).type == "cuda":
            G = nn.SyncBatchNorm.convert_sync_batchnorm(G)   # BG's cross_replica: BN statistics over all ranks
        self.nets = {"G": G, "D": D}
        self.z_dim = G.z_dim
        self.optimizers = {"G": OptSpec("adam", o.G_lr, (o.G_B1, o.G_B2), o.adam_eps),
                           "D": OptSpec("adam", o.D_lr, (o.D_B1, o.D_B2), o.adam_eps)}
        self.phases = [Phase("D", "D", repeats=o.num_D_steps), Phase("G", "G")]
        self.g_steps = 0                        # optimizer steps of G so far (BG's itr, for ema_start)
        self._stood = None                      # (id(G), g_steps, threshold) of the last standing statistics

    # ----------------------------------------------------------------------------------------------- nets
    def _classes(self, c: torch.Tensor | None, n: int) -> torch.Tensor:
        if c is not None:
            return c
        if self.num_classes:
            raise ValueError("BigGAN here is class-conditional: pass classes")
        return torch.zeros(n, dtype=torch.long, device=self.env.device)

    def run_G(self, z: torch.Tensor, c: torch.Tensor | None, **kw) -> torch.Tensor:
        return self.nets["G"](z, self._classes(c, z.shape[0]))

    def run_D(self, img: torch.Tensor, c: torch.Tensor | None, **kw) -> torch.Tensor:
        return self.nets["D"](img, self._classes(c, img.shape[0]))

    def _ortho(self, net: str, strength: float) -> torch.Tensor | None:
        return B.orthogonal_regularization(B.ortho_weights(_unwrap(self.nets[net])), strength) if strength else None

    # --------------------------------------------------------------------------------------------- losses
    def accumulate_gradients(self, phase: str, batch: Batch, gain: float) -> dict[str, torch.Tensor]:
        n = batch.z.shape[0]
        c_gen = self._classes(batch.c_gen, n)
        if phase == "D":
            with self.env.autocast():
                with torch.no_grad():
                    fake = self.run_G(batch.z, c_gen)
                real_c = self._classes(batch.c, batch.real.shape[0])
                logits = self.run_D(torch.cat([fake.to(batch.real.dtype), batch.real]), torch.cat([c_gen, real_c]))
                d_fake, d_real = logits.float().split([n, batch.real.shape[0]])
                loss_real, loss_fake = F.relu(1 - d_real).mean(), F.relu(1 + d_fake).mean()
                loss = loss_real + loss_fake
            stats = {"D/loss_real": loss_real.detach(), "D/loss_fake": loss_fake.detach(),
                     "D/real": d_real.detach().mean(), "D/fake": d_fake.detach().mean()}
            ortho = self._ortho("D", self.o.D_ortho)
        elif phase == "G":
            with self.env.autocast():
                loss = -self.run_D(self.run_G(batch.z, c_gen), c_gen).float().mean()
            stats = {"G/loss": loss.detach()}
            ortho = self._ortho("G", self.o.G_ortho)
        else:
            raise ValueError(f"BigGAN has phases D and G, not {phase!r}")
        if ortho is not None:
            stats[f"{phase}/ortho"] = ortho.detach()
            loss = loss + ortho
        self.env.backward(loss * gain)
        return stats

    # ------------------------------------------------------------------------------------------------ EMA
    def after_step(self, phase: str, step: int) -> None:
        if phase == "G":
            self.g_steps += 1

    def log_stats(self) -> dict[str, torch.Tensor]:
        return {}

    def state_dict(self) -> dict:
        return {"g_steps": self.g_steps, "model": repr(self.cfg)}

    def load_state_dict(self, d: dict) -> None:
        if d["model"] != repr(self.cfg):
            raise ValueError(f"the checkpoint's BigGAN is {d['model']}, this run builds {self.cfg}: resume with "
                             f"the same recipe options and device kind (preset auto picks tiny on the CPU)")
        self.g_steps = int(d["g_steps"])

    # ------------------------------------------------------------------------------------------- sampling
    @torch.no_grad()
    def generate(self, G: nn.Module, z: torch.Tensor, c: torch.Tensor | None, truncation: float | None = None,
                 **kw) -> torch.Tensor:
        """Images of G (eval mode) for z (N, z_dim) and classes c (N,); before the first call at a G step,
        standing statistics (``accumulate_stats``) at the same truncation."""
        G = _unwrap(G)
        if truncation is not None:
            z = _truncate(z, truncation)
        if self.o.accumulate_stats and self._stood != (id(G), self.g_steps, truncation):
            standing = torch.Generator(z.device).manual_seed(self.env.seed)
            B.standing_stats(G, self.o.num_standing_accumulations, self.o.standing_batch, truncation, standing)
            self._stood = (id(G), self.g_steps, truncation)
        G.eval()
        return G(z, self._classes(c, z.shape[0]))


def _truncate(z: torch.Tensor, threshold: float) -> torch.Tensor:
    """z with every entry beyond +-threshold drawn again from N(0, 1) until none is (BigGAN's truncation), from a
    generator seeded by z itself (the same z give the same result)."""
    bad = z.abs() > threshold
    if not bool(bad.any()):
        return z
    g = torch.Generator(z.device).manual_seed(int(z.double().abs().sum().item() * 1e6) % 2 ** 63)
    return B.truncated_z(z.shape[0], z.shape[1], threshold, generator=g, device=z.device).where(bad, z)


@torch.no_grad()
def sample_sheet(recipe: BigGANRecipe, G: nn.Module, classes: list[int], samples_per_class: int, seed: int,
                 truncation: float | None = None) -> torch.Tensor:
    """BG's sample sheet: ``samples_per_class`` images of each class, class-major (save with nrow=samples_per_class:
    one row per class); latents fixed by ``seed`` (sample i of every class shares its z, as in BG's sheets).
    Returns (len(classes) * samples_per_class, C, R, R)."""
    device = next(G.parameters()).device
    z = B.truncated_z(samples_per_class, _unwrap(G).z_dim, truncation,
                      generator=torch.Generator().manual_seed(seed)).to(device)
    y = torch.tensor(classes, device=device).repeat_interleave(samples_per_class)
    return recipe.generate(G, z.repeat(len(classes), 1), y, truncation)
