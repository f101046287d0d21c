"""BigGAN / BigGAN-deep training, as BigGAN-PyTorch's (BG) train.py and train_fns.py do it.

Per training step: ``num_D_steps`` D steps (phase ``D``, Phase.repeats; each on a fresh real batch), then one G step;
each optimizer step sums the trainer's accumulation rounds (BG's num_D_accumulations / num_G_accumulations: the
trainer's ``accum``, the same for both nets). Hinge loss; D sees fakes and reals in one call (BG's G_D). TTUR Adam
with betas (0, 0.999) and eps 1e-6 (BG's 128 px script). BigGAN's orthogonal regularization of G (``G_ortho``, the
off-diagonal form on every weight of 2+ dims except the shared class embedding, as BG's ``utils.ortho`` with its
blacklist; ``D_ortho`` for D): its gradient joins each optimizer step once (first accumulation round). Spectral norm:
the trainer's one SpectralNormGroup per net per optimizer step; G's pass without gradients in D's steps (where BG's G
also runs its power iterations) goes through the recipe's own batched group of G, not layer by layer.

EMA with ``ema_start`` (BG's utils.ema): G_ema is a copy of G before ``ema_start`` G steps, then
``G_ema = ema_decay * G_ema + (1 - ema_decay) * G`` per G step. The trainer's EMA (a half-life in kimg from step 0)
cannot start late, so the recipe keeps BG's average itself in a net ``G_ema_bg`` (in the checkpoint like every net),
updated after each G step, and names it as the net the trainer averages (``ema = "G_ema_bg"``); the CONFIGS rows set
``train.ema_kimg=0``, so the trainer's G_ema is a copy of it at every step (a nonzero ema_kimg smooths it once more).
Parameters are averaged, buffers copied (BatchNorm statistics, spectral-norm u and v: as the trainer's EMA; BG
averages its buffers too, but its sampling recomputes the statistics and the singular vectors anyway).

Sampling (:meth:`BigGANRecipe.generate`): G in eval mode (BG's G_eval_mode) after standing statistics (BG's
accumulate_stats, 16 batches), latents truncated by resampling (BigGAN's trick, done by the caller: the trainer's
``generate``, :func:`sample_sheet`); :func:`sample_sheet` is BG's sample sheet (one row per class,
``samples_per_class`` columns), :func:`interp_sheet` its interpolation sheets (in z, in the class embedding).
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...models import biggan as B
from ...nn import SpectralNormGroup
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
    ema_decay: float = 0.9999   # [ema_decay]
    ema_start: int = 20000      # G_ema is a copy of G before this many G steps (BG's 128 px script)
    accumulate_stats: bool = True   # standing statistics before sampling
    num_standing_accumulations: int = 16
    standing_batch: int = 64    # batch of each standing-statistics pass (BG: its G batch)

    def validate(self) -> None:
        for name in ("num_D_steps", "num_standing_accumulations", "standing_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"recipe.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("ema_start", "G_ortho", "D_ortho"):
            if getattr(self, name) < 0:
                raise ValueError(f"recipe.{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"recipe.ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.preset not in ("auto", *B.PRESETS):
            raise ValueError(f"recipe.preset must be auto or one of {', '.join(B.PRESETS)}, not {self.preset!r}")


def auto_preset(resolution: int, device: str) -> str:
    """What ``preset=auto`` means: tiny on the CPU, else the preset of the resolution (128's at 256 px)."""
    return "tiny" if device == "cpu" else str(resolution) if str(resolution) in B.PRESETS else "128"


def model_config(o: Options, resolution: int, channels: int, num_classes: int) -> B.BigGANConfig:
    """The BigGANConfig of ``o`` (preset resolved) for the run's data (``num_classes`` 0: one class)."""
    name = o.preset
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
    for field in ("g_attn", "d_attn"):        # the preset's attention, moved to the same place at this resolution
        changes.setdefault(field, tuple(a * resolution // cfg.resolution for a in getattr(cfg, field)))
    return dataclasses.replace(cfg, **changes).check()


def _unwrap(net: nn.Module) -> nn.Module:
    return getattr(net, "module", net)


class BigGANRecipe(Recipe):
    """BigGAN-PyTorch's training of BigGAN / BigGAN-deep; see the module docstring."""
    Options = Options
    ema = "G_ema_bg"

    def __init__(self, options: Options, env: Env):
        super().__init__(options, env)
        o = self.o = options
        o.validate()
        self.num_classes = env.num_classes      # 0 (unlabelled data): G and D see class 0 throughout
        if o.preset == "auto":           # resolved once: config.json and the checkpoints record the preset
            o.preset = auto_preset(env.resolution, torch.device(env.device).type)
        self.cfg = model_config(o, env.resolution, env.channels, env.num_classes)
        G, D = B.build(self.cfg)
        if env.world > 1 and torch.device(env.device).type == "cuda":
            G = nn.SyncBatchNorm.convert_sync_batchnorm(G)   # BG's cross_replica: BN statistics over all ranks
        self.nets = {"G": G, "D": D, "G_ema_bg": copy.deepcopy(G).eval().requires_grad_(False)}
        self._g_sn = SpectralNormGroup(G)       # G's batched spectral norm in D's steps (G runs without grad)
        self.z_dim = G.z_dim
        self.optimizers = {"G": OptSpec("adam", o.G_lr, (o.G_B1, o.G_B2), o.adam_eps),
                           "D": OptSpec("adam", o.D_lr, (o.D_B1, o.D_B2), o.adam_eps)}
        self.phases = [Phase("D", "D", repeats=o.num_D_steps), Phase("G", "G")]
        self.g_steps = 0                        # optimizer steps of G so far (BG's itr, for ema_start)
        self._ortho_due = {"D": True, "G": True}   # the next round is the first of an optimizer step
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

    def _ortho(self, phase: str, strength: float) -> torch.Tensor | None:
        """The orthogonal regularization of the phase's net in the first round of each optimizer step (its
        gradient joins the step once, as BG's utils.ortho adds it to the gradients before the step), else None."""
        if not strength or not self._ortho_due[phase]:
            return None
        self._ortho_due[phase] = False
        return B.orthogonal_regularization(B.ortho_weights(_unwrap(self.nets[phase])), strength)

    # --------------------------------------------------------------------------------------------- losses
    def accumulate_gradients(self, phase: str, batch: Batch, gain: float) -> dict[str, torch.Tensor]:
        n = batch.z.shape[0]
        c_gen = self._classes(batch.c_gen, n)
        if phase == "D":
            with self.env.autocast():
                with torch.no_grad(), self._g_sn.cached():
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
        if ortho is not None:   # the trainer averages stats over the rounds (gain = 1 / rounds): one round has it
            stats[f"{phase}/ortho"] = ortho.detach() / gain
        self.env.backward(loss * gain if ortho is None else loss * gain + ortho)
        return stats

    # ------------------------------------------------------------------------------------------------ EMA
    def after_step(self, phase: str, step: int) -> None:
        self._ortho_due[phase] = True
        if phase == "G":
            self.g_steps += 1
            self._update_ema()

    @torch.no_grad()
    def _update_ema(self) -> None:
        """BG's ema.update(itr): decay 0 (a copy) before ema_start, then ema_decay; buffers copied."""
        G, E = _unwrap(self.nets["G"]), self.nets["G_ema_bg"]
        decay = 0.0 if self.g_steps < self.o.ema_start else self.o.ema_decay
        torch._foreach_lerp_(list(E.parameters()), [p.detach() for p in G.parameters()], 1 - decay)
        for be, b in zip(E.buffers(), G.buffers()):
            be.copy_(b)

    def state_dict(self) -> dict:
        return {"g_steps": self.g_steps, "model": repr(self.cfg)}

    def load_state_dict(self, d: dict) -> None:
        if d["model"] != repr(self.cfg):
            raise ValueError(f"the checkpoint's BigGAN is {d['model']}, this run builds {self.cfg}: resume with "
                             f"the run's own recipe options")
        self.g_steps = int(d["g_steps"])

    # ------------------------------------------------------------------------------------------- sampling
    @torch.no_grad()
    def generate(self, G: nn.Module, z: torch.Tensor, c: torch.Tensor | None, truncation: float | None = None,
                 embedding: torch.Tensor | None = None, **kw) -> torch.Tensor:
        """Images of G (eval mode) for z (N, z_dim) (already truncated, if at all) and classes c (N,) or class
        embeddings (N, shared_dim); before the first call with this G at a G step, BG's standing statistics
        (``accumulate_stats``), with z truncated at ``truncation``."""
        G = _unwrap(G)
        if self.o.accumulate_stats and self._stood != (id(G), self.g_steps, truncation):
            standing = torch.Generator(z.device).manual_seed(self.env.seed)
            B.standing_stats(G, self.o.num_standing_accumulations, self.o.standing_batch, truncation, standing,
                             sync=False)
            self._stood = (id(G), self.g_steps, truncation)
        G.eval()
        if embedding is not None:
            return G(z, embedding=embedding)
        return G(z, self._classes(c, z.shape[0]))


@torch.no_grad()
def sample_sheet(recipe: BigGANRecipe, G: nn.Module, classes: list[int], samples_per_class: int, seed: int,
                 truncation: float | None = None) -> torch.Tensor:
    """BG's sample sheet: ``samples_per_class`` images of each class, class-major (save with nrow=samples_per_class:
    one row per class); latents fixed by ``seed``, column j one z for every class (BG draws each image's z apart;
    a shared z shows what the class alone changes).
    Returns (len(classes) * samples_per_class, C, R, R)."""
    device = next(G.parameters()).device
    z = B.truncated_z(samples_per_class, _unwrap(G).z_dim, truncation,
                      generator=torch.Generator().manual_seed(seed)).to(device)
    y = torch.tensor(classes, device=device).repeat_interleave(samples_per_class)
    return recipe.generate(G, z.repeat(len(classes), 1), y, truncation)


@torch.no_grad()
def interp_sheet(recipe: BigGANRecipe, G: nn.Module, rows: int, midpoints: int, seed: int, fix_z: bool = False,
                 fix_y: bool = False, truncation: float | None = None) -> torch.Tensor:
    """BG's interpolation sheet: ``rows`` rows of ``midpoints + 2`` images, each row going linearly from one (z,
    shared class embedding) to another; ``fix_z``: one z per row (only the class moves), ``fix_y``: one class per
    row (only z moves). Save with nrow=midpoints + 2. Returns (rows * (midpoints + 2), C, R, R)."""
    net = _unwrap(G)
    if net.shared is None:
        raise ValueError("interpolation in the class embedding needs the shared embedding (G_shared)")
    device, n = next(net.parameters()).device, midpoints + 2
    g = torch.Generator().manual_seed(seed)
    z0, z1 = (B.truncated_z(rows, net.z_dim, truncation, generator=g) for _ in range(2))
    y0, y1 = (torch.randint(0, net.n_classes, (rows,), generator=g) for _ in range(2))
    z1, y1 = z0 if fix_z else z1, y0 if fix_y else y1
    t = torch.linspace(0, 1, n, device=device)[None, :, None]                        # [1, n, 1]
    z = torch.lerp(z0.to(device)[:, None], z1.to(device)[:, None], t).flatten(0, 1)    # [rows * n, z_dim]
    e0, e1 = net.shared(y0.to(device)), net.shared(y1.to(device))
    e = torch.lerp(e0[:, None], e1[:, None], t).flatten(0, 1)                         # [rows * n, shared_dim]
    return recipe.generate(G, z, None, truncation, embedding=e)
