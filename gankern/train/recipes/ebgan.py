"""EBGAN (Zhao et al. 2017, "Energy-based Generative Adversarial Network"): D is an autoencoder whose per-image
reconstruction MSE is an energy E; D minimizes E(x) + [m - E(G(z))]^+ (margin m), G minimizes E(G(z)) plus
``pt_weight`` times the pulling-away term PT (mean squared cosine similarity between the encoder embeddings of the
batch's distinct fakes), which pushes G's samples apart. G is a DCGAN generator (gankern.models.dcgan)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ...models import ModelConfig
from ...models.autoenc import AEModelConfig, AutoEncoderD
from ...models.dcgan import Generator
from .base import Batch, OptSpec, Phase, Recipe


@dataclass
class EBGANConfig:
    margin: float = 1.0          # m, in units of the per-pixel MSE of images in [-1, 1]
    pt_weight: float = 0.1       # weight of the pulling-away term in G's loss (0: EBGAN without PT)
    lr: float = 2e-4             # Adam(lr, 0.5, 0.999) for G and D
    g_norm: str = "bn"           # G's normalization (bn | none)


@dataclass
class EBGANOptions:
    model: AEModelConfig = field(default_factory=AEModelConfig)
    ebgan: EBGANConfig = field(default_factory=EBGANConfig)

    def validate(self) -> None:
        if self.ebgan.margin <= 0:
            raise ValueError(f"ebgan.margin={self.ebgan.margin} must be > 0")


def pulling_away(h: torch.Tensor) -> torch.Tensor:
    """PT of embeddings h (N, D), N >= 2: mean over i != j of cos(h_i, h_j)^2 (0: orthogonal, 1: parallel)."""
    s = F.normalize(h.float().flatten(1), dim=1)
    n = s.shape[0]
    sim = (s @ s.t()) ** 2
    return (sim.sum() - sim.diagonal().sum()) / (n * (n - 1))


def energy(D, v):
    """Per-image reconstruction MSE (N,) of the autoencoder D, and D's embedding (N, h_dim)."""
    rec, h = D(v)
    return (rec.float() - v.float()).pow(2).flatten(1).mean(1), h


class EBGANRecipe(Recipe):
    """Phases D, G; the margin loss in D, the energy plus the pulling-away term in G."""
    Options = EBGANOptions

    def __init__(self, options: EBGANOptions, env):
        super().__init__(options, env)
        m, e = options.model, options.ebgan
        self.z_dim = m.z_dim
        G = Generator(ModelConfig(z_dim=m.z_dim, g_ch=m.g_ch, g_norm=e.g_norm), env.resolution, env.channels)
        self.nets = {"G": G, "D": AutoEncoderD(m, env.resolution, env.channels)}
        self.optimizers = {n: OptSpec("adam", e.lr, (0.5, 0.999)) for n in self.nets}
        self.phases = [Phase("D", "D"), Phase("G", "G")]

    def accumulate_gradients(self, phase, b: Batch, gain):
        e = self.options.ebgan
        with self.env.autocast():
            ef, h = energy(self.nets["D"], self.run_G(b.z, None))
            if phase == "D":
                er = energy(self.nets["D"], b.real)[0]
                loss = er.mean() + F.relu(e.margin - ef).mean()
                stats = {"D/loss": loss, "D/real": -er.mean(), "D/fake": -ef.mean()}   # scores: minus energies
            else:
                pt = pulling_away(h) if h.shape[0] > 1 else h.new_zeros(())
                loss = ef.mean() + e.pt_weight * pt
                stats = {"G/loss": ef.mean(), "G/pt": pt}
        self.env.backward(loss * gain)
        return {k: v.detach().float() for k, v in stats.items()}
