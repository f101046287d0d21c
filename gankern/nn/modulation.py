"""StyleGAN's layers on gankern's fused ops, with StyleGAN2-ADA's (S2A's) constructor arguments, parameters,
buffers and state_dict keys, so that S2A's state dicts load into them exactly (strict).

- :class:`FullyConnectedLayer`: equalized-learning-rate linear layer (weight gain lr_multiplier / sqrt(in), bias
  gain lr_multiplier) with a fused bias + activation.
- :class:`Conv2dLayer`: equalized-learning-rate convolution with FIR up/down-sampling (conv2d_resample), then
  bias_act with S2A's gain and conv_clamp.
- :class:`SynthesisLayer`: StyleGAN2's layer: styles = affine(w) (bias_init 1), modulated 3x3 convolution with
  demodulation, per-pixel noise (random / the ``noise_const`` buffer / none) times ``noise_strength``, bias,
  lrelu, conv_clamp: one :func:`gankern.ops.modulated_conv2d` call (the epilogue is fused).
- :class:`ToRGBLayer`: modulated 1x1 convolution without demodulation, bias, clamp.
- :class:`AdaIN` and :class:`AdaINSynthesisLayer`: StyleGAN (v1)'s style block (conv, noise with a per-channel
  strength, bias, lrelu, then instance norm with per-sample (gamma, beta) = affine(w)): the layer of
  gankern.models.stylegan2's ``layer="adain"`` mode.
- :class:`InstanceNorm2d`: torch's InstanceNorm2d fused with the activation after it (pix2pix, CycleGAN);
  ``gankern.nn.convert`` swaps torch's for it.

Shapes: x (N, C, H, W); w (N, w_dim). Layers keep fp32 parameters and compute in x's dtype (S2A's fp16 blocks).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ..ops import modulation as mod_ops
from ..ops import resample as resample_ops
from .convert import register_converter

__all__ = ["FullyConnectedLayer", "Conv2dLayer", "SynthesisLayer", "ToRGBLayer", "AdaIN", "AdaINSynthesisLayer",
           "InstanceNorm2d"]

NOISE_MODES = ("random", "const", "none")


def _act_gain(activation: str) -> float:
    if activation not in mod_ops.ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(mod_ops.ACTIVATIONS)}, got {activation!r}")
    return mod_ops.ACTIVATIONS[activation].def_gain


def _memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


def _layer_noise(layer: nn.Module, x: torch.Tensor, noise_mode: str) -> torch.Tensor | None:
    """The noise image of a synthesis layer, (N, 1, res, res) for "random" (drawn as S2A draws it, fp32), (1, 1,
    res, res) for "const" (the ``noise_const`` buffer), or None (mode "none" or a layer without noise)."""
    if noise_mode not in NOISE_MODES:
        raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
    if not layer.use_noise or noise_mode == "none":
        return None
    if noise_mode == "random":
        return torch.randn([x.shape[0], 1, layer.resolution, layer.resolution], device=x.device)
    return layer.noise_const[None, None]


class FullyConnectedLayer(nn.Module):
    """S2A's FullyConnectedLayer: ``act(x @ (weight * weight_gain).T + bias * bias_gain)``.

    Args:
        in_features, out_features: sizes; bias: learn a bias; activation: a key of gankern.ops.modulation's
            ACTIVATIONS (its default gain applies); lr_multiplier: the learning-rate multiplier (weights are stored
            divided by it: weight_gain = lr_multiplier / sqrt(in_features), bias_gain = lr_multiplier);
        bias_init: initial bias, a number or one value per output feature.
    Shapes: x (N, in_features) -> (N, out_features).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str = "linear",
                 lr_multiplier: float = 1, bias_init: float | Sequence[float] = 0):
        super().__init__()
        _act_gain(activation)
        if not isinstance(bias_init, (int, float)) and len(bias_init) != out_features:
            raise ValueError(f"bias_init must be a number or {out_features} values, got {len(bias_init)} values")
        self.in_features, self.out_features, self.activation = in_features, out_features, activation
        self.lr_multiplier, self.bias_init = lr_multiplier, bias_init
        self.weight = nn.Parameter(torch.empty([out_features, in_features]))
        self.bias = nn.Parameter(torch.empty([out_features])) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.weight.copy_(torch.randn(self.weight.shape) / self.lr_multiplier)
            if self.bias is not None:
                self.bias.copy_(torch.as_tensor(self.bias_init, dtype=torch.float32).expand(self.out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return mod_ops.bias_act(x.matmul(w.t()), b, act=self.activation)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"activation={self.activation!r}, lr_multiplier={self.lr_multiplier}")


class Conv2dLayer(nn.Module):
    """S2A's Conv2dLayer: ``clamp(act(conv2d_resample(x, weight * weight_gain) + bias) * act_gain * gain)``.

    Args:
        in_channels, out_channels, kernel_size: of the convolution (padding kernel_size // 2).
        bias, activation: as FullyConnectedLayer; up, down: FIR resampling by ``resample_filter``;
        conv_clamp: clamp the output to +-conv_clamp * gain (None: no clamp);
        channels_last: store the weight channels_last (S2A's fp16 blocks);
        trainable: False stores weight and bias as buffers (Freeze-D); the state_dict keys are the same.
    Shapes: x (N, in_channels, H, W) -> (N, out_channels, H * up / down, W * up / down).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: str = "linear", up: int = 1, down: int = 1, resample_filter=(1, 3, 3, 1),
                 conv_clamp: float | None = None, channels_last: bool = False, trainable: bool = True):
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.activation, self.up, self.down, self.conv_clamp = activation, up, down, conv_clamp
        self.register_buffer("resample_filter", resample_ops.setup_filter(list(resample_filter)))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.act_gain = _act_gain(activation)
        weight = torch.empty([out_channels, in_channels, kernel_size, kernel_size],
                             memory_format=_memory_format(channels_last))
        b = torch.empty([out_channels]) if bias else None
        if trainable:
            self.weight = nn.Parameter(weight)
            self.bias = nn.Parameter(b) if b is not None else None
        else:
            self.register_buffer("weight", weight)
            self.register_buffer("bias", b)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.weight.normal_()
            if self.bias is not None:
                self.bias.zero_()

    def forward(self, x: torch.Tensor, gain: float = 1) -> torch.Tensor:
        w = (self.weight * self.weight_gain).to(x.dtype)
        x = resample_ops.conv2d_resample(x, w, f=self.resample_filter, up=self.up, down=self.down,
                                         padding=self.padding, flip_weight=self.up == 1)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        b = self.bias.to(x.dtype) if self.bias is not None else None
        return mod_ops.bias_act(x, b, act=self.activation, gain=self.act_gain * gain, clamp=clamp)

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
                f"kernel_size={self.kernel_size}, activation={self.activation!r}, up={self.up}, down={self.down}, "
                f"conv_clamp={self.conv_clamp}")


def _modulated(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, *, demodulate: bool, padding: int,
               up: int, resample_filter: torch.Tensor | None, noise: torch.Tensor | None,
               noise_strength: torch.Tensor | None, bias: torch.Tensor, act: str, gain: float,
               clamp: float | None) -> torch.Tensor:
    """The one call of :func:`gankern.ops.modulated_conv2d` of the StyleGAN2 layers: modulated convolution, then
    (demodulation, + noise * noise_strength, + bias, act, gain, clamp) in its fused epilogue."""
    return mod_ops.modulated_conv2d(x, weight, styles, demodulate=demodulate, padding=padding, up=up,
                                    resample_filter=resample_filter, flip_weight=up == 1, noise=noise,
                                    noise_strength=noise_strength if noise is not None else None,
                                    bias=bias.to(x.dtype), act=act, gain=gain, clamp=clamp)


class SynthesisLayer(nn.Module):
    """S2A's SynthesisLayer: styles = affine(w), then one fused modulated convolution (demodulated) with noise,
    bias, activation (gain act_gain * gain) and clamp (conv_clamp * gain).

    Args:
        in_channels, out_channels, w_dim: sizes; resolution: of the output (the noise image's size);
        kernel_size: 3 in StyleGAN2; up: 1 or 2 (FIR up-sampling by ``resample_filter``);
        use_noise: learn ``noise_strength`` (init 0) and keep the ``noise_const`` buffer (res, res);
        activation, conv_clamp, channels_last: as Conv2dLayer.
    Shapes: x (N, in_channels, resolution / up, resolution / up), w (N, w_dim) -> (N, out_channels, res, res).
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, kernel_size: int = 3,
                 up: int = 1, use_noise: bool = True, activation: str = "lrelu", resample_filter=(1, 3, 3, 1),
                 conv_clamp: float | None = None, channels_last: bool = False):
        super().__init__()
        self.in_channels, self.out_channels, self.w_dim = in_channels, out_channels, w_dim
        self.resolution, self.up, self.use_noise, self.activation = resolution, up, use_noise, activation
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", resample_ops.setup_filter(list(resample_filter)))
        self.padding = kernel_size // 2
        self.act_gain = _act_gain(activation)
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.empty([out_channels, in_channels, kernel_size, kernel_size],
                                               memory_format=_memory_format(channels_last)))
        if use_noise:
            self.register_buffer("noise_const", torch.empty([resolution, resolution]))
            self.noise_strength = nn.Parameter(torch.empty([]))
        self.bias = nn.Parameter(torch.empty([out_channels]))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.affine.reset_parameters()
        with torch.no_grad():
            self.weight.normal_()
            self.bias.zero_()
            if self.use_noise:
                self.noise_const.normal_()
                self.noise_strength.zero_()

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random", fused_modconv: bool = True,
                gain: float = 1) -> torch.Tensor:
        """noise_mode: "random" | "const" | "none". fused_modconv: S2A's choice between two formulations of the
        same result; gankern's op has one (x * s, convolution, fused epilogue), so it does not change the call."""
        styles = self.affine(w)
        noise = _layer_noise(self, x, noise_mode)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return _modulated(x, self.weight, styles, demodulate=True, padding=self.padding, up=self.up,
                          resample_filter=self.resample_filter, noise=noise,
                          noise_strength=self.noise_strength if noise is not None else None, bias=self.bias,
                          act=self.activation, gain=self.act_gain * gain, clamp=clamp)

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, w_dim={self.w_dim}, "
                f"resolution={self.resolution}, up={self.up}, use_noise={self.use_noise}, "
                f"activation={self.activation!r}, conv_clamp={self.conv_clamp}")


