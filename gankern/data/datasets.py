"""Data sets: in-memory arrays (digits, .npz/.npy) and files (folders, zip archives), resized to the model's
resolution (center crop to a square, then resize).

Pixel range: arrays are read by dtype and values (``array_range``: uint8 as 0..255; other integers as 0..255 or
0..65535 by their maximum; floats as 0..1, -1..1 or 0..255 by their extent); image files by pillow mode (8-bit modes
as 0..255, I;16 and I as 0..65535, F as 0..1). Anything else is refused with a message that says how to convert.
``open_dataset`` logs one line (logger ``gankern.data``) saying what it read and how.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import os
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
_log = logging.getLogger("gankern.data")
_CONVERT = ("convert them, e.g. np.save(path, np.round(255 * (x - x.min()) / (x.max() - x.min())).astype(np.uint8))"
            " for 8-bit, or scale floats to [0, 1]")


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


def array_range(x: np.ndarray, name: str = "array") -> tuple[float, float, str]:
    """(lo, hi, how): the pixel range [lo, hi] that images ``x`` are stored in, decided from the dtype and the values
    (uint8: 0..255; other integers: 0..255 when at most 255, else 0..65535; floats: 0..1, -1..1 or 0..255, the
    smallest that holds them; bool: 0..1), and a phrase saying so. Raises ValueError (how to convert) otherwise."""
    kind = x.dtype.kind
    if x.size == 0:
        raise ValueError(f"{name}: no images (shape {x.shape})")
    if kind == "b":
        return 0.0, 1.0, "bool read as 0/1"
    if kind not in "uif":
        raise ValueError(f"{name}: images of dtype {x.dtype} are not supported: store uint8 (0..255), uint16 "
                         f"(0..65535) or floats in [0, 1]")
    if kind == "f" and not np.isfinite(x).all():
        raise ValueError(f"{name}: the images hold NaN or Inf: replace them (np.nan_to_num) and store uint8 or "
                         f"floats in [0, 1]")
    lo, hi = x.min().item(), x.max().item()
    seen = f"{x.dtype} values in [{lo:g}, {hi:g}]"
    if kind == "u" and x.dtype.itemsize == 1:
        return 0.0, 255.0, f"{x.dtype} read as 0..255"
    if kind in "ui":
        if lo >= 0 and hi <= 255:
            return 0.0, 255.0, f"{seen} read as 8-bit (0..255)"
        if lo >= 0 and hi <= 65535:
            return 0.0, 65535.0, f"{seen} read as 16-bit (0..65535)"
        raise ValueError(f"{name}: integer images must lie in 0..255 or 0..65535, got {seen}; {_CONVERT}")
    for a, b in ((0.0, 1.0), (-1.0, 1.0), (0.0, 255.0)):
        if lo >= a and hi <= b:
            return a, b, f"{seen} read as {a:g}..{b:g}"
    raise ValueError(f"{name}: float images must lie in [0, 1], [-1, 1] or [0, 255], got {seen}; {_CONVERT}")


def _check_labels(labels, n: int, name: str) -> np.ndarray:
    """labels as int64 (n,), non-negative and integral; ValueError naming the problem otherwise."""
    y = np.asarray(labels)
    if y.shape != (n,):
        raise ValueError(f"{name}: labels have shape {y.shape}, expected ({n},) (one per image)")
    if y.dtype.kind not in "uib" and not (y.dtype.kind == "f" and np.isfinite(y).all() and (y == np.round(y)).all()):
        raise ValueError(f"{name}: labels must be integers 0, 1, ..., got dtype {y.dtype}")
    y = y.astype(np.int64)
    if n and y.min() < 0:
        raise ValueError(f"{name}: labels must be 0, 1, ..., got {int(y.min())} for image {int(np.argmin(y))}")
    return y


def from_array(x: np.ndarray, labels: np.ndarray | None, resolution: int, name: str) -> ArrayDataset:
    """x: (N, H, W), (N, H, W, C) or (N, C, H, W) with C in {1, 3}, in the range ``array_range`` decides;
    labels (N,) integers >= 0 or None. ``.summary``: one line saying what was read and how."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"{name}: expected images (N, H, W), (N, H, W, C) or (N, C, H, W) with C in 1, 3; "
                         f"got shape {x.shape}")
    lo, hi, how = array_range(x, name)
    y = _check_labels(labels, len(x), name) if labels is not None else None
    t = torch.from_numpy((x.astype(np.float32) - np.float32(lo)) / np.float32(hi - lo))
    t = _resize_array(t, resolution).clamp(0, 1) * 2 - 1
    ds = ArrayDataset(t, torch.from_numpy(y) if y is not None else None, name)
    ds.summary = (f"data: {name}: {len(x)} images {x.shape[2]}x{x.shape[3]}x{x.shape[1]}, {how}, "
                  f"resized to {resolution}x{resolution}, {ds.num_classes or 'no'} classes")
    return ds


