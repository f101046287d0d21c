"""The Inception-v3 that FID is defined with (pytorch-fid's FID variant of the 2015-12-05 TensorFlow graph).

Same structure and state-dict keys as torchvision's ``inception_v3(num_classes=1008, aux_logits=False)`` with
pytorch-fid's patched blocks: average pools that leave the padding out of the count (FIDInceptionA, C, E_1) and a
max pool in the last block (FIDInceptionE_2). Input: images (N, 3, H, W) in [0, 1]; resized to 299 x 299 (bilinear,
align_corners=False), scaled to [-1, 1]. Output: 2048-d pool features (N, 2048) and 1008-way logits (N, 1008).

Weights: ``pt_inception-2015-12-05-6726825d.pth`` (pytorch-fid's release), found through ``weights=PATH``, the
environment variable ``GANKERN_INCEPTION_WEIGHTS``, or the cache directories (``$GANKERN_CACHE`` or
``~/.cache/gankern``, then torch hub's ``~/.cache/torch/hub/checkpoints`` where pytorch-fid puts it). Nothing is
downloaded unless asked (``download=True`` / ``gankern fid --download``); the download checks the SHA-256 prefix in
the file name. Loading uses ``torch.load(weights_only=True)`` and a strict ``load_state_dict``.
"""
from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import tempfile
import urllib.request

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FIDInceptionV3", "load_fid_inception", "find_weights", "download_weights", "WEIGHTS_URL",
           "WEIGHTS_NAME", "WEIGHTS_ENV"]

WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + WEIGHTS_NAME
WEIGHTS_SHA256_PREFIX = "6726825d"
WEIGHTS_ENV = "GANKERN_INCEPTION_WEIGHTS"


class BasicConv2d(nn.Module):
    def __init__(self, cin: int, cout: int, **kw):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kw)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)), inplace=True)


def _avg3(x):
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(cin, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, kernel_size=1)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([b1, b5, b3, self.branch_pool(_avg3(x))], 1)


