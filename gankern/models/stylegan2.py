"""StyleGAN2 (and StyleGAN, v1) generator and discriminator on gankern's fused ops, with StyleGAN2-ADA's (S2A's)
constructor arguments, state_dict keys and forward signatures, and a loader of S2A's network pickles that runs
no code from them.

    G = Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=256, img_channels=3,
                  mapping_kwargs=dict(num_layers=8), synthesis_kwargs=dict(channel_base=16384, num_fp16_res=4,
                                                                            conv_clamp=256))
    img = G(z, c, truncation_psi=0.7, noise_mode="const")       # (N, 3, 256, 256) fp32, about [-1, 1]
    ws = G.mapping(z, c); img = G.synthesis(ws, noise_mode="none")
    logits = Discriminator(c_dim=0, img_resolution=256, img_channels=3)(img, c)   # (N, 1)
    nets = load_stylegan2_ada("network-snapshot-000100.pkl")     # {"G", "D", "G_ema", "augment_pipe", ...}

Architecture (S2A's): mapping network (normalized z, optional class embedding, lr multiplier 0.01, tracked w_avg
for truncation); synthesis blocks from 4x4 (a learned constant) up, each with two modulated 3x3 layers (the first
up-samples by FIR [1, 3, 3, 1]) and a ToRGB output ('skip': the images of all blocks are up-sampled and summed;
'orig' and 'resnet' as S2A); discriminator blocks (resnet by default) with FIR down-sampling, then minibatch stddev,
a 3x3 conv and two FC layers, and projection conditioning on a mapped label. fp16 (or bf16, ``half_dtype``) in the
``num_fp16_res`` highest resolutions, channels_last there (S2A's ``fp16_channels_last``, default True here: a
layout, not a change of values), ``conv_clamp`` (256 in S2A's configs) clamping their activations.

StyleGAN (v1) mode: ``synthesis_kwargs=dict(layer="adain")`` replaces each modulated 3x3 layer by StyleGAN's layer
(convolution, noise with a per-channel strength, bias, lrelu, then AdaIN with that layer's w:
gankern.nn.AdaINSynthesisLayer). Mapping, ToRGB outputs, truncation, style mixing and D are shared.
"""
from __future__ import annotations

import math
import os
import zipfile

import torch
from torch import nn

from ..nn.minibatch import MinibatchStdDev
from ..nn.modulation import AdaINSynthesisLayer, Conv2dLayer, FullyConnectedLayer, SynthesisLayer, ToRGBLayer
from ..ops import resample as resample_ops

__all__ = ["MappingNetwork", "SynthesisBlock", "SynthesisNetwork", "Generator", "DiscriminatorBlock",
           "DiscriminatorEpilogue", "Discriminator", "CONFIGS", "config_spec", "network_kwargs",
           "load_stylegan2_ada"]

HALF_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}
SYNTHESIS_LAYERS = {"modconv": SynthesisLayer, "adain": AdaINSynthesisLayer}
ARCHITECTURES = ("orig", "skip", "resnet")


def _choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")


def _check_resolution(img_resolution) -> int:
    if isinstance(img_resolution, bool) or not isinstance(img_resolution, int) or img_resolution < 4 or \
            img_resolution & (img_resolution - 1):
        raise ValueError(f"img_resolution must be a power of two >= 4, got {img_resolution!r}")
    return int(math.log2(img_resolution))


def _block_dtype(use_fp16: bool, half_dtype: str, force_fp32: bool) -> torch.dtype:
    return HALF_DTYPES[half_dtype] if use_fp16 and not force_fp32 else torch.float32


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """x / sqrt(mean(x^2) + eps) along ``dim``."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def _batch_input(name: str, t, N: int | None, size: int) -> torch.Tensor:
    """Check a (N, size) input (z or c)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, {size}), got {type(t).__name__}")
    if t.dim() != 2 or t.shape[1] != size or (N is not None and t.shape[0] != N):
        want = f"({N if N is not None else 'N'}, {size})"
        raise ValueError(f"{name} must have shape {want}, got {tuple(t.shape)}")
    return t


# ----------------------------------------------------------------------------------------------------------------
# generator


