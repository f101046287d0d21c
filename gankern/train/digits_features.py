"""The "digits-FID" feature extractor: a small CNN classifier trained in a few seconds, deterministically, on
scikit-learn's digits (offline; nothing is downloaded), whose 128-d penultimate activations (post-ReLU, scaled to
unit mean square on real digits) stand in for Inception features when measuring FID/KID of models trained on the
embedded digits data set.

Images are resized to 16x16 before the CNN, so the features do not depend on the model's resolution. The trained
weights are cached in memory and under ``$GANKERN_CACHE`` (default ``~/.cache/gankern``) as safetensors.
"""
from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..metrics import FeatureStats, frechet_distance, kid

FEATURE_DIM = 128
_CACHE: dict[str, "DigitsFeatures"] = {}
_VERSION = 2


class DigitsFeatures(nn.Module):
    """x (N, 1, R, R) in [-1, 1] -> features (N, 128); ``logits(x)`` -> (N, 10)."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 32, 3, padding=1)
        self.c2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc = nn.Linear(64 * 16, FEATURE_DIM)
        self.cls = nn.Linear(FEATURE_DIM, 10)
        self.register_buffer("scale", torch.ones(()))   # features / scale have mean squared entry 1 on real digits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != 1:
            raise ValueError(f"digits features take 1-channel images, got {x.shape[1]} channels")
        x = x.float()
        if x.shape[-1] != 16:
            mode = "area" if x.shape[-1] > 16 else "bilinear"
            x = F.interpolate(x, size=(16, 16), mode=mode, **({} if mode == "area" else {"align_corners": False}))
        h = F.max_pool2d(F.relu(self.c1(x)), 2)                   # [N, 32, 8, 8]
        h = F.max_pool2d(F.relu(self.c2(h)), 2)                   # [N, 64, 4, 4]
        return F.relu(self.fc(h.flatten(1))) / self.scale         # [N, 128]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.cls(self(x) * self.scale)


def train_extractor(seed: int = 0, epochs: int = 12) -> tuple[DigitsFeatures, float]:
    """Train the classifier on 1497 digits (16 px, with +-1 px shifts), return it and its accuracy on 300 held out."""
    from ..data import digits
    x = digits(16).images
    y = torch.from_numpy(__import__("sklearn.datasets", fromlist=["load_digits"]).load_digits().target).long()
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(x), generator=g)
    tr, te = perm[300:], perm[:300]
    with torch.random.fork_rng(), torch.enable_grad():
        torch.manual_seed(seed)
        net = DigitsFeatures()
        opt = torch.optim.Adam(net.parameters(), 2e-3)
        for _ in range(epochs):
            order = tr[torch.randperm(len(tr), generator=g)]
            for i in range(0, len(order), 64):
                idx = order[i:i + 64]
                xb = x[idx]
                sx, sy = torch.randint(-1, 2, (2,), generator=g).tolist()
                xb = torch.roll(xb, (sy, sx), (2, 3))
                loss = F.cross_entropy(net.logits(xb), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
    net.eval().requires_grad_(False)
    with torch.no_grad():
        net.scale.copy_(net(x[tr]).square().mean().sqrt())
        acc = (net.logits(x[te]).argmax(1) == y[te]).float().mean().item()
    return net, acc


def extractor(device: str | torch.device = "cpu") -> DigitsFeatures:
    """The cached extractor (trained on first use, then read from the safetensors cache)."""
    key = str(device)
    if key in _CACHE:
        return _CACHE[key]
    from safetensors.torch import load_file, save_file
    path = os.path.join(os.environ.get("GANKERN_CACHE", os.path.expanduser("~/.cache/gankern")),
                        f"digits_features_v{_VERSION}.safetensors")
    net = DigitsFeatures()
    if os.path.exists(path):
        net.load_state_dict(load_file(path))
    else:
        net, _ = train_extractor()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp{os.getpid()}"
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, tmp)
        os.replace(tmp, path)
    net = net.to(device).eval().requires_grad_(False)
    _CACHE[key] = net
    return net


@torch.no_grad()
def features(images: torch.Tensor, batch: int = 500) -> np.ndarray:
    """images (N, 1, R, R) in [-1, 1] -> float64 features (N, 128)."""
    net = extractor(images.device)
    return torch.cat([net(images[i:i + batch]) for i in range(0, len(images), batch)]).double().cpu().numpy()


_REAL: dict[int, np.ndarray] = {}


def real_features(resolution: int) -> np.ndarray:
    """Features of all 1797 real digits at ``resolution`` (cached)."""
    if resolution not in _REAL:
        from ..data import digits
        _REAL[resolution] = features(digits(resolution).images)
    return _REAL[resolution]


def fid_kid(fake_images: torch.Tensor, resolution: int) -> dict[str, float]:
    """digits-FID and digits-KID (x1000; 10 subsets of 500) of fake_images (N, 1, R, R) against the real digits."""
    real, fake = real_features(resolution), features(fake_images)
    return {"fid_digits": float(frechet_distance(*_mean_cov(real), *_mean_cov(fake))),
            "kid_digits_x1000": 1000.0 * kid(real, fake, num_subsets=10, max_subset_size=500)}


def _mean_cov(feats: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """feats (n, d) -> (mean (d,), covariance (d, d)) in float64 (streaming, gankern.metrics.FeatureStats)."""
    stats = FeatureStats()
    stats.update(torch.as_tensor(feats, dtype=torch.float64))
    return stats.mean_cov()
