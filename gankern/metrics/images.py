"""A minimal image reader for `gankern fid`: a folder (searched recursively) or a zip archive of images.

Preprocessing is pytorch-fid's: PIL, converted to RGB, to float in [0, 1], then bilinear (align_corners=False) to
299 x 299 -- done here per image, which is exactly what pytorch-fid's model does per batch, so folders of
differently-sized images work and give the same features as pytorch-fid at batch size 1. (gankern.data's reader,
for the trainers, center-crops and area-resizes to the model's resolution: not FID's preprocessing.)
An unreadable file raises ValueError naming it; nothing is skipped silently.
"""
from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

IMAGE_EXTS = (".bmp", ".jpg", ".jpeg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")
SIZE = 299


class ImageFiles(Dataset):
    """Images of a folder or zip as (3, 299, 299) float32 in [0, 1], in sorted name order."""

    def __init__(self, path: str | os.PathLike, size: int | None = SIZE):
        self.path = Path(path)
        self.size = size
        if self.path.is_dir():
            self.is_zip = False
            self.names = sorted(str(p.relative_to(self.path)) for p in self.path.rglob("*")
                                if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
        elif self.path.is_file() and zipfile.is_zipfile(self.path):
            self.is_zip = True
            with zipfile.ZipFile(self.path) as z:
                self.names = sorted(n for n in z.namelist() if Path(n).suffix.lower() in IMAGE_EXTS)
        elif self.path.exists():
            raise ValueError(f"{self.path}: not a folder, a zip archive or an .npz of FID statistics")
        else:
            raise FileNotFoundError(f"{self.path} does not exist")
        if not self.names:
            raise ValueError(f"{self.path}: no images found (extensions {', '.join(IMAGE_EXTS)})")
        self._zip = None

    def __len__(self) -> int:
        return len(self.names)

    def _bytes(self, name: str) -> bytes:
        if self.is_zip:
            if self._zip is None:  # one handle per worker process
                self._zip = zipfile.ZipFile(self.path)
            return self._zip.read(name)
        return (self.path / name).read_bytes()

    def __getitem__(self, i: int) -> torch.Tensor:
        from PIL import Image
        name = self.names[i]
        where = f"{self.path}{'!' if self.is_zip else os.sep}{name}"
        try:
            with Image.open(io.BytesIO(self._bytes(name))) as im:
                arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
        except Exception as e:  # PIL raises many types; the message names the file either way
            raise ValueError(f"cannot read image {where}: {type(e).__name__}: {e}") from e
        x = torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255)   # [3, H, W]
        if self.size is not None and tuple(x.shape[1:]) != (self.size, self.size):
            x = F.interpolate(x[None], size=(self.size, self.size), mode="bilinear", align_corners=False)[0]
        return x

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_zip"] = None
        return state
