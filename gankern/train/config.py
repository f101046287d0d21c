"""Typed run configuration: dataclasses that serialize to ``config.json`` in the run directory and read back on
resume, and the table of named configs (one row per GAN of the literature: a recipe and overrides of its options)."""
from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from typing import Any

from .recipes import RECIPES
from .recipes.classic import ClassicOptions, LossConfig, OptConfig  # noqa: F401  (the classic recipe's sections)


METRICS = ("auto", "digits-fid", "fid", "none")   # train.metrics (--metrics): the FID at snapshots


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
    metrics: str = "auto"        # auto | digits-fid | fid (Inception) | none; auto: digits-fid on digits (CLI: fid
    #                              elsewhere when the Inception weights are found here)
    metric_samples: int = 1000   # generated images per FID/KID evaluation (fid: S2A's fid50k_full at 50000)
    workers: int = 2             # loader worker processes (file data sets)
    grid: int = 64               # images in each snapshot grid


@dataclass
class RunConfig:
    """A run: the CONFIGS row it started from, the recipe (a key of RECIPES) with its typed options, and the trainer's
    settings. ``cfg.model`` reads ``cfg.options.model``: the sections of a recipe's options read as before."""
    config: str = "dcgan"        # the row of CONFIGS this run started from
    recipe: str = "classic"      # gankern.train.recipes.RECIPES key
    options: Any = field(default_factory=ClassicOptions)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __getattr__(self, name: str):
        opts = self.__dict__.get("options")
        if opts is None or name.startswith("__") or not hasattr(opts, name):
            raise AttributeError(f"RunConfig has no field or recipe option '{name}'")
        return getattr(opts, name)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @staticmethod
    def from_json(text: str) -> "RunConfig":
        d = json.loads(text)
        if "options" not in d and "model" in d:          # config.json of a run from before the recipes
            d = {"config": d.get("config", "dcgan"), "recipe": "classic", "train": d.get("train", {}),
                 "options": {k: d[k] for k in ("model", "loss", "opt") if k in d}}
        recipe = d.get("recipe", "classic")
        options = _from_dict(_recipe(recipe).Options, d.pop("options", {}))
        return RunConfig(options=options, **{f.name: _from_dict(TrainConfig, d[f.name]) if f.name == "train"
                                             else d[f.name] for f in dataclasses.fields(RunConfig) if f.name in d})

    def validate(self) -> "RunConfig":
        t = self.train
        for n in ("batch", "accum", "log_steps", "snap_steps", "ckpt_steps", "grid", "metric_samples"):
            if getattr(t, n) < 1:
                raise ValueError(f"train.{n}={getattr(t, n)} must be >= 1")
        if not (math.isfinite(t.kimg) and t.kimg > 0):
            raise ValueError(f"train.kimg={t.kimg} must be a finite number > 0")
        if t.resolution < 1 or t.resolution & (t.resolution - 1):
            raise ValueError(f"train.resolution={t.resolution} must be a power of two")
        for n in ("workers", "keep"):
            if getattr(t, n) < 0:
                raise ValueError(f"train.{n}={getattr(t, n)} must be >= 0")
        for n in ("snap_steps", "ckpt_steps"):
            if getattr(t, n) % t.log_steps:
                raise ValueError(f"train.{n}={getattr(t, n)} must be a multiple of train.log_steps={t.log_steps}")
        if t.batch % t.accum:
            raise ValueError(f"train.batch={t.batch} must divide by train.accum={t.accum}")
        if t.metrics not in METRICS:
            raise ValueError(f"train.metrics must be one of {', '.join(METRICS)}, not '{t.metrics}'")
        if t.metrics != "none" and t.metric_samples < 2:
            raise ValueError(f"train.metric_samples={t.metric_samples}: FID needs at least 2 images")
        if t.amp not in ("off", "bf16", "fp16"):
            raise ValueError(f"train.amp must be off, bf16 or fp16, not '{t.amp}'")
        cls = _recipe(self.recipe)
        if not isinstance(self.options, cls.Options):
            raise ValueError(f"recipe '{self.recipe}' takes options of type {cls.Options.__name__}, not "
                             f"{type(self.options).__name__}")
        if hasattr(self.options, "validate"):
            self.options.validate()
        return self


