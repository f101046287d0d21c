"""The trainer core (loop over a recipe's phases, checkpoints, outputs), the recipes of the GAN families, typed
configs and the ``train``/``generate`` CLI.

    from gankern.train import Trainer, named_config
    cfg = named_config("dcgan"); cfg.train.kimg = 50
    Trainer(cfg, "runs/dcgan").train()
"""
from .config import CONFIGS, LossConfig, OptConfig, RunConfig, TrainConfig, named_config, set_field  # noqa: F401
from .loop import Dist, NonFiniteError, Trainer, generate  # noqa: F401
from .recipes import RECIPES, Batch, Env, OptSpec, Phase, Recipe, register_recipe  # noqa: F401
