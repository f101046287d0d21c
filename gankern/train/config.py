"""Typed run configuration: dataclasses that serialize to ``config.json`` in the run directory and read back on
resume, and the table of named configs (one row per GAN of the literature)."""
from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field

from ..models import ModelConfig


@dataclass
class LossConfig:
    name: str = "nonsaturating"  # saturating | nonsaturating | hinge | wasserstein | lsgan (gankern.losses)
    real_target: float = 1.0     # one-sided label smoothing: D's target for reals (e.g. 0.9)
    instance_noise: float = 0.0  # std of Gaussian noise added to D's inputs, annealed linearly to 0 over the run
    gp: float = 0.0              # WGAN-GP weight (gankern.ops.gradient_penalty)
    r1: float = 0.0              # R1 gamma; loss term gamma / 2 * r1_penalty (gankern.ops.r1_penalty)
    reg_interval: int = 1        # lazy regularization: penalties every N steps, scaled by N (1 = inside the D step)
    clip: float = 0.0            # WGAN weight clipping of D's parameters to [-clip, clip] (0 = off)


@dataclass
class OptConfig:
    kind: str = "adam"           # adam | rmsprop
    g_lr: float = 2e-4           # TTUR: G and D have their own learning rates and betas
    d_lr: float = 2e-4
    g_betas: tuple[float, float] = (0.5, 0.999)
    d_betas: tuple[float, float] = (0.5, 0.999)
    n_critic: int = 1            # D steps (each on a fresh batch) per G step


@dataclass
class TrainConfig:
    data: str = "digits"         # digits | folder | .zip | .npz | .npy
    resolution: int = 32
    channels: int = 0            # image channels for folders/zips (0 = 3); arrays and digits know theirs
    labels_file: str = ""        # dataset.json or CSV of path,label (conditional models)
    subfolder_labels: bool = False
    mirror: bool = False         # random horizontal flips
    batch: int = 64              # global batch (over all ranks and accumulation rounds)
    accum: int = 1               # gradient accumulation rounds per step
    kimg: float = 200.0          # length of the run in thousands of real images shown (batch per step)
    ema_kimg: float = 10.0       # half-life of G_ema in kimg (0 = G_ema is a copy of G)
    ema_rampup: float = 0.05     # EMA ramp-up: half-life at most nimg * ema_rampup (0 = off)
    amp: str = "off"             # off | bf16 | fp16 (fp16 with a gradient scaler)
    seed: int = 0
    log_steps: int = 50          # a JSONL row (and the NaN check of the weights) every N steps
    snap_steps: int = 500        # image grid + metrics every N steps (multiple of log_steps)
    ckpt_steps: int = 500        # checkpoint every N steps (multiple of log_steps)
    keep: int = 3                # checkpoints kept
    metrics: str = "auto"        # auto (digits-fid on digits) | digits-fid | none
    metric_samples: int = 1000   # generated images per FID/KID evaluation
    workers: int = 2             # loader worker processes (file data sets)
    grid: int = 64               # images in each snapshot grid


@dataclass
class RunConfig:
    config: str = "dcgan"        # the row of CONFIGS this run started from
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    opt: OptConfig = field(default_factory=OptConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @staticmethod
    def from_json(text: str) -> "RunConfig":
        return _from_dict(RunConfig, json.loads(text))

    def validate(self) -> "RunConfig":
        t = self.train
        for n in ("snap_steps", "ckpt_steps"):
            if getattr(t, n) % t.log_steps:
                raise ValueError(f"train.{n}={getattr(t, n)} must be a multiple of train.log_steps={t.log_steps}")
        if t.batch % t.accum:
            raise ValueError(f"train.batch={t.batch} must divide by train.accum={t.accum}")
        if t.amp not in ("off", "bf16", "fp16"):
            raise ValueError(f"train.amp must be off, bf16 or fp16, not '{t.amp}'")
        if self.opt.kind not in ("adam", "rmsprop"):
            raise ValueError(f"opt.kind must be adam or rmsprop, not '{self.opt.kind}'")
        from ..losses import get_loss
        get_loss(self.loss.name)
        return self


def _from_dict(cls, d: dict):
    hints = typing.get_type_hints(cls)
    kw = {}
    for f in dataclasses.fields(cls):
        if f.name not in d:
            continue
        v, t = d[f.name], hints[f.name]
        kw[f.name] = _from_dict(t, v) if dataclasses.is_dataclass(t) else (tuple(v) if isinstance(v, list) else v)
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown fields {sorted(unknown)}")
    return cls(**kw)


def set_field(cfg: RunConfig, assignment: str) -> None:
    """Apply ``section.field=value`` (e.g. ``loss.r1=10``, ``opt.g_betas=0,0.9``) to cfg, parsing by field type."""
    key, sep, text = assignment.partition("=")
    section, _, name = key.partition(".")
    obj = getattr(cfg, section, None)
    if not sep or obj is None or not dataclasses.is_dataclass(obj) or name not in {f.name for f in
                                                                                   dataclasses.fields(obj)}:
        raise ValueError(f"--set {assignment}: expected SECTION.FIELD=VALUE with SECTION in model, loss, opt, "
                         f"train and a field of it")
    t = typing.get_type_hints(type(obj))[name]
    if t is bool:
        v = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}[text.lower()]
    elif typing.get_origin(t) is tuple:
        v = tuple(float(s) for s in text.split(","))
    else:
        v = t(text)
    setattr(obj, name, v)


