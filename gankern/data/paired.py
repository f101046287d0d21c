"""Image-to-image data: pairs (A, B) as one image of 2C channels, A in channels [0, C), B in [C, 2C), so the trainer's
loader, flips (A and B flipped together), resume and DDP sharding work unchanged; recipes split with ``split_ab``.

Specs (``NAME[:SPLIT]``), read by ``open_dataset``:
- ``aligned:DIR``: pix2pix's aligned format, each image A|B side by side (A left).
- ``paired:DIR``: two folders DIR/A and DIR/B holding images with matching names.
- ``labels:DIR``: as paired, DIR/A holding label maps (pix2pixHD: single-channel PNGs whose pixel value is the label
  id, e.g. Cityscapes' labelIds, or palette PNGs' indices), resized with nearest neighbours so ids stay ids.
- ``unpaired:DIR[:SPLIT]``: CycleGAN's DIR/trainA and DIR/trainB (SPLIT test: testA, testB); item i pairs A[i mod nA]
  with B[perm(i) mod nB], perm a fixed permutation: the sets need not be the same size and hold no correspondences.
- ``digits-edges[:val]``: built in, paired: Sobel edge map of a digit (A, 1 channel) -> the digit (B), 32 px from
  scikit-learn's digits; images 0..1499 train, 1500..1796 (``:val``) held out.
- ``digits-labels[:val]``: built in, paired, pix2pixHD's kind: a label map (A, 1 channel; pixel value = label id as in
  Cityscapes' labelIds PNGs: 0 background, 1 + the digit on its strokes, so 11 labels) -> the digit (B), 32 px.
- ``digits-styles[:val]``: built in, unpaired, 3 channels: thin gray digits (A, even images) vs thick orange digits
  (B, odd images, dilated with a 3x3 max filter at 32 px-scale), so no A has its B.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from .datasets import IMAGE_EXTS, ArrayDataset, _crop_resize, _load_pil, _open, digits

BUILTIN = ("digits-edges", "digits-labels", "digits-styles")
KINDS = ("aligned", "paired", "labels", "unpaired")
_N_TRAIN = 1500


def is_pair_spec(spec: str) -> bool:
    """True for the specs this module reads (``aligned:``, ``paired:``, ``unpaired:``, the built-in sets)."""
    return spec.split(":")[0] in BUILTIN + KINDS


def split_ab(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 2C, H, W) pairs -> A (N, C, H, W), B (N, C, H, W)."""
    if x.shape[1] % 2:
        raise ValueError(f"image pairs have an even channel count (A then B), got {x.shape[1]} channels: use a paired "
                         f"data set (aligned:DIR, paired:DIR, unpaired:DIR, digits-edges, digits-styles)")
    return x.chunk(2, 1)


def _edges(x: torch.Tensor) -> torch.Tensor:
    """Binary Sobel edge map in {-1, 1} of images x (N, 1, H, W) in [-1, 1]."""
    k = torch.tensor([[1.0, 0, -1], [2, 0, -2], [1, 0, -1]])
    w = torch.stack([k, k.t()])[:, None]
    g = F.conv2d(F.pad((x + 1) / 2, (1, 1, 1, 1), mode="replicate"), w)
    mag = g.pow(2).sum(1, keepdim=True).sqrt()
    return torch.where(mag > 1.0, 1.0, -1.0)


def builtin(name: str, split: str, resolution: int) -> ArrayDataset:
    """The built-in sets of the module docstring; split 'train' or 'val'."""
    if split not in ("train", "val"):
        raise ValueError(f"{name}: split must be train or val, not '{split}'")
    ds = digits(resolution)
    d, y = (ds.images[:_N_TRAIN], ds.labels[:_N_TRAIN]) if split == "train" else \
        (ds.images[_N_TRAIN:], ds.labels[_N_TRAIN:])
    if name == "digits-labels":
        ids = torch.where(d > -0.5, 1.0 + y.float()[:, None, None, None], 0.0)       # strokes: 1 + digit
        ds = ArrayDataset(torch.cat([ids / 255 * 2 - 1, d], 1), name=f"{name}:{split}")
        ds.summary = f"data: {name}:{split}: {len(ds)} pairs label map (11 labels) -> digit, {resolution} px"
        return ds
    if name == "digits-edges":
        ds = ArrayDataset(torch.cat([_edges(d), d], 1), name=f"{name}:{split}")
        ds.summary = f"data: {name}:{split}: {len(ds)} pairs edge map -> digit, {resolution} px, 1 channel each"
        return ds
    r = max(1, resolution // 16)                       # stroke thickening that scales with the resolution
    thick = F.max_pool2d(d, 2 * r + 1, 1, r)
    orange = torch.tensor([1.0, 0.55, 0.1])[None, :, None, None]
    a, b = d[0::2].expand(-1, 3, -1, -1), ((thick[1::2] + 1) / 2 * orange) * 2 - 1
    n = max(len(a), len(b))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    ds = ArrayDataset(torch.cat([a[torch.arange(n) % len(a)], b[perm % len(b)]], 1), name=f"{name}:{split}")
    ds.summary = (f"data: {name}:{split}: {len(a)} thin gray digits (A) and {len(b)} thick orange digits (B), "
                  f"unpaired, {resolution} px, 3 channels each")
    return ds


def _images(folder: str) -> list[str]:
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder}: no such folder")
    names = sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*")
                   if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
    if not names:
        raise ValueError(f"{folder}: no images ({', '.join(sorted(IMAGE_EXTS))})")
    return names


