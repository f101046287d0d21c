"""SinGAN (Rott Shaham, Dekel & Michaeli 2019) as a recipe: one G/D pair per scale (gankern/models/singan.py), trained
coarse to fine on one image (gankern/data/single.py: ``--data sample:china``, ``sample:flower`` or an image file).

Coarse to fine as a schedule over steps: all scales' nets live in the nets "G" and "D" (one Adam each: the scales
that are not trained get no gradient, so Adam leaves them and their moments alone, and a new scale starts with
fresh moments, as the official code's new optimizer per scale); the run's steps are split evenly over the n scales
(train.kimg spreads over them: at batch 1, 20 kimg over 10 scales is the paper's 2000 iterations per scale) and
the first D phase of a step that begins scale s freezes s - 1 (eval-mode batch norm, no gradient), copies its weights
into s when the widths agree, and sets s's noise amplitude to ``noise_amp`` times the RMSE between the real image at s
and the upsampled reconstruction of s - 1. Each step: ``d_steps`` critic steps (WGAN-GP: -D(real) + D(fake) +
``gp`` times the official per-pixel penalty mean_p (||grad_x D||_p - 1)^2), then ``g_steps`` generator steps (-D(fake)
+ ``alpha`` times the MSE of the reconstruction G(z_rec, 0, ...) to the image), fresh noise for each; the learning
rate drops x0.1 after ``decay_at`` of each scale's steps (the official 1600 of 2000), done as pix2pix's LinearDecay
does, by scaling the optimizer's update (exact for Adam). Where the schedule stands (the scale, noise amplitudes,
shapes, the seed of z_rec) lives in G's buffers, so checkpoints, G_ema and ``gankern generate`` carry it; the
recipe's own state is the step count, the schedule's bounds and Python copies of the scale and shapes (no host sync
per step): a resume continues bit-identically, mid-scale too.

Logged: ``rec/rmse`` (RMSE, on [-1, 1], of the reconstruction at the scale being trained), ``rec/scale`` and SIFID
of ``sifid_n`` samples (gankern/train/sifid.py; ``sifid_inception`` or ``sifid_digits``, by the features used).
``gankern generate --run DIR --n 16 --size 64x128 [--scale-start S --inject IMG]`` samples any size and injects.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...models.singan import SinGANCritic, SinGANGenerator, init_weights, pyramid_shapes, resize
from ...ops.penalty import grad_norm_penalty, interpolate
from ..dist import derive_seed
from .base import Batch, OptSpec, Phase, Recipe


@dataclass
class SinGANOptions:
    scale_factor: float = 0.75   # nominal ratio between scales: n = ceil(log(min_size / res) / log(f)) + 1 scales
    min_size: int = 25           # shorter side of the coarsest scale (px); the exact ratio fits the image to it
    width: int = 32              # channels of each scale's G and D, doubled every 4 scales ...
    max_width: int = 128         # ... up to this
    layers: int = 5              # 3x3 convolutions per G and D (receptive field 2 layers + 1)
    alpha: float = 10.0          # weight of the reconstruction loss
    gp: float = 0.1              # weight of the gradient penalty
    noise_amp: float = 0.1       # noise amplitude of scale s > 0: noise_amp * RMSE of the upsampled reconstruction
    lr: float = 5e-4
    betas: tuple[float, float] = (0.5, 0.999)
    d_steps: int = 3             # critic steps per step
    g_steps: int = 3             # generator steps per step
    decay_at: float = 0.8        # lr x0.1 after this fraction of each scale's steps (1.0: never)
    sifid: str = "auto"          # SIFID features: auto (inception when its weights are found, else digits) | off
    sifid_n: int = 4             # samples per SIFID evaluation (each log row)

    def validate(self) -> None:
        if not 0.0 < self.scale_factor < 1.0:
            raise ValueError(f"recipe.scale_factor must lie in (0, 1), got {self.scale_factor}")
        if min(self.min_size, self.width, self.d_steps, self.g_steps, self.sifid_n) < 1 or self.layers < 2:
            raise ValueError("recipe.min_size, width, d_steps, g_steps and sifid_n must be >= 1, layers >= 2")
        if self.max_width < self.width or not 0.0 <= self.decay_at <= 1.0:
            raise ValueError(f"recipe.max_width must be >= width and decay_at lie in [0, 1], got {self.max_width}, "
                             f"{self.decay_at}")
        if self.sifid not in ("auto", "inception", "digits", "off"):
            raise ValueError(f"recipe.sifid must be auto, inception, digits or off, not '{self.sifid}'")


def n_scales(o: SinGANOptions, resolution: int) -> int:
    """Scales of a run at ``resolution`` (the longer side): those from resolution down to min_size at scale_factor."""
    return max(0, math.ceil(math.log(o.min_size / resolution) / math.log(o.scale_factor))) + 1


@contextlib.contextmanager
def eval_mode(net: torch.nn.Module):
    """net and its submodules in eval mode inside the block, each module's own mode restored after."""
    modes = [(m, m.training) for m in net.modules()]
    net.eval()
    try:
        yield net
    finally:
        for m, t in modes:
            m.training = t


