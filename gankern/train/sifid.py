"""SIFID (Rott Shaham et al. 2019): the Frechet distance between the distributions of deep features over the
positions of one real image and of one generated image (each position's feature vector a sample), averaged over the
generated images. The paper takes Inception-v3's 64 channels before its second pooling layer (pytorch-fid's first
block); here:

- ``inception``: exactly that, from the FID Inception (gankern.metrics.inception) when its weights file is found
  (nothing is downloaded);
- ``digits``: the same place in gankern's digits feature net (gankern/train/digits_features.py, trained offline in
  seconds): its 64 channels after the second convolution, before the second pooling, on the gray image. A weaker
  texture descriptor (it learnt 8x8 digit strokes), but always there: values are comparable within one feature kind
  only, so the log names the kind (``sifid_inception`` / ``sifid_digits``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..metrics import FeatureStats, frechet_distance

KINDS = ("inception", "digits")
_NETS: dict[tuple[str, str], torch.nn.Module] = {}


def resolve(kind: str) -> str:
    """'auto' -> 'inception' when the Inception weights are found, else 'digits'; other kinds are returned."""
    if kind != "auto":
        if kind not in KINDS:
            raise ValueError(f"SIFID features must be auto, {' or '.join(KINDS)}, not '{kind}'")
        return kind
    from ..metrics.inception import find_weights
    try:
        find_weights()
        return "inception"
    except FileNotFoundError:
        return "digits"


def _net(kind: str, device) -> torch.nn.Module:
    key = (kind, str(device))
    if key not in _NETS:
        if kind == "inception":
            from ..metrics.inception import load_fid_inception
            _NETS[key] = load_fid_inception(device=device)
        else:
            from .digits_features import extractor
            _NETS[key] = extractor(device)
    return _NETS[key]


@torch.no_grad()
def patch_features(x: torch.Tensor, kind: str) -> torch.Tensor:
    """Images x (N, C, H, W) in [-1, 1] (C 1 or 3) -> per-position features (N, P, 64)."""
    net, x = _net(kind, x.device), x.float()
    if kind == "inception":
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        h = net.Conv2d_2b_3x3(net.Conv2d_2a_3x3(net.Conv2d_1a_3x3(x)))
        h = F.max_pool2d(h, kernel_size=3, stride=2)                       # [N, 64, h, w]
    else:
        h = F.relu(net.c2(F.max_pool2d(F.relu(net.c1(x.mean(1, keepdim=True))), 2)))   # [N, 64, H/2, W/2]
    return h.flatten(2).transpose(1, 2).double()


def sifid(real: torch.Tensor, fakes: torch.Tensor, kind: str = "digits") -> float:
    """Mean over the fakes (N, C, H, W) of the Frechet distance between the per-position features of ``real``
    (1, C, H', W') and of each fake (sizes may differ), both in [-1, 1]."""
    fr = patch_features(real, kind)[0]
    mu, sigma = FeatureStats().update(fr).mean_cov()
    out = []
    for f in patch_features(fakes, kind):
        out.append(frechet_distance(mu, sigma, *FeatureStats().update(f).mean_cov()))
    return sum(out) / len(out)
