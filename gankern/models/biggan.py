"""BigGAN and BigGAN-deep (Brock et al. 2019), laid out as ajbrock/BigGAN-PyTorch (BG) lays them out, so that BG's
checkpoints load (:func:`load_biggan_pytorch`).

    G(z (N, z_dim), y (N,) int64) -> images (N, channels, R, R) in [-1, 1]
    G(z, embedding=e)             e (N, shared_dim): a class embedding instead of classes (interpolation)
    D(x (N, channels, R, R), y (N,) int64) -> logits (N,)

G: a shared class embedding, hierarchical latent (skip-z: z split into one chunk per block, each concatenated with
the embedding; BigGAN-deep concatenates the whole z once), class-conditional BatchNorm (gain 1 + linear, bias
linear), residual up blocks (BigGAN-deep: bottleneck blocks whose skip drops channels), SAGAN self-attention at the
chosen resolutions, orthogonal initialization. D: residual down blocks (BigGAN-deep: bottleneck blocks whose skip
adds channels), self-attention, projection of the class embedding. Spectral norm on every layer of G and D (not on
G's shared embedding, as BG) through :func:`gankern.nn.utils.spectral_norm`: the recipe updates each network's
layers with one :class:`gankern.nn.SpectralNormGroup` per step.

Cross-replica (synced) BatchNorm (BG's cross_replica): every BatchNorm of G is a ``torch.nn.BatchNorm2d`` (the
conditional ones affine=False, their gain and bias applied after); :func:`cross_replica` turns them into
:class:`CrossReplicaBatchNorm2d`, whose training statistics are those of the batch of all ranks (one all-reduce of
per-channel sums and sums of squares, on any backend: ``torch.nn.SyncBatchNorm`` refuses CPU tensors). The recipe
does so when it trains on more than one rank. Checkpoints keep the same keys.

Also here: :func:`standing_stats` (BatchNorm statistics for sampling), :func:`truncated_z` (truncation by
resampling), :func:`ortho_weights` / :func:`orthogonal_regularization` (BigGAN's off-diagonal orthogonal
regularization) and :data:`PRESETS`.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist
import torch.nn.functional as F
from torch import nn
from torch.distributed.nn.functional import all_reduce

from ..nn.utils import spectral_norm

__all__ = ["BigGANConfig", "PRESETS", "preset", "Generator", "Discriminator", "build", "standing_stats",
           "truncated_z", "ortho_weights", "orthogonal_regularization", "load_biggan_pytorch",
           "CrossReplicaBatchNorm2d", "cross_replica"]


@dataclass
class BigGANConfig:
    """The architecture; BG's argument names in brackets."""
    resolution: int = 128             # 32, 64, 128 or 256 [resolution]; 16 (not BG's: CPU-sized digits)
    n_classes: int = 1000             # [n_classes]
    channels: int = 3                 # image channels (BG: 3)
    g_ch: int = 96                    # G width multiplier [G_ch]
    d_ch: int = 96                    # D width multiplier [D_ch]
    z_dim: int = 120                  # [dim_z]; with hier rounded down to a multiple of (G blocks + 1), as BG does
    shared_dim: int = 128             # shared class embedding size, 0: z_dim [shared_dim]
    shared: bool = True               # one class embedding for all CBNs; False: each CBN embeds classes [G_shared]
    hier: bool = True                 # skip-z [hier] (BigGAN-deep always concatenates z once)
    g_attn: tuple[int, ...] = (64,)   # resolutions with self-attention in G ('64' -> (64,), '0' -> ()) [G_attn]
    d_attn: tuple[int, ...] = (64,)   # [D_attn]
    deep: bool = False                # BigGAN-deep [model=BigGANdeep]
    g_depth: int = 2                  # blocks per resolution in BigGAN-deep [G_depth]
    d_depth: int = 2                  # [D_depth]
    bn_eps: float = 1e-5              # [BN_eps]
    sn_eps: float = 1e-6              # [SN_eps]
    sn_iters: int = 1                 # power iterations per step [num_G_SV_itrs, num_D_SV_itrs]
    init: str = "ortho"               # ortho | N02 | xavier [G_init, D_init]

    def check(self) -> "BigGANConfig":
        """Raise a clear error for a configuration that cannot be built."""
        if self.resolution not in _G_WIDTHS:
            raise ValueError(f"resolution must be one of {sorted(_G_WIDTHS)}, not {self.resolution}")
        for name in ("n_classes", "channels", "g_ch", "d_ch", "z_dim", "sn_iters", "g_depth", "d_depth"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if self.shared_dim < 0:
            raise ValueError(f"shared_dim must be >= 0 (0: z_dim), got {self.shared_dim}")
        if self.init not in _INITS:
            raise ValueError(f"init must be one of {', '.join(_INITS)}, not {self.init!r}")
        if not self.shared and (self.hier or self.deep):
            raise ValueError("shared=False (per-CBN class embeddings, BG's CIFAR layout) needs hier=False and "
                             "deep=False: the skip-z and BigGAN-deep concatenate z to a shared class embedding")
        if self.hier and not self.deep and self.z_dim < len(_G_WIDTHS[self.resolution]):
            raise ValueError(f"hier splits z into {len(_G_WIDTHS[self.resolution])} chunks: z_dim must be at least "
                             f"that, got {self.z_dim}")
        for name, allowed in (("g_attn", _g_resolutions(self.resolution)),
                              ("d_attn", _d_resolutions(self.resolution, self.deep))):
            bad = [r for r in getattr(self, name) if r not in allowed]
            if bad:
                raise ValueError(f"{name} {bad}: attention goes after a block, at one of {sorted(set(allowed))}")
        for name, widths in (("g_attn", self._g_widths()), ("d_attn", self._d_widths())):
            narrow = [r for r, c in widths if r in getattr(self, name) and c < 8]
            if narrow:
                raise ValueError(f"{name}: attention at {narrow} has fewer than 8 channels (theta and phi have "
                                 f"C / 8): raise the width or drop the attention")
        return self

    def _g_widths(self) -> list[tuple[int, int]]:
        """(resolution, channels) after each G stage."""
        return [(r, self.g_ch * w) for r, w in zip(_g_resolutions(self.resolution), _G_WIDTHS[self.resolution][1:])]

    def _d_widths(self) -> list[tuple[int, int]]:
        return [(label, self.d_ch * w) for w, _, label in _d_plan(self.resolution, self.deep)]

    @classmethod
    def from_biggan_pytorch(cls, config: dict) -> "BigGANConfig":
        """A BigGANConfig from BG's config dict (its command-line arguments, as saved in ``state_dict.pth``);
        absent keys take BG's defaults."""
        def attn(s):
            return tuple(int(t) for t in str(s).split("_") if int(t) > 0)
        dataset = str(config.get("dataset", "I128_hdf5")).replace("_hdf5", "")
        resolution = config.get("resolution") or _BG_DATASETS.get(dataset, (128, 1000))[0]
        n_classes = config.get("n_classes") or _BG_DATASETS.get(dataset, (128, 1000))[1]
        deep = config.get("model", "BigGAN") == "BigGANdeep"
        return cls(resolution=int(resolution), n_classes=int(n_classes), channels=3,
                   g_ch=config.get("G_ch", 64), d_ch=config.get("D_ch", 64), z_dim=config.get("dim_z", 128),
                   shared_dim=config.get("shared_dim", 0), shared=config.get("G_shared", False),
                   hier=config.get("hier", False), g_attn=attn(config.get("G_attn", "64")),
                   d_attn=attn(config.get("D_attn", "64")), deep=deep,
                   g_depth=config.get("G_depth", 1) if deep else cls.g_depth,
                   d_depth=config.get("D_depth", 1) if deep else cls.d_depth, bn_eps=config.get("BN_eps", 1e-5),
                   sn_eps=config.get("SN_eps", 1e-8), sn_iters=config.get("num_G_SV_itrs", 1),
                   init=config.get("G_init", "ortho"))


# BG's width multipliers per resolution. G: the input width of each up block, then the last block's output width
# (block i outputs resolution 8 * 2**i). D: the output width of each down block (BigGAN-deep: the stem's width,
# then each stage's output width).
_G_WIDTHS = {16: (4, 4, 4), 32: (4, 4, 4, 4), 64: (16, 16, 8, 4, 2), 128: (16, 16, 8, 4, 2, 1), 256: (16, 16, 8, 8, 4, 2, 1)}
_D_WIDTHS = {16: (4, 4, 4), 32: (4, 4, 4, 4), 64: (1, 2, 4, 8, 16), 128: (1, 2, 4, 8, 16, 16), 256: (1, 2, 4, 8, 8, 16, 16)}
# BG's data sets: (resolution, classes), for configs that do not say
_BG_DATASETS = {"I32": (32, 1000), "I64": (64, 1000), "I128": (128, 1000), "I256": (256, 1000), "C10": (32, 10),
                "C100": (32, 100)}
_INITS = {"ortho": nn.init.orthogonal_, "N02": lambda w: nn.init.normal_(w, 0, 0.02),
          "xavier": nn.init.xavier_uniform_}


def _g_resolutions(resolution: int) -> list[int]:
    return [8 * 2 ** i for i in range(len(_G_WIDTHS[resolution]) - 1)]


def _d_plan(resolution: int, deep: bool) -> list[tuple[int, bool, int]]:
    """(width multiplier, downsample, resolution label) per D block (BigGAN-deep: per stage). BG's labels (what
    d_attn names) are the block's output resolution, except at 32 px where BG downsamples twice and labels every
    block 16 (and at 16 px, not BG's: down to 8 px in the first block, every block labelled 8); BigGAN (not deep)
    does not downsample in its last block."""
    widths = _D_WIDTHS[resolution][1:] if deep else _D_WIDTHS[resolution]
    n = len(widths)
    if resolution <= 32:                       # down to 8 px, then at 8 px
        downs = resolution.bit_length() - 4
        return [(w, i < downs, resolution // 2) for i, w in enumerate(widths)]
    down = [True] * n if deep else [True] * (n - 1) + [False]
    return [(w, d, resolution // 2 ** min(i + 1, n - (0 if deep else 1))) for i, (w, d) in enumerate(zip(widths, down))]


def _d_resolutions(resolution: int, deep: bool) -> list[int]:
    return [label for _, _, label in _d_plan(resolution, deep)]


PRESETS = {
    # BG's launch_BigGAN_bs256x8.sh (ImageNet 128): ch 96, attention at 64, skip-z (120 = 6 x 20), shared 128
    "128": BigGANConfig(),
    # BG has no 64 px script: its 64 px widths, ch 64, attention at 32 (half the resolution, as the 128 px model)
    "64": BigGANConfig(resolution=64, g_ch=64, d_ch=64, g_attn=(32,), d_attn=(32,)),
    # BG's launch_cifar_ema.sh (CIFAR-10): ch 64, no attention, no shared embedding or skip-z, xavier init
    "32": BigGANConfig(resolution=32, n_classes=10, g_ch=64, d_ch=64, z_dim=128, shared_dim=0, shared=False,
                       hier=False, g_attn=(), d_attn=(), sn_eps=1e-8, init="xavier"),
    # a CPU-sized model with every part of the 128 px one (shared embedding, skip-z, attention in G and D); what it
    # changes from it: widths 32 (ch 8 on BG's 32 px multipliers), z 32 (4 chunks of 8 at 32 px; at 16 px 30, 3
    # chunks of 10), shared embedding 16, 10 classes, one channel. Config biggan-cpu trains it at 16 px, batch 32,
    # lrs 1e-3 / 2e-3: it learns the class condition of the digits in ~300 steps (BG's lrs: thousands)
    "tiny": BigGANConfig(resolution=32, n_classes=10, channels=1, g_ch=8, d_ch=8, z_dim=32, shared_dim=16,
                         g_attn=(16,), d_attn=(16,)),
}


def preset(name: str, deep: bool = False, **changes) -> BigGANConfig:
    """A copy of ``PRESETS[name]`` (BigGAN-deep with ``deep=True``: BG's deep script at 128 px, ch 128, z 128,
    two blocks per resolution; the other presets keep their widths) with ``changes`` applied."""
    if name not in PRESETS:
        raise ValueError(f"unknown BigGAN preset {name!r}; known: {', '.join(PRESETS)}")
    cfg = dataclasses.replace(PRESETS[name])
    if deep:
        cfg = dataclasses.replace(cfg, deep=True, shared=True, hier=True, g_depth=2, d_depth=2,
                                  **({"g_ch": 128, "d_ch": 128, "z_dim": 128} if name == "128" else {}))
    return dataclasses.replace(cfg, **changes).check()


# ---------------------------------------------------------------------------------------------------------------
# layers


def _conv(i: int, o: int, k: int = 3, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(i, o, k, padding=k // 2, bias=bias)


class CrossReplicaBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training-mode statistics are those of the batch of every rank of the default process group
    (BG's cross-replica BatchNorm): one all-reduce of the per-channel sums, sums of squares (BG's sync_batchnorm)
    and the count, differentiable, so outputs, gradients (averaged over the ranks as the trainer does) and running
    statistics are one process's BatchNorm on the concatenated batch. Any backend (gloo on the CPU, nccl), float32
    statistics. Plain BatchNorm2d in eval mode, with one rank or no process group, and while ``sync`` is False
    (sampling on one rank). Every rank must call it (a collective). x: (N, C, H, W)."""
    sync = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.sync and tdist.is_available() and tdist.is_initialized()
                and tdist.get_world_size() > 1):
            return super().forward(x)
        if x.dim() != 4:
            raise ValueError(f"expected 4D input (got {x.dim()}D input)")
        xf, c = x.float(), x.shape[1]
        local = torch.cat([xf.sum((0, 2, 3)), (xf * xf).sum((0, 2, 3)), xf.new_full((1,), x.numel() // c)])
        total = all_reduce(local)           # [2C + 1]; differentiable: its gradient is summed over the ranks too
        n = total[-1]
        mean = total[:c] / n
        var = (total[c:2 * c] / n - mean * mean).clamp_min(0)               # biased, as BatchNorm normalizes
        if self.track_running_stats:
            self.num_batches_tracked += 1
            f = 1 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            self.running_mean.lerp_(mean.detach(), f)
            self.running_var.lerp_(var.detach() * n / (n - 1).clamp_min(1), f)   # unbiased, as BatchNorm keeps
        y = (xf - mean[:, None, None]) * torch.rsqrt(var + self.eps)[:, None, None]
        if self.affine:
            y = y * self.weight[:, None, None] + self.bias[:, None, None]
        return y.to(x.dtype)


def cross_replica(model: nn.Module) -> nn.Module:
    """Every ``nn.BatchNorm2d`` of ``model`` becomes a :class:`CrossReplicaBatchNorm2d`, in place (same parameters,
    buffers and state_dict keys); returns ``model``."""
    for m in model.modules():
        if type(m) is nn.BatchNorm2d:
            m.__class__ = CrossReplicaBatchNorm2d
    return model


class CBN(nn.Module):
    """Class-conditional BatchNorm: bn(x) * (1 + gain(c)) + bias(c); x (N, C, H, W), c (N, cond_dim) (shared
    embedding and z chunk) or classes (N,) when ``n_classes`` is given (per-layer embeddings)."""

    def __init__(self, channels: int, cond_dim: int, eps: float, n_classes: int = 0):
        super().__init__()
        make = (lambda: nn.Embedding(n_classes, channels)) if n_classes else (
            lambda: nn.Linear(cond_dim, channels, bias=False))
        self.gain, self.bias = make(), make()
        self.bn = nn.BatchNorm2d(channels, eps=eps, affine=False)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.bn(x) * (1 + self.gain(c))[:, :, None, None] + self.bias(c)[:, :, None, None]


class BN(nn.Module):
    """G's last BatchNorm: bn(x) * gain + bias (BG's names, ``bn`` a BatchNorm2d as in :class:`CBN`)."""

    def __init__(self, channels: int, eps: float):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.bn = nn.BatchNorm2d(channels, eps=eps, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x) * self.gain[:, None, None] + self.bias[:, None, None]


class Attention(nn.Module):
    """SAGAN self-attention (BG's layout): 1x1 theta, phi (C/8), g (C/2), o; phi and g max-pooled 2x;
    x (N, C, H, W) -> x + gamma * o(attention), gamma starts at 0."""

    def __init__(self, ch: int):
        super().__init__()
        self.theta, self.phi = _conv(ch, ch // 8, 1, False), _conv(ch, ch // 8, 1, False)
        self.g, self.o = _conv(ch, ch // 2, 1, False), _conv(ch // 2, ch, 1, False)
        self.gamma = nn.Parameter(torch.tensor(0.0))

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        N, C, H, W = x.shape
        theta = self.theta(x).flatten(2)                               # [N, C/8, HW]
        phi = F.max_pool2d(self.phi(x), 2).flatten(2)                  # [N, C/8, HW/4]
        g = F.max_pool2d(self.g(x), 2).flatten(2)                      # [N, C/2, HW/4]
        beta = torch.softmax(theta.transpose(1, 2) @ phi, -1)          # [N, HW, HW/4]
        return x + self.gamma * self.o((g @ beta.transpose(1, 2)).view(N, C // 2, H, W))


class GBlock(nn.Module):
    """BigGAN up block: (N, I, H, W), c -> (N, O, 2H, 2W): CBN-ReLU-up-conv3-CBN-ReLU-conv3 + up-conv1."""

    def __init__(self, i: int, o: int, cbn):
        super().__init__()
        self.conv1, self.conv2, self.conv_sc = _conv(i, o), _conv(o, o), _conv(i, o, 1)
        self.bn1, self.bn2 = cbn(i), cbn(o)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        h = F.interpolate(F.relu(self.bn1(x, c)), scale_factor=2)
        h = self.conv2(F.relu(self.bn2(self.conv1(h), c)))
        return h + self.conv_sc(F.interpolate(x, scale_factor=2))


class DeepGBlock(nn.Module):
    """BigGAN-deep block: CBN-ReLU-conv1 (I -> I/4)-CBN-ReLU-[up]-conv3-CBN-ReLU-conv3-CBN-ReLU-conv1 (-> O), plus
    the input with its channels cut to O (and upsampled)."""

    def __init__(self, i: int, o: int, cbn, up: bool):
        super().__init__()
        hid = i // 4
        self.out_channels, self.up = o, up
        self.conv1, self.conv2, self.conv3, self.conv4 = _conv(i, hid, 1), _conv(hid, hid), _conv(hid, hid), \
            _conv(hid, o, 1)
        self.bn1, self.bn2, self.bn3, self.bn4 = cbn(i), cbn(hid), cbn(hid), cbn(hid)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn2(self.conv1(F.relu(self.bn1(x, c))), c))
        x = x[:, :self.out_channels]
        if self.up:
            h, x = F.interpolate(h, scale_factor=2), F.interpolate(x, scale_factor=2)
        h = self.conv3(F.relu(self.bn3(self.conv2(h), c)))
        return self.conv4(F.relu(self.bn4(h, c))) + x


class DBlock(nn.Module):
    """BigGAN down block (wide): [ReLU]-conv3-ReLU-conv3-[avgpool] + shortcut (conv1 and avgpool; the first block
    pools first, the others convolve first, as BG)."""

    def __init__(self, i: int, o: int, preactivation: bool, down: bool):
        super().__init__()
        self.preactivation, self.down = preactivation, down
        self.conv1, self.conv2 = _conv(i, o), _conv(o, o)
        self.conv_sc = _conv(i, o, 1) if (i != o or down) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(F.relu(self.conv1(F.relu(x) if self.preactivation else x)))
        if self.down:
            h = F.avg_pool2d(h, 2)
        if self.preactivation:
            s = self.conv_sc(x) if self.conv_sc is not None else x
            s = F.avg_pool2d(s, 2) if self.down else s
        else:
            s = F.avg_pool2d(x, 2) if self.down else x
            s = self.conv_sc(s) if self.conv_sc is not None else s
        return h + s


class DeepDBlock(nn.Module):
    """BigGAN-deep down block: ReLU-conv1 (I -> O/4)-ReLU-conv3-ReLU-conv3-ReLU-[avgpool]-conv1 (-> O), plus the
    [pooled] input with O - I channels added by a 1x1 conv."""

    def __init__(self, i: int, o: int, down: bool):
        super().__init__()
        hid = o // 4
        self.down = down
        self.conv1, self.conv2, self.conv3, self.conv4 = _conv(i, hid, 1), _conv(hid, hid), _conv(hid, hid), \
            _conv(hid, o, 1)
        self.conv_sc = _conv(i, o - i, 1) if i != o else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv3(F.relu(self.conv2(F.relu(self.conv1(F.relu(x)))))))
        if self.down:
            h, x = F.avg_pool2d(h, 2), F.avg_pool2d(x, 2)
        if self.conv_sc is not None:
            x = torch.cat([x, self.conv_sc(x)], 1)
        return self.conv4(h) + x


def _init_and_normalize(model: nn.Module, cfg: BigGANConfig, sn_types: tuple, skip: nn.Module | None = None):
    """BG's init (every Conv2d, Linear and Embedding), then spectral norm on the layers of ``sn_types`` except
    ``skip`` (G's shared embedding)."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)):
            _INITS[cfg.init](m.weight)
    for m in list(model.modules()):
        if isinstance(m, sn_types) and m is not skip:
            spectral_norm(m, eps=cfg.sn_eps, n_power_iterations=cfg.sn_iters)


# ---------------------------------------------------------------------------------------------------------------
# the networks


class Generator(nn.Module):
    """BigGAN / BigGAN-deep generator; see the module docstring for the call. ``z_dim`` is the z size it takes
    (with hier, rounded down to a multiple of the number of chunks, as BG)."""

    def __init__(self, cfg: BigGANConfig):
        super().__init__()
        cfg.check()
        self.cfg = cfg
        widths = [cfg.g_ch * w for w in _G_WIDTHS[cfg.resolution]]
        n_blocks = len(widths) - 1
        self.n_classes = cfg.n_classes
        self.shared_dim = (cfg.shared_dim or cfg.z_dim) if cfg.shared else 0
        if cfg.deep:
            self.num_slots, self.z_dim = 1, cfg.z_dim
            cond, z_in = self.shared_dim + cfg.z_dim, self.shared_dim + cfg.z_dim
        elif cfg.hier:
            self.num_slots = n_blocks + 1
            self.z_dim = cfg.z_dim // self.num_slots * self.num_slots
            cond, z_in = self.shared_dim + self.z_dim // self.num_slots, self.z_dim // self.num_slots
        else:
            self.num_slots, self.z_dim = 1, cfg.z_dim
            cond, z_in = self.shared_dim, cfg.z_dim

        def cbn(c):
            return CBN(c, cond, cfg.bn_eps, 0 if cfg.shared else cfg.n_classes)

        self.shared = nn.Embedding(cfg.n_classes, self.shared_dim) if cfg.shared else None
        self.linear = nn.Linear(z_in, widths[0] * 16)
        blocks = []
        for i, res in enumerate(_g_resolutions(cfg.resolution)):
            if cfg.deep:   # BG-deep: one list per block, the stage's attention in its last block's list
                stage = [[DeepGBlock(widths[i], widths[i] if d < cfg.g_depth - 1 else widths[i + 1], cbn,
                                     up=d == cfg.g_depth - 1)] for d in range(cfg.g_depth)]
            else:
                stage = [[GBlock(widths[i], widths[i + 1], cbn)]]
            if res in cfg.g_attn:
                stage[-1].append(Attention(widths[i + 1]))
            blocks += stage
        self.blocks = nn.ModuleList(nn.ModuleList(b) for b in blocks)
        self.output_layer = nn.Sequential(BN(widths[-1], cfg.bn_eps), nn.ReLU(), _conv(widths[-1], cfg.channels))
        _init_and_normalize(self, cfg, (nn.Conv2d, nn.Linear), skip=self.shared)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None, *,
                embedding: torch.Tensor | None = None) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must be (N, {self.z_dim}), got shape {tuple(z.shape)}")
        if (y is None) == (embedding is None):
            raise ValueError("give the classes y (N,) or a class embedding (N, shared_dim), one of them")
        if embedding is not None:
            if self.shared is None:
                raise ValueError("this generator has no shared class embedding (shared=False): pass classes y")
            if embedding.shape != (z.shape[0], self.shared_dim):
                raise ValueError(f"embedding must be ({z.shape[0]}, {self.shared_dim}), got {tuple(embedding.shape)}")
            e = embedding
        else:
            if y.shape != (z.shape[0],) or y.dtype not in (torch.int64, torch.int32):
                raise ValueError(f"y must be int64 classes of shape ({z.shape[0]},), got {y.dtype} {tuple(y.shape)}")
            e = self.shared(y) if self.shared is not None else y
        if self.cfg.deep:
            z = torch.cat([e, z], 1)
            conds = [z] * len(self.blocks)
        elif self.num_slots > 1:
            zs = z.split(self.z_dim // self.num_slots, 1)
            z, conds = zs[0], [torch.cat([e, zc], 1) for zc in zs[1:]]
        else:
            conds = [e] * len(self.blocks)
        h = self.linear(z).view(z.shape[0], -1, 4, 4)
        for blocklist, c in zip(self.blocks, conds):
            for block in blocklist:
                h = block(h, c)
        return torch.tanh(self.output_layer(h))


class Discriminator(nn.Module):
    """BigGAN / BigGAN-deep projection discriminator; see the module docstring for the call."""

    def __init__(self, cfg: BigGANConfig):
        super().__init__()
        cfg.check()
        self.cfg = cfg
        plan = _d_plan(cfg.resolution, cfg.deep)
        blocks = []
        if cfg.deep:   # BG-deep: a stem conv, then one list per stage holding its blocks and attention
            c = cfg.d_ch * _D_WIDTHS[cfg.resolution][0]
            self.input_conv = _conv(cfg.channels, c)
            for w, down, label in plan:
                o = cfg.d_ch * w
                stage = [DeepDBlock(c if d == 0 else o, o, down and d == 0) for d in range(cfg.d_depth)]
                if label in cfg.d_attn:
                    stage.append(Attention(o))
                blocks.append(stage)
                c = o
        else:
            c = cfg.channels
            for i, (w, down, label) in enumerate(plan):
                o = cfg.d_ch * w
                blocks.append([DBlock(c, o, preactivation=i > 0, down=down)] + ([Attention(o)] if label in cfg.d_attn
                                                                                 else []))
                c = o
        self.blocks = nn.ModuleList(nn.ModuleList(b) for b in blocks)
        self.linear = nn.Linear(c, 1)
        self.embed = nn.Embedding(cfg.n_classes, c)
        _init_and_normalize(self, cfg, (nn.Conv2d, nn.Linear, nn.Embedding))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        if x.dim() != 4 or x.shape[1:] != (cfg.channels, cfg.resolution, cfg.resolution):
            raise ValueError(f"x must be (N, {cfg.channels}, {cfg.resolution}, {cfg.resolution}), got {tuple(x.shape)}")
        if y.shape != (x.shape[0],) or y.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"y must be int64 classes of shape ({x.shape[0]},), got {y.dtype} {tuple(y.shape)}")
        h = self.input_conv(x) if cfg.deep else x
        for blocklist in self.blocks:
            for block in blocklist:
                h = block(h)
        h = F.relu(h).sum([2, 3])                                       # [N, C]
        return self.linear(h).squeeze(1) + (self.embed(y) * h).sum(1)


def build(cfg: BigGANConfig) -> tuple[Generator, Discriminator]:
    """(G, D) for ``cfg``."""
    return Generator(cfg), Discriminator(cfg)


# ---------------------------------------------------------------------------------------------------------------
# sampling and regularization


def truncated_z(n: int, z_dim: int, threshold: float | None = None, *, generator: torch.Generator | None = None,
                device: torch.device | str | None = None) -> torch.Tensor:
    """z (n, z_dim) ~ N(0, 1); with ``threshold``, every entry with |z| > threshold is drawn again until none is
    left (BigGAN's truncation trick: a truncated normal, not a scaled variance). Loops on the host (a sync per
    round): for sampling, not for a training step."""
    z = torch.randn(n, z_dim, generator=generator, device=device)
    if threshold is None:
        return z
    if not isinstance(threshold, (int, float)) or not threshold > 0:
        raise ValueError(f"the truncation threshold must be a positive number, got {threshold!r}")
    while True:
        bad = z.abs() > threshold
        count = int(bad.sum())
        if count == 0:
            return z
        z[bad] = torch.randn(count, generator=generator, device=device)


@torch.no_grad()
def standing_stats(G: Generator, num_batches: int = 16, batch_size: int = 64, threshold: float | None = None,
                   generator: torch.Generator | None = None, sync: bool = True) -> Generator:
    """BigGAN's standing statistics for sampling: every BatchNorm of G forgets its running statistics and takes
    the average of the batch statistics of ``num_batches`` batches of random z (truncated at ``threshold``) and
    classes (torch's cumulative average, momentum None: the unbiased variance, where BG's myBN averages the
    biased one). Only the BatchNorms run in training mode (the spectral norms keep their u, v, unlike BG's, which
    runs all of G in training mode). G is left in eval mode. With :class:`CrossReplicaBatchNorm2d` under DDP, call it
    on every rank, or with ``sync=False`` on one rank (its BatchNorms then average this rank's batches only)."""
    device = next(G.parameters()).device
    bns = [m for m in G.modules() if isinstance(m, nn.BatchNorm2d)]
    momenta = [m.momentum for m in bns]
    G.eval()
    try:
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
            m.train()
            if not sync:
                m.sync = False                                          # local statistics, no all-reduce
        for _ in range(num_batches):
            z = truncated_z(batch_size, G.z_dim, threshold, generator=generator, device=device)
            G(z, torch.randint(0, G.n_classes, (batch_size,), generator=generator, device=device))
    finally:
        for m, momentum in zip(bns, momenta):
            m.momentum = momentum
            m.eval()
            m.__dict__.pop("sync", None)
    return G


def ortho_weights(model: nn.Module) -> list[torch.Tensor]:
    """The weights BG's orthogonal regularization applies to: every parameter with 2+ dimensions except the shared
    class embedding (for spectral-normalized layers, the unnormalized ``original``)."""
    shared = getattr(model, "shared", None)
    skip = {id(p) for p in shared.parameters()} if isinstance(shared, nn.Module) else set()
    return [p for p in model.parameters() if p.dim() >= 2 and id(p) not in skip]


def orthogonal_regularization(weights: list[torch.Tensor], strength: float = 1e-4) -> torch.Tensor:
    """BigGAN's orthogonal regularization (off-diagonal form): strength / 2 * sum_W ||W W^T * (1 - I)||_F^2, W each
    weight viewed as (out, -1). Its gradient, strength * 2 (W W^T * (1 - I)) W, is what BG's ``utils.ortho`` adds
    to the gradients (BG weight 1e-4); add the term once per optimizer step. Where out > in it is computed as
    ||W^T W||_F^2 - sum_i ||w_i||^4 (the same value) so that no (out, out) matrix is formed (G's input linear:
    24576 x 20)."""
    total = None
    for w in weights:
        w = w.reshape(w.shape[0], -1)
        if w.shape[0] <= w.shape[1]:
            gram = w @ w.t()
            term = (gram * (1 - torch.eye(w.shape[0], device=w.device, dtype=w.dtype))).square().sum()
        else:
            term = (w.t() @ w).square().sum() - w.square().sum(1).square().sum()
        total = term if total is None else total + term
    if total is None:
        raise ValueError("no weights given")
    return 0.5 * strength * total


# ---------------------------------------------------------------------------------------------------------------
# BigGAN-PyTorch checkpoints


def _map_biggan_pytorch_keys(state: dict, model: nn.Module) -> dict:
    """BG's BatchNorm keys as gankern's (the spectral-norm keys, weight / u0 / sv0, are mapped by each layer's
    load_state_dict, see gankern.nn.utils.spectral_norm): ``X.stored_mean`` (BG's default), ``X.bn.stored_mean``
    (myBN) or ``X.bn.running_mean`` (cross-replica) -> ``X.bn.running_mean``; same for the variance;
    ``X.bn.accumulation_counter`` (myBN's standing-statistics counter) dropped."""
    state = dict(state)
    for name, m in model.named_modules():
        if not isinstance(m, (CBN, BN)):
            continue
        for stat in ("mean", "var"):
            for old in (f"{name}.stored_{stat}", f"{name}.bn.stored_{stat}"):
                if old in state:
                    state[f"{name}.bn.running_{stat}"] = state.pop(old)
        state.pop(f"{name}.bn.accumulation_counter", None)
        state.setdefault(f"{name}.bn.num_batches_tracked", torch.zeros((), dtype=torch.long))
    return state


def _load_into(model: nn.Module, path: str, what: str) -> None:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} is not a BigGAN-PyTorch {what} state dict (a dict of tensors)")
    try:
        model.load_state_dict(_map_biggan_pytorch_keys(state, model), strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path} does not fit a BigGAN {what} of this config ({model.cfg}); check resolution, "
                         f"G_ch / D_ch, attention, hier, shared_dim and the model (BigGAN / BigGANdeep). "
                         f"torch says: {e}") from None


def load_biggan_pytorch(G_path: str, D_path: str | None = None,
                        config: BigGANConfig | dict | str | None = None) -> tuple[Generator, Discriminator | None]:
    """BigGAN-PyTorch's saved ``G.pth`` / ``G_ema.pth`` (and ``D.pth``) as gankern's BigGAN, in eval mode:
    same images for the same z and class (and same D outputs) as BG's model in eval mode, to float tolerance.

    Files are read with ``torch.load(weights_only=True)`` (no code runs). ``config``: a :class:`BigGANConfig`, a
    preset name, BG's config dict (its arguments, e.g. ``state_dict.pth['config']``), or None to read
    ``state_dict.pth`` next to ``G_path``. BG's spectral-norm state (u0) becomes the (u, v) whose eval-mode sigma is
    BG's (one v-first iteration from u0); training goes on with gankern's (torch's) iteration, u first. u1..,
    sv1.. (num_svs > 1, kept by BG only for logging) are dropped. Returns (G, D or None)."""
    if config is None:
        meta = os.path.join(os.path.dirname(os.path.abspath(G_path)), "state_dict.pth")
        if not os.path.exists(meta):
            raise ValueError(f"no config given and no BigGAN-PyTorch state_dict.pth next to {G_path}: pass config= "
                             f"(a BigGANConfig, a preset name or BG's config dict)")
        config = torch.load(meta, map_location="cpu", weights_only=True).get("config")
        if not isinstance(config, dict):
            raise ValueError(f"{meta} holds no BigGAN-PyTorch config")
    if isinstance(config, str):
        cfg = preset(config)
    elif isinstance(config, dict):
        cfg = BigGANConfig.from_biggan_pytorch(config)
    elif isinstance(config, BigGANConfig):
        cfg = config
    else:
        raise TypeError(f"config must be a BigGANConfig, a preset name or BG's config dict, "
                        f"not {type(config).__name__}")
    cfg.check()
    G = Generator(cfg)
    _load_into(G, G_path, "G")
    D = None
    if D_path is not None:
        D = Discriminator(cfg)
        _load_into(D, D_path, "D")
        D.eval()
    return G.eval(), D
