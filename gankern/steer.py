"""Closed-form latent directions (Spingarn-Eliezer, Banner & Michaeli, "GAN Steerability without Optimization",
ICLR 2021): walks in a generator's latent space that shift or zoom the image, computed from the weights of its
first layer with no training, and unsupervised principal directions.

The first layer is affine, h = W z + b (W (F, d), F = C * h * w, viewed as a (C, h, w) feature map). A transform
is a pair of spatial operators on the h x w grid, applied to every channel: P (the transform, e.g. a shift) and D
(a mask of the positions where P is defined, or for zooming out the zoom-in operator). With A = D W:

- linear path: q = argmin_q ||A q - (P - D) b||^2, z(alpha) = z + alpha q (so that D h(q) ~ P h(0));
- nonlinear path: M = argmin_M ||A M - D P W||_F, and the walk iterates z <- M z + q: after n steps
  z_n = M^n z + (I + M + ... + M^(n-1)) q (the paper's Neumann-series form, n = alpha an integer; negative alpha
  walks with the inverse transform's M and q);
- great-circle path: the circle through z in the plane of z and q, keeping ||z||: z(alpha) = ||z|| (cos(t0 + alpha)
  u + sin(t0 + alpha) q / ||q||), u the unit component of z orthogonal to q, t0 the angle of z from u (alpha in
  radians).

The paper's code builds dense F x F matrices for P and D (F = 24576 for BigGAN-128: 2.4 GB each in fp32). Here they
are (h w) x (h w) spatial operators applied per channel (the dense ones are their Kronecker products with I_C),
so A is the size of W and a direction costs one least-squares solve with d unknowns.

Principal directions: the right singular vectors of W (the paper's closed-form unsupervised directions); for a
StyleGAN2 generator, of the stacked affine (style) layers of its synthesis network, as directions in w space.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

TRANSFORMS = ("shift_x", "shift_y", "zoom")
PATHS = ("linear", "nonlinear", "circle")

__all__ = ["FirstLayer", "Direction", "first_layer", "transform_operators", "directions", "principal_directions"]


@dataclass
class FirstLayer:
    """The generator's first affine map over the latent coordinates ``z[:, start:start + d]``: h = W z + b,
    weight (F, d), bias (F,), float64; h viewed as ``shape`` (C, h, w) (None: unknown); ``z_dim`` the size of z."""
    weight: torch.Tensor
    bias: torch.Tensor
    shape: tuple[int, int, int] | None
    start: int
    z_dim: int


def _affine(linear: nn.Linear, bn: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, b) of ``linear`` followed (optionally) by a BatchNorm1d in eval mode (its running statistics)."""
    W = linear.weight.detach().double()
    b = linear.bias.detach().double() if linear.bias is not None else W.new_zeros(W.shape[0])
    if isinstance(bn, nn.BatchNorm1d) and bn.track_running_stats and bn.running_var is not None:
        scale = (bn.running_var.double() + bn.eps).rsqrt()
        if bn.affine:
            scale = scale * bn.weight.detach().double()
        shift = -bn.running_mean.double() * scale + (bn.bias.detach().double() if bn.affine else 0)
        W, b = W * scale[:, None], b * scale + shift
    return W, b