class ToRGBLayer(nn.Module):
    """S2A's ToRGBLayer: styles = affine(w) * weight_gain, modulated convolution without demodulation, bias,
    clamp (activation linear), one fused op.

    Shapes: x (N, in_channels, H, W), w (N, w_dim) -> (N, out_channels, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, kernel_size: int = 1,
                 conv_clamp: float | None = None, channels_last: bool = False):
        super().__init__()
        self.in_channels, self.out_channels, self.w_dim, self.conv_clamp = in_channels, out_channels, w_dim, conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.empty([out_channels, in_channels, kernel_size, kernel_size],
                                               memory_format=_memory_format(channels_last)))
        self.bias = nn.Parameter(torch.empty([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.affine.reset_parameters()
        with torch.no_grad():
            self.weight.normal_()
            self.bias.zero_()

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused_modconv: bool = True) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        return _modulated(x, self.weight, styles, demodulate=False, padding=self.weight.shape[-1] // 2, up=1,
                          resample_filter=None, noise=None, noise_strength=None, bias=self.bias, act="linear",
                          gain=1.0, clamp=self.conv_clamp)

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, w_dim={self.w_dim}, "
                f"conv_clamp={self.conv_clamp}")


class AdaIN(nn.Module):
    """StyleGAN (v1) style block: (gamma, beta) = affine(w) (an equalized-learning-rate FullyConnectedLayer whose
    bias starts at gamma = 1, beta = 0), then ``instance_norm(x) * gamma + beta`` in one fused op
    (:func:`gankern.ops.adain`).

    Args:
        num_features: C, the channels of x; style_dim: the size of w; eps: added to the variance.
    Shapes: x (N, C, H, W), w (N, style_dim) -> (N, C, H, W).
    """

    def __init__(self, num_features: int, style_dim: int, eps: float = 1e-5):
        super().__init__()
        self.num_features, self.style_dim, self.eps = num_features, style_dim, eps
        self.affine = FullyConnectedLayer(style_dim, 2 * num_features,
                                          bias_init=[1.0] * num_features + [0.0] * num_features)

    def reset_parameters(self) -> None:
        self.affine.reset_parameters()

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.affine(w).chunk(2, dim=1)
        return mod_ops.adain(x, gamma, beta, eps=self.eps)

    def extra_repr(self) -> str:
        return f"num_features={self.num_features}, style_dim={self.style_dim}, eps={self.eps}"


class AdaINSynthesisLayer(nn.Module):
    """StyleGAN (v1)'s synthesis layer with SynthesisLayer's arguments: an equalized-learning-rate convolution
    (FIR up-sampling when up = 2), then noise times a per-channel ``noise_strength`` (StyleGAN's), bias, activation
    and clamp in one fused op (:func:`gankern.ops.noise_bias_act`, or bias_act without noise), then
    :class:`AdaIN` with this layer's w.

    Shapes: x (N, in_channels, resolution / up, resolution / up), w (N, w_dim) -> (N, out_channels, res, res).
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, kernel_size: int = 3,
                 up: int = 1, use_noise: bool = True, activation: str = "lrelu", resample_filter=(1, 3, 3, 1),
                 conv_clamp: float | None = None, channels_last: bool = False):
        super().__init__()
        self.in_channels, self.out_channels, self.w_dim = in_channels, out_channels, w_dim
        self.resolution, self.up, self.use_noise, self.activation = resolution, up, use_noise, activation
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", resample_ops.setup_filter(list(resample_filter)))
        self.padding = kernel_size // 2
        self.act_gain = _act_gain(activation)
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.weight = nn.Parameter(torch.empty([out_channels, in_channels, kernel_size, kernel_size],
                                               memory_format=_memory_format(channels_last)))
        if use_noise:
            self.register_buffer("noise_const", torch.empty([resolution, resolution]))
            self.noise_strength = nn.Parameter(torch.empty([out_channels]))
        self.bias = nn.Parameter(torch.empty([out_channels]))
        self.adain = AdaIN(out_channels, w_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.adain.reset_parameters()
        with torch.no_grad():
            self.weight.normal_()
            self.bias.zero_()
            if self.use_noise:
                self.noise_const.normal_()
                self.noise_strength.zero_()

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random", fused_modconv: bool = True,
                gain: float = 1) -> torch.Tensor:
        """As SynthesisLayer.forward (fused_modconv has no meaning here)."""
        x = resample_ops.conv2d_resample(x, (self.weight * self.weight_gain).to(x.dtype), f=self.resample_filter,
                                         up=self.up, padding=self.padding, flip_weight=self.up == 1)
        noise = _layer_noise(self, x, noise_mode)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        b, act_gain = self.bias.to(x.dtype), self.act_gain * gain
        if noise is None:
            x = mod_ops.bias_act(x, b, act=self.activation, gain=act_gain, clamp=clamp)
        else:
            x = mod_ops.noise_bias_act(x, noise.to(x.dtype), noise_strength=self.noise_strength, b=b,
                                       act=self.activation, gain=act_gain, clamp=clamp)
        return self.adain(x, w)

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, w_dim={self.w_dim}, "
                f"resolution={self.resolution}, up={self.up}, use_noise={self.use_noise}, "
                f"activation={self.activation!r}, conv_clamp={self.conv_clamp}")


