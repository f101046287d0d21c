"""LAPGAN (Denton et al. 2015, "Deep Generative Image Models using a Laplacian Pyramid of Adversarial Networks"):
the levels of gankern.models.lapgan's pyramid trained independently on the Laplacian pyramids of the real images, as
the paper trains them: level 0 is an unconditional GAN on the coarsest real images; level l's G makes a residual for
the upsampled *real* coarser image u(I_{l-1}) and D_l tells h_l + u(I_{l-1}) from G_l(z_l, u(I_{l-1})) + u(I_{l-1}).
The levels do not interact, so all train in the same step: one loss, the sum of the levels' losses, and one Adam per
net (the same as one optimizer per level: SGD and Adam act per parameter). Non-saturating GAN loss. The paper's
optimizer (section 4): SGD with lr 0.02 divided by (1 + 4e-5) at each epoch and momentum 0.5, raised by 0.0008 at each
epoch up to 0.8; an epoch is ``epoch_kimg`` thousand real images (the paper's CIFAR-10: 50), counted by the recipe so a
resumed run has the same schedule. ``optimizer=adam``: Adam(lr, betas) instead. Sampling (snapshots, FID, ``gankern
generate``) runs the whole pyramid, coarse to fine. Stats: ``D/loss`` and ``G/loss`` (sums over levels),
``D/loss<l>``, ``G/loss<l>`` per level, ``lapgan/lr`` and ``lapgan/momentum``."""
from __future__ import annotations

from dataclasses import dataclass, field

from ... import losses
from ...models.lapgan import Discriminator, Generator, LAPGANModelConfig, level_sizes
from .base import Batch, OptSpec, Phase, Recipe


@dataclass
class LAPGANOptions:
    model: LAPGANModelConfig = field(default_factory=LAPGANModelConfig)
    loss: str = "nonsaturating"  # a gankern.losses name
    optimizer: str = "sgd"       # sgd (the paper's, with the schedules below) | adam (Adam(lr, betas))
    lr: float = 0.02             # SGD's initial lr (Adam: its lr)
    lr_decay: float = 4e-5       # SGD: lr / (1 + lr_decay) ** epoch
    momentum: float = 0.5        # SGD's initial momentum, + momentum_step per epoch up to momentum_max
    momentum_step: float = 0.0008
    momentum_max: float = 0.8
    epoch_kimg: float = 50.0     # real images (thousands) per epoch of the schedules
    betas: tuple[float, float] = (0.5, 0.999)   # Adam's

    def validate(self) -> None:
        losses.get_loss(self.loss)
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer='{self.optimizer}' must be sgd or adam")
        if not (self.lr > 0 and self.epoch_kimg > 0 and self.lr_decay >= 0 and 0 <= self.momentum <= 1
                and 0 <= self.momentum_max <= 1):
            raise ValueError("lr and epoch_kimg must be > 0, lr_decay >= 0, momentum and momentum_max in [0, 1]")
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
        o = options
        betas = tuple(o.betas) if o.optimizer == "adam" else (o.momentum, 0.0)
        self.optimizers = {n: OptSpec(o.optimizer, o.lr, betas) for n in self.nets}
        self.phases = [Phase("D", "D"), Phase("G", "G")]
        self.nimg, self._seen = 0, 0

    def schedule(self) -> tuple[float, float]:
        """SGD's (lr, momentum) after ``self.nimg`` real images (the paper's per-epoch schedules)."""
        o = self.options
        epoch = int(self.nimg // (o.epoch_kimg * 1000))
        return o.lr / (1 + o.lr_decay) ** epoch, min(o.momentum_max, o.momentum + o.momentum_step * epoch)

    def after_step(self, phase, step):
        if phase == "G":
            self.nimg, self._seen = self.nimg + self._seen, 0
            if self.options.optimizer == "sgd":
                lr, momentum = self.schedule()
                for opt in self.opt.values():
                    for g in opt.param_groups:
                        g["lr"], g["momentum"] = lr, momentum

    def log_stats(self):
        lr, momentum = self.schedule() if self.options.optimizer == "sgd" else (self.options.lr, 0.0)
        return {"lapgan/lr": lr, "lapgan/momentum": momentum}

    def state_dict(self):
        return {"nimg": self.nimg}

    def load_state_dict(self, state):
        self.nimg, self._seen = int(state["nimg"]), 0

    def accumulate_gradients(self, phase, b: Batch, gain):
        G, D, name = self.nets["G"], self.nets["D"], self.options.loss
        stats = {}
        if phase == "D":
            self._seen += b.real.shape[0] * self.env.world
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
