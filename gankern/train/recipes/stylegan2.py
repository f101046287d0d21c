"""StyleGAN2-ADA's training (NVlabs' stylegan2-ada-pytorch, "S2A": ``training/loss.py`` and the phase set-up of
``training_loop.py``) as a recipe of the trainer core; StyleGAN (v1, AdaIN) with ``layer="adain"``.

Phases, in S2A's order: ``G`` (non-saturating logistic loss, softplus(-D(G(z)))), ``Greg`` every ``pl_interval``
steps (path length regularization on a batch shrunk by ``pl_batch_shrink``, running mean ``pl_mean`` with decay
``pl_decay``, weight ``pl_weight``), ``D`` (softplus(D(G(z))) + softplus(-D(x))), ``Dreg`` every ``r1_interval``
steps (R1 on reals, gamma / 2). G and D use Adam(lrate, betas (0, 0.99), eps 1e-8) with the trainer's lazy
regularization correction (reg_interval 4 for G, 16 for D, as S2A applies even where a regularizer is off). Style
mixing with probability ``style_mixing`` (one cutoff per batch, as S2A). Every image D sees (reals, fakes, R1
inputs) goes through ADA's AugmentPipe (``aug``: ada | fixed | noaug), whose p follows r_t = E[sign(D(real))]
toward ``target`` every ``ada_interval`` steps over ``ada_kimg``. ``pl_mean`` and ADA's state are in
``state_dict()``, so a resumed run is bit-identical.

Mixed precision is the networks' own, as in S2A: fp16 in the ``fp16_res`` highest resolutions (with ``conv_clamp``)
on GPUs; on the CPU every block runs in fp32 (``force_fp32``). The trainer's ``--amp`` is not used by this recipe.

Named configs (``cfg``) are S2A's (gankern.models.stylegan2.CONFIGS: auto, stylegan2, paper256, paper512,
paper1024, cifar) plus ``tiny`` (auto's rules at 1/16 of its width: a CPU preset). Knobs at -1 take the cfg's value.

The end of this file is the CLI of the family: ``gankern project`` and S2A's options of ``gankern generate`` (seeds,
truncation psi, noise mode, style-mixing grids) for stylegan2 runs and S2A network files.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...augment import AdaController, augment_pipe
from ...augment.pipe import AUGPIPE_SPECS
from ...models import stylegan2 as sg2
from ...ops import path_length_penalty, r1_penalty
from .base import Batch, Env, OptSpec, Phase, Recipe

__all__ = ["StyleGAN2Options", "StyleGAN2Recipe"]

AUG_MODES = ("ada", "fixed", "noaug")
_log = logging.getLogger("gankern.train")


@dataclass
class StyleGAN2Options:
    """S2A's train.py knobs (``--set recipe.NAME=VALUE``); -1: the value of the named ``cfg``."""
    cfg: str = "auto"            # auto | stylegan2 | paper256 | paper512 | paper1024 | cifar | tiny
    cond: bool = False           # condition G and D on the data set's labels (S2A's --cond)
    layer: str = "modconv"       # modconv (StyleGAN2) | adain (StyleGAN v1: AdaIN layers, the rest shared)
    gamma: float = -1.0          # R1 weight
    map: int = -1                # mapping network layers
    mbstd: int = -1              # D's minibatch stddev group size
    fmaps: float = -1.0          # width: channel_base = fmaps * 32768, at most 512 channels
    lrate: float = -1.0          # Adam learning rate of G and D
    pl_weight: float = -1.0      # path length weight (2; 0 in cifar)
    pl_decay: float = 0.01
    pl_batch_shrink: int = 2
    style_mixing: float = -1.0   # style mixing probability (0.9; 0 in cifar)
    r1_interval: int = 16        # lazy R1: every N D steps
    pl_interval: int = 4         # lazy path length: every N G steps
    aug: str = "ada"             # ada | fixed | noaug
    p: float = 0.0               # augmentation probability: the initial p (ada) or the constant p (fixed)
    target: float = 0.6          # ADA's r_t target
    augpipe: str = "bgc"         # S2A's named augmentation set (gankern.augment.AUGPIPE_SPECS)
    ada_kimg: float = 500.0      # p can move by 1 in this many kimg
    ada_interval: int = 4        # p is adjusted every N steps
    fp16_res: int = 4            # fp16 in the N highest resolutions (GPU only)
    conv_clamp: float = 256.0    # clamp of the fp16 layers' outputs (0: none)

    def validate(self) -> None:
        """Raise ValueError naming the first bad option."""
        _check(self)


