"""SinGAN (Rott Shaham, Dekel & Michaeli 2019): a pyramid of small fully convolutional generators and patch critics,
one pair per scale, trained coarse to fine on a single image.

Scale s (0 the coarsest) has the shape ``shapes[s]``. G_s takes x = amp_s * z_s + up(x_{s-1}) (z_s a noise map, one
channel broadcast over the colours at s = 0; x_{-1} = 0), zero-pads it by ``layers`` pixels, runs ``layers`` 3x3
convolutions without padding (conv-BN-LeakyReLU(0.2), the last conv then tanh) and adds the result to up(x_{s-1}):
each scale adds the details its receptive field (2 layers + 1 = 11 px) sees. D_s is the same stack ending in one
channel: a map of scores of 11x11 patches (WGAN critic). Widths: ``width`` channels, doubled every 4 scales, at most
``max_width`` (the official code's 32 and 128).

What sampling needs besides the weights lives in buffers of :class:`SinGANGenerator` (so checkpoints and G_ema carry
it): ``shapes`` (n, 2) of the training pyramid, ``noise_amp`` (n,), ``scale`` (the finest scale trained so far, -1:
none) and ``rec_seed`` (the seed of the fixed reconstruction noise z_rec at scale 0). Sampling at another size
scales every noise map by the same factor (the paper's samples of arbitrary size and aspect ratio); injection starts
from an image at a chosen scale (paint-to-image, harmonization, editing).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _stack(cin: int, width: int, cout: int, layers: int) -> nn.Sequential:
    """``layers`` 3x3 convolutions without padding: (conv-BN-LeakyReLU(0.2)) x (layers - 1), then conv to cout."""
    mods, c = [], cin
    for _ in range(layers - 1):
        mods += [nn.Conv2d(c, width, 3), nn.BatchNorm2d(width), nn.LeakyReLU(0.2)]
        c = width
    return nn.Sequential(*mods, nn.Conv2d(c, cout, 3))


def init_weights(m: nn.Module) -> nn.Module:
    """The official initialization: conv weights N(0, 0.02), BN scales N(1, 0.02) and shifts 0."""
    for x in m.modules():
        if isinstance(x, nn.Conv2d):
            nn.init.normal_(x.weight, 0.0, 0.02)
        elif isinstance(x, nn.BatchNorm2d):
            nn.init.normal_(x.weight, 1.0, 0.02)
            nn.init.zeros_(x.bias)
    return m


class ScaleG(nn.Module):
    """G_s: (x (N, C, h, w) = amp * z + prev, prev (N, C, h, w)) -> prev + tanh(body(pad(x))) (N, C, h, w)."""

    def __init__(self, channels: int, width: int, layers: int = 5):
        super().__init__()
        self.pad = layers
        self.body = _stack(channels, width, channels, layers)

    def forward(self, x: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        return prev + torch.tanh(self.body(F.pad(x, [self.pad] * 4)))


class ScaleD(nn.Module):
    """D_s: images (N, C, h, w) -> patch scores (N, 1, h - 2 layers, w - 2 layers)."""

    def __init__(self, channels: int, width: int, layers: int = 5):
        super().__init__()
        self.body = _stack(channels, width, 1, layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def widths(n_scales: int, width: int = 32, max_width: int = 128) -> list[int]:
    """Channels of each scale's nets: ``width`` doubled every 4 scales, at most ``max_width``."""
    return [min(width * 2 ** (s // 4), max_width) for s in range(n_scales)]


def resize(x: torch.Tensor, shape) -> torch.Tensor:
    """x (N, C, h, w) -> (N, C, *shape): bicubic, antialiased when shrinking (the pyramid, injected images)."""
    shape = tuple(int(v) for v in shape)
    if tuple(x.shape[-2:]) == shape:
        return x
    down = shape[0] < x.shape[-2] or shape[1] < x.shape[-1]
    return F.interpolate(x, size=shape, mode="bicubic", align_corners=False, antialias=down)


def pyramid_shapes(h: int, w: int, n_scales: int, min_size: int) -> list[tuple[int, int]]:
    """Shapes of scales 0..n-1 of an h x w image: the finest is h x w, the coarsest's shorter side ``min_size``, the
    ratio between scales r = (min_size / min(h, w)) ** (1 / (n - 1)) (the official code's fit of its scale factor)."""
    short = min(h, w)
    if short < min_size:
        raise ValueError(f"SinGAN: the image is {w}x{h} px, its shorter side below recipe.min_size={min_size}: raise "
                         f"--res (the longer side) or lower recipe.min_size")
    if n_scales == 1:
        return [(h, w)]
    r = (min_size / short) ** (1.0 / (n_scales - 1))
    return [(max(1, round(h * r ** (n_scales - 1 - s))), max(1, round(w * r ** (n_scales - 1 - s))))
            for s in range(n_scales)]


class SinGANGenerator(nn.Module):
    """The pyramid of generators G_0..G_{n-1} with the buffers sampling needs (module docstring).

    ``forward(noise, prev=None, start=0)``: run scales start, start + 1, ... over the noise maps ``noise`` (a list,
    one (N, 1 or C, h_s, w_s) per scale); ``prev`` (N, C, h, w) is the image entering scale ``start`` (resized to
    its shape; None: zeros). ``sample(...)`` draws the maps.
    """

    def __init__(self, channels: int, n_scales: int, width: int = 32, max_width: int = 128, layers: int = 5):
        super().__init__()
        self.channels = channels
        self.scales = nn.ModuleList(ScaleG(channels, w, layers) for w in widths(n_scales, width, max_width))
        self.register_buffer("shapes", torch.zeros(n_scales, 2, dtype=torch.long))
        self.register_buffer("noise_amp", torch.ones(n_scales))
        self.register_buffer("scale", torch.tensor(-1))
        self.register_buffer("rec_seed", torch.tensor(0))

    @property
    def trained(self) -> int:
        """The finest scale trained so far (-1: none); sampling runs scales 0..trained."""
        return int(self.scale)

    def run_scale(self, s: int, z: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        """G_s(amp_s * z + prev, prev); z (N, 1 or C, h, w), prev (N, C, h, w)."""
        return self.scales[s](self.noise_amp[s] * z + prev, prev)

    def forward(self, noise: list[torch.Tensor], prev: torch.Tensor | None = None, start: int = 0) -> torch.Tensor:
        for i, z in enumerate(noise):
            prev = z.new_zeros(z.shape[0], self.channels, *z.shape[-2:]) if prev is None else resize(prev, z.shape[-2:])
            prev = self.run_scale(start + i, z, prev)
        return prev

    def pyramid(self, size: tuple[int, int] | None = None) -> list[tuple[int, int]]:
        """Shapes (h, w) of scales 0..trained; ``size`` (h, w) of the finest: every shape scaled by size / the
        training shape (the paper's samples of another size or aspect ratio)."""
        S = self.trained
        if S < 0:
            raise ValueError("this SinGAN has not been trained yet (no scale done)")
        shapes = [tuple(int(v) for v in self.shapes[s]) for s in range(S + 1)]
        if size is None:
            return shapes
        fh, fw = size[0] / shapes[-1][0], size[1] / shapes[-1][1]
        return [(max(1, round(h * fh)), max(1, round(w * fw))) for h, w in shapes]

    def noise(self, n: int, shapes: list[tuple[int, int]], generator=None, start: int = 0) -> list[torch.Tensor]:
        """N(0, 1) maps for scales start.. of ``shapes``: (n, 1, h, w) at scale 0, (n, C, h, w) above, on the module's
        device, drawn on the generator's (a CPU generator gives the same maps on every device). generator: a
        torch.Generator, None (torch's global one on the module's device) or a list of n (sample i's maps from
        generator i alone)."""
        if isinstance(generator, (list, tuple)):
            if len(generator) != n:
                raise ValueError(f"{len(generator)} generators for {n} samples")
            return [torch.cat(z) for z in zip(*(self.noise(1, shapes, g, start) for g in generator))]
        dev = self.noise_amp.device
        at = dev if generator is None else generator.device
        return [torch.randn(n, 1 if s == 0 else self.channels, *shapes[s], generator=generator, device=at).to(dev)
                for s in range(start, len(shapes))]

    def rec_noise(self, shapes: list[tuple[int, int]]) -> list[torch.Tensor]:
        """The reconstruction's maps: the fixed z_rec at scale 0 (drawn on the CPU: the same on every device), zeros
        above (G(rec_noise) reproduces the image)."""
        g = torch.Generator().manual_seed(int(self.rec_seed))
        z = self.noise(1, shapes[:1], g)
        return z + [self.noise_amp.new_zeros(1, self.channels, *sh) for sh in shapes[1:]]

    @torch.no_grad()
    def sample(self, n: int, generator=None, size: tuple[int, int] | None = None,
               start: int = 0, inject: torch.Tensor | None = None) -> torch.Tensor:
        """n images (n, C, h, w) of the finest trained scale (``size`` (h, w): another size, noise scaled);
        generator: as :meth:`noise`.

        start: the first scale with random noise; the scales below follow the reconstruction (the image's layout
            kept, only finer detail varies), or, with ``inject``, are replaced by that image.
        inject: an image (1 or n, C, H, W) in [-1, 1]: resized to scale start - 1, then run from scale start
            (paint-to-image, harmonization, editing; start >= 1).
        """
        shapes = self.pyramid(size)
        S = len(shapes) - 1
        if not 0 <= start <= S:
            raise ValueError(f"scale {start} is out of range: this SinGAN has scales 0..{S}")
        if inject is not None:
            if start < 1:
                raise ValueError("injection needs a start scale >= 1 (the image enters as scale start - 1)")
            prev = resize(inject.to(self.noise_amp), shapes[start - 1]).expand(n, -1, -1, -1)
            return self(self.noise(n, shapes, generator, start), prev, start)
        prev = None
        if start > 0:
            if shapes != self.pyramid():
                raise ValueError("a start scale > 0 without an injected image keeps the training image's layout: "
                                 "sample it at the training size")
            prev = self(self.rec_noise(shapes)[:start]).expand(n, -1, -1, -1)
        return self(self.noise(n, shapes, generator, start), prev, start)

    @torch.no_grad()
    def reconstruct(self, upto: int | None = None) -> torch.Tensor:
        """G's reconstruction (1, C, h, w) of the training image at scale ``upto`` (default: the finest trained)."""
        shapes = self.pyramid()[:(self.trained if upto is None else upto) + 1]
        return self(self.rec_noise(shapes))


class SinGANCritic(nn.Module):
    """The critics D_0..D_{n-1}; ``forward(x, s)`` -> D_s's patch scores."""

    def __init__(self, channels: int, n_scales: int, width: int = 32, max_width: int = 128, layers: int = 5):
        super().__init__()
        self.scales = nn.ModuleList(ScaleD(channels, w, layers) for w in widths(n_scales, width, max_width))

    def forward(self, x: torch.Tensor, s: int) -> torch.Tensor:
        return self.scales[s](x)