def _recipe(name: str):
    if name not in RECIPES:
        raise ValueError(f"unknown recipe '{name}'; known: {', '.join(RECIPES)} (gankern.train.register_recipe adds "
                         f"one)")
    return RECIPES[name]


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
    """Apply ``PATH=VALUE`` to cfg, parsing by field type: ``train.batch=32``, ``recipe.X=V`` (a field of the recipe's
    options) or, for options with sections, the section first (``loss.r1=10``, ``opt.g_betas=0,0.9``)."""
    key, sep, text = assignment.partition("=")
    path = key.split(".")
    obj = cfg.train if path[0] == "train" else cfg.options
    path = path[1:] if path[0] in ("train", "recipe") else path
    for name in path[:-1]:
        obj = getattr(obj, name, None) if dataclasses.is_dataclass(obj) else None
    if not sep or not path or not dataclasses.is_dataclass(obj) or path[-1] not in {
            f.name for f in dataclasses.fields(obj)} or dataclasses.is_dataclass(getattr(obj, path[-1])):
        sections = [f.name for f in dataclasses.fields(cfg.options) if dataclasses.is_dataclass(getattr(
            cfg.options, f.name))]
        raise ValueError(f"--set {assignment}: expected SECTION.FIELD=VALUE with SECTION train, recipe (the options "
                         f"of recipe '{cfg.recipe}') or one of its sections ({', '.join(sections) or 'none'})")
    t = typing.get_type_hints(type(obj))[path[-1]]
    if t is bool:
        v = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}[text.lower()]
    elif typing.get_origin(t) is tuple or t is tuple:
        v = tuple(float(s) for s in text.split(","))
    else:
        v = t(text)
    setattr(obj, path[-1], v)


def _row(description: str, recipe: str = "classic", train: dict | None = None, **options):
    """A CONFIGS row: its recipe, overrides of the recipe's options (a dict per section) and of TrainConfig."""
    return description, {"recipe": recipe, "train": train or {}, **options}


