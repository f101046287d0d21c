"""PGGAN (Karras et al. 2018, "Progressive Growing of GANs for Improved Quality, Stability, and Variation"): G and D
grow from ``grow.start_res`` to the data resolution; each new resolution fades in while alpha ramps linearly from 0 to
1 over ``grow.fade_kimg`` thousand real images, then trains ``grow.stable_kimg`` at alpha 1 (the first resolution
trains ``stable_kimg``, the last until the end of the run). Real images are box-downsampled to the current
resolution and, during a fade-in, blended as the paper does: ``lerp(upsample(downsample(x)), x, alpha)``. Loss:
WGAN-GP (lambda 10, gankern.ops.gradient_penalty, on the reals and fakes at the current, faded resolution) plus the
drift term epsilon E[D(x)^2] (0.001); Adam(1e-3, 0, 0.99); one D step per G step. Nets: gankern.models.pggan (pixel
norm, equalized learning rate, minibatch stddev). As the official code does: the minibatch per resolution
(``batch_per_res`` "RES:BATCH,...", in ``pggan`` the paper's 256:14, 512:6, 1024:3 and train.batch 16 elsewhere;
rounded down to a multiple of the ranks; during a fade-in the new resolution's), and Adam's state (moments and step
count) reset when a fade-in starts and when it ends (``reset_opt``; official ``reset_opt_for_new_lod``). The
``pggan`` row is the official code's paper preset (v1: 800 + 800 kimg, batch 16 / 14 / 6 / 3, minibatch stddev over
groups of 16, i.e. the whole minibatch); its later v2 preset for one GPU is ``--set recipe.batch_per_res=4:128,8:128,
16:128,32:64,64:32,128:16,256:8,512:4 --set model.mbstd_group=4 --set grow.fade_kimg=600 --set grow.stable_kimg=600``.

Progress is counted in real images shown to D (``nimg`` in the recipe's state, with the stage and alpha it gives),
updated after each step's G phase, so a run resumed mid-stage or mid-fade continues exactly. The stage and alpha are
also buffers of G (so G_ema and ``gankern generate`` sample at the trained resolution); samples are upsampled
(nearest) to the data resolution for grids and FID.

Deliberately different from the official code: the convolutions are gankern's StyleGAN2 layers (the leaky ReLU's
gain sqrt(2) multiplies the activation instead of the weight scale: the same functions, with Adam the biases move
sqrt(2) times faster relative to the weights; G's dense head is the official one); G_ema's half-life is
in images (train.ema_kimg; ``pggan`` sets 11.1 kimg, the official beta 0.999 per minibatch of 16) where the official
beta is per minibatch at every batch size; stage and alpha advance after every step (the official code updates them
every 4 minibatches); no learning-rate ramp-up (the TensorFlow release has none).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ... import losses
from ...models.pggan import Discriminator, Generator, PGGANModelConfig, num_stages
from ...ops import gradient_penalty
from .base import Batch, OptSpec, Phase, Recipe


@dataclass
class GrowConfig:
    start_res: int = 4           # first resolution trained (a power of two >= 4)
    fade_kimg: float = 800.0     # real images (thousands) over which a new resolution's alpha ramps 0 -> 1
    stable_kimg: float = 800.0   # real images (thousands) at alpha 1 before the next resolution


@dataclass
class PGGANOptions:
    model: PGGANModelConfig = field(default_factory=PGGANModelConfig)
    grow: GrowConfig = field(default_factory=GrowConfig)
    lr: float = 1e-3             # Adam(lr, betas) for G and D
    betas: tuple[float, float] = (0.0, 0.99)
    gp: float = 10.0             # WGAN-GP lambda
    drift: float = 0.001         # epsilon_drift: weight of E[D(x_real)^2] in D's loss
    batch_per_res: str = ""      # RES:BATCH,...: global minibatch per resolution (others: train.batch)
    reset_opt: bool = True       # reset G's and D's Adam state when a fade-in starts and when it ends

    def batches(self) -> dict[int, int]:
        """{resolution: batch} of ``batch_per_res``."""
        try:
            d = {int(r): int(b) for r, _, b in (kv.partition(":") for kv in self.batch_per_res.split(",") if kv)}
        except ValueError:
            d = {0: 0}
        if any(r < 4 or r & (r - 1) or b < 1 for r, b in d.items()):
            raise ValueError(f"batch_per_res='{self.batch_per_res}' must be RES:BATCH,... with power-of-two "
                             f"resolutions >= 4 and batches >= 1, e.g. 256:14,512:6")
        return d

    def validate(self) -> None:
        self.batches()
        g = self.grow
        if g.start_res < 4 or g.start_res & (g.start_res - 1):
            raise ValueError(f"grow.start_res={g.start_res} must be a power of two >= 4")
        if not (g.fade_kimg >= 0 and g.stable_kimg >= 0 and math.isfinite(g.fade_kimg + g.stable_kimg)):
            raise ValueError(f"grow.fade_kimg={g.fade_kimg} and grow.stable_kimg={g.stable_kimg} must be finite >= 0")
        if self.model.mbstd_group < 0 or self.model.z_dim < 1 or self.model.ch_base < 1 or self.model.ch_max < 1:
            raise ValueError("model.z_dim, ch_base and ch_max must be >= 1 and model.mbstd_group >= 0")


def progress(kimg: float, first: int, last: int, fade_kimg: float, stable_kimg: float) -> tuple[int, float]:
    """(stage, alpha) after ``kimg`` thousand real images: stage ``first`` for stable_kimg, then per stage
    fade_kimg with alpha = (kimg into the stage) / fade_kimg, then stable_kimg at alpha 1; ``last`` stays."""
    t = kimg - stable_kimg
    if t < 0 or last == first:
        return first, 1.0
    period = fade_kimg + stable_kimg
    k = int(t // period) if period > 0 else last - first
    if k >= last - first:
        return last, 1.0
    into = t - k * period
    return first + k + 1, min(1.0, into / fade_kimg) if fade_kimg > 0 else 1.0


class PGGANRecipe(Recipe):
    """Phases D (WGAN-GP + drift), G; the stage and alpha of a step are fixed while it runs."""
    Options = PGGANOptions

    def __init__(self, options: PGGANOptions, env):
        super().__init__(options, env)
        m, g = options.model, options.grow
        self.last = num_stages(env.resolution) - 1
        self.first = num_stages(g.start_res) - 1
        if g.start_res > env.resolution:
            raise ValueError(f"grow.start_res={g.start_res} is above the data resolution {env.resolution}")
        self.z_dim = m.z_dim
        self.nets = {"G": Generator(m, env.resolution, env.channels), "D": Discriminator(m, env.resolution,
                                                                                           env.channels)}
        self.optimizers = {n: OptSpec("adam", options.lr, tuple(options.betas)) for n in self.nets}
        self.phases = [Phase("D", "D"), Phase("G", "G")]
        w = env.world                                   # batches: multiples of the ranks (the official code's)
        self._batches = {res: max(b - b % w, w) for res, b in options.batches().items()}
        self.nimg, self.seen, self._seen = 0, 0, 0
        for res, b in self._batches.items():            # D's minibatch stddev groups must divide a rank's batch
            n = b // w
            if m.mbstd_group and n % min(m.mbstd_group, n) and g.start_res <= res <= env.resolution:
                raise ValueError(f"batch_per_res {res}:{b} gives {n} images per rank, not a multiple of "
                                 f"model.mbstd_group={m.mbstd_group}")
        self._advance()

    def _advance(self) -> None:
        """Stage, alpha and batch of ``self.nimg``; the stage and alpha also into G's buffers."""
        g = self.options.grow
        self.stage, self.alpha = progress(self.nimg / 1000, self.first, self.last, g.fade_kimg, g.stable_kimg)
        self.nets["G"].set_progress(self.stage, self.alpha)
        self.batch = self._batches.get(4 << self.stage, 0)

    def run_G(self, z, c, **kw):
        return self.nets["G"](z, None, self.stage, self.alpha)

    def run_D(self, img, c, **kw):
        return self.nets["D"](img, None, self.alpha)

    def reals(self, x: torch.Tensor) -> torch.Tensor:
        """Reals (N, C, R, R) at the current resolution r (box filter), blended with their 2x coarser version
        during a fade-in: lerp(upsample(avgpool(x_r)), x_r, alpha)."""
        r = 4 << self.stage
        if x.shape[-1] != r:
            x = F.avg_pool2d(x, x.shape[-1] // r)
        if self.stage > 0 and self.alpha < 1:
            x = torch.lerp(F.interpolate(F.avg_pool2d(x, 2), scale_factor=2, mode="nearest"), x, self.alpha)
        return x

    def accumulate_gradients(self, phase, b: Batch, gain):
        o = self.options
        with self.env.autocast():
            fake = self.run_G(b.z, None)      # in the D phase G's weights do not require grad: no graph
            if phase == "G":
                loss = losses.g_loss("wasserstein", self.run_D(fake, None))
                stats = {"G/loss": loss}
            else:
                real = self.reals(b.real)
                self._seen += real.shape[0] * self.env.world
                lr, lf = self.run_D(real, None).float(), self.run_D(fake.detach(), None).float()
                gp = gradient_penalty(lambda x: self.run_D(x, None), real, fake.detach().to(real.dtype))
                drift = lr.square().mean()
                loss = losses.d_loss("wasserstein", lr, lf) + o.gp * gp + o.drift * drift
                stats = {"D/loss": loss, "D/real": lr.mean(), "D/fake": lf.mean(), "D/gp": gp, "D/drift": drift}
        self.env.backward(loss * gain)
        return {k: v.detach().float() for k, v in stats.items()}

    def after_step(self, phase, step):
        if phase == "G":
            was = (self.stage, self.alpha < 1)
            self.nimg, self.seen, self._seen = self.nimg + self._seen, self._seen, 0
            self._advance()
            if self.options.reset_opt and (self.stage, self.alpha < 1) != was:    # a fade-in starts or ends
                for opt in self.opt.values():
                    opt.state.clear()

    def log_stats(self):
        return {"pggan/res": float(4 << self.stage), "pggan/alpha": self.alpha, "pggan/batch": float(self.seen)}

    def state_dict(self):
        return {"nimg": self.nimg, "stage": self.stage, "alpha": self.alpha}

    def load_state_dict(self, state):
        self.nimg, self._seen = int(state["nimg"]), 0
        self._advance()

    def generate(self, G, z, c):
        """G's images at its stage, upsampled (nearest) to the data resolution."""
        img = G(z, None)
        return F.interpolate(img, size=self.env.resolution, mode="nearest") if img.shape[-1] != \
            self.env.resolution else img
