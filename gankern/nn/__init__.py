"""Drop-in torch.nn modules built on gankern.ops, and ``convert(model)`` which swaps torch's modules for ours."""
from . import utils  # noqa: F401
from .convert import convert  # noqa: F401
from .spectral_norm import SpectralNormGroup  # noqa: F401
from .minibatch import MinibatchDiscrimination, MinibatchStdDev  # noqa: F401
from .penalty import PathLengthRegularizer  # noqa: F401
from .modulation import (AdaIN, AdaINSynthesisLayer, Conv2dLayer, FullyConnectedLayer, InstanceNorm2d,  # noqa: F401
                         SynthesisLayer, ToRGBLayer)
