"""One image as a data set (SinGAN): ``sample:china`` / ``sample:flower`` (scikit-learn's bundled photographs, offline)
or an image file (``PATH.png``, ``.jpg``, ...). The image keeps its aspect ratio: resized (Lanczos) so that its
longer side is the run's resolution. Every item is that image, (C, h, w) in [-1, 1]; a batch of B holds B copies."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .datasets import IMAGE_EXTS, ArrayDataset, _open, _unit_gray

SAMPLES = ("china", "flower")


def is_single_spec(spec: str) -> bool:
    """True for ``sample:NAME`` and for a path with an image suffix that is not a folder."""
    return spec.startswith("sample:") or (Path(spec).suffix.lower() in IMAGE_EXTS and not os.path.isdir(spec))


def _image(spec: str) -> Image.Image:
    if spec.startswith("sample:"):
        name = spec.partition(":")[2]
        if name not in SAMPLES:
            raise ValueError(f"--data {spec}: the bundled images are {', '.join('sample:' + s for s in SAMPLES)}")
        from sklearn.datasets import load_sample_image
        return Image.fromarray(load_sample_image(f"{name}.jpg"))
    if not os.path.isfile(spec):
        raise FileNotFoundError(f"{spec}: no such image file")
    return _open(spec, spec)


def _tensor(img: Image.Image, size: tuple[int, int], c: int, where: str) -> torch.Tensor:
    """A pillow image resized (Lanczos) to size (w, h) -> (1, c, h, w) float32 in [-1, 1] (modes as datasets.py)."""
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):          # more than 8 bits: read as [0, 1] gray
        a = np.asarray(Image.fromarray(_unit_gray(img, where)).resize(size, Image.LANCZOS), dtype=np.float32)
        a = np.repeat(np.clip(a, 0, 1)[:, :, None], c, 2)
    else:
        a = np.asarray(img.convert("L" if c == 1 else "RGB").resize(size, Image.LANCZOS), dtype=np.float32) / 255.0
        a = a.reshape(size[1], size[0], c)
    return torch.from_numpy(a.transpose(2, 0, 1)[None] * 2 - 1)


def open_single(spec: str, resolution: int, channels: int | None = None) -> ArrayDataset:
    """The one-image data set of ``spec`` (module docstring), its longer side ``resolution``, 3 channels (or 1)."""
    c = channels or 3
    img = _image(spec)
    w, h = img.size
    size = (max(1, round(w * resolution / max(w, h))), max(1, round(h * resolution / max(w, h))))
    ds = ArrayDataset(_tensor(img, size, c, spec), name=spec)
    ds.summary = f"data: {spec}: one image {w}x{h} mode {img.mode}, resized to {size[0]}x{size[1]}, {c} channels"
    return ds


def load_image(spec: str, size: tuple[int, int], channels: int) -> torch.Tensor:
    """The image of ``spec`` (a file or sample:NAME) resized to size (h, w): (1, channels, h, w) in [-1, 1]."""
    return _tensor(_image(spec), (size[1], size[0]), channels, spec)
