"""Drop-in use of gankern's ops inside other GAN codebases (one module per codebase; nothing is patched on import)."""
from . import stylegan2_ada  # noqa: F401