class MappingNetwork(nn.Module):
    """z (N, z_dim), c (N, c_dim) -> w (N, w_dim), or ws (N, num_ws, w_dim) when num_ws is not None.

    Args (S2A's): z_dim (0: no latent), c_dim (0: unconditional), w_dim, num_ws (None: do not broadcast),
        num_layers, embed_features (label embedding size, default w_dim), layer_features (default w_dim),
        activation, lr_multiplier, w_avg_beta (decay of the tracked mean of w; None: do not track).
    """

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: int | None, num_layers: int = 8,
                 embed_features: int | None = None, layer_features: int | None = None, activation: str = "lrelu",
                 lr_multiplier: float = 0.01, w_avg_beta: float | None = 0.995):
        super().__init__()
        if z_dim + c_dim <= 0 or num_layers < 1:
            raise ValueError(f"the mapping network needs z_dim + c_dim > 0 and num_layers >= 1, got z_dim={z_dim}, "
                             f"c_dim={c_dim}, num_layers={num_layers}")
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.num_layers, self.w_avg_beta = num_layers, w_avg_beta
        embed_features = 0 if c_dim == 0 else w_dim if embed_features is None else embed_features
        layer_features = w_dim if layer_features is None else layer_features
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            setattr(self, f"fc{idx}", FullyConnectedLayer(features[idx], features[idx + 1], activation=activation,
                                                          lr_multiplier=lr_multiplier))
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z: torch.Tensor | None, c: torch.Tensor | None, truncation_psi: float = 1,
                truncation_cutoff: int | None = None, skip_w_avg_update: bool = False) -> torch.Tensor:
        """truncation_psi: w <- w_avg + psi (w - w_avg) in the first ``truncation_cutoff`` ws (None: all).
        In training mode the tracked w_avg moves toward this batch's mean (unless skip_w_avg_update)."""
        x = None
        if self.z_dim > 0:
            x = normalize_2nd_moment(_batch_input("z", z, None, self.z_dim).to(torch.float32))
        if self.c_dim > 0:
            c = _batch_input("c", c, None if x is None else x.shape[0], self.c_dim)
            y = normalize_2nd_moment(self.embed(c.to(torch.float32)))
            x = torch.cat([x, y], dim=1) if x is not None else y
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        if self.w_avg_beta is not None and self.training and not skip_w_avg_update:
            with torch.no_grad():
                self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            if not hasattr(self, "w_avg"):
                raise ValueError("truncation needs the tracked w_avg (a mapping network with num_ws and w_avg_beta)")
            if self.num_ws is None or truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                x = torch.cat([self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi),
                               x[:, truncation_cutoff:]], dim=1)
        return x

    def extra_repr(self) -> str:
        return (f"z_dim={self.z_dim}, c_dim={self.c_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}, "
                f"num_layers={self.num_layers}, w_avg_beta={self.w_avg_beta}")


