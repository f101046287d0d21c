"""BigGAN / BigGAN-deep training, as BigGAN-PyTorch's (BG) train.py and train_fns.py do it.

Per training step: ``num_D_steps`` D steps (phase ``D``, Phase.repeats; each on a fresh real batch), then one G
step; each optimizer step sums accumulation rounds (BG's ``num_D_accumulations`` / ``num_G_accumulations``, each the
trainer's ``accum`` unless set; the rounds split the step's batch, so every optimizer step sees the whole batch).
Hinge loss; D sees fakes and reals in one call (BG's G_D). TTUR Adam with betas (0, 0.999) and eps 1e-6 (BG's 128 px
script). BigGAN's orthogonal regularization of G (``G_ortho``, the off-diagonal form on every weight of 2+ dims
except the shared class embedding, as BG's ``utils.ortho`` with its blacklist; ``D_ortho`` for D): its gradient
joins each optimizer step once (first accumulation round). Spectral norm: the trainer's one SpectralNormGroup per
net per optimizer step, G's included in D's steps (G runs in grad mode there, its weights without grad, so its
batched W / sigma serves every round: one power iteration of G per D step, as BG's G in train mode with one
accumulation, and accumulation rounds that change nothing but the batch statistics).

EMA with ``ema_start`` (BG's utils.ema): G_ema is a copy of G before ``ema_start`` G steps, then
``G_ema = ema_decay * G_ema + (1 - ema_decay) * G`` per G step. The trainer's EMA (a half-life in kimg from step 0)
cannot start late, so the recipe keeps BG's average itself in a net ``G_ema_bg`` (in the checkpoint like every net),
updated after each G step, and names it as the net the trainer averages (``ema = "G_ema_bg"``); the CONFIGS rows set
``train.ema_kimg=0``, so the trainer's G_ema is a copy of it at every step (a nonzero ema_kimg smooths it once more).
Parameters are averaged, buffers copied (BatchNorm statistics, spectral-norm u and v: as the trainer's EMA; BG
averages its buffers too, but its sampling recomputes the statistics and the singular vectors anyway).

Sampling (:meth:`BigGANRecipe.generate`): G in eval mode (BG's G_eval_mode) after standing statistics (BG's
accumulate_stats, 16 batches), latents truncated by resampling (BigGAN's trick, done by the caller: the trainer's
``generate``, :func:`sample_sheet`); :func:`sample_sheet` is BG's sample sheet (one row per class,
``samples_per_class`` columns), :func:`interp_sheet` its interpolation sheets (in z, in the class embedding).
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...models import biggan as B
from .base import Batch, Env, OptSpec, Phase, Recipe


@dataclass
class Options:
    """BigGAN's hyperparameters under BigGAN-PyTorch's flag names; 0 / -1 / "" take the preset's value."""
    preset: str = "auto"        # 32 | 64 | 128 | tiny; auto: the run's resolution on a GPU, tiny on the CPU
    deep: bool = False          # BigGAN-deep [model=BigGANdeep]
    G_ch: int = 0               # G width multiplier (0: the preset's)
    D_ch: int = 0               # D width multiplier (0: the preset's)
    dim_z: int = 0              # z size (0: the preset's; hier rounds it down to a multiple of the chunks)
    shared_dim: int = -1        # shared class embedding size (-1: the preset's; 0: dim_z, as BG)
    G_shared: int = -1          # 1: one shared class embedding, 0: an embedding per CBN (-1: the preset's)
    hier: int = -1              # 1: skip-z, 0: z once (-1: the preset's)
    G_attn: str = ""            # BG's syntax: "64", "32_64", "0" (none); "": the preset's
    D_attn: str = ""
    G_lr: float = 1e-4
    D_lr: float = 4e-4
    G_B1: float = 0.0
    G_B2: float = 0.999
    D_B1: float = 0.0
    D_B2: float = 0.999
    adam_eps: float = 1e-6      # both optimizers (BG's 128 px script; BG's default 1e-8)
    num_D_steps: int = 2        # D steps per G step (the BigGAN paper; BG's scripts use 1)
    num_D_accumulations: int = 0    # rounds per D step, the batch split into them (0: train.accum, --accum)
    num_G_accumulations: int = 0    # rounds per G step (0: train.accum)
    G_ortho: float = 1e-4       # orthogonal regularization of G (0: off)
    D_ortho: float = 0.0
    ema_decay: float = 0.9999   # [ema_decay]
    ema_start: int = 20000      # G_ema is a copy of G before this many G steps (BG's 128 px script)
    accumulate_stats: bool = True   # standing statistics before sampling
    num_standing_accumulations: int = 16
    standing_batch: int = 64    # batch of each standing-statistics pass (BG: its G batch)
    sheet_samples: int = 10     # class sheet at each snapshot (classes-*.png): images per class, first 10 classes;
                                # 0: none (BG's sample sheets: 10 per class)

    def validate(self) -> None:
        for name in ("num_D_steps", "num_standing_accumulations", "standing_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"recipe.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("ema_start", "G_ortho", "D_ortho", "sheet_samples", "num_D_accumulations",
                     "num_G_accumulations"):
            if getattr(self, name) < 0:
                raise ValueError(f"recipe.{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"recipe.ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.preset not in ("auto", *B.PRESETS):
            raise ValueError(f"recipe.preset must be auto or one of {', '.join(B.PRESETS)}, not {self.preset!r}")


def auto_preset(resolution: int, device: str) -> str:
    """What ``preset=auto`` means: tiny on the CPU, else the preset of the resolution (128's at 256 px)."""
    return "tiny" if device == "cpu" else str(resolution) if str(resolution) in B.PRESETS else "128"


def model_config(o: Options, resolution: int, channels: int, num_classes: int) -> B.BigGANConfig:
    """The BigGANConfig of ``o`` (preset resolved) for the run's data (``num_classes`` 0: one class)."""
    name = o.preset
    changes = dict(resolution=resolution, channels=channels, n_classes=max(num_classes, 1))
    for opt, field in (("G_ch", "g_ch"), ("D_ch", "d_ch"), ("dim_z", "z_dim")):
        if getattr(o, opt):
            changes[field] = getattr(o, opt)
    if o.shared_dim >= 0:
        changes["shared_dim"] = o.shared_dim
    for opt, field in (("G_shared", "shared"), ("hier", "hier")):
        v = getattr(o, opt)
        if v not in (-1, 0, 1):
            raise ValueError(f"recipe.{opt} must be 1, 0 or -1 (the preset's), not {v}")
        if v >= 0:
            changes[field] = bool(v)
    for opt, field in (("G_attn", "g_attn"), ("D_attn", "d_attn")):
        s = getattr(o, opt)
        if s:
            try:
                changes[field] = tuple(int(t) for t in s.split("_") if int(t) > 0)
            except ValueError:
                raise ValueError(f"recipe.{opt} is BG's list of resolutions joined by '_' (e.g. 64, 32_64, 0), "
                                 f"not {s!r}") from None
    if resolution not in B._G_WIDTHS:
        raise ValueError(f"BigGAN trains at {', '.join(map(str, sorted(B._G_WIDTHS)))} px, not {resolution}")
    cfg = B.preset(name, deep=o.deep)
    for field in ("g_attn", "d_attn"):        # the preset's attention, moved to the same place at this resolution
        changes.setdefault(field, tuple(a * resolution // cfg.resolution for a in getattr(cfg, field)))
    return dataclasses.replace(cfg, **changes).check()


def _unwrap(net: nn.Module) -> nn.Module:
    return getattr(net, "module", net)


class BigGANRecipe(Recipe):
    """BigGAN-PyTorch's training of BigGAN / BigGAN-deep; see the module docstring."""
    Options = Options
    ema = "G_ema_bg"

    def __init__(self, options: Options, env: Env):
        super().__init__(options, env)
        o = self.o = options
        o.validate()
        self.num_classes = env.num_classes      # 0 (unlabelled data): G and D see class 0 throughout
        if o.preset == "auto":           # resolved once: config.json and the checkpoints record the preset
            o.preset = auto_preset(env.resolution, torch.device(env.device).type)
        self.cfg = model_config(o, env.resolution, env.channels, env.num_classes)
        G, D = B.build(self.cfg)
        if env.world > 1:
            B.cross_replica(G)                  # BG's cross_replica: BN statistics of the batch of all ranks
        self.nets = {"G": G, "D": D, "G_ema_bg": copy.deepcopy(G).eval().requires_grad_(False)}
        self.z_dim = G.z_dim
        self.optimizers = {"G": OptSpec("adam", o.G_lr, (o.G_B1, o.G_B2), o.adam_eps),
                           "D": OptSpec("adam", o.D_lr, (o.D_B1, o.D_B2), o.adam_eps)}
        self.phases = [Phase("D", "D", repeats=o.num_D_steps, accum=o.num_D_accumulations),
                       Phase("G", "G", accum=o.num_G_accumulations)]
        self.g_steps = 0                        # optimizer steps of G so far (BG's itr, for ema_start)
        self._ortho_due = {"D": True, "G": True}   # the next round is the first of an optimizer step
        self._stood = None                      # (id(G), g_steps, threshold) of the last standing statistics

    # ----------------------------------------------------------------------------------------------- nets
    def _classes(self, c: torch.Tensor | None, n: int) -> torch.Tensor:
        if c is not None:
            return c
        if self.num_classes:
            raise ValueError("BigGAN here is class-conditional: pass classes")
        return torch.zeros(n, dtype=torch.long, device=self.env.device)

    def run_G(self, z: torch.Tensor, c: torch.Tensor | None, **kw) -> torch.Tensor:
        return self.nets["G"](z, self._classes(c, z.shape[0]))

    def run_D(self, img: torch.Tensor, c: torch.Tensor | None, **kw) -> torch.Tensor:
        return self.nets["D"](img, self._classes(c, img.shape[0]))

    def _ortho(self, phase: str, strength: float) -> torch.Tensor | None:
        """The orthogonal regularization of the phase's net in the first round of each optimizer step (its
        gradient joins the step once, as BG's utils.ortho adds it to the gradients before the step), else None."""
        if not strength or not self._ortho_due[phase]:
            return None
        self._ortho_due[phase] = False
        return B.orthogonal_regularization(B.ortho_weights(_unwrap(self.nets[phase])), strength)

    # --------------------------------------------------------------------------------------------- losses
    def accumulate_gradients(self, phase: str, batch: Batch, gain: float) -> dict[str, torch.Tensor]:
        n = batch.z.shape[0]
        c_gen = self._classes(batch.c_gen, n)
        if phase == "D":
            with self.env.autocast():
                fake = self.run_G(batch.z, c_gen).detach()   # G's weights need no grad here: no graph is built
                real_c = self._classes(batch.c, batch.real.shape[0])
                logits = self.run_D(torch.cat([fake.to(batch.real.dtype), batch.real]), torch.cat([c_gen, real_c]))
                d_fake, d_real = logits.float().split([n, batch.real.shape[0]])
                loss_real, loss_fake = F.relu(1 - d_real).mean(), F.relu(1 + d_fake).mean()
                loss = loss_real + loss_fake
            stats = {"D/loss_real": loss_real.detach(), "D/loss_fake": loss_fake.detach(),
                     "D/real": d_real.detach().mean(), "D/fake": d_fake.detach().mean()}
            ortho = self._ortho("D", self.o.D_ortho)
        elif phase == "G":
            with self.env.autocast():
                loss = -self.run_D(self.run_G(batch.z, c_gen), c_gen).float().mean()
            stats = {"G/loss": loss.detach()}
            ortho = self._ortho("G", self.o.G_ortho)
        else:
            raise ValueError(f"BigGAN has phases D and G, not {phase!r}")
        if ortho is not None:   # the trainer averages stats over the rounds (gain = 1 / rounds): one round has it
            stats[f"{phase}/ortho"] = ortho.detach() / gain
        self.env.backward(loss * gain if ortho is None else loss * gain + ortho)
        return stats

    # ------------------------------------------------------------------------------------------------ EMA
    def after_step(self, phase: str, step: int) -> None:
        self._ortho_due[phase] = True
        if phase == "G":
            self.g_steps += 1
            self._update_ema()

    @torch.no_grad()
    def _update_ema(self) -> None:
        """BG's ema.update(itr): decay 0 (a copy) before ema_start, then ema_decay; buffers copied."""
        G, E = _unwrap(self.nets["G"]), self.nets["G_ema_bg"]
        decay = 0.0 if self.g_steps < self.o.ema_start else self.o.ema_decay
        torch._foreach_lerp_(list(E.parameters()), [p.detach() for p in G.parameters()], 1 - decay)
        for be, b in zip(E.buffers(), G.buffers()):
            be.copy_(b)

    def state_dict(self) -> dict:
        return {"g_steps": self.g_steps, "model": repr(self.cfg)}

    def load_state_dict(self, d: dict) -> None:
        if d["model"] != repr(self.cfg):
            raise ValueError(f"the checkpoint's BigGAN is {d['model']}, this run builds {self.cfg}: resume with "
                             f"the run's own recipe options")
        self.g_steps = int(d["g_steps"])

    # ------------------------------------------------------------------------------------------- sampling
    @torch.no_grad()
    def generate(self, G: nn.Module, z: torch.Tensor, c: torch.Tensor | None, truncation: float | None = None,
                 embedding: torch.Tensor | None = None, **kw) -> torch.Tensor:
        """Images of G (eval mode) for z (N, z_dim) (already truncated, if at all) and classes c (N,) or class
        embeddings (N, shared_dim); before the first call with this G at a G step, BG's standing statistics
        (``accumulate_stats``), with z truncated at ``truncation``."""
        G = _unwrap(G)
        if self.o.accumulate_stats and self._stood != (id(G), self.g_steps, truncation):
            standing = torch.Generator(z.device).manual_seed(self.env.seed)
            B.standing_stats(G, self.o.num_standing_accumulations, self.o.standing_batch, truncation, standing,
                             sync=False)
            self._stood = (id(G), self.g_steps, truncation)
        G.eval()
        if embedding is not None:
            return G(z, embedding=embedding)
        return G(z, self._classes(c, z.shape[0]))

    def snapshot_sheets(self, G: nn.Module, seed: int) -> dict[str, tuple[torch.Tensor, int]]:
        """BG's class sheet at each snapshot (the trainer's snapshot writes classes<step>.png, classes-latest.png):
        ``sheet_samples`` images of each of the first 10 classes, one row per class; none when unconditional."""
        n = self.o.sheet_samples
        if not (self.num_classes and n):
            return {}
        return {"classes": (sample_sheet(self, G, list(range(min(10, self.num_classes))), n, seed), n)}


def _plain(G: nn.Module, z: torch.Tensor, c: torch.Tensor | None, truncation: float | None = None,
           embedding: torch.Tensor | None = None) -> torch.Tensor:
    """G as it is, in eval mode (a BigGAN-PyTorch G.pth: its own running statistics, no standing statistics)."""
    return _unwrap(G).eval()(z, c, embedding=embedding)


@torch.no_grad()
def sample_sheet(recipe: BigGANRecipe | None, G: nn.Module, classes: list[int], samples_per_class: int, seed: int,
                 truncation: float | None = None) -> torch.Tensor:
    """BG's sample sheet: ``samples_per_class`` images of each class, class-major (save with nrow=samples_per_class:
    one row per class); latents fixed by ``seed``, column j one z for every class (BG draws each image's z apart;
    a shared z shows what the class alone changes). Through ``recipe.generate`` (standing statistics), or G as it
    is when ``recipe`` is None. Returns (len(classes) * samples_per_class, C, R, R)."""
    device = next(G.parameters()).device
    z = B.truncated_z(samples_per_class, _unwrap(G).z_dim, truncation,
                      generator=torch.Generator().manual_seed(seed)).to(device)
    y = torch.tensor(classes, device=device).repeat_interleave(samples_per_class)
    return (recipe.generate if recipe else _plain)(G, z.repeat(len(classes), 1), y, truncation)


@torch.no_grad()
def interp_sheet(recipe: BigGANRecipe | None, G: nn.Module, rows: int, midpoints: int, seed: int,
                 fix_z: bool = False, fix_y: bool = False, truncation: float | None = None) -> torch.Tensor:
    """BG's interpolation sheet: ``rows`` rows of ``midpoints + 2`` images, each row going linearly from one (z,
    shared class embedding) to another; ``fix_z``: one z per row (only the class moves), ``fix_y``: one class per
    row (only z moves). ``recipe`` as in :func:`sample_sheet`. Save with nrow=midpoints + 2.
    Returns (rows * (midpoints + 2), C, R, R)."""
    net = _unwrap(G)
    if net.shared is None:
        raise ValueError("interpolation in the class embedding needs the shared embedding (G_shared)")
    device, n = next(net.parameters()).device, midpoints + 2
    g = torch.Generator().manual_seed(seed)
    z0, z1 = (B.truncated_z(rows, net.z_dim, truncation, generator=g) for _ in range(2))
    y0, y1 = (torch.randint(0, net.n_classes, (rows,), generator=g) for _ in range(2))
    z1, y1 = z0 if fix_z else z1, y0 if fix_y else y1
    t = torch.linspace(0, 1, n, device=device)[None, :, None]                        # [1, n, 1]
    z = torch.lerp(z0.to(device)[:, None], z1.to(device)[:, None], t).flatten(0, 1)    # [rows * n, z_dim]
    e0, e1 = net.shared(y0.to(device)), net.shared(y1.to(device))
    e = torch.lerp(e0[:, None], e1[:, None], t).flatten(0, 1)                         # [rows * n, shared_dim]
    return (recipe.generate if recipe else _plain)(G, z, None, truncation, embedding=e)


# ---------------------------------------------------------------------------------------------------------------
# `gankern generate` for biggan runs and BigGAN-PyTorch's G.pth (gankern.train.cli.GENERATE_FAMILIES)

_BIGGAN_FLAGS = ("biggan_config", "rows")
_INTERP = {"z": dict(fix_y=True), "class": dict(fix_z=True), "both": {}}   # what moves along a row


def add_generate_options(gen) -> None:
    """BG's sample.py options on the ``generate`` subcommand; --trunc is the threshold here."""
    from ...cli import int_at_least
    g = gen.add_argument_group("BigGAN options (BigGAN-PyTorch's sample.py; --run DIR of a biggan run, or BG's "
                               "G.pth / G_ema.pth)")
    g.add_argument("--biggan-config", metavar="PRESET", help="the BigGAN preset of a BigGAN-PyTorch G.pth (32, 64, "
                   "128, tiny) when no state_dict.pth is beside it")
    g.add_argument("--rows", type=int_at_least(1), metavar="R", help="interpolation rows (default: 8)")


def _load(args):
    """(G, recipe or None) of ``--run``: a biggan run (G_ema unless --no-ema) or BG's G.pth (recipe None)."""
    from ..cli import load_generator
    if args.run.endswith(".pth"):                        # BigGAN-PyTorch's G.pth / G_ema.pth (gankern's: .pt)
        return B.load_biggan_pytorch(args.run, config=args.biggan_config)[0].to(args.device), None
    if args.biggan_config:
        raise ValueError("--biggan-config: for a BigGAN-PyTorch G.pth; a biggan run has its own config")
    G, _, _, recipe = load_generator(args.run, args.device, not args.no_ema)
    return G, recipe


def generate_main(args) -> int | None:
    """``gankern generate`` for biggan runs and BG's G.pth (None for other runs): a grid with classes cycling, a
    sheet with one row per ``--class``, or an ``--interp`` sheet; --trunc truncates z (resampling |z| > T) in
    sampling and in the standing statistics."""
    import sys

    from ..cli import check_out, foreign_options, run_recipe
    from ..outputs import save_grid
    from ..snapshots import generate
    if args.run is None or not (args.run.endswith(".pth") or run_recipe(args.run) == "biggan"):
        return foreign_options(args, _BIGGAN_FLAGS, "BigGAN", "a biggan run or a BigGAN-PyTorch G.pth")
    try:
        if args.trunc is not None and not args.trunc > 0:
            raise ValueError(f"--trunc {args.trunc}: the latent threshold must be > 0")
        if (args.frames or args.rows) and not args.interp:
            raise ValueError("--frames and --rows shape an --interp sheet: give --interp z|class|both")
        if args.interp and args.interp not in _INTERP:
            raise ValueError(f"--interp {args.interp}: StyleGAN's; BigGAN's sheets move z, class or both")
        if args.interp and args.cls:
            raise ValueError("--interp draws the classes of its rows: leave out --class")
        check_out(args.out)
        G, recipe = _load(args)
        k, classes, t = recipe.num_classes if recipe else G.n_classes, args.cls or [], args.trunc
        if classes and not k:
            raise ValueError(f"--class {classes[0]}: this run is unconditional (unlabelled data)")
        if any(c >= k for c in classes):
            raise ValueError(f"--class {max(classes)}: the generator has classes 0..{k - 1}")
        if args.interp:
            frames, rows = args.frames or 10, args.rows or 8
            images = interp_sheet(recipe, G, rows, frames - 2, args.seed, truncation=t, **_INTERP[args.interp])
            nrow, what = frames, f"a {rows} x {frames} interpolation sheet ({args.interp})"
        elif classes:
            per = args.n or (10 if len(classes) > 1 else 64)
            images = sample_sheet(recipe, G, classes, per, args.seed, t)
            nrow = per if len(classes) > 1 else None
            what = f"{per} images of each of {len(classes)} classes" if len(classes) > 1 else \
                f"{per} images of class {classes[0]}"
        else:
            n = args.n or 64
            fn = recipe.generate if recipe else _plain
            images = generate(G, n, _unwrap(G).z_dim, k, args.seed, t, args.device,
                              fn=lambda G, z, c: fn(G, z, c, t))
            nrow, what = None, f"{n} images" + (f" (classes 0..{k - 1} in turn)" if k > 1 else "")
        save_grid(images, args.out, nrow)
    except (ValueError, OSError) as e:
        print(f"gankern generate: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {what} to {args.out}")
    return 0