class InstanceNorm2d(nn.InstanceNorm2d):
    """``torch.nn.InstanceNorm2d`` fused with the activation that follows it (pix2pix / CycleGAN's norm + ReLU or
    LeakyReLU 0.2): ``f(instance_norm(x))`` in one :func:`gankern.ops.instance_norm` call. A subclass of torch's, with
    its arguments, parameters (``weight``, ``bias`` with affine), buffers and state_dict keys, so checkpoints load
    both ways and ``isinstance(m, torch.nn.InstanceNorm2d)`` holds.

    Args:
        num_features, eps, momentum, affine, track_running_stats, device, dtype, bias: as torch's.
        act: a key of gankern.ops.modulation's ACTIVATIONS, applied without gain ("linear": torch's module exactly);
        alpha: lrelu's negative slope.
    With ``track_running_stats=True`` the running statistics are torch's own: that mode runs torch's
    ``F.instance_norm`` (which updates them in training and uses them in eval), then the activation; the fused op
    covers instance statistics (torch's default, ``track_running_stats=False``).
    Shapes: x (N, C, H, W) or unbatched (C, H, W) -> same.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = False,
                 track_running_stats: bool = False, device=None, dtype=None, *, bias: bool = True,
                 act: str = "linear", alpha: float = 0.2):
        mod_ops._act_params(act, alpha, None, None)
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device=device, dtype=dtype,
                         bias=bias)
        self.act, self.alpha = act, alpha

    def _apply_instance_norm(self, x: torch.Tensor) -> torch.Tensor:
        if self.running_mean is not None:
            return mod_ops.ACTIVATIONS[self.act].func(super()._apply_instance_norm(x), self.alpha)
        return mod_ops.instance_norm(x, self.weight, self.bias, self.eps, self.act, self.alpha)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", act={self.act!r}" + (f", alpha={self.alpha}" if self.act == "lrelu" else "")


@register_converter
def _convert_instance_norm(module: nn.Module) -> nn.Module | None:
    """torch.nn.InstanceNorm2d -> InstanceNorm2d with act="linear", in place (same object, values and keys)."""
    if type(module) is not nn.InstanceNorm2d:
        return None
    module.__class__ = InstanceNorm2d
    module.act, module.alpha = "linear", 0.2
    return module
