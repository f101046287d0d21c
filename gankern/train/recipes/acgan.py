"""ACGAN (Odena et al. 2017, "Conditional Image Synthesis with Auxiliary Classifier GANs"): an unconditional D with an
auxiliary classifier head on its features; D minimizes the GAN loss plus the class cross-entropy on reals and fakes,
G the GAN loss plus the cross-entropy of its images' classes. Logs the classifier accuracy on generated classes."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ... import losses
from ...models import build
from ...models.acgan import AuxHead
from .base import Batch
from .classic import ClassicOptions, ClassicRecipe


@dataclass
class AuxConfig:
    weight: float = 1.0          # weight of the class cross-entropy in D's and G's losses


@dataclass
class ACGANOptions(ClassicOptions):
    aux: AuxConfig = field(default_factory=AuxConfig)

    def conditional(self) -> bool:
        return True                                  # G takes labels whatever model.cond says (D's is unconditional)


class ACGANRecipe(ClassicRecipe):
    """The classic recipe's losses, optimizers, penalties and phases; G(z, y) conditional, D(x) -> (logits, classes)."""
    Options = ACGANOptions

    def __init__(self, options: ACGANOptions, env):
        if env.num_classes <= 0:
            raise ValueError("ACGAN needs a labelled data set (its D classifies the images): use --data digits or "
                             "labels")
        m = options.model
        super().__init__(dataclasses.replace(options, model=dataclasses.replace(m, cond="none")), env)
        self.options = options
        self.num_classes = env.num_classes
        G, _ = build(dataclasses.replace(m, cond="concat"), env.resolution, env.channels, env.num_classes)
        self.nets = {"G": G, "D": AuxHead(self.nets["D"], env.num_classes, m.mbdisc)}

    def _aux(self, img, seed):
        """(logits, class logits) of D on img, with the classic recipe's instance noise."""
        if self.sigma > 0:
            g = torch.Generator().manual_seed(seed)
            img = img + (self.sigma * torch.randn(img.shape, generator=g)).to(img.device, img.dtype)
        return self.nets["D"].forward_aux(img)

    def accumulate_gradients(self, phase, b: Batch, gain):
        if phase == "Dreg":
            return super().accumulate_gradients(phase, b, gain)
        lc, w, env = self.options.loss, self.options.aux.weight, self.env
        with env.autocast():
            fake = self.run_G(b.z, b.c_gen)
            lf, cf = self._aux(fake, b.seed + 1)
            ce_fake = F.cross_entropy(cf.float(), b.c_gen)
            acc = (cf.argmax(1) == b.c_gen).float().mean()
            if phase == "G":
                adv = losses.g_loss(lc.name, lf)
                stats = {"G/loss": adv, "G/ce": ce_fake, "G/acc": acc, **self.mode_seeking(b, fake)}
                loss = adv + w * ce_fake + stats.get("G/ms", 0.0)
            else:
                lr, cr = self._aux(b.real, b.seed)
                ce_real = F.cross_entropy(cr.float(), b.c)
                adv = losses.d_loss(lc.name, lr, lf, lc.real_target)
                loss = adv + w * (ce_real + ce_fake)
                stats = {"D/loss": adv, "D/real": lr.float().mean(), "D/fake": lf.float().mean(),
                         "D/ce_real": ce_real, "D/ce_fake": ce_fake, "D/acc_real": (cr.argmax(1) == b.c).float().mean(),
                         "D/acc_fake": acc}
                if not self.lazy:
                    pen = self._penalties(b, fake, "D")
                    stats.update(pen)
                    loss = loss + sum(pen.values())
        env.backward(loss * gain)
        return {k: v.detach().float() for k, v in stats.items()}
