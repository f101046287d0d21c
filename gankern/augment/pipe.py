"""StyleGAN2-ADA's differentiable augmentation pipeline (Karras et al. 2020, "Training Generative Adversarial
Networks with Limited Data"), with S2A's constructor arguments, defaults, buffers (``p``, ``Hz_geom``,
``Hz_fbank``) and order of random draws.

Every augmentation is applied to each image independently with probability (its multiplier) * p:
- pixel blitting: x-flip, 90-degree rotations, integer translation (up to xint_max of the size);
- general geometric: isotropic scaling (log2 std scale_std), rotation (before and after the anisotropic scaling,
  each with probability 1 - sqrt(1 - rotate * p)), anisotropic scaling, fractional translation (std xfrac_std);
  executed together as one inverse affine map: reflect-pad, 2x up-sampling with the orthogonal low-pass sym6
  wavelet filter (gankern.ops.upsample2d), bilinear resampling at the mapped positions
  (gankern.ops.affine_grid_sample: grid_sample at affine_grid's positions, without the grid tensor), 2x
  down-sampling with the same filter (gankern.ops.downsample2d), crop;
- color: brightness, contrast, luma flip, hue rotation, saturation, as one 4x4 color matrix per image, applied in
  one pass (gankern.ops.color_transform);
- image-space filtering (4 frequency bands with random gains), additive RGB noise, cutout.
Every step is differentiable in the images (first and second order: R1 on augmented reals); the random parameters
are constants. ``p`` is a buffer (S2A's): the ADA controller (gankern.augment.AdaController) adjusts it.

Shapes: images (N, C, H, W) with C = 3 (or C = 1: the color matrix is averaged over RGB) -> same shape.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..ops import augment as augment_ops
from ..ops import resample as resample_ops

__all__ = ["AugmentPipe", "AUGPIPE_SPECS", "augment_pipe"]

# Low-pass filters of orthogonal wavelets (S2A's coefficients).
WAVELETS = {
    "sym2": [-0.12940952255092145, 0.22414386804185735, 0.836516303737469, 0.48296291314469025],
    "sym6": [0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
             0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
             -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148],
}

# S2A's named pipelines (train.py --augpipe): b = blit, g = geom, c = color, f = filter, n = noise, c = cutout.
_BLIT = dict(xflip=1, rotate90=1, xint=1)
_GEOM = dict(scale=1, rotate=1, aniso=1, xfrac=1)
_COLOR = dict(brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)
AUGPIPE_SPECS = {
    "blit": _BLIT, "geom": _GEOM, "color": _COLOR, "filter": dict(imgfilter=1), "noise": dict(noise=1),
    "cutout": dict(cutout=1), "bg": {**_BLIT, **_GEOM}, "bgc": {**_BLIT, **_GEOM, **_COLOR},
    "bgcf": {**_BLIT, **_GEOM, **_COLOR, "imgfilter": 1},
    "bgcfn": {**_BLIT, **_GEOM, **_COLOR, "imgfilter": 1, "noise": 1},
    "bgcfnc": {**_BLIT, **_GEOM, **_COLOR, "imgfilter": 1, "noise": 1, "cutout": 1},
}


def augment_pipe(spec: str = "bgc", **kwargs) -> "AugmentPipe":
    """An AugmentPipe with S2A's named set of augmentations (``bgc`` by default); kwargs override (e.g. strengths)."""
    if spec not in AUGPIPE_SPECS:
        raise ValueError(f"unknown augmentation pipeline {spec!r}; known: {', '.join(AUGPIPE_SPECS)}")
    return AugmentPipe(**{**AUGPIPE_SPECS[spec], **kwargs})


# ----------------------------------------------------------------------------------------------------------------
# homogeneous matrices, batched: entries are numbers or (N,) tensors; the result is (N, k, k)


def _matrix(rows, ref: torch.Tensor) -> torch.Tensor:
    """rows of numbers / (N,) tensors -> (N, len(rows), len(rows[0])) on ref's device."""
    N = ref.shape[0]
    elems = [e if isinstance(e, torch.Tensor) else torch.full((N,), float(e), device=ref.device)
             for row in rows for e in row]
    return torch.stack(elems, dim=-1).reshape(N, len(rows), len(rows[0]))


def _translate2d(tx, ty, ref):
    return _matrix([[1, 0, tx], [0, 1, ty], [0, 0, 1]], ref)


def _scale2d(sx, sy, ref):
    return _matrix([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], ref)


def _rotate2d(theta, ref):
    c, s = torch.cos(theta), torch.sin(theta)
    return _matrix([[c, -s, 0], [s, c, 0], [0, 0, 1]], ref)


def _translate3d(t, ref):
    return _matrix([[1, 0, 0, t], [0, 1, 0, t], [0, 0, 1, t], [0, 0, 0, 1]], ref)


