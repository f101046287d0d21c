"""LAPGAN (Denton et al. 2015, "Deep Generative Image Models using a Laplacian Pyramid of Adversarial Networks"):
the levels of gankern.models.lapgan's pyramid trained independently on the Laplacian pyramids of the real images, as
the paper trains them: level 0 is an unconditional GAN on the coarsest real images; level l's G makes a residual for
the upsampled *real* coarser image u(I_{l-1}) and D_l tells h_l + u(I_{l-1}) from G_l(z_l, u(I_{l-1})) + u(I_{l-1}).
The levels do not interact, so all train in the same step: one loss, the sum of the levels' losses, and one Adam per
net (elementwise: the same as one optimizer per level). Non-saturating GAN loss; Adam(2e-4, 0.5, 0.999) (the paper
used SGD with momentum). Sampling (snapshots, FID, ``gankern generate``) runs the whole pyramid, coarse to fine.
Stats: ``D/loss`` and ``G/loss`` (sums over levels), ``D/loss<l>``, ``G/loss<l>`` per level."""
from __future__ import annotations

from dataclasses import dataclass, field

from ... import losses
from ...models.lapgan import Discriminator, Generator, LAPGANModelConfig, level_sizes
from .base import Batch, OptSpec, Phase, Recipe


@dataclass
class LAPGANOptions:
    model: LAPGANModelConfig = field(default_factory=LAPGANModelConfig)
    loss: str = "nonsaturating"  # a gankern.losses name
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)

    def validate(self) -> None:
        losses.get_loss(self.loss)
        m = self.model
        if min(m.z0_dim, m.g0_hidden, m.g_ch, m.d_ch) < 1:
            raise ValueError("model.z0_dim, g0_hidden, g_ch and d_ch must be >= 1")


class LAPGANRecipe(Recipe):
    """Phases D, G; every pyramid level in each."""
    Options = LAPGANOptions

    def __init__(self, options: LAPGANOptions, env):
        super().__init__(options, env)
        m = options.model
        self.levels = len(level_sizes(m, env.resolution))
        G = Generator(m, env.resolution, env.channels)
        self.z_dim = G.z_dim
        self.nets = {"G": G, "D": Discriminator(m, env.resolution, env.channels)}
        self.optimizers = {n: OptSpec("adam", options.lr, tuple(options.betas)) for n in self.nets}
        self.phases = [Phase("D", "D"), Phase("G", "G")]

    def accumulate_gradients(self, phase, b: Batch, gain):
        G, D, name = self.nets["G"], self.nets["D"], self.options.loss
        stats = {}
        with self.env.autocast():
            pyr = G.pyramid.laplacian(b.real, self.levels)
            for lv, (target, low) in enumerate(pyr):
                fake = G.level(lv, b.z, low)          # in the D phase G's weights do not require grad: no graph
                if low is not None:                   # D_l sees the residual with the low-pass image added
                    target, fake = target + low, fake + low
                if phase == "G":
                    stats[f"G/loss{lv}"] = losses.g_loss(name, D(lv, fake))
                else:
                    lr, lf = D(lv, target), D(lv, fake.detach())
                    stats[f"D/loss{lv}"] = losses.d_loss(name, lr, lf)
                    stats[f"D/real{lv}"], stats[f"D/fake{lv}"] = lr.float().mean(), lf.float().mean()
            loss = sum(v for k, v in stats.items() if k.startswith(f"{phase}/loss"))
            stats[f"{phase}/loss"] = loss
        self.env.backward(loss * gain)
        return {k: v.detach().float() for k, v in stats.items()}