def _square_shape(F: int) -> tuple[int, int, int] | None:
    """(F / 16, 4, 4), the usual first feature map, or None (unknown: directions need shape=...)."""
    return (F // 16, 4, 4) if F % 16 == 0 else None


def first_layer(G: nn.Module, layer: str | nn.Linear | None = None,
                shape: tuple[int, int, int] | None = None) -> FirstLayer:
    """The first affine layer of ``G``: gankern's DCGAN / SNGAN-ResNet generators (a Linear, and in DCGAN a
    BatchNorm1d folded in with its running statistics), BigGAN's ``linear`` (over the first chunk of z with
    hierarchical latents, the z part of its input in BigGAN-deep), or any Linear that ``layer`` names (a module
    name in G, or the module), whose output is viewed as ``shape`` (C, h, w) (default (F / 16, 4, 4)) and whose
    input is all of z. Class-conditional inputs (a class embedding concatenated to z) are left out: the class part
    is a constant of the walk, folded into nothing, so directions are those of the unconditional part of W."""
    if layer is not None:
        lin = G.get_submodule(layer) if isinstance(layer, str) else layer
        if not isinstance(lin, nn.Linear):
            raise TypeError(f"layer must name an nn.Linear of G, got {type(lin).__name__}")
        W, b = _affine(lin)
        return FirstLayer(W, b, tuple(shape) if shape else _square_shape(W.shape[0]), 0, W.shape[1])
    if hasattr(G, "synthesis") and hasattr(G, "mapping"):
        raise ValueError("StyleGAN2's synthesis starts from a learned constant, not a Linear of z: closed-form "
                         "transform directions need a first Linear layer (pass layer=...); principal_directions(G, k) "
                         "works on StyleGAN2 (in w space)")
    if hasattr(G, "linear") and hasattr(G, "num_slots"):  # BigGAN / BigGAN-deep
        W, b = _affine(G.linear)
        z_cols = W[:, G.shared_dim:] if G.cfg.deep else W   # BigGAN-deep's input is cat([class embedding, z])
        return FirstLayer(z_cols, b, _square_shape(W.shape[0]), 0, G.z_dim)
    fc = getattr(G, "fc", None)
    lin, bn = (fc[0], fc[1]) if isinstance(fc, nn.Sequential) else (fc, None)
    if not isinstance(lin, nn.Linear):
        raise ValueError(f"{type(G).__name__} has no first Linear layer gankern recognizes: name it with layer=...")
    W, b = _affine(lin, bn)
    z_dim = W.shape[1] // 2 if getattr(G, "embed", None) is not None else W.shape[1]
    top = getattr(G, "top", None) or getattr(G, "ch", None)
    shape = (top, 4, 4) if top and top * 16 == W.shape[0] else _square_shape(W.shape[0])
    return FirstLayer(W[:, :z_dim], b, shape, 0, z_dim)


# ----------------------------------------------------------------------------------------------------------------
# transforms: spatial operators (h w, h w) on the first layer's grid, applied to every channel

def _index_map(h: int, w: int, src_y, src_x) -> torch.Tensor:
    """The operator (out[y, x] = in[src_y(y, x), src_x(y, x)] where the source is on the grid, else 0)."""
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    sy, sx = src_y(y, x), src_x(y, x)
    ok = (sy >= 0) & (sy < h) & (sx >= 0) & (sx < w)
    op = torch.zeros(h * w, h * w, dtype=torch.float64)
    op[(y * w + x)[ok], (sy * w + sx)[ok]] = 1.0
    return op


def transform_operators(transform, h: int, w: int, sign: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(P, D), each (h w, h w) float64, for ``transform``: "shift_x" / "shift_y" (content moves one cell towards +x
    / +y; sign -1: the other way; D masks the cells P fills), "zoom" (the paper's operators: P keeps the central
    half of the grid and zeroes the rest, D = I; sign -1: P = I and D the 2x nearest-neighbour zoom into the central
    half), or a matrix: P (h w, h w) with D = I, or a pair (P, D)."""
    if isinstance(transform, str):
        if transform not in TRANSFORMS:
            raise ValueError(f"transform must be one of {TRANSFORMS} or a matrix, got {transform!r}")
        eye = torch.eye(h * w, dtype=torch.float64)
        if transform == "zoom":   # the paper's: P keeps the central half of the grid (D = I); -1: P = I, D
            center = ((torch.arange(h) - (h - 1) / 2).abs() < h / 4)[:, None] & \
                ((torch.arange(w) - (w - 1) / 2).abs() < w / 4)[None, :]
            z = _index_map(h, w, lambda y, x: ((y + 0.5 - h / 2) / 2 + h / 2).floor().long(),
                           lambda y, x: ((x + 0.5 - w / 2) / 2 + w / 2).floor().long())  # central half, 2x nearest
            return (torch.diag(center.flatten().double()), eye) if sign > 0 else (eye, z)
        dy, dx = (0, sign) if transform == "shift_x" else (sign, 0)
        P = _index_map(h, w, lambda y, x: y - dy, lambda y, x: x - dx)
        return P, torch.diag(P.sum(1))
    P, D = transform if isinstance(transform, (tuple, list)) else (transform, None)
    P = torch.as_tensor(P, dtype=torch.float64)
    D = torch.eye(h * w, dtype=torch.float64) if D is None else torch.as_tensor(D, dtype=torch.float64)
    for name, m in (("P", P), ("D", D)):
        if m.shape != (h * w, h * w):
            raise ValueError(f"a transform matrix {name} must be (h w, h w) = ({h * w}, {h * w}) for the first "
                             f"layer's {h} x {w} grid, got {tuple(m.shape)}")
    return P, D


def _per_channel(op: torch.Tensor, x: torch.Tensor, shape) -> torch.Tensor:
    """(I_C kron op) @ x for x (F,) or (F, d), without forming the Kronecker product."""
    C = shape[0]
    v = x.reshape(C, op.shape[0], -1)
    return torch.einsum("ij,cjd->cid", op.to(x), v).reshape(x.shape)


def _solve(layer: FirstLayer, P: torch.Tensor, D: torch.Tensor, nonlinear: bool):
    """q (d,) = argmin ||D W q - (P - D) b||, and M (d, d) = argmin ||D W M - D P W|| when nonlinear."""
    A = _per_channel(D, layer.weight, layer.shape)
    rhs = _per_channel(P - D, layer.bias, layer.shape)[:, None]
    if nonlinear:
        rhs = torch.cat([rhs, _per_channel(D @ P, layer.weight, layer.shape)], 1)
    sol = torch.linalg.lstsq(A, rhs).solution
    return sol[:, 0], (sol[:, 1:] if nonlinear else None)


class Direction:
    """A latent walk: ``d(z, alpha)`` moves latents z (N, z_dim) (or (z_dim,)) by ``alpha`` along the path;
    ``d.walk(z, alphas)`` -> (len(alphas), N, z_dim). ``q`` (z_dim,) is the linear direction (zeros outside the
    first layer's latent coordinates)."""

    def __init__(self, layer: FirstLayer, path: str, q: torch.Tensor, M=None, q_neg=None, M_neg=None):
        self.path, self.start, self.d, self.z_dim = path, layer.start, layer.weight.shape[1], layer.z_dim
        self._q, self._M, self._q_neg, self._M_neg = q, M, q_neg, M_neg
        self.q = torch.zeros(layer.z_dim, dtype=torch.float64)
        self.q[self.start:self.start + self.d] = q

    def __call__(self, z: torch.Tensor, alpha: float) -> torch.Tensor:
        if z.shape[-1] != self.z_dim:
            raise ValueError(f"z must end in z_dim = {self.z_dim}, got shape {tuple(z.shape)}")
        part = z[..., self.start:self.start + self.d].double()
        if self.path == "linear":
            new = part + alpha * self._q
        elif self.path == "circle":
            new = _great_circle(part, self._q, float(alpha))
        else:
            n = int(round(alpha))
            if n != alpha:
                raise ValueError(f"the nonlinear path takes whole steps: alpha must be an integer, got {alpha!r}")
            if n < 0 and self._M_neg is None:
                raise ValueError("this transform has no inverse: the nonlinear path takes alpha >= 0")
            M, q = (self._M, self._q) if n >= 0 else (self._M_neg, self._q_neg)
            for _ in range(abs(n)):   # z <- M z + q
                part = part @ M.T + q
            new = part
        out = z.clone()
        out[..., self.start:self.start + self.d] = new.to(z.dtype)
        return out

    def walk(self, z: torch.Tensor, alphas) -> torch.Tensor:
        return torch.stack([self(z, a) for a in alphas])


def _great_circle(z: torch.Tensor, q: torch.Tensor, alpha: float) -> torch.Tensor:
    qh = q / q.norm()
    along = z @ qh                                        # [N]
    perp = z - along[..., None] * qh
    r = z.norm(dim=-1, keepdim=True)
    u = perp / perp.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    t = torch.atan2(along, perp.norm(dim=-1))[..., None] + alpha
    return r * (t.cos() * u + t.sin() * qh)


def directions(G: nn.Module, transform="shift_x", path: str = "linear", *, layer=None, shape=None) -> Direction:
    """The closed-form latent walk of ``G`` that applies ``transform`` along ``path``.

    Args:
        G: a generator with a first Linear layer (:func:`first_layer`; ``layer`` / ``shape`` name another one).
        transform: "shift_x" | "shift_y" | "zoom", or a matrix (see :func:`transform_operators`).
        path: "linear" (alpha any real), "nonlinear" (alpha an integer number of steps), "circle" (alpha an angle).
    Returns:
        a :class:`Direction`; ``Direction(z, alpha)`` -> moved latents.
    """
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    fl = first_layer(G, layer, shape)
    if fl.shape is None:
        raise ValueError(f"the first layer's {fl.weight.shape[0]} outputs are not a (C, 4, 4) feature map: pass "
                         f"shape=(C, h, w)")
    _, h, w = fl.shape
    if fl.weight.shape[0] != math.prod(fl.shape):
        raise ValueError(f"shape {fl.shape} does not match the first layer's {fl.weight.shape[0]} outputs")
    nonlinear = path == "nonlinear"
    q, M = _solve(fl, *transform_operators(transform, h, w, 1), nonlinear)
    q_neg = M_neg = None
    if nonlinear and isinstance(transform, str):
        q_neg, M_neg = _solve(fl, *transform_operators(transform, h, w, -1), True)
    return Direction(fl, path, q, M, q_neg, M_neg)


def principal_directions(G: nn.Module, k: int, *, layer=None) -> torch.Tensor:
    """The first ``k`` principal directions of ``G``'s latent space, (k, z_dim) float64 unit rows (zeros outside
    the first layer's coordinates), by decreasing singular value of the first layer's W (for a StyleGAN2 G:
    (k, w_dim) directions in w space, from the stacked affine layers of its synthesis network). Each row's sign
    makes its largest entry positive."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if layer is None and hasattr(G, "synthesis") and hasattr(G, "mapping"):
        W = torch.cat([m.affine.weight.detach().double() * getattr(m.affine, "weight_gain", 1.0)
                       for m in G.synthesis.modules() if isinstance(getattr(m, "affine", None), nn.Module)])
        start, z_dim = 0, W.shape[1]
    else:
        fl = first_layer(G, layer)
        W, start, z_dim = fl.weight, fl.start, fl.z_dim
    if k > W.shape[1]:
        raise ValueError(f"k = {k} exceeds the {W.shape[1]} latent coordinates of the first layer")
    V = torch.linalg.svd(W, full_matrices=False).Vh[:k]   # [k, d]
    V = V * torch.sign(V.gather(1, V.abs().argmax(1, keepdim=True)))
    out = torch.zeros(k, z_dim, dtype=torch.float64)
    out[:, start:start + W.shape[1]] = V
    return out