def _scale3d(s, ref):
    return _matrix([[s, 0, 0, 0], [0, s, 0, 0], [0, 0, s, 0], [0, 0, 0, 1]], ref)


def _rotate3d(v: tuple[float, float, float], theta: torch.Tensor) -> torch.Tensor:
    """Rotation by theta (N,) about the unit axis v (3 floats), homogeneous (N, 4, 4)."""
    vx, vy, vz = v
    s, c = torch.sin(theta), torch.cos(theta)
    cc = 1 - c
    return _matrix([[vx * vx * cc + c, vx * vy * cc - vz * s, vx * vz * cc + vy * s, 0],
                    [vy * vx * cc + vz * s, vy * vy * cc + c, vy * vz * cc - vx * s, 0],
                    [vz * vx * cc - vy * s, vz * vy * cc + vx * s, vz * vz * cc + c, 0],
                    [0, 0, 0, 1]], theta)


# the luma axis (1, 1, 1, 0) / sqrt(3) in fp32: a buffer of the pipe (on the images' device without a copy from the host
# at each call, which would wait for the GPU) and its entries as numbers
_LUMA = torch.tensor([1.0, 1.0, 1.0, 0.0]) / math.sqrt(3)
_LUMA_AXIS = tuple(_LUMA[:3].tolist())


def _filter_bank() -> np.ndarray:
    """The 4-band filter bank of the image-space filtering (rows: bands, columns: taps), built from sym2 as S2A."""
    lo = np.asarray(WAVELETS["sym2"])
    hi = lo * ((-1) ** np.arange(lo.size))
    lo2, hi2 = np.convolve(lo, lo[::-1]) / 2, np.convolve(hi, hi[::-1]) / 2
    bank = np.eye(4, 1)
    for i in range(1, bank.shape[0]):
        bank = np.dstack([bank, np.zeros_like(bank)]).reshape(bank.shape[0], -1)[:, :-1]  # zero insertion
        bank = np.stack([np.convolve(row, lo2) for row in bank])
        start = (bank.shape[1] - hi2.size) // 2
        bank[i, start:start + hi2.size] += hi2
    return bank