def _row(description: str, model: dict | None = None, loss: dict | None = None, opt: dict | None = None,
         train: dict | None = None):
    return description, {"model": model or {}, "loss": loss or {}, "opt": opt or {}, "train": train or {}}


_WGAN_OPT = dict(kind="rmsprop", g_lr=5e-5, d_lr=5e-5, n_critic=5)
_GP_OPT = dict(g_lr=1e-4, d_lr=1e-4, g_betas=(0.0, 0.9), d_betas=(0.0, 0.9), n_critic=5)

#: name -> (description, overrides of the RunConfig defaults per section). Adding a GAN is one row.
CONFIGS: dict[str, tuple[str, dict]] = {
    "gan": _row("GAN with MLPs, non-saturating loss (Goodfellow et al. 2014)",
                model=dict(arch="mlp", g_ch=64, d_ch=64)),
    "gan-sat": _row("GAN with MLPs, the original saturating minimax loss (Goodfellow et al. 2014)",
                    model=dict(arch="mlp", g_ch=64, d_ch=64), loss=dict(name="saturating")),
    "dcgan": _row("DCGAN (Radford et al. 2015): conv G/D with BatchNorm, non-saturating loss, Adam(2e-4, 0.5)"),
    "dcgan-improved": _row("DCGAN + minibatch discrimination, one-sided label smoothing 0.9 and instance noise "
                           "(Salimans et al. 2016; Sonderby et al. 2016)",
                           model=dict(mbdisc=16), loss=dict(real_target=0.9, instance_noise=0.1)),
    "dcgan-r1": _row("DCGAN + minibatch stddev in D and lazy R1 (every 4 steps; Mescheder et al. 2018)",
                     model=dict(mbstd=4, d_norm="none"), loss=dict(r1=1.0, reg_interval=4)),
    "cgan": _row("conditional GAN with MLPs, labels concatenated to G's and D's inputs (Mirza & Osindero 2014)",
                 model=dict(arch="mlp", cond="concat")),
    "cgan-proj": _row("conditional DCGAN with a projection discriminator, spectral norm and hinge loss "
                      "(Miyato & Koyama 2018)",
                      model=dict(cond="proj", d_sn=True, d_norm="none"), loss=dict(name="hinge"),
                      opt=dict(g_lr=1e-4, d_lr=4e-4, g_betas=(0.0, 0.9), d_betas=(0.0, 0.9))),
    "wgan": _row("WGAN with weight clipping 0.01, RMSprop 5e-5, 5 critic steps (Arjovsky et al. 2017)",
                 loss=dict(name="wasserstein", clip=0.01), opt=_WGAN_OPT),
    "wgan-gp": _row("WGAN-GP: gradient penalty 10, layer norm in the critic, Adam(1e-4, 0, 0.9), 5 critic steps "
                    "(Gulrajani et al. 2017)",
                    model=dict(d_norm="ln"), loss=dict(name="wasserstein", gp=10.0), opt=_GP_OPT),
    "lsgan": _row("least squares GAN on the DCGAN architecture (Mao et al. 2017)", loss=dict(name="lsgan")),
    "sngan": _row("SNGAN: ResNet G/D, spectral norm in D, hinge loss, Adam(2e-4, 0, 0.9), 5 D steps "
                  "(Miyato et al. 2018)",
                  model=dict(arch="resnet", d_sn=True, d_norm="none", g_ch=64, d_ch=64), loss=dict(name="hinge"),
                  opt=dict(g_betas=(0.0, 0.9), d_betas=(0.0, 0.9), n_critic=5)),
    "sagan": _row("SAGAN: ResNet G/D with self-attention, spectral norm in G and D, hinge loss, TTUR "
                  "(G 1e-4, D 4e-4) (Zhang et al. 2018)",
                  model=dict(arch="resnet", attn=True, g_sn=True, d_sn=True, d_norm="none", g_ch=64, d_ch=64),
                  loss=dict(name="hinge"),
                  opt=dict(g_lr=1e-4, d_lr=4e-4, g_betas=(0.0, 0.9), d_betas=(0.0, 0.9))),
}


def named_config(name: str) -> RunConfig:
    """The RunConfig of the CONFIGS row ``name``."""
    if name not in CONFIGS:
        raise ValueError(f"unknown config '{name}'; known: {', '.join(CONFIGS)} (gankern train --list-configs)")
    cfg = RunConfig(config=name)
    for section, over in CONFIGS[name][1].items():
        for k, v in over.items():
            setattr(getattr(cfg, section), k, v)
    return cfg
