"""pix2pix (Isola et al. 2017) as a recipe: G maps A -> B, D judges (A, B) pairs with a PatchGAN; G's loss is the
cGAN loss plus lambda * L1 to the target. Data: pairs as 2C-channel images (gankern/data/paired.py). Held-out pairs
(``val_data``) give L1, PSNR and SSIM of G (eval mode) in every log row. ``gankern translate`` applies G to images.

The trainer core has no learning-rate schedules: :class:`LinearDecay` does pix2pix's "constant, then linear decay to
0" inside the recipe by scaling each optimizer step's update (exact for Adam without weight decay, whose step is
lr * m / (sqrt(v) + eps): the moments do not depend on lr)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...data.paired import split_ab
from ...models.pix2pix import PatchGAN, UNet, init_weights
from .base import Batch, OptSpec, Phase, Recipe


def held_out(recipe) -> torch.Tensor:
    """The first ``options.val_n`` pairs (n, 2C, R, R) of ``options.val_data`` on the recipe's device."""
    from ...data import open_dataset
    o, env = recipe.options, recipe.env
    ds = open_dataset(o.val_data, env.resolution, env.channels // 2)
    if ds.channels != env.channels:
        raise ValueError(f"recipe.val_data {o.val_data}: {ds.channels} channels, the training pairs {env.channels}")
    return torch.stack([ds[i][0] for i in range(min(o.val_n, len(ds)))]).to(env.device)


@torch.no_grad()
def eval_batches(G: torch.nn.Module, x: torch.Tensor, *args, chunk: int = 64) -> torch.Tensor:
    """G(x, *args) in eval mode, ``chunk`` images at a time (float32); G's mode is restored."""
    was = G.training
    G.eval()
    out = torch.cat([G(x[i:i + chunk], *args) for i in range(0, len(x), chunk)]).float()
    G.train(was)
    return out


@torch.no_grad()
def held_out_scores(recipe, prepare=None) -> dict[str, torch.Tensor]:
    """L1 (on [-1, 1]), PSNR and SSIM of ``recipe.nets["G"]`` (eval mode) on the first ``val_n`` held-out pairs of
    ``options.val_data`` (read once into ``recipe.val``); ``prepare`` maps the inputs A to G's input."""
    if not recipe.options.val_data:
        return {}
    if recipe.val is None:
        recipe.val = held_out(recipe)
    a, b = split_ab(recipe.val)
    out = eval_batches(recipe.nets["G"], prepare(a) if prepare else a)
    psnr, ssim = psnr_ssim(out, b)
    return {"val/l1": (out - b).abs().mean(), "val/psnr": psnr, "val/ssim": ssim}


@torch.no_grad()
def translation_sheet(recipe, columns, n: int = 8) -> dict[str, tuple[torch.Tensor, int]]:
    """The snapshot sheet of an image-to-image recipe: {"translations": (images, columns per row)}, one row per held-out
    pair of the first ``n`` (``options.val_data``; {} without it), its columns ``columns(a, b)``, a list of (n', C, R,
    R) tensors (e.g. input | output | target)."""
    if not recipe.options.val_data:
        return {}
    if recipe.val is None:
        recipe.val = held_out(recipe)
    cols = columns(*split_ab(recipe.val[:n]))
    return {"translations": (torch.stack([c.float() for c in cols], 1).flatten(0, 1), len(cols))}


class LinearDecay:
    """lr factor 1 for steps < decay_from * total, then linearly down to 1 / (n + 1) at the last of the n decaying
    steps (the official code's per-epoch rule, per step). ``before(net)`` copies the net's parameters (once per
    optimizer step: call it in every accumulation round), ``after(net, step)`` moves them back to
    old + factor * (new - old), i.e. the step taken with lr * factor."""

    def __init__(self, nets: dict, total_steps: int, decay_from: float):
        self.nets, self.total, self.start = nets, total_steps, int(round(decay_from * total_steps))
        self.old: dict[str, list[torch.Tensor]] = {}

    def factor(self, step: int) -> float:
        n = self.total - self.start
        return 1.0 if step < self.start else 1.0 - (step - self.start + 1) / (n + 1)

    def before(self, net: str) -> None:
        if net not in self.old:
            self.old[net] = [p.detach().clone() for p in self.nets[net].parameters()]

    @torch.no_grad()
    def after(self, net: str, step: int) -> None:
        old, f = self.old.pop(net, None), self.factor(step)
        if old is not None and f < 1.0:
            for p, o in zip(self.nets[net].parameters(), old):
                p.copy_(torch.lerp(o, p, f))


def psnr_ssim(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean PSNR (dB) and SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K = 0.01, 0.03, valid region,
    averaged over channels) of images x, y (N, C, H, W) in [-1, 1], measured on [0, 1]."""
    x, y = (x.float().clamp(-1, 1) + 1) / 2, (y.float().clamp(-1, 1) + 1) / 2
    mse = (x - y).pow(2).flatten(1).mean(1)
    psnr = (10 * torch.log10(1.0 / mse.clamp_min(1e-10))).mean()
    k = min(11, x.shape[-1], x.shape[-2])
    g = torch.exp(-(torch.arange(k, dtype=torch.float32, device=x.device) - (k - 1) / 2) ** 2 / (2 * 1.5 ** 2))
    g = g / g.sum()
    w = (g[:, None] * g[None, :]).expand(x.shape[1], 1, k, k)

    def blur(t):
        return F.conv2d(t, w, groups=x.shape[1])
    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    ssim = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (sxx + syy + c2))
    return psnr, ssim.mean()


@dataclass
class Pix2PixOptions:
    ngf: int = 64                # G's base width (x2 per level, at most x8)
    ndf: int = 64                # D's base width
    depth: int = 0               # U-Net levels; 0: log2(resolution) (down to 1x1, as the paper's 256 px U-Net)
    n_dropout: int = 3           # levels with dropout 0.5 below the innermost (the noise)
    d_layers: int = 3            # PatchGAN stride-2 layers: 3 = 70x70 patches, 2 = 34x34
    norm: str = "batch"          # batch | instance
    l1: float = 100.0            # lambda of the L1 term
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    decay_from: float = 0.5      # fraction of the run with constant lr; then linear decay to 0 (1.0: no decay)
    val_data: str = ""           # held-out pairs (a paired data spec) for L1 / PSNR / SSIM in the log rows
    val_n: int = 64              # held-out pairs used

    def validate(self) -> None:
        if self.norm not in ("batch", "instance"):
            raise ValueError(f"recipe.norm must be batch or instance, not '{self.norm}'")
        if not 0.0 <= self.decay_from <= 1.0:
            raise ValueError(f"recipe.decay_from must lie in [0, 1], got {self.decay_from}")
        if self.l1 < 0 or self.val_n < 1:
            raise ValueError(f"recipe.l1 must be >= 0 and recipe.val_n >= 1, got {self.l1}, {self.val_n}")


class Pix2PixRecipe(Recipe):
    """Nets G (U-Net, C -> C channels) and D (PatchGAN on 2C channels: A then B); phases D then G; no G_ema."""
    Options = Pix2PixOptions
    ema = None

    def __init__(self, options: Pix2PixOptions, env):
        super().__init__(options, env)
        o, r = options, env.resolution
        if env.channels % 2:
            raise ValueError(f"pix2pix trains on image pairs (2C channels: A then B), got {env.channels}-channel "
                             f"images: use --data aligned:DIR, paired:DIR or digits-edges")
        self.c = env.channels // 2
        depth = o.depth or max(2, r.bit_length() - 1)
        if r % 2 ** depth:
            raise ValueError(f"pix2pix: resolution {r} must divide by 2**depth = {2 ** depth} (recipe.depth)")
        self.nets = {"G": init_weights(UNet(self.c, self.c, o.ngf, depth, o.norm, o.n_dropout)),
                     "D": init_weights(PatchGAN(2 * self.c, o.ndf, o.d_layers, o.norm))}
        self.optimizers = {n: OptSpec("adam", o.lr, tuple(o.betas)) for n in self.nets}
        self.phases = [Phase("D", "D"), Phase("G", "G")]
        self.decay = LinearDecay(self.nets, env.total_steps, o.decay_from)
        self.val = None

    def generate(self, G, z, c):
        raise ValueError("a pix2pix run translates images: use gankern translate --run DIR --input DIR --out DIR")

    def translate(self, G, x: torch.Tensor, direction: str = "AB") -> torch.Tensor:
        """G's B for inputs A x (N, C, R, R); ``gankern translate``."""
        if direction != "AB":
            raise ValueError("pix2pix translates A -> B only (--direction AB)")
        return G(x)

    def accumulate_gradients(self, phase, b: Batch, gain):
        a, real_b = split_ab(b.real)
        self.decay.before(phase)
        with self.env.autocast():
            fake = self.nets["G"](a)           # in grad mode in the D phase too: G's weights do not require grad
            lf = self.nets["D"](torch.cat([a, fake], 1))
            if phase == "D":
                lr = self.nets["D"](torch.cat([a, real_b], 1))
                loss = 0.5 * (F.softplus(-lr).mean() + F.softplus(lf).mean())     # halved, as the paper
                stats = {"D/loss": loss, "D/real": lr.float().mean(), "D/fake": lf.float().mean()}
            else:
                gan, l1 = F.softplus(-lf).mean(), (fake - real_b).abs().mean()
                loss = gan + self.options.l1 * l1
                stats = {"G/loss": loss, "G/gan": gan, "G/l1": l1}
        self.env.backward(loss * gain)
        return {k: v.detach().float() for k, v in stats.items()}

    def after_step(self, phase, step):
        self.decay.after(phase, step)

    def log_stats(self):
        return held_out_scores(self)

    def snapshot_sheets(self, G, seed):
        """Held-out input | output | target, a pair per row."""
        return translation_sheet(self, lambda a, b: [a, eval_batches(self.nets["G"], a), b])
