"""``gankern.nn.utils``: the drop-in counterparts of ``torch.nn.utils`` helpers, and sparsity-aware norm."""
from .san import sparsity_aware_norm  # noqa: F401
from .spectral_norm import spectral_norm  # noqa: F401

__all__ = ["spectral_norm", "sparsity_aware_norm"]
