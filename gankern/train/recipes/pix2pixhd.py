"""pix2pixHD (Wang et al. 2018) as a recipe: label map -> image. G reads the one-hot label map (label id = the
pixel value of the map, as Cityscapes' labelIds PNGs); ``local=0`` trains the global generator G1, ``local=1`` the
local enhancer G2 at twice G1's resolution, its G1 started from a global run (``init_global``: the official
``--load_pretrain``) and frozen for the first ``fix_global`` of the run (``--niter_fix_global``), as the paper trains
coarse to fine. D: ``num_D`` PatchGANs at 1, 1/2, ... resolution on (one-hot map, image); LSGAN loss, the
feature-matching loss (lambda ``feat``: L1 between D's features of real and fake pairs, every layer and scale) and,
when the user gives VGG19's weights (``vgg``: nothing downloads), the VGG perceptual loss (lambda ``vgg_weight``);
Adam(2e-4, 0.5, 0.999), lr constant then linear decay (pix2pix's LinearDecay). Held-out pairs (``val_data``) give
L1, PSNR and SSIM in the log rows. ``gankern translate`` maps label images.

Not implemented: the instance-boundary map and the instance-wise feature encoder of the paper (inputs are label maps
only)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...data.paired import split_ab
from ...models.cyclegan import ResnetGenerator
from ...models.pix2pix import init_weights
from ...models.pix2pixhd import LocalEnhancer, MultiscaleDiscriminator, VGG19Features
from .base import Batch, OptSpec, Phase, Recipe
from .pix2pix import LinearDecay, eval_batches, held_out_scores, translation_sheet


@dataclass
class Pix2PixHDOptions:
    n_labels: int = 35           # label ids 0..n_labels-1 (35: Cityscapes' labelIds)
    ngf: int = 64                # G1's base width (global run); the local enhancer's front end uses ngf / 2
    n_down_global: int = 4       # G1's stride-2 levels
    n_blocks_global: int = 9     # G1's ResBlocks
    local: int = 0               # 0: train G1 (the global generator); 1: G2, the local enhancer around a G1
    n_blocks_local: int = 3      # G2's ResBlocks
    init_global: str = ""        # local=1: a global run (dir or ckpt-*.pt) whose G becomes G2's G1
    fix_global: float = 0.0      # local=1: fraction of the run with G1 frozen (only the enhancer trains)
    ndf: int = 64                # D's base width
    num_D: int = 3               # discriminator scales
    d_layers: int = 3            # stride-2 layers of each PatchGAN
    norm: str = "instance"       # instance | batch
    feat: float = 10.0           # lambda of the feature-matching loss (0: off)
    vgg: str = ""                # VGG19 weights (torchvision's state dict .pth or .safetensors): the VGG loss
    vgg_weight: float = 10.0     # lambda of the VGG loss
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    decay_from: float = 0.5      # fraction of the run with constant lr; then linear decay to 0
    val_data: str = ""           # held-out pairs for L1 / PSNR / SSIM in the log rows
    val_n: int = 64

    def validate(self) -> None:
        if self.n_labels < 2 or self.local not in (0, 1) or self.num_D < 1 or self.d_layers < 1:
            raise ValueError(f"recipe.n_labels must be >= 2, recipe.local 0 or 1, recipe.num_D and d_layers >= 1; "
                             f"got {self.n_labels}, {self.local}, {self.num_D}, {self.d_layers}")
        if self.norm not in ("batch", "instance"):
            raise ValueError(f"recipe.norm must be batch or instance, not '{self.norm}'")
        if not (0.0 <= self.decay_from <= 1.0 and 0.0 <= self.fix_global <= 1.0):
            raise ValueError(f"recipe.decay_from and recipe.fix_global must lie in [0, 1], got {self.decay_from}, "
                             f"{self.fix_global}")


class Pix2PixHDRecipe(Recipe):
    """Nets G (G1, or G2 around G1) and D (multi-scale); phases D then G; no G_ema."""
    Options = Pix2PixHDOptions
    ema = None
    label_input = True           # ``gankern translate`` reads its inputs as label maps (nearest resize)

    def __init__(self, options: Pix2PixHDOptions, env):
        super().__init__(options, env)
        o, r = options, env.resolution
        if env.channels % 2:
            raise ValueError(f"pix2pixhd trains on (label map, image) pairs (2C channels), got {env.channels} "
                             f"channels: use --data labels:DIR (A: label maps, B: images) or digits-labels")
        self.c = env.channels // 2
        levels = o.n_down_global + o.local
        if r % 2 ** levels:
            raise ValueError(f"pix2pixhd: resolution {r} must divide by 2**{levels} (n_down_global + local)")
        if r // 2 ** (o.num_D - 1) < 3 * 2 ** o.d_layers:
            raise ValueError(f"pix2pixhd: at {r} px the coarsest of {o.num_D} D scales is {r // 2 ** (o.num_D - 1)} "
                             f"px, below the {3 * 2 ** o.d_layers} px a {o.d_layers}-layer PatchGAN needs: lower "
                             f"recipe.num_D or recipe.d_layers")
        if o.local:
            G = LocalEnhancer(o.n_labels, self.c, o.ngf // 2, o.n_blocks_local, o.n_down_global, o.n_blocks_global,
                              o.norm)
        else:
            G = ResnetGenerator(o.n_labels, self.c, o.ngf, o.n_blocks_global, o.n_down_global, o.norm)
        self.nets = {"G": init_weights(G),
                     "D": init_weights(MultiscaleDiscriminator(o.n_labels + self.c, o.ndf, o.d_layers, o.num_D,
                                                               o.norm))}
        if o.local and o.init_global:
            self._load_global(o.init_global)
        self.optimizers = {n: OptSpec("adam", o.lr, tuple(o.betas)) for n in self.nets}
        self.phases = [Phase("D", "D"), Phase("G", "G")]
        self.decay = LinearDecay(self.nets, env.total_steps, o.decay_from)
        self.vgg = VGG19Features.from_file(o.vgg).to(env.device).eval() if o.vgg else None
        self.g_steps, self.val = 0, None

    def _load_global(self, run: str) -> None:
        """G1 <- the G of a global (local=0) pix2pixhd run's newest checkpoint (or a checkpoint file)."""
        import os

        from .. import checkpoint
        from ..config import RunConfig
        s = checkpoint.load(run, "cpu") if os.path.isfile(run) else checkpoint.load_newest(run, "cpu")[1]
        cfg = RunConfig.from_json(s["config"])
        if cfg.recipe != "pix2pixhd" or cfg.options.local:
            raise ValueError(f"recipe.init_global={run}: not a global (local=0) pix2pixhd run")
        try:
            self.nets["G"].global_.load_state_dict(s["G"])
        except RuntimeError as e:
            raise ValueError(f"recipe.init_global={run}: its G does not fit this G1: give this run that run's ngf, "
                             f"n_down_global and n_blocks_global ({str(e).splitlines()[0]})") from None

    def onehot(self, a: torch.Tensor) -> torch.Tensor:
        """Label maps a (N, C, H, W) in [-1, 1] (channel 0: id / 255) -> one-hot (N, n_labels, H, W)."""
        ids = ((a[:, 0].float() + 1) * 127.5).round().long()
        k = self.options.n_labels
        if int(ids.max()) >= k or int(ids.min()) < 0:
            raise ValueError(f"a label map holds id {int(ids.max())}, and recipe.n_labels is {k}: set it to at least "
                             f"{int(ids.max()) + 1}")
        return F.one_hot(ids, k).permute(0, 3, 1, 2).to(a.dtype)

    def generate(self, G, z, c):
        raise ValueError("a pix2pixhd run maps label maps: use gankern translate --run DIR --input DIR --out DIR")

    def translate(self, G, x: torch.Tensor, direction: str = "AB") -> torch.Tensor:
        """G's image for label-map images x (N, C, R, R) (pixel value = label id); ``gankern translate``."""
        if direction != "AB":
            raise ValueError("pix2pixhd translates label maps to images only (--direction AB)")
        return G(self.onehot(x))

    def _g1_frozen(self) -> bool:
        return bool(self.options.local) and self.g_steps < self.options.fix_global * self.env.total_steps

    def accumulate_gradients(self, phase, b: Batch, gain):
        o, G, D = self.options, self.nets["G"], self.nets["D"]
        a, real = split_ab(b.real)
        lab = self.onehot(a)
        self.decay.before(phase)
        with self.env.autocast():
            fake = G(lab)
            fake_feats = D(torch.cat([lab, fake if phase == "G" else fake.detach()], 1))
            real_feats = D(torch.cat([lab, real], 1))
            if phase == "D":
                lf = sum(F.mse_loss(f[-1], torch.zeros_like(f[-1])) for f in fake_feats)
                lr = sum(F.mse_loss(f[-1], torch.ones_like(f[-1])) for f in real_feats)
                loss = 0.5 * (lf + lr)
                stats = {"D/loss": loss, "D/real": lr, "D/fake": lf}
            else:
                gan = sum(F.mse_loss(f[-1], torch.ones_like(f[-1])) for f in fake_feats)
                w = o.feat * 4.0 / (o.d_layers + 1) / o.num_D
                fm = w * sum(F.l1_loss(ff, fr.detach()) for fs, rs in zip(fake_feats, real_feats)
                             for ff, fr in zip(fs[:-1], rs[:-1]))
                loss, stats = gan + fm, {"G/gan": gan, "G/feat": fm}
                if self.vgg is not None:
                    rgb = (lambda x: x.expand(-1, 3, -1, -1)) if self.c == 1 else (lambda x: x)
                    vf, vr = self.vgg(rgb(fake)), self.vgg(rgb(real))
                    vgg = o.vgg_weight * sum(wi * F.l1_loss(x, y.detach())
                                             for wi, x, y in zip((1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0), vf, vr))
                    loss, stats["G/vgg"] = loss + vgg, vgg
                stats["G/loss"] = loss
        self.env.backward(loss * gain)
        if phase == "G" and self._g1_frozen():
            for p in G.global_.parameters():                  # Adam skips parameters without a gradient
                p.grad = None
        return {k: v.detach().float() for k, v in stats.items()}

    def after_step(self, phase, step):
        self.decay.after(phase, step)
        self.g_steps += phase == "G"

    def log_stats(self):
        return held_out_scores(self, self.onehot)

    def snapshot_sheets(self, G, seed):
        """Held-out label map (ids spread over the gray levels) | output | target, a pair per row."""
        def columns(a, b):
            ids = self.onehot(a).argmax(1, keepdim=True).to(b.dtype).expand_as(b)
            return [ids / (self.options.n_labels - 1) * 2 - 1, eval_batches(self.nets["G"], self.onehot(a)), b]
        return translation_sheet(self, columns)

    def state_dict(self):
        return {"g_steps": self.g_steps}

    def load_state_dict(self, state):
        self.g_steps = int(state["g_steps"])