class AugmentPipe(nn.Module):
    """S2A's AugmentPipe: ``pipe(images) -> augmented images`` (same shape and dtype), differentiable.

    Args (S2A's, all probabilities 0 by default, strengths at S2A's defaults): xflip, rotate90, xint, xint_max,
    scale, rotate, aniso, xfrac, scale_std, rotate_max, aniso_std, xfrac_std, brightness, contrast, lumaflip, hue,
    saturation, brightness_std, contrast_std, hue_max, saturation_std, imgfilter, imgfilter_bands, imgfilter_std,
    noise, cutout, noise_std, cutout_size.
    """

    def __init__(self, xflip=0, rotate90=0, xint=0, xint_max=0.125, scale=0, rotate=0, aniso=0, xfrac=0,
                 scale_std=0.2, rotate_max=1, aniso_std=0.2, xfrac_std=0.125, brightness=0, contrast=0, lumaflip=0,
                 hue=0, saturation=0, brightness_std=0.2, contrast_std=0.5, hue_max=1, saturation_std=1,
                 imgfilter=0, imgfilter_bands=(1, 1, 1, 1), imgfilter_std=1, noise=0, cutout=0, noise_std=0.1,
                 cutout_size=0.5):
        super().__init__()
        args = {k: v for k, v in locals().items() if k not in ("self", "__class__", "imgfilter_bands")}
        for name, v in args.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
            setattr(self, name, float(v))
        self.imgfilter_bands = [float(b) for b in imgfilter_bands]
        if len(self.imgfilter_bands) != 4:
            raise ValueError(f"imgfilter_bands must have 4 entries, got {imgfilter_bands!r}")
        self.register_buffer("p", torch.ones([]))  # overall multiplier of the probabilities (ADA's p)
        self.register_buffer("Hz_geom", resample_ops.setup_filter(WAVELETS["sym6"]))
        self.register_buffer("Hz_fbank", torch.as_tensor(_filter_bank(), dtype=torch.float32))
        # constants on the pipe's device, outside the state_dict (S2A's keys): no blocking host copy per call
        self.register_buffer("_luma", _LUMA.clone(), persistent=False)
        self.register_buffer("_band_power", torch.tensor([10.0, 1.0, 1.0, 1.0]) / 13, persistent=False)

    def _draw(self, values: torch.Tensor, prob: float, identity: float) -> torch.Tensor:
        """values where a uniform draw is below prob * p, else identity (one draw per element of values' rows)."""
        shape = [values.shape[0]] + [1] * (values.dim() - 1)
        keep = torch.rand(shape, device=values.device) < prob * self.p
        return torch.where(keep, values, torch.full_like(values, identity))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] not in (1, 3) \
                or not images.is_floating_point():
            raise ValueError("images must be a float tensor (N, 3 or 1, H, W), got "
                             f"{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}")
        N, C, H, W = images.shape
        taps = self.Hz_fbank.shape[1]
        if self.imgfilter > 0 and min(H, W) <= taps // 2:
            raise ValueError(f"image-space filtering (imgfilter) needs images larger than {taps // 2} px (its "
                             f"{taps}-tap filter is reflect-padded), got {H}x{W}")
        dev = images.device
        ref = torch.empty(N, device=dev)
        G_inv = None  # inverse geometric transform (N, 3, 3): output pixel -> input pixel

        def then(m):
            nonlocal G_inv
            G_inv = m if G_inv is None else G_inv @ m

        # pixel blitting
        if self.xflip > 0:
            i = self._draw(torch.floor(torch.rand([N], device=dev) * 2), self.xflip, 0)
            then(_scale2d(1 / (1 - 2 * i), 1, ref))
        if self.rotate90 > 0:
            i = self._draw(torch.floor(torch.rand([N], device=dev) * 4), self.rotate90, 0)
            then(_rotate2d(np.pi / 2 * i, ref))
        if self.xint > 0:
            t = self._draw((torch.rand([N, 2], device=dev) * 2 - 1) * self.xint_max, self.xint, 0)
            then(_translate2d(-torch.round(t[:, 0] * W), -torch.round(t[:, 1] * H), ref))
        # general geometric transformations
        if self.scale > 0:
            s = self._draw(torch.exp2(torch.randn([N], device=dev) * self.scale_std), self.scale, 1)
            then(_scale2d(1 / s, 1 / s, ref))
        p_rot = 1 - torch.sqrt((1 - self.rotate * self.p).clamp(0, 1))  # P(pre or post rotation) = rotate * p
        if self.rotate > 0:
            theta = (torch.rand([N], device=dev) * 2 - 1) * np.pi * self.rotate_max
            theta = torch.where(torch.rand([N], device=dev) < p_rot, theta, torch.zeros_like(theta))
            then(_rotate2d(theta, ref))
        if self.aniso > 0:
            s = self._draw(torch.exp2(torch.randn([N], device=dev) * self.aniso_std), self.aniso, 1)
            then(_scale2d(1 / s, s, ref))
        if self.rotate > 0:
            theta = (torch.rand([N], device=dev) * 2 - 1) * np.pi * self.rotate_max
            theta = torch.where(torch.rand([N], device=dev) < p_rot, theta, torch.zeros_like(theta))
            then(_rotate2d(theta, ref))
        if self.xfrac > 0:
            t = self._draw(torch.randn([N, 2], device=dev) * self.xfrac_std, self.xfrac, 0)
            then(_translate2d(-t[:, 0] * W, -t[:, 1] * H, ref))
        # color transformations: C (N, 4, 4) @ [r, g, b, 1], drawn before the geometric resampling runs: its host
        # sync (the padding is a shape) then finds these small launches already queued behind the GPU's work
        Cm = None

        def color(m):
            nonlocal Cm
            Cm = m if Cm is None else m @ Cm

        v = self._luma.to(dev)  # the luma axis (1, 1, 1, 0) / sqrt(3)
        vv = torch.outer(v, v)
        eye4 = torch.eye(4, device=dev)
        if self.brightness > 0:
            b = self._draw(torch.randn([N], device=dev) * self.brightness_std, self.brightness, 0)
            color(_translate3d(b, ref))
        if self.contrast > 0:
            c = self._draw(torch.exp2(torch.randn([N], device=dev) * self.contrast_std), self.contrast, 1)
            color(_scale3d(c, ref))
        if self.lumaflip > 0:
            i = self._draw(torch.floor(torch.rand([N, 1, 1], device=dev) * 2), self.lumaflip, 0)
            color(eye4 - 2 * vv * i)  # Householder reflection through the plane orthogonal to the luma axis
        if self.hue > 0 and C > 1:
            theta = self._draw((torch.rand([N], device=dev) * 2 - 1) * np.pi * self.hue_max, self.hue, 0)
            color(_rotate3d(_LUMA_AXIS, theta))
        if self.saturation > 0 and C > 1:
            s = self._draw(torch.exp2(torch.randn([N, 1, 1], device=dev) * self.saturation_std), self.saturation, 1)
            color(vv + (eye4 - vv) * s)
        if G_inv is not None:
            images = self._geometric(images, G_inv)
        if Cm is not None:
            images = augment_ops.color_transform(images, Cm)  # C = 1: the matrix averaged over RGB

        if self.imgfilter > 0:
            images = self._filter(images)
        if self.noise > 0:
            sigma = self._draw(torch.randn([N, 1, 1, 1], device=dev).abs() * self.noise_std, self.noise, 0)
            images = images + torch.randn([N, C, H, W], device=dev, dtype=images.dtype) * sigma.to(images.dtype)
        if self.cutout > 0:
            size = self._draw(torch.full([N, 2, 1, 1, 1], self.cutout_size, device=dev), self.cutout, 0)
            center = torch.rand([N, 2, 1, 1, 1], device=dev)
            cx = (torch.arange(W, device=dev).reshape(1, 1, 1, -1) + 0.5) / W
            cy = (torch.arange(H, device=dev).reshape(1, 1, -1, 1) + 0.5) / H
            mask = ((cx - center[:, 0]).abs() >= size[:, 0] / 2) | ((cy - center[:, 1]).abs() >= size[:, 1] / 2)
            images = images * mask.to(images.dtype)
        return images

    def _geometric(self, images: torch.Tensor, G_inv: torch.Tensor) -> torch.Tensor:
        """Resample images at G_inv @ (output pixel): pad, 2x up (sym6), grid_sample, 2x down (sym6), crop."""
        N, C, H, W = images.shape
        ref = G_inv[:, 0, 0]
        cx, cy = (W - 1) / 2, (H - 1) / 2
        # the padding is a shape: computed on the host from G_inv, the pipe's one host sync (all its small launches
        # are queued by then)
        corners = torch.tensor([[-cx, -cy, 1], [cx, -cy, 1], [cx, cy, 1], [-cx, cy, 1]])
        cp = G_inv.cpu() @ corners.t()                            # [N, xyz, corner]
        Hz_pad = self.Hz_geom.shape[0] // 4
        margin = cp[:, :2, :].permute(1, 0, 2).flatten(1)        # [xy, N * corner]
        margin = torch.cat([-margin, margin]).max(dim=1).values   # [x0, y0, x1, y1]
        margin = margin + torch.tensor([Hz_pad * 2 - cx, Hz_pad * 2 - cy] * 2)
        margin = margin.clamp_min(0).minimum(torch.tensor([W - 1, H - 1] * 2))
        mx0, my0, mx1, my1 = (int(m) for m in margin.ceil().tolist())
        images = F.pad(images, [mx0, mx1, my0, my1], mode="reflect")
        G_inv = _translate2d((mx0 - mx1) / 2, (my0 - my1) / 2, ref) @ G_inv
        images = resample_ops.upsample2d(images, self.Hz_geom, up=2)
        G_inv = _scale2d(2, 2, ref) @ G_inv @ _scale2d(0.5, 0.5, ref)
        G_inv = _translate2d(-0.5, -0.5, ref) @ G_inv @ _translate2d(0.5, 0.5, ref)
        shape = [N, C, (H + Hz_pad * 2) * 2, (W + Hz_pad * 2) * 2]
        G_inv = _scale2d(2 / images.shape[3], 2 / images.shape[2], ref) @ G_inv @ \
            _scale2d(shape[3] / 2, shape[2] / 2, ref)
        images = augment_ops.affine_grid_sample(images, G_inv[:, :2, :], shape[2:])  # bilinear, zeros padding
        return resample_ops.downsample2d(images, self.Hz_geom, down=2, padding=-Hz_pad * 2, flip_filter=True)

    def _filter(self, images: torch.Tensor) -> torch.Tensor:
        """Amplify 4 frequency bands by random gains (normalized to the expected 1/f power), one separable filter
        per image."""
        N, C, H, W = images.shape
        dev = images.device
        bands = self.Hz_fbank.shape[0]
        expected_power = self._band_power.to(dev)
        g = torch.ones([N, bands], device=dev)
        for i, band_strength in enumerate(self.imgfilter_bands):
            t_i = self._draw(torch.exp2(torch.randn([N], device=dev) * self.imgfilter_std),
                             self.imgfilter * band_strength, 1)
            t = torch.ones([N, bands], device=dev)
            t[:, i] = t_i
            g = g * t / (expected_power * t.square()).sum(dim=-1, keepdim=True).sqrt()
        taps = (g @ self.Hz_fbank).unsqueeze(1).repeat([1, C, 1]).reshape(N * C, 1, -1).to(images.dtype)
        p = self.Hz_fbank.shape[1] // 2
        x = F.pad(images.reshape(1, N * C, H, W), [p, p, p, p], mode="reflect")
        x = F.conv2d(x, taps.unsqueeze(2), groups=N * C)
        x = F.conv2d(x, taps.unsqueeze(3), groups=N * C)
        return x.reshape(N, C, H, W)

    def extra_repr(self) -> str:
        on = [k for k in ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac", "brightness",
                          "contrast", "lumaflip", "hue", "saturation", "imgfilter", "noise", "cutout")
              if getattr(self, k) > 0]
        return f"augmentations={on}"