class SynthesisBlock(nn.Module):
    """One resolution of the synthesis network: (x, img, ws) -> (x, img).

    Args (S2A's): in_channels (0: the first block, from a learned constant), out_channels, w_dim, resolution,
        img_channels, is_last, architecture ('orig' | 'skip' | 'resnet'), resample_filter, conv_clamp, use_fp16,
        fp16_channels_last; gankern's: half_dtype ('float16' | 'bfloat16': what use_fp16 means),
        layer ('modconv': StyleGAN2 | 'adain': StyleGAN); **layer_kwargs go to the synthesis layers.
    Shapes: x (N, in_channels, res / 2, res / 2) or None, img (N, img_channels, res / 2, res / 2) fp32 or None,
        ws (N, num_conv + num_torgb, w_dim) -> x (N, out_channels, res, res), img (N, img_channels, res, res).
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int,
                 is_last: bool, architecture: str = "skip", resample_filter=(1, 3, 3, 1),
                 conv_clamp: float | None = None, use_fp16: bool = False, fp16_channels_last: bool = True,
                 half_dtype: str = "float16", layer: str = "modconv", **layer_kwargs):
        super().__init__()
        _choice("architecture", architecture, ARCHITECTURES)
        _choice("half_dtype", half_dtype, HALF_DTYPES)
        _choice("layer", layer, SYNTHESIS_LAYERS)
        self.in_channels, self.w_dim, self.resolution, self.img_channels = in_channels, w_dim, resolution, img_channels
        self.is_last, self.architecture, self.use_fp16, self.half_dtype = is_last, architecture, use_fp16, half_dtype
        self.channels_last = use_fp16 and fp16_channels_last
        self.register_buffer("resample_filter", resample_ops.setup_filter(list(resample_filter)))
        self.num_conv = self.num_torgb = 0
        Layer = SYNTHESIS_LAYERS[layer]
        common = dict(w_dim=w_dim, resolution=resolution, conv_clamp=conv_clamp, channels_last=self.channels_last)
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = Layer(in_channels, out_channels, up=2, resample_filter=resample_filter, **common,
                               **layer_kwargs)
            self.num_conv += 1
        self.conv1 = Layer(out_channels, out_channels, **common, **layer_kwargs)
        self.num_conv += 1
        if is_last or architecture == "skip":
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp,
                                    channels_last=self.channels_last)
            self.num_torgb += 1
        if in_channels != 0 and architecture == "resnet":
            self.skip = Conv2dLayer(in_channels, out_channels, kernel_size=1, bias=False, up=2,
                                    resample_filter=resample_filter, channels_last=self.channels_last)

    def forward(self, x, img, ws, force_fp32: bool = False, fused_modconv: bool | None = None, **layer_kwargs):
        w_iter = iter(ws.unbind(dim=1))
        dtype = _block_dtype(self.use_fp16, self.half_dtype, force_fp32)
        memory_format = torch.channels_last if self.channels_last and not force_fp32 else torch.contiguous_format
        if fused_modconv is None:
            fused_modconv = not self.training and (dtype == torch.float32 or ws.shape[0] == 1)
        kw = dict(fused_modconv=fused_modconv, **layer_kwargs)
        if self.in_channels == 0:
            x = self.const.to(dtype=dtype, memory_format=memory_format).unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
            x = self.conv1(x, next(w_iter), **kw)
        elif self.architecture == "resnet":
            x = x.to(dtype=dtype, memory_format=memory_format)
            y = self.skip(x, gain=math.sqrt(0.5))
            x = self.conv0(x, next(w_iter), **kw)
            x = y.add_(self.conv1(x, next(w_iter), gain=math.sqrt(0.5), **kw))
        else:
            x = x.to(dtype=dtype, memory_format=memory_format)
            x = self.conv0(x, next(w_iter), **kw)
            x = self.conv1(x, next(w_iter), **kw)
        if img is not None:
            img = resample_ops.upsample2d(img, self.resample_filter)
        if self.is_last or self.architecture == "skip":
            y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv)
            y = y.to(dtype=torch.float32, memory_format=torch.contiguous_format)
            img = img.add_(y) if img is not None else y
        return x, img

    def extra_repr(self) -> str:
        return (f"resolution={self.resolution}, architecture={self.architecture!r}, use_fp16={self.use_fp16}, "
                f"half_dtype={self.half_dtype!r}")


class SynthesisNetwork(nn.Module):
    """ws (N, num_ws, w_dim) -> img (N, img_channels, img_resolution, img_resolution) fp32.

    Args (S2A's): w_dim, img_resolution (a power of two >= 4), img_channels, channel_base, channel_max (block of
        resolution r has min(channel_base // r, channel_max) channels), num_fp16_res (half precision in the
        num_fp16_res highest resolutions, never below 8x8), **block_kwargs (SynthesisBlock's).
    """

    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, channel_base: int = 32768,
                 channel_max: int = 512, num_fp16_res: int = 0, **block_kwargs):
        super().__init__()
        log2 = _check_resolution(img_resolution)
        self.w_dim, self.img_resolution, self.img_resolution_log2 = w_dim, img_resolution, log2
        self.img_channels, self.num_fp16_res = img_channels, num_fp16_res
        self.block_resolutions = [2 ** i for i in range(2, log2 + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        if min(channels.values()) < 1:
            raise ValueError(f"channel_base={channel_base} leaves no channels at {img_resolution}px")
        fp16_resolution = max(2 ** (log2 + 1 - num_fp16_res), 8)
        self.num_ws = 0
        for res in self.block_resolutions:
            block = SynthesisBlock(channels[res // 2] if res > 4 else 0, channels[res], w_dim=w_dim, resolution=res,
                                   img_channels=img_channels, is_last=res == img_resolution,
                                   use_fp16=res >= fp16_resolution, **block_kwargs)
            self.num_ws += block.num_conv + (block.num_torgb if block.is_last else 0)
            setattr(self, f"b{res}", block)

    def forward(self, ws: torch.Tensor, **block_kwargs) -> torch.Tensor:
        """block_kwargs: noise_mode ('random' | 'const' | 'none'), force_fp32, fused_modconv."""
        if not isinstance(ws, torch.Tensor):
            raise TypeError(f"ws must be a torch.Tensor, got {type(ws).__name__}")
        if ws.dim() != 3 or tuple(ws.shape[1:]) != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must have shape (N, num_ws, w_dim) = (N, {self.num_ws}, {self.w_dim}), got "
                             f"{tuple(ws.shape)}")
        ws = ws.to(torch.float32)
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            x, img = block(x, img, ws.narrow(1, w_idx, block.num_conv + block.num_torgb), **block_kwargs)
            w_idx += block.num_conv
        return img

    def extra_repr(self) -> str:
        return (f"w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}, "
                f"img_channels={self.img_channels}, num_fp16_res={self.num_fp16_res}")


class Generator(nn.Module):
    """S2A's Generator: ``G(z, c, truncation_psi=1, truncation_cutoff=None, noise_mode='random')`` ->
    images (N, img_channels, img_resolution, img_resolution) fp32; ``G.mapping`` and ``G.synthesis``.

    Args: z_dim, c_dim (0: unconditional; c is then None or (N, 0)), w_dim, img_resolution, img_channels,
        mapping_kwargs (MappingNetwork's), synthesis_kwargs (SynthesisNetwork's and SynthesisBlock's, e.g.
        channel_base, num_fp16_res, conv_clamp, architecture, half_dtype, layer='adain' for StyleGAN v1).
    """

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, img_resolution: int, img_channels: int,
                 mapping_kwargs: dict | None = None, synthesis_kwargs: dict | None = None):
        super().__init__()
        mapping_kwargs, synthesis_kwargs = dict(mapping_kwargs or {}), dict(synthesis_kwargs or {})
        self.init_kwargs = dict(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution,
                                img_channels=img_channels, mapping_kwargs=mapping_kwargs,
                                synthesis_kwargs=synthesis_kwargs)
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = SynthesisNetwork(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                                          **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **mapping_kwargs)

    def forward(self, z: torch.Tensor, c: torch.Tensor | None, truncation_psi: float = 1,
                truncation_cutoff: int | None = None, **synthesis_kwargs) -> torch.Tensor:
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, **synthesis_kwargs)


# ----------------------------------------------------------------------------------------------------------------
# discriminator


class DiscriminatorBlock(nn.Module):
    """One resolution of D: (x, img) -> (x at res / 2, img at res / 2 or None).

    Args (S2A's): in_channels (0: the first block, from the image), tmp_channels, out_channels, resolution,
        img_channels, first_layer_idx, architecture, activation, resample_filter, conv_clamp, use_fp16,
        fp16_channels_last, freeze_layers (layers with an index below it hold buffers, not parameters: Freeze-D);
        gankern's half_dtype.
    """

    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int, resolution: int, img_channels: int,
                 first_layer_idx: int, architecture: str = "resnet", activation: str = "lrelu",
                 resample_filter=(1, 3, 3, 1), conv_clamp: float | None = None, use_fp16: bool = False,
                 fp16_channels_last: bool = True, freeze_layers: int = 0, half_dtype: str = "float16"):
        super().__init__()
        _choice("architecture", architecture, ARCHITECTURES)
        _choice("half_dtype", half_dtype, HALF_DTYPES)
        if in_channels not in (0, tmp_channels):
            raise ValueError(f"in_channels must be 0 or tmp_channels ({tmp_channels}), got {in_channels}")
        self.in_channels, self.resolution, self.img_channels = in_channels, resolution, img_channels
        self.first_layer_idx, self.architecture, self.use_fp16, self.half_dtype = (first_layer_idx, architecture,
                                                                                   use_fp16, half_dtype)
        self.channels_last = use_fp16 and fp16_channels_last
        self.register_buffer("resample_filter", resample_ops.setup_filter(list(resample_filter)))
        self.num_layers = 0

        def trainable() -> bool:
            self.num_layers += 1
            return first_layer_idx + self.num_layers - 1 >= freeze_layers

        common = dict(activation=activation, conv_clamp=conv_clamp, channels_last=self.channels_last)
        if in_channels == 0 or architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, kernel_size=1, trainable=trainable(), **common)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, kernel_size=3, trainable=trainable(), **common)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, kernel_size=3, down=2, resample_filter=resample_filter,
                                 trainable=trainable(), **common)
        if architecture == "resnet":
            self.skip = Conv2dLayer(tmp_channels, out_channels, kernel_size=1, bias=False, down=2,
                                    resample_filter=resample_filter, trainable=trainable(),
                                    channels_last=self.channels_last)

    def forward(self, x, img, force_fp32: bool = False):
        dtype = _block_dtype(self.use_fp16, self.half_dtype, force_fp32)
        memory_format = torch.channels_last if self.channels_last and not force_fp32 else torch.contiguous_format
        if x is not None:
            x = x.to(dtype=dtype, memory_format=memory_format)
        if self.in_channels == 0 or self.architecture == "skip":
            img = img.to(dtype=dtype, memory_format=memory_format)
            y = self.fromrgb(img)
            x = x + y if x is not None else y
            img = resample_ops.downsample2d(img, self.resample_filter) if self.architecture == "skip" else None
        if self.architecture == "resnet":
            y = self.skip(x, gain=math.sqrt(0.5))
            x = y.add_(self.conv1(self.conv0(x), gain=math.sqrt(0.5)))
        else:
            x = self.conv1(self.conv0(x))
        return x, img

    def extra_repr(self) -> str:
        return (f"resolution={self.resolution}, architecture={self.architecture!r}, use_fp16={self.use_fp16}, "
                f"half_dtype={self.half_dtype!r}")


class DiscriminatorEpilogue(nn.Module):
    """D's 4x4 head: [fromrgb (skip)], minibatch stddev, 3x3 conv, FC, output FC; projection onto the mapped
    label: (x, img, cmap) -> logits (N, 1) fp32.

    Args (S2A's): in_channels, cmap_dim (0: unconditional), resolution, img_channels, architecture,
        mbstd_group_size (None: the whole batch), mbstd_num_channels (0: no stddev layer), activation, conv_clamp.
    """

    def __init__(self, in_channels: int, cmap_dim: int, resolution: int, img_channels: int,
                 architecture: str = "resnet", mbstd_group_size: int | None = 4, mbstd_num_channels: int = 1,
                 activation: str = "lrelu", conv_clamp: float | None = None):
        super().__init__()
        _choice("architecture", architecture, ARCHITECTURES)
        self.in_channels, self.cmap_dim, self.resolution = in_channels, cmap_dim, resolution
        self.img_channels, self.architecture = img_channels, architecture
        if architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, in_channels, kernel_size=1, activation=activation)
        self.mbstd = MinibatchStdDev(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, kernel_size=3, activation=activation,
                                conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * resolution ** 2, in_channels, activation=activation)
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(self, x, img, cmap, force_fp32: bool = False):
        x = x.to(dtype=torch.float32, memory_format=torch.contiguous_format)
        if self.architecture == "skip":
            x = x + self.fromrgb(img.to(dtype=torch.float32, memory_format=torch.contiguous_format))
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.out(self.fc(self.conv(x).flatten(1)))
        if self.cmap_dim > 0:
            x = (x * cmap).sum(dim=1, keepdim=True) * (1 / math.sqrt(self.cmap_dim))
        return x


class Discriminator(nn.Module):
    """S2A's Discriminator: ``D(img (N, img_channels, R, R), c (N, c_dim) or None) -> logits (N, 1)`` fp32.

    Args (S2A's): c_dim, img_resolution, img_channels, architecture ('orig' | 'skip' | 'resnet'), channel_base,
        channel_max, num_fp16_res, conv_clamp, cmap_dim (default: the 4x4 channels), block_kwargs
        (DiscriminatorBlock's, e.g. freeze_layers, half_dtype), mapping_kwargs (the label mapping's),
        epilogue_kwargs (e.g. mbstd_group_size).
    """

    def __init__(self, c_dim: int, img_resolution: int, img_channels: int, architecture: str = "resnet",
                 channel_base: int = 32768, channel_max: int = 512, num_fp16_res: int = 0,
                 conv_clamp: float | None = None, cmap_dim: int | None = None, block_kwargs: dict | None = None,
                 mapping_kwargs: dict | None = None, epilogue_kwargs: dict | None = None):
        super().__init__()
        block_kwargs, mapping_kwargs = dict(block_kwargs or {}), dict(mapping_kwargs or {})
        epilogue_kwargs = dict(epilogue_kwargs or {})
        self.init_kwargs = dict(c_dim=c_dim, img_resolution=img_resolution, img_channels=img_channels,
                                architecture=architecture, channel_base=channel_base, channel_max=channel_max,
                                num_fp16_res=num_fp16_res, conv_clamp=conv_clamp, cmap_dim=cmap_dim,
                                block_kwargs=block_kwargs, mapping_kwargs=mapping_kwargs,
                                epilogue_kwargs=epilogue_kwargs)
        log2 = _check_resolution(img_resolution)
        self.c_dim, self.img_resolution, self.img_resolution_log2 = c_dim, img_resolution, log2
        self.img_channels = img_channels
        self.block_resolutions = [2 ** i for i in range(log2, 2, -1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions + [4]}
        if min(channels.values()) < 1:
            raise ValueError(f"channel_base={channel_base} leaves no channels at {img_resolution}px")
        fp16_resolution = max(2 ** (log2 + 1 - num_fp16_res), 8)
        cmap_dim = 0 if c_dim == 0 else channels[4] if cmap_dim is None else cmap_dim
        common = dict(img_channels=img_channels, architecture=architecture, conv_clamp=conv_clamp)
        layer_idx = 0
        for res in self.block_resolutions:
            block = DiscriminatorBlock(channels[res] if res < img_resolution else 0, channels[res],
                                       channels[res // 2], resolution=res, first_layer_idx=layer_idx,
                                       use_fp16=res >= fp16_resolution, **block_kwargs, **common)
            setattr(self, f"b{res}", block)
            layer_idx += block.num_layers
        if c_dim > 0:
            self.mapping = MappingNetwork(z_dim=0, c_dim=c_dim, w_dim=cmap_dim, num_ws=None, w_avg_beta=None,
                                          **mapping_kwargs)
        self.b4 = DiscriminatorEpilogue(channels[4], cmap_dim=cmap_dim, resolution=4, **epilogue_kwargs, **common)

    def forward(self, img: torch.Tensor, c: torch.Tensor | None, **block_kwargs) -> torch.Tensor:
        """block_kwargs: force_fp32."""
        if not isinstance(img, torch.Tensor):
            raise TypeError(f"img must be a torch.Tensor, got {type(img).__name__}")
        R = self.img_resolution
        if img.dim() != 4 or tuple(img.shape[1:]) != (self.img_channels, R, R):
            raise ValueError(f"img must have shape (N, {self.img_channels}, {R}, {R}), got {tuple(img.shape)}")
        cmap = self.mapping(None, _batch_input("c", c, img.shape[0], self.c_dim)) if self.c_dim > 0 else None
        x = None
        for res in self.block_resolutions:
            x, img = getattr(self, f"b{res}")(x, img, **block_kwargs)
        return self.b4(x, img, cmap)

    def extra_repr(self) -> str:
        return f"c_dim={self.c_dim}, img_resolution={self.img_resolution}, img_channels={self.img_channels}"


# ----------------------------------------------------------------------------------------------------------------
# S2A's configurations (train.py --cfg): network shape and training hyperparameters


CONFIGS = {  # ref_gpus, kimg, mb (batch), mbstd (D's group), fmaps, lrate, gamma (R1), ema (kimg), ramp, map
    "auto": dict(ref_gpus=-1, kimg=25000, mb=-1, mbstd=-1, fmaps=-1, lrate=-1, gamma=-1, ema=-1, ramp=0.05, map=2),
    "stylegan2": dict(ref_gpus=8, kimg=25000, mb=32, mbstd=4, fmaps=1, lrate=0.002, gamma=10, ema=10, ramp=None,
                      map=8),
    "paper256": dict(ref_gpus=8, kimg=25000, mb=64, mbstd=8, fmaps=0.5, lrate=0.0025, gamma=1, ema=20, ramp=None,
                     map=8),
    "paper512": dict(ref_gpus=8, kimg=25000, mb=64, mbstd=8, fmaps=1, lrate=0.0025, gamma=0.5, ema=20, ramp=None,
                     map=8),
    "paper1024": dict(ref_gpus=8, kimg=25000, mb=32, mbstd=4, fmaps=1, lrate=0.002, gamma=2, ema=10, ramp=None,
                      map=8),
    "cifar": dict(ref_gpus=2, kimg=100000, mb=64, mbstd=32, fmaps=1, lrate=0.0025, gamma=0.01, ema=500, ramp=0.05,
                  map=2),
    # gankern's CPU preset (not S2A's): auto's rules at 1/16 of auto's width below 512 px
    "tiny": dict(ref_gpus=-1, kimg=25000, mb=-1, mbstd=-1, fmaps=1 / 32, lrate=-1, gamma=-1, ema=-1, ramp=0.05,
                 map=2),
}


def config_spec(cfg: str, resolution: int, gpus: int = 1) -> dict:
    """S2A's spec of a named config; ``auto`` derives batch, group size, width, lr, gamma and EMA from the
    resolution and the GPU count as S2A does."""
    if cfg not in CONFIGS:
        raise ValueError(f"unknown config {cfg!r}; known: {', '.join(CONFIGS)}")
    _check_resolution(resolution)
    spec = dict(CONFIGS[cfg])
    if cfg in ("auto", "tiny"):
        spec["ref_gpus"] = gpus
        spec["mb"] = max(min(gpus * min(4096 // resolution, 32), 64), gpus)
        spec["mbstd"] = min(spec["mb"] // gpus, 4)
        spec["fmaps"] = spec["fmaps"] if cfg == "tiny" else 1 if resolution >= 512 else 0.5
        spec["lrate"] = 0.002 if resolution >= 1024 else 0.0025
        spec["gamma"] = 0.0002 * resolution ** 2 / spec["mb"]
        spec["ema"] = spec["mb"] * 10 / 32
    return spec


def network_kwargs(cfg: str, img_resolution: int, img_channels: int = 3, c_dim: int = 0, gpus: int = 1,
                   z_dim: int = 512, w_dim: int = 512) -> tuple[dict, dict]:
    """(G_kwargs, D_kwargs) of S2A's train.py for config ``cfg``: width int(fmaps * 32768), at most 512 channels,
    ``map`` mapping layers, fp16 in the 4 highest resolutions with conv_clamp 256, D's minibatch stddev group
    ``mbstd``; cifar's D is 'orig'."""
    spec = config_spec(cfg, img_resolution, gpus)
    common = dict(channel_base=int(spec["fmaps"] * 32768), channel_max=512, num_fp16_res=4, conv_clamp=256)
    G_kwargs = dict(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                    mapping_kwargs=dict(num_layers=spec["map"]), synthesis_kwargs=dict(common))
    D_kwargs = dict(c_dim=c_dim, img_resolution=img_resolution, img_channels=img_channels, **common,
                    epilogue_kwargs=dict(mbstd_group_size=spec["mbstd"]))
    if cfg == "cifar":
        D_kwargs["architecture"] = "orig"
    return G_kwargs, D_kwargs


# ----------------------------------------------------------------------------------------------------------------
# loading S2A's networks


def _plain(obj):
    """S2A's kwargs (EasyDicts, tuples, numpy scalars read as numbers) as plain Python containers."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise ValueError(f"unexpected {type(obj).__name__} in a network's constructor arguments")


def _build(cls, kwargs: dict, tensors: dict, what: str) -> nn.Module:
    try:
        net = cls(**kwargs)
    except TypeError as e:
        raise ValueError(f"{what}: constructor arguments that gankern's {cls.__name__} does not take ({e}); "
                         f"arguments: {kwargs}") from None
    missing, unexpected = set(net.state_dict()) - set(tensors), set(tensors) - set(net.state_dict())
    if missing or unexpected:
        raise ValueError(f"{what}: the tensors do not fit gankern's {cls.__name__}: missing "
                         f"{sorted(missing)[:8]}, unexpected {sorted(unexpected)[:8]}")
    for k, t in net.state_dict().items():
        if tuple(tensors[k].shape) != tuple(t.shape):
            raise ValueError(f"{what}: {k} has shape {tuple(tensors[k].shape)}, gankern's {cls.__name__} expects "
                             f"{tuple(t.shape)}")
    net.load_state_dict(tensors, strict=True)
    return net


def _from_stub(stub, what: str) -> nn.Module:
    import inspect

    from ..augment import AugmentPipe
    from .safe_pickle import PersistentStub
    classes = {"Generator": Generator, "Discriminator": Discriminator, "AugmentPipe": AugmentPipe}
    if not isinstance(stub, PersistentStub):
        raise ValueError(f"{what} is a {type(stub).__name__}, not an S2A network")
    if stub.class_name not in classes:
        raise ValueError(f"{what} is an S2A {stub.class_name}; gankern reads {', '.join(classes)}")
    cls = classes[stub.class_name]
    try:
        bound = inspect.signature(cls).bind(*_plain(list(stub.init_args)), **_plain(stub.init_kwargs))
    except TypeError as e:
        raise ValueError(f"{what}: S2A's constructor arguments do not fit gankern's {cls.__name__} ({e})") from None
    tensors = {k: t.to(torch.float32) if t.is_floating_point() else t for k, t in stub.tensors().items()}
    return _build(cls, dict(bound.arguments), tensors, what)


def _count(keys, fmt: str) -> int:
    n = 0
    while fmt.format(n) in keys:
        n += 1
    return n


def _channels(sd: dict, fmt: str, resolutions) -> dict:
    return {res: sd[fmt.format(res)].shape[0] for res in resolutions}


def _base_and_max(channels: dict) -> tuple[int, int]:
    """channel_base, channel_max with min(channel_base // res, channel_max) = channels[res] for every res."""
    cmax = max(channels.values())
    below = {r: c for r, c in channels.items() if c < cmax}
    base = max(c * r for r, c in below.items()) if below else cmax * max(channels)
    if any(min(base // r, cmax) != c for r, c in channels.items()):
        raise ValueError(f"the channel counts per resolution {channels} are not S2A's min(base // res, max)")
    return base, cmax


def _mapping_kwargs(sd: dict, prefix: str) -> tuple[dict, int, int]:
    """(mapping kwargs, z_dim, c_dim) of an S2A mapping network's state dict under ``prefix``."""
    keys = set(sd)
    n = _count(keys, prefix + "fc{}.weight")
    embed = sd.get(prefix + "embed.weight")
    c_dim, embed_features = (embed.shape[1], embed.shape[0]) if embed is not None else (0, 0)
    kw = dict(num_layers=n, layer_features=sd[prefix + "fc0.weight"].shape[0] if n > 1 else None)
    if embed is not None:
        kw["embed_features"] = embed_features
    return kw, sd[prefix + "fc0.weight"].shape[1] - embed_features, c_dim


def _infer_G_kwargs(sd: dict) -> dict:
    keys = set(sd)
    res = sorted(int(k.split(".")[1][1:]) for k in keys if k.startswith("synthesis.b") and k.endswith(".conv1.weight"))
    if not res:
        raise ValueError("not an S2A generator state dict (no synthesis.b*.conv1.weight)")
    R = res[-1]
    base, cmax = _base_and_max(_channels(sd, "synthesis.b{}.conv1.weight", res))
    mapping, z_dim, c_dim = _mapping_kwargs(sd, "mapping.")
    if "mapping.w_avg" not in keys:
        mapping["w_avg_beta"] = None
    arch = "resnet" if f"synthesis.b{R}.skip.weight" in keys else \
        "skip" if R > 4 and f"synthesis.b{R // 2}.torgb.weight" in keys else "orig"
    conv1 = sd[f"synthesis.b{R}.conv1.weight"]
    synthesis = dict(channel_base=base, channel_max=cmax, architecture=arch, kernel_size=conv1.shape[-1],
                     use_noise=f"synthesis.b{R}.conv1.noise_strength" in keys)
    return dict(z_dim=z_dim, c_dim=c_dim, w_dim=sd[f"synthesis.b{R}.conv1.affine.weight"].shape[1],
                img_resolution=R, img_channels=sd[f"synthesis.b{R}.torgb.weight"].shape[0], mapping_kwargs=mapping,
                synthesis_kwargs=synthesis)


def _infer_D_kwargs(sd: dict) -> dict:
    keys = set(sd)
    res = sorted(int(k.split(".")[0][1:]) for k in keys if k.startswith("b") and k.endswith(".conv0.weight"))
    if not res or "b4.conv.weight" not in keys:
        raise ValueError("not an S2A discriminator state dict (no b*.conv0.weight, b4.conv.weight)")
    R = res[-1]
    channels = _channels(sd, "b{}.conv0.weight", res)
    channels[4] = sd["b4.conv.weight"].shape[0]
    base, cmax = _base_and_max(channels)
    arch = "resnet" if f"b{R}.skip.weight" in keys else "skip" if "b4.fromrgb.weight" in keys else "orig"
    kw = dict(img_resolution=R, img_channels=sd[f"b{R}.fromrgb.weight"].shape[1], architecture=arch,
              channel_base=base, channel_max=cmax,
              epilogue_kwargs=dict(mbstd_num_channels=sd["b4.conv.weight"].shape[1] - channels[4]))
    if "mapping.fc0.weight" in keys:
        mapping, _, c_dim = _mapping_kwargs(sd, "mapping.")
        kw.update(c_dim=c_dim, cmap_dim=sd["b4.out.weight"].shape[0], mapping_kwargs=mapping)
    else:
        kw["c_dim"] = 0
    return kw


def _merge(kwargs: dict, overrides: dict) -> dict:
    out = dict(kwargs)
    for k, v in overrides.items():
        out[k] = _merge(out.get(k) or {}, v) if isinstance(v, dict) else v
    return out


def load_stylegan2_ada(path: str | os.PathLike, G_kwargs: dict | None = None,
                       D_kwargs: dict | None = None) -> dict:
    """Read a StyleGAN2-ADA network pickle (``network-snapshot-*.pkl``, the published FFHQ / AFHQ / MetFaces
    files) or state dict (``.pt`` / ``.pth``) into gankern's networks, running no code from the file.

    Pickles are read by gankern.models.safe_pickle (a pickle that asks for anything but tensors, containers and
    S2A's persistent modules is refused, naming what it asked for); state dicts by ``torch.load(weights_only=True)``.
    A state dict file (``.pt`` / ``.pth``, or any torch.save zip file) holds one network's state dict (a
    generator's or a discriminator's, told apart by its keys) or a dict of them under "G", "D", "G_ema"; the
    architecture is read from the tensors' shapes, and what shapes
    do not tell (conv_clamp, num_fp16_res, mbstd_group_size, lr_multiplier, activations) takes S2A's constructor
    defaults unless ``G_kwargs`` / ``D_kwargs`` give them (they are merged into the read arguments, also for
    pickles: e.g. ``G_kwargs=dict(synthesis_kwargs=dict(num_fp16_res=0))`` for fp32 everywhere).

    Returns:
        dict with "G", "D", "G_ema" (gankern Generator / Discriminator in eval mode, fp32 parameters on the CPU,
        or None where the file has none), "augment_pipe" (gankern.augment.AugmentPipe or None) and
        "training_set_kwargs" (dict or None).
    """
    from . import safe_pickle
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such network file: {path}")
    out = dict(G=None, D=None, G_ema=None, augment_pipe=None, training_set_kwargs=None)
    overrides = {"G": G_kwargs or {}, "G_ema": G_kwargs or {}, "D": D_kwargs or {}}
    if path.endswith((".pt", ".pth")) or zipfile.is_zipfile(path):  # torch.save's files are zip archives
        data = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a state dict, got {type(data).__name__}")
        nets = {k: data[k] for k in ("G", "D", "G_ema") if isinstance(data.get(k), dict)} or \
            {("G" if any(k.startswith("synthesis.") for k in data) else "D"): data}
        for name, sd in nets.items():
            cls, infer = (Discriminator, _infer_D_kwargs) if name == "D" else (Generator, _infer_G_kwargs)
            sd = {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in sd.items()}
            out[name] = _build(cls, _merge(infer(sd), overrides[name]), sd, f"{path} [{name}]").eval()
        return out
    with open(path, "rb") as f:
        data = safe_pickle.load(f)
    if not isinstance(data, dict) or not any(k in data for k in ("G", "D", "G_ema")):
        raise ValueError(f"{path}: not an S2A network pickle (expected a dict with G, D, G_ema)")
    for name in ("G", "D", "G_ema", "augment_pipe"):
        if data.get(name) is not None:
            net = _from_stub(data[name], f"{path} [{name}]")
            if overrides.get(name):
                net = _build(type(net), _merge(net.init_kwargs, overrides[name]), net.state_dict(),
                             f"{path} [{name}]")
            out[name] = net.eval()
    if isinstance(data.get("training_set_kwargs"), dict):
        out["training_set_kwargs"] = _plain(data["training_set_kwargs"])
    return out
