"""BEGAN (Berthelot et al. 2017, "BEGAN: Boundary Equilibrium Generative Adversarial Networks"): D is an autoencoder
and L(v) = mean |v - D(v)| its per-image L1 reconstruction loss; L_D = L(x) - k_t L(G(z)), L_G = L(G(z)), with the
equilibrium term k_{t+1} = clip(k_t + lambda_k (gamma L(x) - L(G(z))), 0, 1) and the convergence measure
M_global = L(x) + |gamma L(x) - L(G(z))| logged (``G/M_global``, ``began/k``). G has the decoder's architecture.
k_t is averaged over DDP ranks when torch.distributed is initialized, so every rank keeps the same k_t."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.distributed as tdist

from ...models.autoenc import AEModelConfig, AutoEncoderD, Decoder
from .base import Batch, OptSpec, Phase, Recipe


@dataclass
class BEGANConfig:
    gamma: float = 0.5           # diversity ratio E L(G(z)) / E L(x) the equilibrium aims at
    lambda_k: float = 0.001      # learning rate of k_t
    lr: float = 1e-4             # Adam(lr, 0.5, 0.999) for G and D (the paper's; it halves lr on stalls: not here)


@dataclass
class BEGANOptions:
    model: AEModelConfig = field(default_factory=AEModelConfig)
    began: BEGANConfig = field(default_factory=BEGANConfig)

    def validate(self) -> None:
        if not 0 < self.began.gamma <= 1:
            raise ValueError(f"began.gamma={self.began.gamma} must be in (0, 1]")


def recon_l1(D, v):
    """Per-image L1 reconstruction loss of the autoencoder D: (N,) and D's embedding."""
    rec, h = D(v)
    return (rec.float() - v.float()).abs().flatten(1).mean(1), h


class BEGANRecipe(Recipe):
    """Phases D, G; k_t updated after each G step from that step's L(x) (D phase) and L(G(z)) (G phase)."""
    Options = BEGANOptions

    def __init__(self, options: BEGANOptions, env):
        super().__init__(options, env)
        m = options.model
        self.z_dim = m.z_dim
        self.nets = {"G": Decoder(m.z_dim, m.g_ch, env.resolution, env.channels), "D": AutoEncoderD(
            m, env.resolution, env.channels)}
        self.optimizers = {n: OptSpec("adam", options.began.lr, (0.5, 0.999)) for n in self.nets}
        self.phases = [Phase("D", "D"), Phase("G", "G")]
        self.k = torch.zeros(())
        self._sums = {"D": [], "G": []}             # L(x) of the D rounds, L(G(z)) of the G rounds of this step

    def accumulate_gradients(self, phase, b: Batch, gain):
        D, gamma = self.nets["D"], self.options.began.gamma
        self.k = self.k.to(b.real.device)
        with self.env.autocast():
            lg = recon_l1(D, self.run_G(b.z, None))[0].mean()
            if phase == "D":
                lx = recon_l1(D, b.real)[0].mean()
                loss = lx - self.k * lg
                self._sums["D"].append(lx.detach())
                stats = {"D/loss": loss, "D/real": -lx, "D/fake": -lg}   # D's scores: minus the energies
            else:
                loss = lg
                self._sums["G"].append(lg.detach())
                lx = torch.stack(self._sums["D"]).mean() if self._sums["D"] else lg.detach()
                stats = {"G/loss": lg, "G/M_global": lx + (gamma * lx - lg).abs()}
        self.env.backward(loss * gain)
        return {k: v.detach().float() for k, v in stats.items()}

    def after_step(self, phase, step):
        if phase != "G":
            return
        c = self.options.began
        diff = c.gamma * torch.stack(self._sums["D"]).mean() - torch.stack(self._sums["G"]).mean()
        if tdist.is_available() and tdist.is_initialized():
            tdist.all_reduce(diff)
            diff /= tdist.get_world_size()
        self.k = (self.k + c.lambda_k * diff).clamp(0, 1)
        self._sums = {"D": [], "G": []}

    def log_stats(self):
        return {"began/k": self.k.detach().float()}

    def state_dict(self):
        return {"k": self.k.detach().cpu()}

    def load_state_dict(self, state):
        self.k = state["k"].to(self.env.device)