# BigGAN keeps BG's EMA itself (recipe.ema_start): the trainer's G_ema copies it; grids of 10 x 10 images, whose
# labels cycle over the classes: one column per class on 10-class data
_BIGGAN_TRAIN = dict(ema_kimg=0.0, grid=100)
_WGAN_OPT = dict(kind="rmsprop", g_lr=5e-5, d_lr=5e-5, n_critic=5)
_RING = dict(data="ring", batch=512, kimg=2560.0, ema_kimg=0.0, snap_steps=500, ckpt_steps=500)   # 5000 steps
# SinGAN: batch 1 (one image); G_ema a copy of G (snapshots); 20 kimg = 2000 steps per scale at 10 scales (256 px)
_SINGAN_TRAIN = dict(data="sample:china", resolution=256, batch=1, kimg=20.0, ema_kimg=0.0, ema_rampup=0.0,
                     log_steps=100, snap_steps=1000, ckpt_steps=1000, grid=16)
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
    "dcgan-san": _row("DCGAN with sparsity-aware normalization of D's convolutions (circular padding; the head keeps "
                      "spectral norm) instead of BatchNorm (Kligvasser & Michaeli 2021)",
                      model=dict(d_sn=True, d_san=True, d_norm="none")),
    "sngan-san": _row("SNGAN with sparsity-aware normalization instead of spectral norm in D's convolutions "
                      "(Kligvasser & Michaeli 2021)",
                      model=dict(arch="resnet", d_sn=True, d_san=True, d_norm="none", g_ch=64, d_ch=64),
                      loss=dict(name="hinge"), opt=dict(g_betas=(0.0, 0.9), d_betas=(0.0, 0.9), n_critic=5)),
    "stylegan2": _row("StyleGAN2-ADA (Karras et al. 2020): S2A's --cfg auto (recipe.cfg), lazy R1 and path length, "
                      "style mixing, ADA; batch and G_ema's half-life / ramp-up from the cfg; on a CPU: --set "
                      "recipe.cfg=tiny", recipe="stylegan2"),
    "stylegan": _row("StyleGAN (Karras et al. 2019): AdaIN layers with per-layer noise, on StyleGAN2-ADA's mapping, "
                     "D and training (recipe stylegan2, layer=adain)", recipe="stylegan2", layer="adain"),
    "biggan": _row("BigGAN as BigGAN-PyTorch trains it: shared class embedding, skip-z, attention, SN everywhere, "
                   "hinge, TTUR, 2 D steps, ortho reg, EMA from ema_start (Brock et al. 2019; --set "
                   "recipe.preset=32|64|128|tiny, auto: tiny on the CPU)", recipe="biggan", train=_BIGGAN_TRAIN),
    "biggan-deep": _row("BigGAN-deep: bottleneck blocks, two per resolution, z concatenated once; trained as biggan "
                        "(Brock et al. 2019)", recipe="biggan", deep=True, train=_BIGGAN_TRAIN),
    "biggan-cpu": _row("biggan as a CPU preset: the tiny model (recipe.preset=tiny: widths 32, z 30 in 3 chunks, "
                       "shared embedding 16, attention at 8 px) at 16 px, batch 32, G lr 1e-3 / D lr 2e-3 (BG's x10 "
                       "/ x5: the class condition is learned within ~300 steps, not thousands), 10 kimg",
                       recipe="biggan", preset="tiny", G_lr=1e-3, D_lr=2e-3,
                       train={**_BIGGAN_TRAIN, "resolution": 16, "batch": 32, "kimg": 10.0}),
    "pix2pix": _row("pix2pix (Isola et al. 2017): U-Net G with dropout, 70x70 PatchGAN D on (input, output), cGAN + "
                    "100 L1, Adam(2e-4, 0.5), lr constant then linear decay; built-in digits-edges (edge map -> "
                    "digit), held-out L1/PSNR/SSIM", recipe="pix2pix", ngf=32, ndf=32, val_data="digits-edges:val",
                    train=dict(data="digits-edges", batch=16, kimg=100.0)),
    "pix2pixhd": _row("pix2pixHD (Wang et al. 2018): one-hot label map -> image, global ResNet G (recipe.local=1: "
                      "the local enhancer around a global run's G, recipe.init_global=RUN), multi-scale PatchGAN Ds, "
                      "LSGAN + feature matching 10 (+ VGG19 10 with recipe.vgg=WEIGHTS); built-in digits-labels "
                      "(11 labels, 32 px: widths 16, 3 levels, 3 blocks, 2 D scales), held-out L1/PSNR/SSIM",
                      recipe="pix2pixhd", n_labels=11, ngf=16, n_down_global=3, n_blocks_global=3, ndf=16, num_D=2,
                      d_layers=2, val_data="digits-labels:val", train=dict(data="digits-labels", batch=8, kimg=50.0)),
    "cyclegan": _row("CycleGAN (Zhu et al. 2017): ResNet Gs (reflection padding, instance norm), PatchGAN Ds, LSGAN, "
                     "cycle 10 + identity 0.5 x 10, pool of 50 fakes, lr constant then linear decay; built-in "
                     "digits-styles (thin gray <-> thick orange digits, 32 px: 6 blocks, widths 32), held-out "
                     "digits-FID of B -> A", recipe="cyclegan",
                     ngf=32, ndf=32, n_blocks=6, val_data="digits-styles:val",
                     train=dict(data="digits-styles", batch=8, kimg=50.0)),
    "singan": _row("SinGAN (Rott Shaham et al. 2019): a pyramid of 5-layer conv G/D pairs (32 channels, x2 every 4 "
                   "scales) trained coarse to fine on one image (--res: its longer side), scale factor ~0.75 down to "
                   "25 px, WGAN-GP 0.1 + 10 x reconstruction, Adam(5e-4, 0.5), 3 D + 3 G steps, lr x0.1 at 80% of "
                   "each scale; built-in sample:china; kimg spreads over the scales (20: 2000 steps per scale at "
                   "256 px); logs rec/rmse and SIFID", recipe="singan", train=_SINGAN_TRAIN),
    "singan-cpu": _row("singan as a CPU preset: 32 px, coarsest 16 px, 16 channels, 300 steps per scale",
                       recipe="singan", min_size=16, width=16, max_width=64,
                       train={**_SINGAN_TRAIN, "resolution": 32, "kimg": 1.2, "log_steps": 50, "snap_steps": 300,
                              "ckpt_steps": 300}),
    "acgan": _row("ACGAN: DCGAN with an auxiliary classifier head in D, class losses on reals and fakes "
                  "(Odena et al. 2017)", recipe="acgan"),
    "infogan": _row("InfoGAN: DCGAN with a 10-way categorical and 2 continuous codes, a Q head sharing D's body, "
                    "the mutual-information lower bound (lambda 1) in D/Q's and G's losses (Chen et al. 2016)",
                    recipe="infogan", opt=dict(d_lr=2e-4, g_lr=1e-3)),
    "msgan": _row("MSGAN: conditional DCGAN (labels concatenated in G and D) with the mode-seeking regularizer, "
                  "lambda 1 (Mao et al. 2019; loss.mode_seeking works in every conditional config and acgan)",
                  model=dict(cond="concat"), loss=dict(mode_seeking=1.0)),
    "gan-ring": _row("plain GAN on the 2-D ring of 8 Gaussians (--data ring): the unrolled GAN's nets with 0 unrolled "
                     "steps, its baseline (Metz et al. 2017)", recipe="unrolled", unroll=0, train=_RING),
    "unrolled-gan": _row("unrolled GAN: G's loss through 10 unrolled Adam steps of D, on the 2-D ring of 8 Gaussians "
                         "(Metz et al. 2017)", recipe="unrolled", unroll=10, train=_RING),
    "began": _row("BEGAN: autoencoder D with L1 reconstruction energy, equilibrium term k_t (gamma 0.5, lambda_k "
                  "0.001), M_global logged, ELU nets, Adam(1e-4, 0.5) (Berthelot et al. 2017)", recipe="began"),
    "ebgan": _row("EBGAN: autoencoder D as an energy (reconstruction MSE), margin loss, pulling-away term 0.1 in G, "
                  "DCGAN G, Adam(2e-4, 0.5) (Zhao et al. 2017)", recipe="ebgan"),
    "pggan": _row("PGGAN: progressive growing 4 -> data resolution with fade-in (800 kimg fade, 800 stable per "
                  "resolution), pixel norm, equalized lr, minibatch stddev (groups of 16), WGAN-GP 10 + drift 0.001, "
                  "Adam(1e-3, 0, 0.99) reset at each fade-in's start and end, batch 16 (256:14, 512:6, 1024:3), widths "
                  "min(16384 / res, 512) (Karras et al. 2018)", recipe="pggan", model=dict(mbstd_group=16),
                  batch_per_res="256:14,512:6,1024:3",
                  train=dict(batch=16, kimg=5600.0, ema_kimg=11.1, ema_rampup=0.0)),
    "pggan-cpu": _row("PGGAN as a CPU preset: 4 -> 8 -> 16 -> 32 px, 10 kimg fade + 10 stable per resolution, "
                      "widths min(512 / res, 32), z 128 (Karras et al. 2018)", recipe="pggan",
                      model=dict(z_dim=128, ch_base=512, ch_max=32), grow=dict(fade_kimg=10.0, stable_kimg=10.0),
                      train=dict(batch=32, kimg=70.0)),
    "lapgan": _row("LAPGAN: a Laplacian pyramid of GANs, 8 -> 16 -> 32 px: an MLP GAN on the coarsest level, conv "
                   "Gs of band-pass residuals conditioned on the upsampled coarser image (noise as an extra plane), "
                   "levels trained independently on real pyramids, sampled coarse to fine; SGD(0.02, momentum 0.5 -> "
                   "0.8) (Denton et al. 2015)", recipe="lapgan", model=dict(g_ch=32, d_ch=32), train=dict(kimg=50.0)),
}