def _check(o: StyleGAN2Options) -> None:
    if o.cfg not in sg2.CONFIGS:
        raise ValueError(f"recipe.cfg must be one of {tuple(sg2.CONFIGS)}, got {o.cfg!r}")
    if o.layer not in sg2.SYNTHESIS_LAYERS:
        raise ValueError(f"recipe.layer must be one of {tuple(sg2.SYNTHESIS_LAYERS)}, got {o.layer!r}")
    if o.aug not in AUG_MODES:
        raise ValueError(f"recipe.aug must be one of {AUG_MODES}, got {o.aug!r}")
    if o.augpipe not in AUGPIPE_SPECS:
        raise ValueError(f"recipe.augpipe must be one of {tuple(AUGPIPE_SPECS)}, got {o.augpipe!r}")
    for name in ("pl_batch_shrink", "r1_interval", "pl_interval", "ada_interval"):
        if getattr(o, name) < 1:
            raise ValueError(f"recipe.{name} must be >= 1, got {getattr(o, name)}")
    for name, lo, hi in (("p", 0, 1), ("target", 0, 1), ("pl_decay", 0, 1)):
        if not lo <= getattr(o, name) <= hi:
            raise ValueError(f"recipe.{name} must be in [{lo}, {hi}], got {getattr(o, name)}")
    if o.ada_kimg <= 0 or o.fp16_res < 0 or o.conv_clamp < 0:
        raise ValueError("recipe.ada_kimg must be > 0, recipe.fp16_res and recipe.conv_clamp >= 0")
    for name in ("gamma", "map", "mbstd", "fmaps", "lrate", "pl_weight", "style_mixing"):
        v = getattr(o, name)
        if v != -1 and v < 0:
            raise ValueError(f"recipe.{name} must be >= 0 (or -1: the cfg's), got {v}")
    if o.style_mixing > 1:
        raise ValueError(f"recipe.style_mixing is a probability, got {o.style_mixing}")


def resolve(o: StyleGAN2Options, resolution: int, gpus: int = 1) -> dict:
    """S2A's spec of ``o.cfg`` at ``resolution`` with the options' explicit values (not -1) on top."""
    _check(o)
    spec = sg2.config_spec(o.cfg, resolution, gpus)
    cifar = o.cfg == "cifar"
    spec.update(pl_weight=0.0 if cifar else 2.0, style_mixing=0.0 if cifar else 0.9)
    for name in ("gamma", "map", "mbstd", "fmaps", "lrate", "pl_weight", "style_mixing"):
        if getattr(o, name) != -1:
            spec[name] = getattr(o, name)
    return spec


