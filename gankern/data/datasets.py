"""Data sets: in-memory arrays (digits, .npz/.npy) and files (folders, zip archives), resized to the model's
resolution (center crop to a square, then resize)."""
from __future__ import annotations

import csv
import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


def _resize_array(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """x (N, C, H, W) float -> center-cropped to a square, resized to (N, C, R, R) (area down, bilinear up)."""
    H, W = x.shape[-2:]
    s = min(H, W)
    x = x[..., (H - s) // 2:(H - s) // 2 + s, (W - s) // 2:(W - s) // 2 + s]
    if s == resolution:
        return x
    mode = "area" if s > resolution else "bilinear"
    kw = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(x, size=(resolution, resolution), mode=mode, **kw)


class ArrayDataset(Dataset):
    """Images held in memory: x (N, C, R, R) float32 in [-1, 1], labels (N,) int64 (-1 = none)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None = None, name: str = "array"):
        self.images = images.float().contiguous()
        self.labels = labels.long() if labels is not None else torch.full((len(images),), -1, dtype=torch.long)
        self.name = name
        self.num_classes = int(self.labels.max()) + 1 if labels is not None and len(labels) else 0

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def resolution(self) -> int:
        return self.images.shape[-1]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], int(self.labels[i])

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fast path for in-memory data: images (B, C, R, R) and labels (B,) at indices idx (B,)."""
        return self.images[idx], self.labels[idx]


def from_array(x: np.ndarray, labels: np.ndarray | None, resolution: int, name: str) -> ArrayDataset:
    """x: (N, H, W), (N, H, W, C) or (N, C, H, W) with C in {1, 3}; uint8 in [0, 255] or float in [0, 1]."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"{name}: expected images (N, H, W), (N, H, W, C) or (N, C, H, W) with C in 1, 3; "
                         f"got shape {x.shape}")
    t = torch.from_numpy(x.astype(np.float32) / (255.0 if x.dtype == np.uint8 else 1.0))
    t = _resize_array(t, resolution).clamp(0, 1) * 2 - 1
    return ArrayDataset(t, torch.from_numpy(np.asarray(labels)).long() if labels is not None else None, name)


def digits(resolution: int = 32) -> ArrayDataset:
    """scikit-learn's digits (1797 real 8x8 handwritten digits, 10 classes, offline), upscaled bilinearly."""
    from sklearn.datasets import load_digits
    d = load_digits()
    return from_array(d.images.astype(np.float32) / 16.0, d.target, resolution, "digits")


def _load_pil(data: bytes | str, resolution: int, channels: int) -> torch.Tensor:
    from PIL import Image
    img = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
    img = img.convert("L" if channels == 1 else "RGB")
    w, h = img.size
    s = min(w, h)
    img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    if s != resolution:
        img = img.resize((resolution, resolution), Image.LANCZOS)
    a = np.asarray(img, dtype=np.float32).reshape(resolution, resolution, channels)
    return torch.from_numpy(a.transpose(2, 0, 1) / 127.5 - 1.0)


def _read_labels_file(path: str | None, names: list[str]) -> list[int] | None:
    """labels from StyleGAN2-ADA's dataset.json ({"labels": [[name, label], ...]}) or a CSV of name,label."""
    if path is None:
        return None
    if path.endswith(".json"):
        rows = json.load(open(path))["labels"]
    else:
        rows = [r for r in csv.reader(open(path)) if r and not r[0].startswith("#")]
    table = {str(n).replace("\\", "/"): int(v) for n, v in rows}
    missing = [n for n in names if n not in table]
    if missing:
        raise ValueError(f"labels file {path} has no label for {len(missing)} images, e.g. {missing[0]}")
    return [table[n] for n in names]


class FileDataset(Dataset):
    """Images in a folder (recursive) or a zip archive, decoded with pillow on access (in loader workers).

    Labels: ``labels_file`` (dataset.json or CSV, keyed by path relative to the root) or, with ``subfolder_labels``,
    the first-level subfolder name (sorted names -> 0, 1, ...).
    """

    def __init__(self, root: str, resolution: int, channels: int = 3, labels_file: str | None = None,
                 subfolder_labels: bool = False):
        self.root, self.resolution, self.channels, self.name = root, resolution, channels, Path(root).stem
        self._zip = None
        if zipfile.is_zipfile(root):
            with zipfile.ZipFile(root) as z:
                names = z.namelist()
        elif os.path.isdir(root):
            names = [str(p.relative_to(root)).replace(os.sep, "/") for p in Path(root).rglob("*") if p.is_file()]
        else:
            raise FileNotFoundError(f"{root}: not a folder, zip archive, .npz or .npy")
        self.names = sorted(n for n in names if Path(n).suffix.lower() in IMAGE_EXTS)
        if not self.names:
            raise ValueError(f"{root}: no images ({', '.join(sorted(IMAGE_EXTS))})")
        labels = _read_labels_file(labels_file, self.names)
        if labels is None and subfolder_labels:
            classes = sorted({n.split("/")[0] for n in self.names if "/" in n})
            if not classes:
                raise ValueError(f"{root}: subfolder labels asked for, but the images are not in subfolders")
            labels = [classes.index(n.split("/")[0]) if "/" in n else -1 for n in self.names]
            self.class_names = classes
        self.labels = torch.tensor(labels if labels is not None else [-1] * len(self.names), dtype=torch.long)
        self.num_classes = int(self.labels.max()) + 1 if labels is not None else 0

    def __len__(self) -> int:
        return len(self.names)

    def _bytes(self, name: str):
        if zipfile.is_zipfile(self.root):
            if self._zip is None:                      # one handle per worker process
                self._zip = zipfile.ZipFile(self.root)
            return self._zip.read(name)
        return os.path.join(self.root, name)

    def __getitem__(self, i: int):
        return _load_pil(self._bytes(self.names[i]), self.resolution, self.channels), int(self.labels[i])

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_zip"] = None
        return d


def open_dataset(spec: str, resolution: int, channels: int | None = None, labels_file: str | None = None,
                 subfolder_labels: bool = False):
    """'digits', a folder, a .zip, or a .npz (keys x|images, optional y|labels) / .npy (images) file."""
    if spec == "digits":
        return digits(resolution)
    if spec.endswith((".npz", ".npy")):
        if spec.endswith(".npy"):
            x, y = np.load(spec, allow_pickle=False), None
        else:
            with np.load(spec, allow_pickle=False) as f:
                xk = next((k for k in ("x", "images", "arr_0") if k in f), None)
                if xk is None:
                    raise ValueError(f"{spec}: no 'x' or 'images' array (has {list(f.keys())})")
                x = f[xk]
                y = next((f[k] for k in ("y", "labels", "arr_1") if k in f), None)
        ds = from_array(x, y, resolution, Path(spec).stem)
        if labels_file is not None:
            raise ValueError("a labels file goes with image folders/zips; put labels in the .npz as 'y'")
        return ds
    return FileDataset(spec, resolution, channels or 3, labels_file, subfolder_labels)
