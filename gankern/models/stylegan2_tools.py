"""What people do with a trained StyleGAN2 / StyleGAN, as StyleGAN2-ADA's (S2A's) scripts do it: images from seeds
(``generate.py``: z = numpy RandomState(seed).randn(z_dim), so a seed gives S2A's image for the same network),
style-mixing grids (``style_mixing.py``), interpolation frames between seeds (slerp or lerp in z, lerp in w, as
StyleGAN's videos and its perceptual path length do) and projection of an image into W (``projector.py``).

Projection follows S2A: W initialized at the mean of 10000 mapped latents, Adam on w and on the per-layer noise maps
(re-drawn at the start, regularized toward no spatial correlation over a pyramid down to 8 px, normalized to zero mean
and unit variance after each step), noise on w ramped down, learning rate ramped up and down. The distance is S2A's
when a VGG16 is given (:class:`VGG16Features`, torchvision's weights: LPIPS, the squared distance of
channel-normalized relu1_2 ... relu5_3 features weighted per channel by LPIPS' learned weights when the lpips
package's ``weights/v0.1/vgg.pth`` is given too, as S2A's vgg16.pt computes it, else with unit weights); without one
(nothing downloads) a multi-scale pixel distance (mean squared error of the images and of their
2x, 4x, ... average-pooled versions down to 8 px) plus, when a discriminator is given, the mean squared distance of
D's block features (each block's features divided by their RMS on the target).
"""
from __future__ import annotations

import copy
import math
import os

import numpy as np
import torch
import torch.nn.functional as F

from torch import nn

from .stylegan2 import Discriminator, Generator
from .vgg import VGG16, load_features, read_state_dict, vgg_layers

__all__ = ["parse_range", "seed_latents", "class_labels", "generate_images", "style_mixing_grid", "slerp",
           "interpolation_frames",
           "discriminator_features", "VGG16Features", "read_lpips", "load_vgg16", "project"]


def parse_range(text: str) -> list[int]:
    """'0-3,7,10-11' -> [0, 1, 2, 3, 7, 10, 11] (S2A's num_range)."""
    out = []
    for part in str(text).split(","):
        a, sep, b = part.strip().partition("-")
        try:
            out += list(range(int(a), int(b) + 1)) if sep else [int(a)]
        except ValueError:
            raise ValueError(f"expected a list of integers and ranges such as '0-3,7', got {text!r}") from None
    if not out:
        raise ValueError(f"empty range {text!r}")
    return out


def seed_latents(seeds: list[int], z_dim: int) -> torch.Tensor:
    """(len(seeds), z_dim) float32: row i is numpy RandomState(seeds[i]).randn(z_dim), S2A's latent of a seed."""
    for s in seeds:
        if not 0 <= s < 2 ** 32:
            raise ValueError(f"seeds must be in [0, 2**32), got {s}")
    return torch.from_numpy(np.stack([np.random.RandomState(s).randn(z_dim) for s in seeds])).float()


def class_labels(G: Generator, class_idx: int | None, n: int) -> torch.Tensor | None:
    """S2A's conditioning c (n, c_dim): one-hot of ``class_idx`` for a conditional G, None for an unconditional one."""
    if G.c_dim == 0:
        if class_idx is not None:
            raise ValueError("this network is unconditional: no class can be given")
        return None
    if class_idx is None or not 0 <= class_idx < G.c_dim:
        raise ValueError(f"this network is conditional: give a class in [0, {G.c_dim})"
                         + ("" if class_idx is None else f", got {class_idx}"))
    return F.one_hot(torch.full([n], class_idx), G.c_dim).float()


def _synthesis_kwargs(noise_mode: str, device) -> dict:
    return dict(noise_mode=noise_mode, force_fp32=torch.device(device).type == "cpu")


