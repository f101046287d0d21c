"""Classic GAN generators and discriminators (MLP GAN, DCGAN, SNGAN/SAGAN ResNets) built from one config.

``build(cfg, resolution, channels, num_classes)`` -> (G, D) with
``G(z (N, z_dim), y (N,) | None) -> images (N, channels, R, R) in [-1, 1]`` and
``D(x (N, channels, R, R), y (N,) | None) -> logits (N,)``.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass
class ModelConfig:
    """Architecture options shared by all the classic GANs (one row of ARCHS picks the body)."""
    arch: str = "dcgan"          # mlp | dcgan | resnet (see ARCHS)
    z_dim: int = 64
    g_ch: int = 32               # G base width
    d_ch: int = 32               # D base width
    cond: str = "none"           # none | concat | proj: label conditioning (G always concatenates an embedding)
    g_norm: str = "bn"           # bn | none
    d_norm: str = "bn"           # bn | ln | none
    g_sn: bool = False           # spectral norm in G (SAGAN)
    d_sn: bool = False           # spectral norm in D (SNGAN, SAGAN)
    d_san: bool = False          # D's spectral norm replaced by sparsity-aware norm (Kligvasser & Michaeli 2021)
    attn: bool = False           # SAGAN self-attention block at half the resolution, in G and D
    mbstd: int = 0               # minibatch stddev group size in D (0 = off)
    mbdisc: int = 0              # minibatch discrimination kernels in D's head (0 = off)


def _archs():
    from . import dcgan, mlp, resnet
    return {"mlp": (mlp.Generator, mlp.Discriminator),
            "dcgan": (dcgan.Generator, dcgan.Discriminator),
            "resnet": (resnet.Generator, resnet.Discriminator)}


def build(cfg: ModelConfig, resolution: int, channels: int, num_classes: int = 0) -> tuple[nn.Module, nn.Module]:
    """(G, D) for images (channels, resolution, resolution); num_classes > 0 needs cfg.cond != 'none'."""
    archs = _archs()
    if cfg.arch not in archs:
        raise ValueError(f"unknown arch '{cfg.arch}'; known: {', '.join(archs)}")
    if cfg.cond not in ("none", "concat", "proj"):
        raise ValueError(f"cond must be none, concat or proj, not '{cfg.cond}'")
    if cfg.cond != "none" and num_classes <= 0:
        raise ValueError(f"cond='{cfg.cond}' needs a labelled data set (num_classes > 0)")
    if resolution & (resolution - 1) or resolution < 8:
        raise ValueError(f"resolution must be a power of two >= 8, not {resolution}")
    if cfg.d_san and not cfg.d_sn:
        raise ValueError("d_san replaces D's spectral norm: it needs d_sn=True")
    nc = num_classes if cfg.cond != "none" else 0
    G, D = archs[cfg.arch]
    G, D = G(cfg, resolution, channels, nc), D(cfg, resolution, channels, nc)
    if cfg.d_san:
        from ..nn import convert
        D = convert(D, to="san")
    return G, D