def _half(path: str, resolution: int, channels: int, right: bool) -> torch.Tensor:
    """The left (A) or right (B) half of an aligned A|B image file -> (channels, R, R) float32 in [-1, 1]."""
    with _open(path, path) as im:
        w, h = im.size
        im = im.convert("L" if channels == 1 else "RGB").crop((w // 2, 0, w, h) if right else (0, 0, w // 2, h))
        a = np.asarray(_crop_resize(im, resolution), dtype=np.float32).reshape(resolution, resolution, channels)
    return torch.from_numpy(a.transpose(2, 0, 1) / 255.0 * 2 - 1)


def load_labels(path: str, resolution: int, channels: int) -> torch.Tensor:
    """A label map (mode L or P: pixel value / palette index = label id) -> (channels, R, R) in [-1, 1], id / 255 in
    every channel; center crop and nearest-neighbour resize (ids are not interpolated)."""
    with _open(path, path) as im:
        if im.mode not in ("L", "P"):
            raise ValueError(f"{path}: a label map is a single-channel PNG of label ids (mode L or P), not mode "
                             f"{im.mode}")
        a = np.asarray(_crop_resize(im, resolution, Image.NEAREST), dtype=np.float32)
    return torch.from_numpy(np.repeat(a[None] / 255.0 * 2 - 1, channels, 0))


class PairFileDataset(Dataset):
    """Pairs from files (see the module docstring): items (image (2C, R, R) in [-1, 1], -1)."""
    num_classes = 0

    def __init__(self, kind: str, root: str, split: str, resolution: int, channels: int = 3):
        self.kind, self.resolution, self.name = kind, resolution, f"{kind}:{root}"
        self.channels, self.c = 2 * channels, channels
        if kind == "aligned":
            self.a = [os.path.join(root, n) for n in _images(root)]
            self.b = self.a
        elif kind in ("paired", "labels"):
            na, nb = _images(os.path.join(root, "A")), _images(os.path.join(root, "B"))
            if na != nb:
                odd = sorted(set(na) ^ set(nb))
                raise ValueError(f"{root}: A/ and B/ must hold images with the same names; {len(odd)} differ, "
                                 f"e.g. {odd[0]}")
            self.a, self.b = ([os.path.join(root, s, n) for n in na] for s in "AB")
        else:
            self.a, self.b = ([os.path.join(root, split + s, n) for n in _images(os.path.join(root, split + s))]
                              for s in "AB")
        n = max(len(self.a), len(self.b))
        self.perm = torch.randperm(n, generator=torch.Generator().manual_seed(0)).tolist() \
            if kind == "unpaired" else list(range(n))
        with _open(self.a[0], self.a[0]) as im:                      # a bad first file fails here, not in a worker
            if kind == "aligned" and im.size[0] < 2:
                raise ValueError(f"{self.a[0]}: an aligned A|B image must be at least 2 pixels wide")
        self.summary = (f"data: {self.name}: {len(self.a)} A and {len(self.b)} B images "
                        f"({'unpaired' if kind == 'unpaired' else 'pairs'}), {channels} channels each, resized to "
                        f"{resolution}x{resolution}")

    def __len__(self) -> int:
        return len(self.perm)

    def __getitem__(self, i: int):
        if self.kind == "aligned":
            a, b = (_half(self.a[i], self.resolution, self.c, r) for r in (False, True))
        else:
            a = (load_labels if self.kind == "labels" else _load_pil)(self.a[i % len(self.a)], self.resolution, self.c)
            b = _load_pil(self.b[self.perm[i] % len(self.b)], self.resolution, self.c)
        return torch.cat([a, b]), -1


def open_pairs(spec: str, resolution: int, channels: int | None = None):
    """A data set of pairs for ``spec`` (module docstring); channels: of A and of B each (files; default 3)."""
    name, _, rest = spec.partition(":")
    if name in BUILTIN:
        return builtin(name, rest or "train", resolution)
    if not rest:
        raise ValueError(f"{spec}: expected {name}:DIR")
    root, split = rest, "train"
    if name == "unpaired" and not os.path.isdir(root) and ":" in root:
        root, split = root.rsplit(":", 1)
    return PairFileDataset(name, root, split, resolution, channels or 3)


def load_images(path: str, resolution: int, channels: int, aligned: bool = False,
                labels: bool = False) -> tuple[list[str], torch.Tensor]:
    """(names, images (N, C, R, R) in [-1, 1]) of an image file or a folder; ``aligned``: the left half (A) of
    A|B images; ``labels``: label maps (``load_labels``). For ``gankern translate``."""
    if os.path.isdir(path):
        files = [os.path.join(path, n) for n in _images(path)]
    elif os.path.isfile(path):
        files = [path]
    else:
        raise FileNotFoundError(f"{path}: no such image or folder")
    read = load_labels if labels else _load_pil
    x = [_half(f, resolution, channels, False) if aligned else read(f, resolution, channels) for f in files]
    return [os.path.relpath(f, path) if os.path.isdir(path) else os.path.basename(f) for f in files], torch.stack(x)


def save_images(x: torch.Tensor, names: list[str], out: str) -> list[str]:
    """Write images x (N, C, H, W) in [-1, 1] as PNGs named after ``names`` under folder ``out``; returns paths."""
    paths = []
    for img, n in zip(x, names):
        p = os.path.join(out, os.path.splitext(n)[0] + ".png")
        os.makedirs(os.path.dirname(p), exist_ok=True)
        a = ((img.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
        Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a).save(p)
        paths.append(p)
    return paths
