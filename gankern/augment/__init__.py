"""ADA: StyleGAN2-ADA's differentiable augmentation pipeline (``AugmentPipe``, the named sets of ``AUGPIPE_SPECS``
such as ``bgc``) and the controller of its probability p (``AdaController``)."""
from .ada import AdaController  # noqa: F401
from .pipe import AUGPIPE_SPECS, AugmentPipe, augment_pipe  # noqa: F401
