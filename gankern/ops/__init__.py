"""Public ops: each family's functions (see gankern/ops/<family>.py). One import line per family."""
from . import spectral_norm  # noqa: F401
from . import fid  # noqa: F401
from .minibatch import minibatch_discrimination, minibatch_discrimination_pairs, minibatch_stddev  # noqa: F401
from .modulation import adain, bias_act, instance_norm, modulated_conv2d, noise_bias_act  # noqa: F401
from .penalty import grad_norm_penalty, gradient_penalty, path_length_penalty, r1_penalty  # noqa: F401
from .resample import downsample2d, filter2d, upfirdn2d, upsample2d  # noqa: F401
from . import san  # noqa: F401
from .augment import affine_grid_sample, color_transform  # noqa: F401
