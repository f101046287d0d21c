"""The trainer core (loop over phases, checkpoints, outputs), its typed configs and the ``train``/``generate`` CLI.

    from gankern.train import Trainer, named_config
    cfg = named_config("dcgan"); cfg.train.kimg = 50
    Trainer(cfg, "runs/dcgan").train()
"""
from .config import CONFIGS, LossConfig, OptConfig, RunConfig, TrainConfig, named_config, set_field  # noqa: F401
from .loop import Dist, NonFiniteError, Phase, Trainer, generate  # noqa: F401
