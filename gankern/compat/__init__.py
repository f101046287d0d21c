"""Drop-in use of gankern's ops inside other GAN codebases (one module per codebase)."""
