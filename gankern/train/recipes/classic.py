"""The classic GANs (GAN, DCGAN, WGAN, WGAN-GP, LSGAN, SNGAN, SAGAN, conditional GANs) as one recipe: a loss from
gankern.losses, optional one-sided label smoothing, instance noise, R1 / WGAN-GP penalties (in the D step or lazily
every ``reg_interval`` steps), WGAN weight clipping and n_critic D steps per G step."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ... import losses
from ...models import ModelConfig, build
from ...ops import gradient_penalty, r1_penalty
from .base import Batch, OptSpec, Phase, Recipe


@dataclass
class LossConfig:
    name: str = "nonsaturating"  # saturating | nonsaturating | hinge | wasserstein | lsgan (gankern.losses)
    real_target: float = 1.0     # one-sided label smoothing: D's target for reals (e.g. 0.9)
    instance_noise: float = 0.0  # std of Gaussian noise added to D's inputs, annealed linearly to 0 over the run
    gp: float = 0.0              # WGAN-GP weight (gankern.ops.gradient_penalty)
    r1: float = 0.0              # R1 gamma; loss term gamma / 2 * r1_penalty (gankern.ops.r1_penalty)
    reg_interval: int = 1        # lazy regularization: penalties every N steps, scaled by N (1 = inside the D step)
    clip: float = 0.0            # WGAN weight clipping of D's parameters to [-clip, clip] (0 = off)


@dataclass
class OptConfig:
    kind: str = "adam"           # adam | rmsprop
    g_lr: float = 2e-4           # TTUR: G and D have their own learning rates and betas
    d_lr: float = 2e-4
    g_betas: tuple[float, float] = (0.5, 0.999)
    d_betas: tuple[float, float] = (0.5, 0.999)
    n_critic: int = 1            # D steps (each on a fresh batch) per G step


@dataclass
class ClassicOptions:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    opt: OptConfig = field(default_factory=OptConfig)

    def validate(self) -> None:
        if self.opt.kind not in ("adam", "rmsprop"):
            raise ValueError(f"opt.kind must be adam or rmsprop, not '{self.opt.kind}'")
        losses.get_loss(self.loss.name)


class ClassicRecipe(Recipe):
    """G(z, y) and D(x, y) of gankern.models.build; phases D (x n_critic), Dreg (lazy penalties), G."""
    Options = ClassicOptions

    def __init__(self, options: ClassicOptions, env):
        super().__init__(options, env)
        m, lc, o = options.model, options.loss, options.opt
        self.num_classes = env.num_classes if m.cond != "none" else 0
        self.z_dim = m.z_dim
        G, D = build(m, env.resolution, env.channels, self.num_classes)
        self.nets = {"G": G, "D": D}
        # lazy R1 here keeps the D optimizer as it was (no mb_ratio correction: reg_interval stays 1 in the OptSpec)
        self.optimizers = {"G": OptSpec(o.kind, o.g_lr, tuple(o.g_betas)), "D": OptSpec(o.kind, o.d_lr,
                                                                                         tuple(o.d_betas))}
        self.lazy = lc.reg_interval > 1 and (lc.r1 > 0 or lc.gp > 0)
        self.phases = [Phase("D", "D", repeats=o.n_critic)] + \
            ([Phase("Dreg", "D", interval=lc.reg_interval)] if self.lazy else []) + [Phase("G", "G")]
        self.sigma = lc.instance_noise               # of the step being run

    def run_D(self, img, c, noise_seed: int | None = None):
        """D's logits; with instance noise on, D sees img + sigma * N(0, I) drawn from ``noise_seed``."""
        if self.sigma > 0 and noise_seed is not None:
            g = torch.Generator().manual_seed(noise_seed)
            img = img + (self.sigma * torch.randn(img.shape, generator=g)).to(img.device, img.dtype)
        return self.nets["D"](img, c)

    def _penalties(self, b: Batch, fake, prefix: str) -> dict:
        """R1 and/or WGAN-GP terms, weighted (without the lazy interval: that is the gain)."""
        lc, out = self.options.loss, {}
        if lc.r1 > 0:
            x = b.real.detach().requires_grad_(True)
            out[f"{prefix}/r1"] = r1_penalty(self.run_D(x, b.c), x) * (lc.r1 / 2)
        if lc.gp > 0:
            args = (b.c,) if self.num_classes else ()
            out[f"{prefix}/gp"] = gradient_penalty(self.nets["D"], b.real.detach(), fake.detach().to(b.real.dtype),
                                                   1.0, *args) * lc.gp
        return out

    def accumulate_gradients(self, phase, b: Batch, gain):
        lc, env = self.options.loss, self.env
        with env.autocast():
            if phase == "G":
                lf = self.run_D(self.run_G(b.z, b.c_gen), b.c_gen, b.seed)
                loss = losses.g_loss(lc.name, lf)
                stats = {"G/loss": loss}
            else:                   # G's weights do not require grad here: no graph (and its batched SN is used)
                fake = self.run_G(b.z, b.c_gen)
                if phase == "Dreg":
                    stats = self._penalties(b, fake, "Dreg")
                    loss = sum(stats.values())
                else:
                    lr, lf = self.run_D(b.real, b.c, b.seed), self.run_D(fake, b.c_gen, b.seed + 1)
                    loss = losses.d_loss(lc.name, lr, lf, lc.real_target)
                    stats = {"D/loss": loss, "D/real": lr.float().mean(), "D/fake": lf.float().mean()}
                    if not self.lazy:
                        stats.update(self._penalties(b, fake, "D"))
                        loss = loss + sum(v for k, v in stats.items() if k in ("D/r1", "D/gp"))
        env.backward(loss * gain)
        return {k: v.detach().float() for k, v in stats.items()}

    def after_step(self, phase, step):
        """WGAN clipping after each D step; the instance-noise sigma anneals linearly to 0 over the run."""
        clip = self.options.loss.clip
        if phase == "D" and clip > 0:
            with torch.no_grad():
                for p in self.nets["D"].parameters():
                    p.clamp_(-clip, clip)
        if phase == "G":
            self.sigma = self.options.loss.instance_noise * max(0.0, 1.0 - (step + 1) / self.env.total_steps)

    def state_dict(self):
        return {"instance_noise_sigma": self.sigma}

    def load_state_dict(self, state):
        self.sigma = float(state["instance_noise_sigma"])