class InceptionB(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([b3, bd, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionC(nn.Module):
    def __init__(self, cin: int, channels_7x7: int):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for i in range(1, 6):
            bd = getattr(self, f"branch7x7dbl_{i}")(bd)
        return torch.cat([b1, b7, bd, self.branch_pool(_avg3(x))], 1)


class InceptionD(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    """pool="avg": pytorch-fid's FIDInceptionE_1 (Mixed_7b); pool="max": FIDInceptionE_2 (Mixed_7c)."""

    def __init__(self, cin: int, pool: str):
        super().__init__()
        self.pool = pool
        self.branch1x1 = BasicConv2d(cin, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(cin, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        p = _avg3(x) if self.pool == "avg" else F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        return torch.cat([b1, b3, bd, self.branch_pool(p)], 1)


def as_unit_float(x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Images as floats in [0, 1]: uint8 (0..255) divided by 255, floating ones cast to ``dtype``; other dtypes
    refused with a message that says how to convert."""
    if x.dtype == torch.uint8:
        return x.to(dtype) / 255
    if not x.is_floating_point():
        raise TypeError(f"images must be uint8 in [0, 255] or float in [0, 1], got {x.dtype} (convert with "
                        f"x.float() / x.max() or to uint8 first)")
    return x.to(dtype)


class FIDInceptionV3(nn.Module):
    """pytorch-fid's FID Inception-v3. ``forward(images)`` -> (pool (N, 2048), logits (N, 1008)).

    Args:
        resize_input: bilinear resize to 299 x 299 first (pytorch-fid's default).
        normalize_input: map [0, 1] to [-1, 1] (pytorch-fid's default).
    """

    def __init__(self, resize_input: bool = True, normalize_input: bool = True):
        super().__init__()
        self.resize_input, self.normalize_input = resize_input, normalize_input
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool="avg")
        self.Mixed_7c = InceptionE(2048, pool="max")
        self.fc = nn.Linear(2048, 1008)

    def extra_repr(self) -> str:
        return f"resize_input={self.resize_input}, normalize_input={self.normalize_input}"

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (N, 3, H, W), float in [0, 1] or uint8 in [0, 255] (as image loaders give them)
        -> (pool features (N, 2048), logits (N, 1008))."""
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"images must have shape (N, 3, H, W) (a tensor), got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        x = as_unit_float(x, self.fc.weight.dtype)
        if self.resize_input:
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        if self.normalize_input:
            x = 2 * x - 1
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        pool = torch.flatten(F.adaptive_avg_pool2d(x, (1, 1)), 1)   # [N, 2048]
        return pool, self.fc(pool)


def _cache_dirs() -> list[pathlib.Path]:
    out = []
    if os.environ.get("GANKERN_CACHE"):
        out.append(pathlib.Path(os.environ["GANKERN_CACHE"]))
    home = pathlib.Path(os.path.expanduser("~"))
    out.append(home / ".cache" / "gankern")
    out.append(pathlib.Path(os.environ.get("TORCH_HOME", home / ".cache" / "torch")) / "hub" / "checkpoints")
    return out


def find_weights(weights: str | os.PathLike | None = None) -> pathlib.Path:
    """The weights file: ``weights``, else $GANKERN_INCEPTION_WEIGHTS, else the cache directories. Raises
    FileNotFoundError saying every place looked at and how to get the file."""
    if weights is not None:
        p = pathlib.Path(weights)
        if not p.is_file():
            raise FileNotFoundError(f"Inception weights file {str(p)!r} does not exist")
        return p
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        p = pathlib.Path(env)
        if not p.is_file():
            raise FileNotFoundError(f"${WEIGHTS_ENV}={env!r} does not name an existing file")
        return p
    looked = [d / WEIGHTS_NAME for d in _cache_dirs()]
    for p in looked:
        if p.is_file():
            return p
    raise FileNotFoundError(
        f"the FID Inception weights ({WEIGHTS_NAME}) were not found; looked at: {', '.join(map(str, looked))}. "
        f"Set ${WEIGHTS_ENV} (every command), pass it (`gankern fid --weights PATH`, weights=PATH in Python), or "
        f"download it with `gankern fid --download` (or by hand from {WEIGHTS_URL}) into {looked[0].parent}")


def download_weights(dest_dir: str | os.PathLike | None = None, url: str = WEIGHTS_URL) -> pathlib.Path:
    """Download the weights into ``dest_dir`` (default: the first cache directory), checking the SHA-256 prefix
    that the file name carries. Never called by the library unless asked."""
    dest_dir = pathlib.Path(dest_dir) if dest_dir is not None else _cache_dirs()[0]
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / WEIGHTS_NAME
    h = hashlib.sha256()
    with tempfile.NamedTemporaryFile(dir=dest_dir, delete=False) as tmp:
        try:
            with urllib.request.urlopen(url) as r:
                while True:
                    chunk = r.read(1 << 20)
                    if not chunk:
                        break
                    h.update(chunk)
                    tmp.write(chunk)
        except BaseException:
            os.unlink(tmp.name)
            raise
    if not h.hexdigest().startswith(WEIGHTS_SHA256_PREFIX):
        os.unlink(tmp.name)
        raise RuntimeError(f"downloaded {url} has SHA-256 {h.hexdigest()}, expected a prefix "
                           f"{WEIGHTS_SHA256_PREFIX}: not the FID Inception weights (file removed)")
    shutil.move(tmp.name, dest)
    return dest


def load_fid_inception(weights: str | os.PathLike | None = None, *, download: bool = False,
                       device: torch.device | str = "cpu") -> FIDInceptionV3:
    """The FID Inception-v3 with the standard weights, in eval mode on ``device``.

    Raises FileNotFoundError (where to put the file) or ValueError (a state dict with wrong keys or shapes,
    naming them)."""
    try:
        path = find_weights(weights)
    except FileNotFoundError:
        if not download or weights is not None:
            raise
        path = download_weights()
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = FIDInceptionV3()
    load_state(model, state, source=str(path))
    return model.eval().requires_grad_(False).to(device)


def load_state(model: FIDInceptionV3, state, source: str = "state dict") -> None:
    """Strict load with a message naming missing/unexpected keys and mismatched shapes."""
    if not isinstance(state, dict):
        raise ValueError(f"{source}: expected a state dict (mapping of tensors), got {type(state).__name__}")
    own = model.state_dict()
    # BatchNorm fills a missing num_batches_tracked itself (the converted TF weights have none)
    missing = sorted(k for k in set(own) - set(state) if not k.endswith("num_batches_tracked"))
    unexpected = sorted(set(state) - set(own))
    bad = [f"{k}: {tuple(state[k].shape)} (expected {tuple(v.shape)})" for k, v in own.items()
           if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or bad:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:5]}{' ...' if len(missing) > 5 else ''} ({len(missing)})")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''} "
                         f"({len(unexpected)})")
        if bad:
            parts.append(f"wrong shapes {bad[:5]}")
        raise ValueError(f"{source} is not the FID Inception-v3 state dict: {'; '.join(parts)}")
    model.load_state_dict(state, strict=True)