class StyleGAN2Recipe(Recipe):
    """S2A's StyleGAN2Loss and phases; nets G (Generator) and D (Discriminator) of gankern.models.stylegan2."""

    Options = StyleGAN2Options
    ema = "G"

    def __init__(self, options: StyleGAN2Options, env: Env):
        super().__init__(options, env)
        o = options
        self.spec = spec = resolve(o, env.resolution, env.world)
        if o.cond and not env.num_classes:
            raise ValueError("recipe.cond=1 needs a labelled data set (--labels, --subfolder-labels, digits)")
        self.num_classes = env.num_classes if o.cond else 0
        G_kwargs, D_kwargs = sg2.network_kwargs(o.cfg, env.resolution, env.channels, self.num_classes, env.world)
        common = dict(channel_base=int(spec["fmaps"] * 32768), num_fp16_res=o.fp16_res,
                      conv_clamp=o.conv_clamp or None)
        G_kwargs["mapping_kwargs"] = dict(num_layers=int(spec["map"]))
        G_kwargs["synthesis_kwargs"].update(common, layer=o.layer)
        D_kwargs.update(common, epilogue_kwargs=dict(mbstd_group_size=int(spec["mbstd"])))
        self.nets = {"G": sg2.Generator(**G_kwargs), "D": sg2.Discriminator(**D_kwargs)}
        self.z_dim = self.nets["G"].z_dim
        self.gamma, self.pl_weight, self.style_mixing = spec["gamma"], spec["pl_weight"], spec["style_mixing"]
        lr = spec["lrate"]
        self.optimizers = {"G": OptSpec("adam", lr, (0.0, 0.99), 1e-8, reg_interval=o.pl_interval),
                           "D": OptSpec("adam", lr, (0.0, 0.99), 1e-8, reg_interval=o.r1_interval)}
        self.phases = [Phase("G", "G")] + ([Phase("Greg", "G", o.pl_interval)] if self.pl_weight else []) + \
            [Phase("D", "D")] + ([Phase("Dreg", "D", o.r1_interval)] if self.gamma else [])
        self.force_fp32 = env.device.type == "cpu"           # CPU: no half-precision blocks
        if env.rank == 0:   # batch and EMA: train.* (train_defaults: the cfg's, unless set)
            _log.info("stylegan2: cfg %s at %d px: gamma %g, lr %g, %d mapping layers, mbstd group %d", o.cfg,
                      env.resolution, spec["gamma"], spec["lrate"], spec["map"], spec["mbstd"])
        if self.force_fp32 and o.cfg != "tiny":
            n = sum(p.numel() for net in self.nets.values() for p in net.parameters())
            _log.warning("stylegan2: cfg '%s' at %d px (%.1fM parameters, %d-channel blocks) on the CPU is slow; "
                         "--set recipe.cfg=tiny is gankern's CPU preset", o.cfg, env.resolution, n / 1e6,
                         min(int(spec["fmaps"] * 32768) // env.resolution, 512))
        self.pl_mean = torch.zeros([], device=env.device)
        self.augment_pipe = self.ada = None
        if o.aug != "noaug":
            self.augment_pipe = augment_pipe(o.augpipe).to(env.device)
            self.augment_pipe.p.fill_(o.p)
            if o.aug == "ada":
                self.ada = AdaController(self.augment_pipe, o.target, o.ada_interval, o.ada_kimg)
        self._step_images = 0                                 # real images D saw in this step, all ranks

    @staticmethod
    def train_defaults(o: StyleGAN2Options, resolution: int, gpus: int = 1) -> dict:
        """The trainer's settings of S2A's cfg (config.apply_train_defaults): batch ``mb``, G_ema's half-life
        ``ema`` (kimg) and ramp-up ``ramp`` (None in the paper cfgs: off, 0)."""
        spec = resolve(o, resolution, gpus)
        return {"batch": int(spec["mb"]), "ema_kimg": float(spec["ema"]), "ema_rampup": float(spec["ramp"] or 0)}

    # -- networks --------------------------------------------------------------------------------------------

    def _onehot(self, c: torch.Tensor | None, n: int, device) -> torch.Tensor | None:
        """(b,) long labels -> S2A's (b, c_dim) one-hot conditioning; None when unconditional."""
        k = self.num_classes
        if not k:
            return None
        if c is None:
            raise ValueError("this StyleGAN2 is conditional: labels are needed")
        return F.one_hot(c.to(device=device, dtype=torch.long), k).to(torch.float32)

    def run_G(self, z, c, return_ws: bool = False, **kw):
        """Images (N, C, R, R), or (images, ws) with ``return_ws``: mapping (updating the tracked w_avg), style
        mixing with probability ``style_mixing`` (S2A: one cutoff in [1, num_ws) per batch, the ws after it from
        a fresh z), synthesis. Draws from torch's RNG (seeded by the caller)."""
        G = self.nets["G"]
        c1 = self._onehot(c, z.shape[0], z.device)
        ws = G.mapping(z, c1)
        if self.style_mixing > 0:
            L = ws.shape[1]
            cutoff = torch.randint(1, L, [], device=ws.device)
            cutoff = torch.where(torch.rand([], device=ws.device) < self.style_mixing, cutoff,
                                 torch.full_like(cutoff, L))
            ws2 = G.mapping(torch.randn_like(z), c1, skip_w_avg_update=True)
            ws = torch.where((torch.arange(L, device=ws.device) >= cutoff)[None, :, None], ws2, ws)
        img = G.synthesis(ws, force_fp32=self.force_fp32, **kw)
        return (img, ws) if return_ws else img

    def run_D(self, img, c, **kw) -> torch.Tensor:
        """Logits (N, 1) of D on the augmented images."""
        if self.augment_pipe is not None:
            img = self.augment_pipe(img)
        return self.nets["D"](img, self._onehot(c, img.shape[0], img.device), force_fp32=self.force_fp32, **kw)

    def generate(self, G, z, c, truncation_psi: float = 1, noise_mode: str = "const", **kw) -> torch.Tensor:
        """Images of G (N, C, R, R) for snapshots, metrics and ``gankern generate``: labels (N,) long."""
        return G(z, self._onehot(c, z.shape[0], z.device), truncation_psi=truncation_psi, noise_mode=noise_mode,
                 force_fp32=z.device.type == "cpu", **kw)

    # -- losses ----------------------------------------------------------------------------------------------

    def accumulate_gradients(self, phase: str, batch: Batch, gain: float) -> dict[str, torch.Tensor]:
        """One round of S2A's loss for ``phase`` (G, Greg, D, Dreg), torch's RNG seeded from ``batch.seed`` (and
        restored after): style mixing, noise inputs, augmentations and path-length noise replay on resume."""
        if phase not in {p.name for p in self.phases}:
            raise ValueError(f"the stylegan2 recipe has phases {[p.name for p in self.phases]}, not {phase!r}")
        dev = batch.z.device
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            torch.default_generator.manual_seed(batch.seed)
            if dev.type == "cuda":
                torch.cuda.manual_seed(batch.seed)
            return getattr(self, "_phase_" + phase)(batch, gain)

    def _phase_G(self, b: Batch, gain: float) -> dict:
        img = self.run_G(b.z, b.c_gen)
        logits = self.run_D(img, b.c_gen)
        loss = F.softplus(-logits)
        self.env.backward(loss.mean() * gain)
        return {"G/loss": loss.detach().mean(), "D/fake_G": logits.detach().mean()}

    def _phase_Greg(self, b: Batch, gain: float) -> dict:
        n = max(b.z.shape[0] // self.options.pl_batch_shrink, 1)
        img, ws = self.run_G(b.z[:n], None if b.c_gen is None else b.c_gen[:n], return_ws=True)
        old = self.pl_mean.clone()
        _, lengths = path_length_penalty(img, ws, self.pl_mean, self.options.pl_decay)
        pl_mean = old.lerp(lengths.mean(), self.options.pl_decay)   # S2A differentiates through the update
        penalty = (lengths - pl_mean).square()
        loss = penalty * self.pl_weight
        self.env.backward((img[:, 0, 0, 0] * 0 + loss).mean() * gain)
        return {"G/pl_penalty": penalty.detach().mean(), "G/reg": loss.detach().mean()}

    def _real_logits(self, b: Batch, r1: bool) -> tuple[torch.Tensor, torch.Tensor]:
        real = b.real.detach().requires_grad_(r1)
        logits = self.run_D(real, b.c)
        if self.ada is not None:
            self.ada.accumulate(logits)
        return real, logits

    def _phase_D(self, b: Batch, gain: float) -> dict:
        with torch.no_grad():
            img = self.run_G(b.z, b.c_gen)
        fake = self.run_D(img, b.c_gen)
        loss_fake = F.softplus(fake)
        self.env.backward(loss_fake.mean() * gain)
        _, real = self._real_logits(b, False)
        loss_real = F.softplus(-real)
        self.env.backward(loss_real.mean() * gain)
        self._step_images += b.real.shape[0] * self.env.world
        return {"D/loss": (loss_fake.detach().mean() + loss_real.detach().mean()), "D/real": real.detach().mean(),
                "D/fake": fake.detach().mean(), "D/sign_real": real.detach().sign().mean()}

    def _phase_Dreg(self, b: Batch, gain: float) -> dict:
        x, logits = self._real_logits(b, True)
        penalty = r1_penalty(logits, x)
        loss = penalty * (self.gamma / 2)
        self.env.backward((logits * 0 + loss).mean() * gain)
        return {"D/r1_penalty": penalty.detach(), "D/reg": loss.detach()}

    def after_step(self, phase: str, step: int) -> None:
        """After the last phase of a step: count the step's images toward ADA's adjustment of p."""
        last = [p.name for p in self.phases if step % p.interval == 0][-1]
        if phase == last and self.ada is not None:
            self.ada.step(self._step_images)
        if phase == last:
            self._step_images = 0

    def log_stats(self) -> dict[str, torch.Tensor]:
        out = {"G/pl_mean": self.pl_mean.detach().clone()}
        if self.augment_pipe is not None:
            out["ada/p"] = self.augment_pipe.p.detach().clone()
        if self.ada is not None:
            out["ada/rt"] = self.ada.rt.detach().clone()
        return out

    def state_dict(self) -> dict:
        d = {"pl_mean": self.pl_mean.detach().clone(), "step_images": self._step_images}
        if self.ada is not None:
            d["ada"] = self.ada.state_dict()
        return d

    def load_state_dict(self, d: dict) -> None:
        self.pl_mean.copy_(d["pl_mean"])
        self._step_images = int(d.get("step_images", 0))
        if self.ada is not None and "ada" in d:
            self.ada.load_state_dict(d["ada"])


# ----------------------------------------------------------------------------------------------------------------
# CLI: ``gankern project`` (and the StyleGAN options of ``gankern generate``)


PROJECT_DESCRIPTION = """\
Project an image into the W space of a StyleGAN2 / StyleGAN generator, as StyleGAN2-ADA's projector.py does: Adam on
w and on the per-layer noise maps (S2A's noise regularization and normalization). Writes the projected image, the
target, the ws (projected_w.npz, S2A's format: 'w' of shape [1, num_ws, w_dim]) and the noise maps
(projected_noise.npz, one array per noise_const buffer of the synthesis network).

The distance is S2A's perceptual distance, LPIPS of VGG16, when --vgg16 gives torchvision's VGG16 weights (a state
dict file or .safetensors, e.g. torch hub's vgg16-397923af.pth) and --lpips the lpips package's weights/v0.1/vgg.pth
(LPIPS' learned per-channel weights; without it, LPIPS' form with unit weights). S2A's own vgg16.pt is TorchScript,
which runs code when loaded: refused. Without --vgg16 (nothing downloads) it is a multi-scale pixel distance (mean
squared error of the images and of their average-pooled 2x, 4x, ... versions down to 8 px), plus the distance of the
discriminator's block features when the network file has a D (--d-weight; 0 turns it off)."""


def load_networks(path: str, device: str = "cpu") -> dict:
    """{"G", "D", "G_ema"} on ``device`` in eval mode (None where absent) of an S2A network pickle / state dict
    (gankern.models.stylegan2.load_stylegan2_ada), or of a stylegan2 run directory / checkpoint (newest ckpt)."""
    import os

    from .. import checkpoint
    from ..config import RunConfig
    from . import RECIPES
    from .base import Env
    if os.path.isdir(path) or os.path.basename(path).startswith("ckpt-"):
        ckpt = checkpoint.latest(path) if os.path.isdir(path) else path
        if ckpt is None:
            raise FileNotFoundError(f"{path}: no checkpoint (ckpt-*.pt)")
        s = checkpoint.load(ckpt, device)
        cfg = RunConfig.from_json(s["config"])
        if cfg.recipe != "stylegan2":
            raise ValueError(f"{path} is a '{cfg.config}' run, not a StyleGAN2 / StyleGAN one")
        env = Env(torch.device(device), 0, 1, int(s["num_classes"]), int(s["channels"]), cfg.train.resolution, 1,
                  cfg.train.seed)
        recipe = RECIPES[cfg.recipe](cfg.options, env)
        G_ema = copy.deepcopy(recipe.nets["G"])
        nets = {"G": recipe.nets["G"], "D": recipe.nets["D"], "G_ema": G_ema}
        for k, net in nets.items():
            net.load_state_dict(s[k])
    else:
        nets = sg2.load_stylegan2_ada(path)
    return {k: None if nets[k] is None else nets[k].to(device).eval() for k in ("G", "D", "G_ema")}


def _load_target(path: str, G) -> torch.Tensor:
    """The image at ``path`` center-cropped to a square and resized (Lanczos) to G's resolution, in [-1, 1]."""
    import numpy as np
    from PIL import Image
    img = Image.open(path).convert("RGB" if G.img_channels == 3 else "L")
    w, h = img.size
    s = min(w, h)
    img = img.crop(((w - s) // 2, (h - s) // 2, (w + s) // 2, (h + s) // 2))
    img = img.resize((G.img_resolution, G.img_resolution), Image.LANCZOS)
    x = torch.from_numpy(np.asarray(img, dtype=np.float32)).reshape(G.img_resolution, G.img_resolution, -1)
    return x.permute(2, 0, 1) / 127.5 - 1


def project_main(args) -> int:
    import os
    import sys
    import time

    import numpy as np

    from PIL import Image

    from ...models.stylegan2_tools import load_vgg16, project
    from ..outputs import image_grid
    try:
        nets = load_networks(args.network or args.run, args.device)
        G = nets["G_ema"] or nets["G"]
        if G is None:
            raise ValueError(f"{args.network or args.run} has no generator")
        target = _load_target(args.target, G)
        if args.num_steps < 1:
            raise ValueError(f"--num-steps must be >= 1, got {args.num_steps}")
        if args.lpips and not args.vgg16:
            raise ValueError("--lpips FILE (LPIPS' weights on VGG16 features) goes with --vgg16 FILE (torchvision's "
                             "VGG16 weights, LPIPS' trunk)")
        vgg16 = load_vgg16(args.vgg16, args.device, lpips=args.lpips) if args.vgg16 else None
    except (ValueError, FileNotFoundError, OSError) as e:
        print(f"gankern project: error: {e}", file=sys.stderr)
        return 2
    D = nets["D"] if args.d_weight > 0 else None
    os.makedirs(args.outdir, exist_ok=True)
    t0 = time.time()

    def progress(step, dist):
        if step % 100 == 0 or step == args.num_steps - 1:
            print(f"step {step + 1:>5d}/{args.num_steps}: dist {dist:.4f}", file=sys.stderr)
    ws, noise = project(G, target, args.num_steps, D=D, d_weight=args.d_weight, vgg16=vgg16,
                        optimize_noise=not args.fixed_noise, seed=args.seed, progress=progress)
    with torch.no_grad():
        for name, buf in G.synthesis.named_buffers():
            if name in noise:
                buf.copy_(noise[name])
        img = G.synthesis(ws[-1:], noise_mode="const", force_fp32=ws.device.type == "cpu")
    for name, x in (("proj.png", img), ("target.png", target[None])):   # at G's resolution, as S2A writes them
        Image.fromarray(image_grid(x, pad=0, scale=1)).save(os.path.join(args.outdir, name))
    np.savez(os.path.join(args.outdir, "projected_w.npz"), w=ws[-1:].cpu().numpy())
    if noise:
        np.savez(os.path.join(args.outdir, "projected_noise.npz"), **{k: v.cpu().numpy() for k, v in noise.items()})
    print(f"projected in {time.time() - t0:.1f} s: {args.outdir}/proj.png, target.png, projected_w.npz" +
          (", projected_noise.npz" if noise else ""))
    return 0


def _generator(args):
    """The generator (G_ema unless --no-ema) of ``--network FILE`` or of ``--run DIR`` (a stylegan2 run)."""
    nets = load_networks(args.network or args.run, args.device)
    G = nets["G"] if args.no_ema else (nets["G_ema"] or nets["G"])
    if G is None:
        raise ValueError(f"{args.network or args.run} has no generator")
    return G


def _interpolation(G, args, psi: float, noise_mode: str, cls: int | None) -> int:
    """--interp: a grid with one row of --frames images per pair of consecutive seeds, or, when --out is a folder
    (or has no suffix), the frames of the whole path seed 0 -> 1 -> ... as frame00000.png, ... (each seed once)."""
    import os

    from PIL import Image

    from ...models import stylegan2_tools as tools
    from ..outputs import image_grid, save_grid
    frames = 8 if args.frames is None else args.frames
    seeds = tools.parse_range(args.seeds) if args.seeds else list(range(args.seed, args.seed + (args.n or 4)))
    images = tools.interpolation_frames(G, seeds, frames, args.interp or "z", psi, noise_mode, cls)
    what = f"{len(seeds) - 1} x {frames} frames ({args.interp or 'z'} interpolation, seeds {seeds})"
    if os.path.isdir(args.out) or not os.path.splitext(args.out)[1]:
        os.makedirs(args.out, exist_ok=True)
        path = torch.cat([images[:, :-1].flatten(0, 1), images[-1, -1:]])      # (pairs * (frames - 1) + 1, C, R, R)
        for i, x in enumerate(path):
            Image.fromarray(image_grid(x[None], pad=0, scale=1)).save(os.path.join(args.out, f"frame{i:05d}.png"))
        print(f"wrote {len(path)} frames of {what} to {args.out}/frame*.png")
    else:
        save_grid(images.flatten(0, 1), args.out, frames)
        print(f"wrote {what} to {args.out}")
    return 0


def generate_main(args) -> int | None:
    """``gankern generate`` for --network files and stylegan2 runs (None for other runs), with S2A's options
    (generate.py / style_mixing.py): images of --seeds (else --n seeds from --seed) with --trunc (psi), --noise-mode,
    --class into one grid; with --mix-rows/--mix-cols, S2A's style-mixing figure; with --interp/--frames,
    interpolation frames between consecutive seeds (a grid, or PNG frames in a folder)."""
    import sys

    from ...models import stylegan2_tools as tools
    from ..cli import foreign_options, run_recipe
    from ..outputs import save_grid
    if args.network is None and run_recipe(args.run) != "stylegan2":
        return foreign_options(args, _STYLEGAN_FLAGS, "StyleGAN", "a stylegan2 run")
    try:
        G = _generator(args)
        psi = 1.0 if args.trunc is None else args.trunc
        noise_mode = args.noise_mode or "const"
        if args.cls is not None and len(args.cls) > 1:
            raise ValueError(f"--class: one class for StyleGAN networks (S2A's --class), got {len(args.cls)}")
        cls = args.cls[0] if args.cls else None
        if args.interp in ("class", "both"):
            raise ValueError(f"--interp {args.interp}: BigGAN's; StyleGAN interpolates z, z-lerp or w (frames "
                             f"between consecutive --seeds: a grid, one row per seed pair, or a folder of PNGs)")
        if args.interp or args.frames:
            return _interpolation(G, args, psi, noise_mode, cls)
        if args.mix_rows or args.mix_cols:
            if not (args.mix_rows and args.mix_cols):
                raise ValueError("--mix-rows and --mix-cols go together")
            rows, cols = tools.parse_range(args.mix_rows), tools.parse_range(args.mix_cols)
            styles = tools.parse_range(args.styles) if args.styles else list(range(min(7, G.num_ws)))
            images = tools.style_mixing_grid(G, rows, cols, styles, psi, noise_mode, cls)
            nrow, what = len(cols) + 1, f"a {len(rows)} x {len(cols)} style-mixing grid (styles {styles})"
        else:
            seeds = tools.parse_range(args.seeds) if args.seeds else \
                list(range(args.seed, args.seed + (args.n or 16)))
            images = tools.generate_images(G, seeds, psi, noise_mode, cls)
            nrow, what = None, f"{len(seeds)} images (seeds {args.seeds or f'{seeds[0]}-{seeds[-1]}'})"
    except (ValueError, FileNotFoundError, OSError) as e:
        print(f"gankern generate: error: {e}", file=sys.stderr)
        return 2
    save_grid(images, args.out, nrow)
    print(f"wrote {what} to {args.out}")
    return 0


_STYLEGAN_FLAGS = ("network", "seeds", "noise_mode", "mix_rows", "mix_cols", "styles")


def add_generate_options(gen) -> None:
    """S2A's options on the ``generate`` subcommand (gankern.train.cli's parser); --trunc is psi here."""
    g = gen.add_argument_group("StyleGAN2 / StyleGAN options (S2A's generate.py and style_mixing.py)")
    g.add_argument("--network", metavar="FILE", help="S2A network pickle (.pkl) or state dict (.pt) instead of --run")
    g.add_argument("--seeds", metavar="LIST", help="latent seeds as S2A's, e.g. 0-15,42 (default: --n seeds from "
                                                   "--seed)")
    g.add_argument("--noise-mode", choices=("const", "random", "none"), help="noise inputs (default: const)")
    g.add_argument("--mix-rows", metavar="LIST", help="style mixing: row seeds (with --mix-cols)")
    g.add_argument("--mix-cols", metavar="LIST", help="style mixing: column seeds, whose --styles replace the rows'")
    g.add_argument("--styles", metavar="LIST", help="style mixing: layers taken from the columns (default: 0-6)")


def add_parsers(sub) -> None:
    import argparse
    p = sub.add_parser("project", help="project an image into a StyleGAN2's W space (S2A's projector)",
                       description=PROJECT_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--network", metavar="FILE", help="S2A network pickle (.pkl) or state dict (.pt)")
    src.add_argument("--run", metavar="DIR", help="a stylegan2 run directory (its newest checkpoint's G_ema and D)")
    p.add_argument("--target", required=True, metavar="IMG", help="image to project (cropped and resized to G's)")
    p.add_argument("--outdir", default="out", metavar="DIR", help="where to write (default: %(default)s)")
    p.add_argument("--num-steps", type=int, default=1000, metavar="N", help="optimizer steps (default: %(default)s)")
    p.add_argument("--d-weight", type=float, default=1.0, metavar="W",
                   help="weight of D's feature distance (0: pixels only; default: %(default)s)")
    p.add_argument("--vgg16", metavar="FILE", help="torchvision's VGG16 weights (state dict .pt/.pth or "
                   ".safetensors): S2A's perceptual distance instead of the pixel and D distances")
    p.add_argument("--lpips", metavar="FILE", help="LPIPS' learned weights (the lpips package's weights/v0.1/vgg.pth)"
                   " for --vgg16's features: LPIPS, as S2A's vgg16.pt (default: unit weights)")
    p.add_argument("--fixed-noise", action="store_true", help="keep the network's constant noise maps (S2A "
                   "optimizes them)")
    p.add_argument("--seed", type=int, default=303, help="seed of the noise on w and of the initial noise maps "
                   "(default: %(default)s)")
    p.add_argument("--device", default="cpu", metavar="DEV", help="(default: %(default)s)")
    p.set_defaults(func=project_main)

