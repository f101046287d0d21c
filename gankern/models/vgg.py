"""torchvision's VGG feature layers without torchvision (``features.N`` numbered as torchvision numbers them), and
their weights read from a user's file without running code: the networks of perceptual distances (S2A's projector:
VGG16). Nothing downloads: the user gives torchvision's state dict (``torch.save(vgg16(weights=...).state_dict())``)
or a .safetensors copy of it."""
from __future__ import annotations

import os
import zipfile

import torch
from torch import nn

__all__ = ["VGG16", "VGG19", "vgg_layers", "read_state_dict", "load_features"]

# convolution widths, "M" a 2x2 max pool (torchvision's cfgs "D" and "E")
VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
VGG19 = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")


def vgg_layers(widths) -> nn.Sequential:
    """torchvision's ``vgg*().features``: Conv2d(3x3, padding 1) + ReLU per width, MaxPool2d(2) per "M"."""
    layers, c = [], 3
    for v in widths:
        layers += [nn.MaxPool2d(2)] if v == "M" else [nn.Conv2d(c, v, 3, padding=1), nn.ReLU()]
        c = c if v == "M" else v
    return nn.Sequential(*layers)


def _is_torchscript(path: str) -> bool:
    """A TorchScript archive is a zip with a code/ folder (torch.save's zips have data.pkl and data/ only)."""
    return zipfile.is_zipfile(path) and any(n.split("/")[-2:-1] == ["code"] or n.endswith("/constants.pkl")
                                            for n in zipfile.ZipFile(path).namelist())


def read_state_dict(path: str | os.PathLike, what: str, how: str) -> dict:
    """The tensors of the torch.save state dict (read with weights_only=True) or .safetensors file at ``path``.
    FileNotFoundError; ValueError ending with ``how`` (what to give instead) for TorchScript files (loading them runs
    the code they hold) and for files that do not load without running code. ``what`` names the weights in messages."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such {what} weights file: {path}")
    if _is_torchscript(path):
        raise ValueError(f"{path} is a TorchScript file (as S2A's vgg16.pt): loading it would run the code it holds, "
                         f"so gankern does not; {how}")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file
            sd = load_file(path)
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:                  # not a torch.save file, pickled code, truncated
        raise ValueError(f"{path}: not a state dict that loads without running code ({type(e).__name__}); "
                         f"{how}") from None
    return sd if isinstance(sd, dict) else {}


def load_features(path: str | os.PathLike, features: nn.Sequential, name: str = "VGG16",
                  hint: str = "") -> nn.Sequential:
    """Copy the ``features.N.weight`` / ``.bias`` tensors of torchvision's state dict in ``path`` (read with
    weights_only=True, or .safetensors; the classifier is ignored) into ``features``; returns it. ValueError naming
    the first missing or misshapen tensor, and for TorchScript files (loading them runs the code they hold), whose
    message ends with ``hint``."""
    how = (f"give torchvision's {name.lower()} weights as a state dict (torch.save(torchvision.models."
           f"{name.lower()}(weights='IMAGENET1K_V1').state_dict(), 'file.pth')) or as .safetensors{hint}")
    sd = read_state_dict(path, name, how)
    want = {k: v.shape for k, v in features.state_dict().items()}
    got = {k[len("features."):]: v for k, v in sd.items() if k.startswith("features.")}
    bad = [k for k in want if k not in got or tuple(got[k].shape) != tuple(want[k])]
    if bad:
        raise ValueError(f"{os.fspath(path)}: not torchvision's {name} state dict (features.{bad[0]}: expected shape "
                         f"{tuple(want[bad[0]])}, got {tuple(got[bad[0]].shape) if bad[0] in got else 'none'})")
    features.load_state_dict({k: got[k] for k in want})
    return features