class SinGANRecipe(Recipe):
    """Nets G (SinGANGenerator) and D (SinGANCritic); phases D (d_steps repeats) then G (g_steps); z_dim 1: each
    sample's z seeds its noise maps. G_ema: with train.ema_kimg=0 (the singan rows) a copy of G for snapshots."""
    Options = SinGANOptions
    ema = "G"

    def __init__(self, options: SinGANOptions, env):
        super().__init__(options, env)
        o = options
        self.n = n_scales(o, env.resolution)
        self.nets = {"G": init_weights(SinGANGenerator(env.channels, self.n, o.width, o.max_width, o.layers)),
                     "D": init_weights(SinGANCritic(env.channels, self.n, o.width, o.max_width, o.layers))}
        self.optimizers = {k: OptSpec("adam", o.lr, tuple(o.betas)) for k in self.nets}
        self.phases = [Phase("D", "D", repeats=o.d_steps), Phase("G", "G", repeats=o.g_steps)]
        self.z_dim = 1
        T = env.total_steps
        self.bounds = [s * T // self.n for s in range(self.n)] + [T]      # scale s: steps [bounds[s], bounds[s + 1])
        self.done = 0                 # steps done (set by the last phase's after_step)
        self.s, self.shapes = -1, []  # G.scale and G.shapes as Python values: no host sync per step
        self.decaying = False         # this step's lr is x0.1 (fixed in the step's first D phase)
        self.old: dict[str, list[torch.Tensor]] = {}
        self.reals: list[torch.Tensor] = []
        self.rec_in: tuple | None = None          # (scale, prev, z) of the reconstruction's last scale
        self.features = None

    # -- the schedule ---------------------------------------------------------------------------------------------
    def _pyramid(self, real: torch.Tensor) -> list[torch.Tensor]:
        """The real images (B, C, h_s, w_s) of every scale; on first sight of the data, G's shapes and scale 0."""
        G = self.nets["G"]
        shapes = pyramid_shapes(*real.shape[-2:], self.n, self.options.min_size)
        if self.s < 0:
            G.shapes.copy_(torch.tensor(shapes))
            G.rec_seed.fill_(derive_seed(self.env.seed, "singan-rec") % 2 ** 31)
            G.noise_amp[0] = 1.0
            G.scale.fill_(0)
            self.s, self.shapes = 0, shapes
        elif self.shapes != shapes:
            raise ValueError(f"SinGAN: this run was trained on a {self.shapes[-1][1]}x{self.shapes[-1][0]} image, "
                             f"the data is {real.shape[-1]}x{real.shape[-2]}: resume with the run's data and --res")
        return [resize(real, sh) for sh in shapes]

    @torch.no_grad()
    def _advance(self) -> None:
        """Move G (and D) on to the scale of step ``done``: freeze, copy the weights, set the noise amplitude."""
        G, D, o = self.nets["G"], self.nets["D"], self.options
        target = max(s for s in range(self.n) if self.bounds[s] <= self.done)
        while self.s < target:
            s = self.s + 1
            for nets in (G.scales, D.scales):
                if nets[s].body[0].out_channels == nets[s - 1].body[0].out_channels:
                    nets[s].load_state_dict(nets[s - 1].state_dict())
            with eval_mode(G):
                up = resize(G.reconstruct(s - 1), self.reals[s].shape[-2:])
            G.noise_amp[s] = o.noise_amp * F.mse_loss(up, self.reals[s][:1]).sqrt()
            G.scale.fill_(s)
            self.s, self.rec_in = s, None
        a, b = self.bounds[target], self.bounds[target + 1]
        self.decaying = self.done - a >= o.decay_at * (b - a) and o.decay_at < 1.0

    def _rec_inputs(self, s: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(prev, z) of the reconstruction at scale s: the frozen scales' reconstruction upsampled, and z_rec or 0."""
        if self.rec_in is None or self.rec_in[0] != s:
            G, shapes = self.nets["G"], self.shapes[:s + 1]
            z = G.rec_noise(shapes)
            with torch.no_grad():
                prev = resize(G(z[:s]), shapes[s]) if s else torch.zeros_like(self.reals[0][:1])
            self.rec_in = (s, prev, z[s])
        return self.rec_in[1], self.rec_in[2]

    def _fake(self, n: int, s: int, gen: torch.Generator) -> torch.Tensor:
        """n random images at scale s: the frozen scales without gradients, G_s with."""
        G, shapes = self.nets["G"], self.shapes[:s + 1]
        z = G.noise(n, shapes, gen)
        with torch.no_grad():
            prev = resize(G(z[:s]), shapes[s]) if s else z[0].new_zeros(n, G.channels, *shapes[0])
        return G.run_scale(s, z[s], prev)

    # -- the losses -----------------------------------------------------------------------------------------------
    def accumulate_gradients(self, phase: str, b: Batch, gain: float):
        G, D, o = self.nets["G"], self.nets["D"], self.options
        self.reals = self._pyramid(b.real)
        if phase == "D":
            self._advance()
        s = self.s
        for nets in (G.scales, D.scales):               # the frozen scales use their running batch-norm statistics
            for i, m in enumerate(nets):
                m.train(i == s)
        if self.decaying:
            self.old.setdefault(phase, [p.detach().clone() for p in self.nets[phase].scales[s].parameters()])
        x = self.reals[s]
        gen = torch.Generator(x.device).manual_seed(b.seed)         # on the device: no host copies per step
        with self.env.autocast():
            fake = self._fake(len(x), s, gen)
            if phase == "D":
                d_real, d_fake = D(x, s).mean(), D(fake, s).mean()
                eps = torch.rand(len(x), generator=gen, device=x.device, dtype=x.dtype)
                x_hat = interpolate(x, fake.detach().to(x.dtype), eps).requires_grad_(True)
                (g,) = torch.autograd.grad(D(x_hat, s).sum(), x_hat, create_graph=True)
                gp = grad_norm_penalty(g.permute(0, 2, 3, 1).reshape(-1, g.shape[1]), 1.0)   # per pixel, as official
                loss = d_fake - d_real + o.gp * gp
                stats = {"D/loss": loss, "D/wdist": d_real - d_fake, "D/gp": gp}
            else:
                prev, z = self._rec_inputs(s)
                adv = -D(fake, s).mean()
                rec = F.mse_loss(G.run_scale(s, z, prev), x[:1])
                loss = adv + o.alpha * rec
                stats = {"G/loss": loss, "G/adv": adv, "G/rec": rec}
        self.env.backward(loss * gain)
        return {k: v.detach().float() for k, v in stats.items()}

    @torch.no_grad()
    def after_step(self, phase: str, step: int) -> None:
        old = self.old.pop(phase, None)
        if old is not None:                                     # the update scaled by 0.1: lr x0.1 for Adam
            for p, q in zip(self.nets[phase].scales[self.s].parameters(), old):
                p.copy_(torch.lerp(q, p, 0.1))
        if phase == self.phases[-1].name:
            self.done = step + 1

    @torch.no_grad()
    def log_stats(self):
        G, s = self.nets["G"], self.s
        if s < 0 or not self.reals:
            return {}
        real = self.reals[s][:1]
        dev = real.device
        with eval_mode(G):
            out = {"rec/rmse": F.mse_loss(G.reconstruct(s), real).sqrt(),
                   "rec/scale": torch.tensor(float(s), device=dev)}
            if self.options.sifid != "off":
                from ..sifid import resolve, sifid
                self.features = self.features or resolve(self.options.sifid)
                fakes = G.sample(self.options.sifid_n, torch.Generator().manual_seed(self.env.seed))
                out[f"sifid_{self.features}"] = torch.tensor(sifid(real, fakes, self.features), device=dev)
        return out

    def state_dict(self):
        return {"done": self.done, "bounds": torch.tensor(self.bounds), "scale": self.s,
                "shapes": torch.tensor(self.shapes or [[0, 0]] * self.n)}

    def load_state_dict(self, state):
        self.done, self.bounds, self.s = int(state["done"]), [int(v) for v in state["bounds"]], int(state["scale"])
        self.shapes = [tuple(v) for v in state["shapes"].tolist()] if self.s >= 0 else []

    # -- sampling -------------------------------------------------------------------------------------------------
    def sample(self, G: SinGANGenerator, z: torch.Tensor, size: tuple[int, int] | None = None, start: int = 0,
               inject: torch.Tensor | None = None) -> torch.Tensor:
        """Images (n, C, h, w) of G for latents z (n, 1): sample i's noise maps come from a generator seeded by the
        bits of z[i], so it does not depend on n. size, start, inject: :meth:`SinGANGenerator.sample`."""
        seeds = (z[:, 0].float().cpu().contiguous().view(torch.int32) & 0x7FFFFFFF).tolist()
        return G.sample(len(seeds), [torch.Generator().manual_seed(v) for v in seeds], size, start, inject)

    def generate(self, G, z, c):
        if G.trained < 0:                             # before the first step (the snapshot of step 0): gray
            return z.new_zeros(len(z), G.channels, self.env.resolution, self.env.resolution)
        return self.sample(G, z)


# -- gankern generate ---------------------------------------------------------------------------------------------
def _size(text: str) -> tuple[int, int]:
    """argparse type: 'WxH' -> (H, W)."""
    m = re.fullmatch(r"(\d+)x(\d+)", text.strip().lower())
    if not m or min(int(m.group(1)), int(m.group(2))) < 1:
        raise argparse.ArgumentTypeError(f"expected WxH, the width x height in pixels (e.g. 64x128), not '{text}'")
    return int(m.group(2)), int(m.group(1))


def add_generate_options(gen) -> None:
    """SinGAN's options on the ``generate`` subcommand (gankern.train.cli's parser)."""
    g = gen.add_argument_group("SinGAN options (runs of --config singan)")
    g.add_argument("--size", type=_size, metavar="WxH", help="samples of another size or aspect ratio, e.g. 64x128 "
                   "(width x height; default: the training image's)")
    g.add_argument("--scale-start", type=int, metavar="S", help="first scale with random noise; below it the "
                   "reconstruction (the training image's layout kept) or, with --inject, the injected image "
                   "(default: 0; with --inject 1)")
    g.add_argument("--inject", metavar="IMG", help="start from this image at --scale-start (paint-to-image, "
                   "harmonization, editing): resized to the output size, then down to scale S - 1")
    g.add_argument("--mask", metavar="IMG", help="with --inject (harmonization, editing): white where the output is "
                   "kept, black where the injected image is (the paper's (1 - mask) * image + mask * output)")


def generate_main(args) -> int | None:
    """``gankern generate`` of a singan run: a grid of --n samples; None for other runs (unless SinGAN's flags were
    given: then an error)."""
    from ..cli import _error, foreign_options, load_generator, run_recipe
    if run_recipe(args.run) != "singan":
        return foreign_options(args, ("size", "scale_start", "inject", "mask"), "SinGAN", "a singan run")
    import os

    from ...data.single import load_image
    from ..outputs import image_format, save_grid
    from ..snapshots import generate
    try:
        if args.trunc is not None or args.cls:
            raise ValueError("--trunc and --class do not apply to a SinGAN (unconditional, noise maps)")
        image_format(args.out)
        if not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
            raise FileNotFoundError(f"--out {args.out}: its folder does not exist")
        G, _, _, recipe = load_generator(args.run, args.device, not args.no_ema)
        size = args.size or G.pyramid()[-1]
        inject = load_image(args.inject, size, G.channels) if args.inject else None
        start = args.scale_start if args.scale_start is not None else int(inject is not None)
        n = args.n or 16
        if args.mask and inject is None:
            raise ValueError("--mask blends the output with the --inject image: give --inject too")
        mask = (load_image(args.mask, size, 1) + 1) / 2 if args.mask else None        # [1, 1, H, W] in [0, 1]
        images = generate(G, n, recipe.z_dim, 0, args.seed, None, args.device,
                          fn=lambda G, z, c: recipe.sample(G, z, args.size, start, inject))
        if mask is not None:
            images = torch.lerp(inject.to(images).expand_as(images), images, mask.to(images))
        save_grid(images, args.out)
    except (ValueError, OSError) as e:
        return _error("generate", e)
    print(f"wrote {n} images {images.shape[-1]}x{images.shape[-2]} to {args.out}")
    return 0
