"""``gankern.nn.utils``: the drop-in counterparts of ``torch.nn.utils`` helpers."""
from .spectral_norm import spectral_norm  # noqa: F401

__all__ = ["spectral_norm"]