def digits(resolution: int = 32) -> ArrayDataset:
    """scikit-learn's digits (1797 real 8x8 handwritten digits, 10 classes, offline), upscaled bilinearly."""
    from sklearn.datasets import load_digits
    d = load_digits()
    return from_array(d.images.astype(np.float32) / 16.0, d.target, resolution, "digits")


def _crop_resize(img, resolution: int, resample=Image.LANCZOS):
    """Center crop of a pillow image to a square, then a resize (Lanczos; label maps: nearest) to resolution^2."""
    w, h = img.size
    s = min(w, h)
    img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    return img if s == resolution else img.resize((resolution, resolution), resample)


def _unit_gray(img, where: str) -> np.ndarray:
    """A single-channel image of more than 8 bits (pillow modes I;16*, I, F) -> float32 (H, W) in [0, 1]:
    I;16 and I as 0..65535, F as 0..1; ValueError (how to convert) for values outside that range."""
    a = np.asarray(img)
    lo, hi = (a.min().item(), a.max().item()) if a.size else (0, 0)
    if img.mode == "F":
        if not np.isfinite(a).all() or lo < 0 or hi > 1:
            raise ValueError(f"{where}: a float (mode F) image must hold values in [0, 1], got [{lo:g}, {hi:g}]: "
                             f"scale it to [0, 1], or save it as an 8- or 16-bit PNG")
        return a.astype(np.float32)
    if lo < 0 or hi > 65535:
        raise ValueError(f"{where}: a 32-bit integer (mode I) image must hold 16-bit values 0..65535, got "
                         f"[{lo}, {hi}]: save it as an 8- or 16-bit PNG")
    return a.astype(np.float32) / 65535.0


def _open(data: bytes | str, where: str):
    """A decoded pillow image from a path or bytes; ValueError naming the file when pillow cannot read it."""
    try:
        img = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
        img.load()
        return img
    except Exception as e:  # pillow raises many types; the message names the file either way
        raise ValueError(f"cannot read image {where}: {type(e).__name__}: {e}") from e


def _load_pil(data: bytes | str, resolution: int, channels: int, where: str = "") -> torch.Tensor:
    """An image file (path or bytes) -> (channels, R, R) float32 in [-1, 1]; the range is the pillow mode's."""
    where = where or str(data)
    with _open(data, where) as img:
        if img.mode.startswith("I;16") or img.mode in ("I", "F"):
            a = np.asarray(_crop_resize(Image.fromarray(_unit_gray(img, where)), resolution), dtype=np.float32)
            a = np.repeat(np.clip(a, 0, 1)[:, :, None], channels, 2)
        else:
            a = np.asarray(_crop_resize(img.convert("L" if channels == 1 else "RGB"), resolution), dtype=np.float32)
            a = a.reshape(resolution, resolution, channels) / 255.0
    return torch.from_numpy(a.transpose(2, 0, 1) * 2 - 1)


def _read_labels_file(path: str | None, names: list[str]) -> list[int] | None:
    """labels from StyleGAN2-ADA's dataset.json ({"labels": [[name, label], ...]}) or a CSV of name,label."""
    if path is None:
        return None
    if not os.path.isfile(path):
        raise FileNotFoundError(f"labels file {path} does not exist")
    with open(path, newline="") as f:
        if path.endswith(".json"):
            rows = json.load(f)["labels"]
        else:
            rows = [r for r in csv.reader(f) if r and not r[0].startswith("#")]
    table = {}
    for row in rows:
        try:
            n, v = row
            table[str(n).replace("\\", "/")] = int(v)
        except (TypeError, ValueError):
            raise ValueError(f"labels file {path}: expected rows of (image name, integer label), got {row!r}") from None
    missing = [n for n in names if n not in table]
    if missing:
        raise ValueError(f"labels file {path} has no label for {len(missing)} images, e.g. {missing[0]}")
    return [table[n] for n in names]