def _cpu_preset(name: str) -> tuple[str, dict]:
    """The CPU preset of a config that is slow on a CPU (README: seconds per kimg): the same method on 16x16 images
    (the digits are 8x8) with 32 channels in G and D, for 20 kimg."""
    over = CONFIGS[name][1]
    return (f"{name} as a CPU preset: 16x16, 32 channels, 20 kimg",
            {**over, "model": {**over.get("model", {}), "g_ch": 32, "d_ch": 32},
             "train": {**over["train"], "resolution": 16, "kimg": 20.0}})


CONFIGS.update({f"{n}-cpu": _cpu_preset(n) for n in ("wgan-gp", "sngan", "sagan", "sngan-san")})


def named_config(name: str) -> RunConfig:
    """The RunConfig of the CONFIGS row ``name``."""
    if name not in CONFIGS:
        raise ValueError(f"unknown config '{name}'; known: {', '.join(CONFIGS)} (gankern train --list-configs)")
    over = dict(CONFIGS[name][1])
    recipe = over.pop("recipe")
    cfg = RunConfig(config=name, recipe=recipe, options=_recipe(recipe).Options())
    _apply(cfg.train, over.pop("train"))
    _apply(cfg.options, over)
    return apply_train_defaults(cfg, set())


def apply_train_defaults(cfg: RunConfig, explicit: set[str], gpus: int = 1) -> RunConfig:
    """Set the train fields that cfg's recipe decides, ``Recipe.train_defaults(options, resolution, gpus) -> dict``
    (StyleGAN2's cfg: batch and G_ema's half-life / ramp-up), except those given by the user (``explicit``: names of
    train fields set on the command line or with --set) or by the CONFIGS row. For a new run, before config.json is
    written: it records the effective values, which --resume reads back."""
    fn = getattr(_recipe(cfg.recipe), "train_defaults", None)
    if fn is None:
        return cfg
    row = set(CONFIGS[cfg.config][1]["train"]) if cfg.config in CONFIGS else set()
    for k, v in fn(cfg.options, cfg.train.resolution, gpus).items():
        if not hasattr(cfg.train, k):
            raise ValueError(f"recipe '{cfg.recipe}': train_defaults names no train field '{k}'")
        if k not in explicit and k not in row:
            setattr(cfg.train, k, v)
    return cfg


def _apply(obj, over: dict) -> None:
    for k, v in over.items():
        if not hasattr(obj, k):
            raise ValueError(f"{type(obj).__name__} has no field '{k}'")
        if dataclasses.is_dataclass(getattr(obj, k)) and isinstance(v, dict):
            _apply(getattr(obj, k), v)
        else:
            setattr(obj, k, v)
