"""Unrolled GAN (Metz et al. 2017, "Unrolled Generative Adversarial Networks") on 2-D points: G's loss is taken
through ``unroll`` = k differentiable Adam steps of D on the same batch (torch.func.functional_call, create_graph),
so G sees how D would answer its move; D itself takes its ordinary one step. k = 0 is the plain GAN of the same
nets, the paper's baseline. Logs ``ring/modes`` (modes covered of 8) and ``ring/hq`` (high-quality fraction) of
2000 fixed-latent samples every log_steps; ``bench/ring_compare.py`` plots both recipes over steps.

The unrolled Adam continues from D's own Adam state, as the paper's code does (it rewires the optimizer's update
ops, slots included): the moments and step count of the trainer's Adam of D (``self.opt["D"]``), with
torch.optim.Adam's update (no weight decay)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.func import functional_call

from ...data.ring import ring_metrics
from ...models.toy2d import Discriminator, Generator, ToyModelConfig
from .base import Batch, OptSpec, Phase, Recipe


@dataclass
class ToyOptConfig:
    g_lr: float = 1e-4
    d_lr: float = 1e-4           # also the lr of the unrolled Adam steps
    g_betas: tuple[float, float] = (0.5, 0.999)
    d_betas: tuple[float, float] = (0.5, 0.999)


@dataclass
class UnrolledOptions:
    model: ToyModelConfig = field(default_factory=ToyModelConfig)
    opt: ToyOptConfig = field(default_factory=ToyOptConfig)
    unroll: int = 10             # k: D steps G's loss is differentiated through (0: plain GAN)
    eval_samples: int = 2000     # samples of the logged ring metrics

    def validate(self) -> None:
        if self.unroll < 0:
            raise ValueError(f"recipe.unroll={self.unroll}: the number of unrolled D steps must be >= 0")


def _d_loss(r, f):
    return F.softplus(-r).mean() + F.softplus(f).mean()


class UnrolledRecipe(Recipe):
    """Phases D, then G through ``unroll`` Adam steps of a functional copy of D; non-saturating GAN loss."""
    Options = UnrolledOptions

    def __init__(self, options: UnrolledOptions, env):
        super().__init__(options, env)
        m, o = options.model, options.opt
        self.z_dim = m.z_dim
        self.nets = {"G": Generator(m), "D": Discriminator(m)}
        self.optimizers = {"G": OptSpec("adam", o.g_lr, tuple(o.g_betas)), "D": OptSpec("adam", o.d_lr,
                                                                                         tuple(o.d_betas))}
        self.phases = [Phase("D", "D"), Phase("G", "G")]

    def unrolled_D(self, real, fake):
        """D's parameters after ``unroll`` Adam steps on (real, fake) from D's Adam state, differentiable in fake."""
        o, D = self.options.opt, self.nets["D"]
        (b1, b2), eps = o.d_betas, 1e-8
        state = self.opt["D"].state                       # the trainer's Adam of D (empty before its first step)
        p, m, v2, t0 = {}, {}, {}, 0
        for k, w in D.named_parameters():
            st = state.get(w, {})
            p[k] = w.detach().requires_grad_(True)
            m[k], v2[k] = st.get("exp_avg", torch.zeros_like(w)), st.get("exp_avg_sq", torch.zeros_like(w))
            t0 = int(st.get("step", 0))                    # the step count (a CPU tensor: no device sync)
        for t in range(t0 + 1, t0 + self.options.unroll + 1):
            loss = _d_loss(functional_call(D, p, (real,)), functional_call(D, p, (fake,)))
            grads = torch.autograd.grad(loss, list(p.values()), create_graph=True)
            new = {}
            for (k, w), g in zip(p.items(), grads):
                m[k] = b1 * m[k] + (1 - b1) * g
                v2[k] = b2 * v2[k] + (1 - b2) * g * g
                step = (m[k] / (1 - b1 ** t)) / ((v2[k] / (1 - b2 ** t) + eps * eps).sqrt() + eps)
                new[k] = w - o.d_lr * step
            p = new
        return p

    def accumulate_gradients(self, phase, b: Batch, gain):
        if b.real[0].numel() != 2:
            raise ValueError(f"the unrolled recipe trains on 2-D points (--data ring), not {tuple(b.real.shape[1:])} "
                             f"images")
        with self.env.autocast():
            fake = self.run_G(b.z, None)
            if phase == "G":
                if self.options.unroll:
                    lf = functional_call(self.nets["D"], self.unrolled_D(b.real, fake), (fake,))
                else:
                    lf = self.run_D(fake, None)
                loss = F.softplus(-lf).mean()
                stats = {"G/loss": loss}
            else:
                lr, lf = self.run_D(b.real, None), self.run_D(fake, None)
                loss = _d_loss(lr, lf)
                stats = {"D/loss": loss, "D/real": lr.float().mean(), "D/fake": lf.float().mean()}
        self.env.backward(loss * gain)
        return {k: v.detach().float() for k, v in stats.items()}

    @torch.no_grad()
    def log_stats(self):
        G = self.nets["G"]
        z = torch.randn(self.options.eval_samples, self.z_dim, generator=torch.Generator().manual_seed(self.env.seed))
        m = ring_metrics(G(z.to(self.env.device)))
        return {f"ring/{k}": torch.tensor(float(v)) for k, v in m.items()}