@torch.no_grad()
def generate_images(G: Generator, seeds: list[int], truncation_psi: float = 1.0, noise_mode: str = "const",
                    class_idx: int | None = None, batch: int = 16) -> torch.Tensor:
    """Images (len(seeds), C, R, R) in about [-1, 1], float32 on G's device, as S2A's generate.py."""
    dev = next(G.parameters()).device
    z = seed_latents(seeds, G.z_dim).to(dev)
    c = class_labels(G, class_idx, len(seeds))
    out = []
    for i in range(0, len(seeds), batch):
        ci = None if c is None else c[i:i + batch].to(dev)
        out.append(G(z[i:i + batch], ci, truncation_psi=truncation_psi, **_synthesis_kwargs(noise_mode, dev)))
    return torch.cat(out)


@torch.no_grad()
def style_mixing_grid(G: Generator, row_seeds: list[int], col_seeds: list[int], col_styles: list[int],
                      truncation_psi: float = 1.0, noise_mode: str = "const",
                      class_idx: int | None = None) -> torch.Tensor:
    """S2A's style-mixing figure as (len(row_seeds) + 1) * (len(col_seeds) + 1) images, row-major: the first row is
    a blank then the column seeds' images, each further row starts with a row seed's image followed by that image
    with the ws of ``col_styles`` (layer indices) taken from each column seed."""
    bad = [i for i in col_styles if not 0 <= i < G.num_ws]
    if bad:
        raise ValueError(f"col_styles must be layer indices in [0, {G.num_ws}), got {bad}")
    dev = next(G.parameters()).device
    seeds = list(dict.fromkeys(row_seeds + col_seeds))
    c = class_labels(G, class_idx, len(seeds))
    ws = G.mapping(seed_latents(seeds, G.z_dim).to(dev), None if c is None else c.to(dev),
                   truncation_psi=truncation_psi)
    w = dict(zip(seeds, ws))
    kw = _synthesis_kwargs(noise_mode, dev)

    def synth(x):
        return G.synthesis(x.unsqueeze(0), **kw)[0]
    blank = torch.full([G.img_channels, G.img_resolution, G.img_resolution], -1.0, device=dev)
    grid = [blank] + [synth(w[s]) for s in col_seeds]
    for r in row_seeds:
        grid.append(synth(w[r]))
        for s in col_seeds:
            mixed = w[r].clone()
            mixed[col_styles] = w[s][col_styles]
            grid.append(synth(mixed))
    return torch.stack(grid)


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of the directions of a and b (..., D) at t (..., 1): unit vectors (..., D), a / |a|
    at t = 0 and b / |b| at t = 1 (StyleGAN's mapping normalizes z, so the length of z does not matter)."""
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    d = (a * b).sum(dim=-1, keepdim=True).clamp(-1, 1)
    c = F.normalize(b - d * a, dim=-1)                     # the unit direction from a toward b (0 when b = a)
    p = t * torch.acos(d)
    return F.normalize(a * torch.cos(p) + c * torch.sin(p), dim=-1)


INTERPOLATIONS = ("z", "z-lerp", "w")


@torch.no_grad()
def interpolation_frames(G: Generator, seeds: list[int], frames: int, space: str = "z",
                         truncation_psi: float = 1.0, noise_mode: str = "const",
                         class_idx: int | None = None) -> torch.Tensor:
    """Images (len(seeds) - 1, frames, C, R, R): row i goes from seeds[i]'s image to seeds[i + 1]'s in ``frames``
    equal steps of t in [0, 1], interpolating ``space``: 'z' (slerp of the latents), 'z-lerp' or 'w' (lerp of the
    mapped, truncated ws)."""
    if space not in INTERPOLATIONS:
        raise ValueError(f"interpolation space must be one of {INTERPOLATIONS}, got {space!r}")
    if len(seeds) < 2 or frames < 2:
        raise ValueError(f"interpolation needs at least 2 seeds and 2 frames, got {len(seeds)} seeds and {frames} "
                         f"frames")
    dev = next(G.parameters()).device
    z = seed_latents(seeds, G.z_dim).to(dev)
    c = class_labels(G, class_idx, frames)
    c = None if c is None else c.to(dev)
    t = torch.linspace(0, 1, frames, device=dev)[:, None]                                   # (frames, 1)
    kw = _synthesis_kwargs(noise_mode, dev)
    rows = []
    for i in range(len(seeds) - 1):
        if space == "w":
            w = G.mapping(z[i:i + 2], None if c is None else c[:2], truncation_psi=truncation_psi)   # (2, L, D)
            ws = w[0].lerp(w[1], t[:, :, None])                                              # (frames, L, D)
        else:
            zi = slerp(z[i], z[i + 1], t) if space == "z" else z[i].lerp(z[i + 1], t)        # (frames, z_dim)
            ws = G.mapping(zi, c, truncation_psi=truncation_psi)
        rows.append(G.synthesis(ws, **kw))
    return torch.stack(rows)


def discriminator_features(D: Discriminator, img: torch.Tensor) -> list[torch.Tensor]:
    """The outputs of D's blocks (highest resolution first) and of its 4x4 conv on ``img`` (N, C, R, R), fp32."""
    x, feats = None, []
    for res in D.block_resolutions:
        x, img = getattr(D, f"b{res}")(x, img, force_fp32=True)
        feats.append(x.float())
    ep = D.b4
    y = x.float()
    if ep.architecture == "skip":
        y = y + ep.fromrgb(img.float())
    feats.append(ep.conv(y if ep.mbstd is None else ep.mbstd(y)))
    return feats


LPIPS_CHANNELS = (64, 128, 256, 512, 512)        # widths of relu1_2 ... relu5_3, LPIPS' lin0 ... lin4 inputs


class VGG16Features(nn.Module):
    """torchvision's VGG16 feature layers (gankern.models.vgg; state_dict keys ``features.N.weight`` / ``.bias`` as
    torchvision's ``vgg16().state_dict()``) -> the five feature maps of LPIPS and S2A's vgg16.pt: relu1_2, relu2_2,
    relu3_3, relu4_3, relu5_3 (the ReLUs before each pool), and LPIPS' distance of two images' maps
    (:meth:`distance`), with its learned per-channel weights ``lin0`` ... ``lin4`` (1, C, 1, 1) when loaded
    (:func:`load_vgg16`'s ``lpips``), else with unit weights.

    Shapes: img (N, 1 or 3, H, W) in [-1, 1] -> [(N, 64, H, W), (N, 128, H/2, W/2), ..., (N, 512, H/16, W/16)];
    images below 32 px are up-sampled (bilinear) to 32, grey images repeated to RGB, LPIPS' input scaling applied
    ((x - shift) / scale, which is ImageNet's mean and std applied to (x + 1) / 2).
    """

    def __init__(self):
        super().__init__()
        self.features = vgg_layers(VGG16)
        self.taps = {i - 1 for i, m in enumerate(self.features) if isinstance(m, nn.MaxPool2d)}
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        for i in range(len(LPIPS_CHANNELS)):
            self.register_buffer(f"lin{i}", None)

    def forward(self, img: torch.Tensor) -> list[torch.Tensor]:
        x = img.float().expand(-1, 3, -1, -1) if img.shape[1] == 1 else img.float()
        if x.shape[-1] < 32:
            x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
        x = (x - self.shift) / self.scale
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                out.append(x)
        return out

    def distance(self, a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
        """LPIPS per sample (N,) of two lists of feature maps (N, C_l, H_l, W_l): the sum over layers l of the
        spatial mean of sum_c w_lc (a_l / (|a_l| + 1e-10) - b_l / (|b_l| + 1e-10))^2, norms over channels, w_l the
        learned weights ``lin<l>`` when loaded, else 1."""
        total = 0
        for i, (x, y) in enumerate(zip(a, b)):
            d = (x / (x.norm(dim=1, keepdim=True) + 1e-10) - y / (y.norm(dim=1, keepdim=True) + 1e-10)).square()
            w = getattr(self, f"lin{i}")
            total = total + (d if w is None else d * w).sum(1).mean((1, 2))
        return total


def read_lpips(path: str | os.PathLike) -> list[torch.Tensor]:
    """LPIPS' learned per-channel weights of VGG16 (lin0 ... lin4, each (1, C, 1, 1), C in 64, 128, 256, 512, 512)
    from the lpips package's ``weights/v0.1/vgg.pth`` (keys ``lin<l>.model.1.weight``; a whole ``LPIPS(net='vgg')``
    state dict also has them) or a .safetensors copy, read without running code. ValueError naming the first missing
    or misshapen tensor."""
    how = "give the lpips package's weights/v0.1/vgg.pth (LPIPS' linear layers of its VGG16 trunk)"
    sd = read_state_dict(path, "LPIPS", how)
    out = []
    for i, c in enumerate(LPIPS_CHANNELS):
        key, want = f"lin{i}.model.1.weight", (1, c, 1, 1)
        got = sd.get(key)
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != want or not got.is_floating_point():
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else "none"
            raise ValueError(f"{os.fspath(path)}: not LPIPS' VGG16 weights ({key}: expected a float tensor of shape "
                             f"{want}, got {shape}); {how}")
        out.append(got.float())
    return out


def load_vgg16(path: str | os.PathLike, device="cpu", lpips: str | os.PathLike | None = None) -> VGG16Features:
    """VGG16Features with the weights of torchvision's ``vgg16().state_dict()`` in ``path`` (torch.save file read
    with weights_only=True, or .safetensors) and, when ``lpips`` is given, LPIPS' learned weights from that file
    (:func:`read_lpips`): then :meth:`VGG16Features.distance` is LPIPS (v0.1, VGG), the distance S2A's vgg16.pt
    computes. S2A's vgg16.pt is TorchScript, whose loading runs code: refused."""
    vgg = VGG16Features()
    load_features(path, vgg.features, "VGG16", hint="; S2A's vgg16.pt distance is LPIPS on VGG16: these weights with "
                  "the lpips package's weights/v0.1/vgg.pth as LPIPS' weights (gankern project --lpips) give it")
    for i, w in enumerate(read_lpips(lpips) if lpips is not None else ()):
        setattr(vgg, f"lin{i}", w)
    return vgg.to(device).eval().requires_grad_(False)


def _noise_regularization(noise: torch.Tensor) -> torch.Tensor:
    """S2A's: squared mean autocorrelation at a 1-pixel shift in x and in y of a (H, W) map and of its 2x, 4x, ...
    average-pooled versions down to 8 px."""
    x, reg = noise[None, None], 0
    while True:
        reg = reg + (x * x.roll(1, dims=3)).mean().square() + (x * x.roll(1, dims=2)).mean().square()
        if x.shape[2] <= 8:
            return reg
        x = F.avg_pool2d(x, 2)


def _pyramid(img: torch.Tensor) -> list[torch.Tensor]:
    out = [img]
    while out[-1].shape[-1] > 8:
        out.append(F.avg_pool2d(out[-1], 2))
    return out


def project(G: Generator, target: torch.Tensor, num_steps: int = 1000, D: Discriminator | None = None,
            d_weight: float = 1.0, vgg16: VGG16Features | None = None, optimize_noise: bool = True,
            regularize_noise_weight: float = 1e5, w_avg_samples: int = 10000, initial_learning_rate: float = 0.1,
            initial_noise_factor: float = 0.05, lr_rampdown_length: float = 0.25, lr_rampup_length: float = 0.05,
            noise_ramp_length: float = 0.75, seed: int = 303,
            progress=None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Find ws (and noise maps) with G.synthesis(ws, noise_mode='const') close to ``target``.

    Args:
        G: an unconditional generator (it is not modified: a copy is optimized).
        target: (C, R, R) image of G's shape, in [-1, 1].
        D: a discriminator of G's resolution whose block features join the pixel distance (``d_weight``), or None.
        vgg16: S2A's distance (LPIPS of :class:`VGG16Features`, with LPIPS' weights when it has them) instead
            of the pixel and D distances, or None.
        optimize_noise: optimize the noise maps too (S2A), regularized by ``regularize_noise_weight``; False: they
            stay the network's ``noise_const``.
        progress: called as progress(step, dist) after each step (dist: a float), or None.
    Returns:
        ws: the w of every step, (num_steps, num_ws, w_dim) on G's device (the last row is the result);
        noise: {name in G.synthesis.named_buffers(): (res, res) map} after the last step ({} without
            optimize_noise): copy them into G's ``noise_const`` buffers to render the projection.
    """
    if G.c_dim:
        raise ValueError("projection needs an unconditional generator (as S2A's projector)")
    shape = (G.img_channels, G.img_resolution, G.img_resolution)
    if not isinstance(target, torch.Tensor) or tuple(target.shape) != shape:
        raise ValueError(f"target must be a tensor of shape {shape}, got "
                         f"{tuple(target.shape) if isinstance(target, torch.Tensor) else type(target).__name__}")
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    dev = next(G.parameters()).device
    G = copy.deepcopy(G).eval().requires_grad_(False).float()
    kw = _synthesis_kwargs("const", dev)
    with torch.no_grad():
        z = torch.from_numpy(np.random.RandomState(123).randn(w_avg_samples, G.z_dim)).float().to(dev)
        w = G.mapping(z, None)[:, :1, :]                                    # (S, 1, w_dim)
        w_avg = w.mean(dim=0, keepdim=True)                                 # (1, 1, w_dim)
        w_std = float(((w - w_avg).square().sum() / w_avg_samples) ** 0.5)
    target = target.to(dev, torch.float32)[None]
    target_pyr = _pyramid(target)
    target_feats = scales = None
    if vgg16 is not None:
        D = None
        with torch.no_grad():
            target_vgg = vgg16(_at_most_256(target))
    if D is not None:
        if D.img_resolution != G.img_resolution or D.img_channels != G.img_channels:
            raise ValueError("D must take G's images (same resolution and channels)")
        D = copy.deepcopy(D).eval().requires_grad_(False).float()
        with torch.no_grad():
            target_feats = discriminator_features(D, target)
            scales = [f.square().mean().sqrt().clamp_min(1e-8) for f in target_feats]
    gen = torch.Generator(device=dev).manual_seed(seed)
    w_opt = w_avg.clone().requires_grad_(True)
    noise_bufs = {n: b for n, b in G.synthesis.named_buffers() if n.endswith("noise_const")} if optimize_noise else {}
    for buf in noise_bufs.values():
        buf.copy_(torch.randn(buf.shape, generator=gen, device=dev))
        buf.requires_grad_(True)
    opt = torch.optim.Adam([w_opt, *noise_bufs.values()], betas=(0.9, 0.999), lr=initial_learning_rate)
    w_out = torch.zeros([num_steps, G.num_ws, G.w_dim], device=dev)
    for step in range(num_steps):
        t = step / num_steps
        w_noise_scale = w_std * initial_noise_factor * max(0.0, 1.0 - t / noise_ramp_length) ** 2
        lr_ramp = min(1.0, (1.0 - t) / lr_rampdown_length)
        lr_ramp = (0.5 - 0.5 * math.cos(lr_ramp * math.pi)) * min(1.0, t / lr_rampup_length)
        for group in opt.param_groups:
            group["lr"] = initial_learning_rate * lr_ramp
        w_noise = torch.randn(w_opt.shape, generator=gen, device=dev) * w_noise_scale
        synth = G.synthesis((w_opt + w_noise).repeat([1, G.num_ws, 1]), **kw)
        if vgg16 is not None:
            dist = vgg16.distance(vgg16(_at_most_256(synth)), target_vgg).sum()
        else:
            dist = sum((a - b).square().mean() for a, b in zip(_pyramid(synth), target_pyr))
        if D is not None:
            dist = dist + d_weight * sum(((f - tf) / s).square().mean() for f, tf, s in
                                         zip(discriminator_features(D, synth), target_feats, scales))
        reg = sum(_noise_regularization(b) for b in noise_bufs.values())
        opt.zero_grad(set_to_none=True)
        (dist + reg * regularize_noise_weight).backward()
        opt.step()
        w_out[step] = w_opt.detach()[0]
        with torch.no_grad():                                 # S2A: noise maps back to zero mean, unit variance
            for buf in noise_bufs.values():
                buf -= buf.mean()
                buf *= buf.square().mean().rsqrt()
        if progress is not None:
            progress(step, float(dist.detach()))
    return w_out, {n: b.detach().clone() for n, b in noise_bufs.items()}


def _at_most_256(img: torch.Tensor) -> torch.Tensor:
    """S2A's projector: images above 256 px are area-downsampled to 256 before VGG16."""
    return F.interpolate(img, size=(256, 256), mode="area") if img.shape[-1] > 256 else img