class FileDataset(Dataset):
    """Images in a folder (recursive) or a zip archive, decoded with pillow on access (in loader workers).

    Labels: ``labels_file`` (dataset.json or CSV, keyed by path relative to the root) or, with ``subfolder_labels``,
    the first-level subfolder name (sorted names -> 0, 1, ...; an image outside every subfolder is an error).
    """

    def __init__(self, root: str, resolution: int, channels: int = 3, labels_file: str | None = None,
                 subfolder_labels: bool = False):
        self.root, self.resolution, self.channels, self.name = root, resolution, channels, Path(root).stem
        self._zip = None
        self._is_zip = zipfile.is_zipfile(root)
        if self._is_zip:
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
            top = [n for n in self.names if "/" not in n]
            if top:
                raise ValueError(f"{root}: subfolder labels (--subfolder-labels) take each image's label from its "
                                 f"first-level subfolder, but {len(top)} of {len(self.names)} images lie at the top "
                                 f"level (e.g. {top[0]}): move them into a class subfolder or remove them")
            classes = sorted({n.split("/")[0] for n in self.names})
            labels = [classes.index(n.split("/")[0]) for n in self.names]
            self.class_names = classes
        if labels is not None:
            labels = _check_labels(labels, len(self.names), labels_file or root)
        self.labels = torch.tensor(labels if labels is not None else [-1] * len(self.names), dtype=torch.long)
        self.num_classes = int(self.labels.max()) + 1 if labels is not None else 0
        with _open(*self._source(self.names[0])) as im:    # a bad first file fails here, not in a worker
            first = f"{self.names[0]}: {im.size[0]}x{im.size[1]} mode {im.mode}"
        self.summary = (f"data: {root}: {len(self)} images in a {'zip' if self._is_zip else 'folder'} (first "
                        f"{first}), read by pillow mode (8-bit modes as 0..255, I;16 and I as 0..65535, F as 0..1), "
                        f"{channels} channels, resized to {resolution}x{resolution}, {self.num_classes or 'no'} "
                        f"classes")

    def __len__(self) -> int:
        return len(self.names)

    def _source(self, name: str) -> tuple[bytes | str, str]:
        """(the bytes or path of image ``name``, where it is for messages)."""
        if not self._is_zip:
            return os.path.join(self.root, name), os.path.join(self.root, name)
        if self._zip is None:                          # one handle per worker process
            self._zip = zipfile.ZipFile(self.root)
        return self._zip.read(name), f"{self.root}!{name}"

    def __getitem__(self, i: int):
        data, where = self._source(self.names[i])
        return _load_pil(data, self.resolution, self.channels, where), int(self.labels[i])

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_zip"] = None
        return d


def _load_arrays(spec: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(images, labels or None) of a .npy (images) or .npz (x|images|arr_0, optional y|labels|arr_1) file."""
    if not os.path.isfile(spec):
        raise FileNotFoundError(f"{spec} does not exist")
    try:
        if spec.endswith(".npy"):
            return np.load(spec, allow_pickle=False), None
        with np.load(spec, allow_pickle=False) as f:
            xk = next((k for k in ("x", "images", "arr_0") if k in f), None)
            if xk is None:
                raise ValueError(f"{spec}: no 'x' or 'images' array (has {list(f.keys())})")
            return f[xk], next((f[k] for k in ("y", "labels", "arr_1") if k in f), None)
    except (OSError, ValueError) as e:          # not an npy/npz file, or object arrays (which would need pickle)
        raise ValueError(f"{spec}: cannot read it as {Path(spec).suffix}: {e}") from e


def open_dataset(spec: str, resolution: int, channels: int | None = None, labels_file: str | None = None,
                 subfolder_labels: bool = False):
    """'digits', 'ring' (2-D points: gankern.data.ring), a folder, a .zip, or a .npz (keys x|images, optional
    y|labels) / .npy (images) file; image pairs (aligned:DIR, paired:DIR, unpaired:DIR, digits-edges, digits-styles:
    gankern/data/paired.py) as 2C channels; one image (sample:china, sample:flower, an image file:
    gankern/data/single.py) at its aspect ratio, its longer side ``resolution``.

    Logs one line (``.summary``: what was read, and the pixel range it was read in) to the ``gankern.data`` logger.
    Raises FileNotFoundError or ValueError with a message (bad range, labels, shapes, unreadable first image)."""
    from .paired import is_pair_spec, open_pairs
    from .single import is_single_spec, open_single
    if is_pair_spec(spec):
        ds = open_pairs(spec, resolution, channels)
    elif is_single_spec(spec):
        ds = open_single(spec, resolution, channels)
    elif spec == "digits":
        ds = digits(resolution)
    elif spec == "ring":
        from .ring import ring
        ds = ring()
    elif spec.endswith((".npz", ".npy")):
        if labels_file is not None or subfolder_labels:
            raise ValueError(f"{spec}: a labels file and subfolder labels go with image folders and zips; put the "
                             f"labels in the .npz as 'y'")
        ds = from_array(*_load_arrays(spec), resolution, spec)
        if channels and channels != ds.channels:
            raise ValueError(f"{spec} holds {ds.channels}-channel images, not {channels}: leave the channel count "
                             f"unset or convert the array")
    else:
        ds = FileDataset(spec, resolution, channels or 3, labels_file, subfolder_labels)
    _log.info(ds.summary)
    return ds
