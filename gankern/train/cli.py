"""``gankern train`` and ``gankern generate``."""
from __future__ import annotations

import argparse
import dataclasses
import glob
import importlib
import json
import os
import re
import sys

from ..cli import add_threads_arg, device, finite_float, int_at_least, positive_float, power_of_two

TRAIN_EPILOG = """\
examples:

  # DCGAN on the embedded digits (scikit-learn, offline), 32x32, a few minutes on a CPU
  gankern train --config dcgan --data digits --outdir runs/ --kimg 100

  # WGAN-GP on a folder of images at 64x64 with flips, 2 GPUs (--gpus N launches torchrun)
  gankern train --config wgan-gp --data ~/faces --res 64 --mirror --gpus 2

  # StyleGAN2-ADA as S2A's train.py: R1 gamma, ADA toward r_t 0.6
  gankern train --config stylegan2 --data ~/faces --res 256 --gamma 1 --aug ada --target 0.6 --gpus 8

  # any config field: --set SECTION.FIELD=VALUE (sections: model, loss, opt, train)
  gankern train --config dcgan --set model.mbstd=4 --set loss.r1=1 --set loss.reg_interval=4

  # continue a run (also after a crash or SIGKILL: it restarts from the newest checkpoint)
  gankern train --resume runs/00000-dcgan-digits-32

configs: gankern train --list-configs
"""


# Families with their own kind of ``gankern generate``: each module defines ``add_generate_options(parser)`` (an
# argument group of its flags) and ``generate_main(args) -> int | None`` (None: not its call; see ``run_recipe``).
# Tried in order; the plain grid of ``generate_main`` below when none takes the call.
GENERATE_FAMILIES = [f"gankern.train.recipes.{m}" for m in ("stylegan2", "infogan", "singan", "biggan")]
INTERP_KINDS = ("z", "z-lerp", "w", "class", "both")      # --interp, shared: each family takes its own kinds
_INTERP_FAMILIES = ("stylegan2", "biggan")                   # the recipes whose runs --interp / --frames serve


def add_parsers(sub) -> None:
    p = sub.add_parser("train", help="train a GAN (dcgan, wgan-gp, sngan, ...; --list-configs)",
                       description="Train a GAN from the table of named configs. Writes to a new run directory "
                                   "under --outdir: config.json, checkpoints, image grids (fakes*.png), "
                                   "metrics.jsonl, plot.png.",
                       epilog=TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("general options")
    g.add_argument("--config", metavar="NAME", default="dcgan", help="named config (default: %(default)s)")
    g.add_argument("--list-configs", action="store_true", help="print the named configs and exit")
    g.add_argument("--data", metavar="PATH", help="'digits' (embedded), folder, .zip, .npz or .npy; "
                                                  "one image for SinGAN: sample:china or IMG.png (default: digits)")
    g.add_argument("--outdir", metavar="DIR", default="runs", help="where to make the run directory "
                                                                   "(default: %(default)s)")
    g.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its newest checkpoint")
    g.add_argument("--kimg", type=positive_float, metavar="KIMG", help="length of training in thousands of images")
    g.add_argument("--batch", type=int_at_least(1), metavar="B", help="global batch size (all GPUs together)")
    g.add_argument("--seed", type=int, metavar="INT", help="random seed")
    g.add_argument("--device", type=device, metavar="DEV", help="cpu or cuda[:i] (default: cuda when available)")
    add_threads_arg(g)
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    d = p.add_argument_group("data options")
    d.add_argument("--res", type=power_of_two, metavar="R", help="image resolution (power of two; default 32)")
    d.add_argument("--mirror", action="store_true", default=None, help="random horizontal flips")
    d.add_argument("--labels", metavar="FILE", help="labels for conditional configs: dataset.json or CSV")
    d.add_argument("--subfolder-labels", action="store_true", default=None,
                   help="labels from first-level subfolder names")
    t = p.add_argument_group("performance and output options")
    t.add_argument("--amp", choices=["off", "bf16", "fp16"], help="mixed precision")
    t.add_argument("--accum", type=int_at_least(1), metavar="N", help="gradient accumulation rounds per step")
    t.add_argument("--workers", type=int_at_least(0), metavar="N", help="data loader processes (file data sets)")
    t.add_argument("--snap", type=int_at_least(1), metavar="STEPS",
                   help="image grid + metrics + checkpoint every STEPS")
    t.add_argument("--keep", type=int_at_least(0), metavar="N", help="checkpoints kept (0: all)")
    t.add_argument("--metrics", choices=["auto", "digits-fid", "fid", "none"], help="FID at snapshots: digits-fid "
                   "(FID/KID of a digits classifier's features), fid (Inception FID, S2A's fid50k_full with --set "
                   "train.metric_samples=50000; the weights found locally: $GANKERN_INCEPTION_WEIGHTS or `gankern "
                   "fid --download`), auto: digits-fid on digits, else fid when the weights are here")
    t.add_argument("--set", action="append", default=[], metavar="SEC.FIELD=VAL",
                   help="set any config field, e.g. loss.r1=10, opt.d_lr=4e-4 (repeatable)")
    t.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=None,
                   help="also write TensorBoard events (scalars, image grids) into the run directory; "
                        "metrics.jsonl stays the record (default: on when tensorboard is installed)")
    t.add_argument("--gpus", type=int_at_least(1), metavar="N", help="processes, one per GPU: N > 1 launches "
                   "torchrun with the other arguments (with --device cpu: N CPU processes over gloo)")
    t.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    s = p.add_argument_group("StyleGAN2 (S2A) options", "S2A's train.py flags; shorthands of --set recipe.NAME=V for "
                             "configs whose recipe has that option (stylegan2, stylegan)")
    s.add_argument("--gamma", type=finite_float, metavar="G", help="R1 regularization weight")
    s.add_argument("--aug", choices=["ada", "fixed", "noaug"], help="augmentation mode")
    s.add_argument("--p", type=finite_float, metavar="P", help="augmentation probability (ada: initial, fixed: all)")
    s.add_argument("--target", type=finite_float, metavar="T", help="ADA target value of r_t = E[sign(D(real))]")
    p.set_defaults(func=train_main)

    q = sub.add_parser("generate", help="write an image grid from a trained run",
                       description="Generate images from a run's G_ema (newest checkpoint), or from a BigGAN-PyTorch "
                                   "generator (G.pth), into an image grid.")
    q.add_argument("--run", metavar="DIR", help="run directory, a ckpt-*.pt file, or BigGAN-PyTorch's G.pth / "
                   "G_ema.pth (its config from the state_dict.pth beside it, or --biggan-config)")
    q.add_argument("--n", type=int_at_least(1), metavar="N", help="number of images (default: 64); with several "
                   "classes, images per class (default: 10)")
    q.add_argument("--out", default="grid.png", metavar="FILE",
                   help="output image; its suffix names the format: .png, .jpg, .webp, ... (default: %(default)s)")
    q.add_argument("--seed", type=int, default=0, metavar="INT", help="latent seed (default: %(default)s)")
    q.add_argument("--trunc", "--truncation", dest="trunc", type=finite_float, metavar="T",
                   help="truncation: the latent threshold (|z| > T redrawn, T > 0; BigGAN's trick) or, for StyleGAN "
                        "runs and networks, psi (w pulled toward the mean w; 1: none)")
    q.add_argument("--class", dest="cls", type=_class_list, metavar="K|A-B|A,B,..", help="class label(s) "
                   "(conditional configs); several: one row per class (BigGAN-PyTorch's sample sheets)")
    q.add_argument("--interp", choices=INTERP_KINDS, help="interpolation instead of samples (StyleGAN and BigGAN): z "
                   "(slerp; BigGAN: only z moves along a row), z-lerp and w (StyleGAN: lerp in z, in W), class "
                   "(BigGAN: only the class embedding moves), both (BigGAN: z and class)")
    q.add_argument("--frames", type=int_at_least(2), metavar="N", help="interpolation: images per row, both ends "
                   "included (default: StyleGAN 8, BigGAN 10)")
    q.add_argument("--no-ema", action="store_true", help="use G instead of G_ema")
    q.add_argument("--device", type=device, default="cpu", metavar="DEV", help="(default: %(default)s)")
    add_threads_arg(q)
    flags = {}                                  # family -> {dest: default} of the flags its module adds
    for module in GENERATE_FAMILIES:
        before = vars(q.parse_args([]))
        importlib.import_module(module).add_generate_options(q)
        flags[module.rsplit(".", 1)[1]] = {d: v for d, v in vars(q.parse_args([])).items() if d not in before}
    q.set_defaults(func=generate_main, family_flags=flags)


RECIPE_FLAGS = ("gamma", "aug", "p", "target")          # train flags that are recipe options (S2A's train.py)
_FIELDS = {"data": "data", "kimg": "kimg", "batch": "batch", "seed": "seed", "res": "resolution",
           "mirror": "mirror", "labels": "labels_file", "subfolder_labels": "subfolder_labels", "amp": "amp",
           "accum": "accum", "workers": "workers", "keep": "keep", "metrics": "metrics"}


def _resolve(args):
    from .config import CONFIGS, RunConfig, apply_train_defaults, named_config, set_field
    if args.resume:
        path = os.path.join(args.resume, "config.json")
        if not os.path.exists(path):
            raise FileNotFoundError(f"--resume {args.resume}: no config.json there")
        cfg = RunConfig.from_json(open(path).read())
    else:
        if args.config not in CONFIGS:
            raise ValueError(f"unknown config '{args.config}'; known: {', '.join(CONFIGS)}")
        cfg = named_config(args.config)
    for a, f in _FIELDS.items():
        v = getattr(args, a)
        if v is not None:
            setattr(cfg.train, f, v)
    if args.snap is not None:
        cfg.train.snap_steps = cfg.train.ckpt_steps = args.snap
        cfg.train.log_steps = min(cfg.train.log_steps, args.snap)
        if args.snap % cfg.train.log_steps:
            cfg.train.log_steps = args.snap
    for name in RECIPE_FLAGS:                              # --gamma G: --set recipe.gamma=G where the recipe has it
        if getattr(args, name) is not None:
            if name not in {f.name for f in dataclasses.fields(cfg.options)}:
                raise ValueError(f"--{name}: config '{cfg.config}' (recipe {cfg.recipe}) has no such option; it is "
                                 f"a StyleGAN2 option (configs stylegan2, stylegan)")
            set_field(cfg, f"recipe.{name}={getattr(args, name)}")
    for s in args.set:
        set_field(cfg, s)
    if not args.resume:                                    # the recipe's train defaults, where the user set none
        explicit = {f for a, f in _FIELDS.items() if getattr(args, a) is not None} | \
            ({"snap_steps", "ckpt_steps", "log_steps"} if args.snap is not None else set()) | \
            {s.partition("=")[0].split(".")[-1] for s in args.set if s.startswith("train.")}
        apply_train_defaults(cfg, explicit, int(os.environ.get("WORLD_SIZE", 0)) or args.gpus or 1)
    _choose_metrics(cfg, args.resume)
    data = cfg.train.data
    if not data.startswith(("digits", "ring")) and ":" not in data and not os.path.exists(data):  # built-ins, KIND:X
        raise FileNotFoundError(f"--data {data}: no such file or folder (or a built-in: digits, ring, ...)")
    return cfg.validate()


def _choose_metrics(cfg, resume: str | None) -> None:
    """--metrics auto of a new run on images other than the digits: fid when the FID Inception weights are found
    here (config.json keeps the choice), else none with a notice; fid: image data and the weights, checked now."""
    from ..metrics.inception import WEIGHTS_NAME, find_weights
    from .inception_fid import image_data
    from .recipes import RECIPES
    t = cfg.train
    images = image_data(t.data) and RECIPES[cfg.recipe].ema is not None          # G samples images like the data
    if t.metrics == "auto" and not resume and t.data != "digits" and images:
        try:
            find_weights()
            t.metrics = "fid"
        except FileNotFoundError:
            print(f"note: --metrics auto: no FID Inception weights ({WEIGHTS_NAME}) here, so no FID at snapshots "
                  f"(`gankern fid --download` or $GANKERN_INCEPTION_WEIGHTS for --metrics fid)", file=sys.stderr)
    if t.metrics == "fid":
        if not images:
            raise ValueError(f"--metrics fid: Inception FID compares G's samples with an image data set; config "
                             f"'{cfg.config}' on --data {t.data} has none (2-D points, pairs or one image)")
        try:
            find_weights()
        except FileNotFoundError as e:
            raise FileNotFoundError(f"--metrics fid: {e}") from None


def _run_dir(outdir: str, cfg) -> str:
    """A new run directory under outdir (created, like outdir): 00000-<config>-<data>-<res>, numbered on."""
    if os.path.exists(outdir) and not os.path.isdir(outdir):
        raise NotADirectoryError(f"--outdir {outdir}: not a directory")
    try:
        os.makedirs(outdir, exist_ok=True)
        ids = [int(m.group(1)) for n in os.listdir(outdir) if (m := re.match(r"^(\d{5})-", n))]
        data = "digits" if cfg.train.data == "digits" else os.path.splitext(os.path.basename(
            cfg.train.data.rstrip("/")))[0]
        run_dir = os.path.join(outdir, f"{max(ids, default=-1) + 1:05d}-{cfg.config}-{data}-{cfg.train.resolution}")
        os.makedirs(run_dir)
    except OSError as e:
        raise OSError(f"--outdir {outdir}: cannot make a run directory there ({e.strerror or e})") from None
    if not os.access(run_dir, os.W_OK):
        raise PermissionError(f"--outdir {outdir}: not writable")
    return run_dir


def _on_cpu(device: str | None) -> bool:
    import torch
    return (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cpu")


def _error(cmd: str, e: BaseException | str) -> int:
    print(f"gankern {cmd}: error: {e}", file=sys.stderr)
    return 2


def train_main(args) -> int:
    from .config import CONFIGS
    if args.list_configs:
        w = max(map(len, CONFIGS))
        for name, (desc, _) in CONFIGS.items():
            print(f"{name:<{w}}  {desc}")
        return 0
    try:
        cfg = _resolve(args)
    except (ValueError, FileNotFoundError, KeyError) as e:
        return _error("train", e)
    if f"{cfg.config}-cpu" in CONFIGS and not args.resume and _on_cpu(args.device):
        print(f"note: {cfg.config} is slow on a CPU (README: seconds per kimg); --config {cfg.config}-cpu is its "
              f"CPU preset", file=sys.stderr)
    if args.dry_run:
        print(cfg.to_json())
        return 0
    from .outputs import tensorboard_available
    if args.tensorboard and not tensorboard_available():
        return _error("train", "--tensorboard: the tensorboard package is not installed "
                               "(pip install 'gankern[tensorboard]'), or pass --no-tensorboard")
    if (args.gpus or 1) > 1 and "WORLD_SIZE" not in os.environ:
        return _launch_torchrun(args)
    import torch.distributed as tdist

    from .loop import Dist, NonFiniteError, Trainer
    dist = Dist.from_env(args.device)
    run_dir = None
    try:                        # data, output folder and checkpoint problems are messages, not tracebacks
        if args.resume:
            run_dir = args.resume
        elif dist.rank == 0:
            run_dir = _run_dir(args.outdir, cfg)
        if dist.world > 1:                               # every rank writes into rank 0's choice
            box = [run_dir]
            tdist.broadcast_object_list(box, src=0)
            run_dir = box[0]
        trainer = Trainer(cfg, run_dir, dist, progress=not args.quiet, tensorboard=args.tensorboard)
        if dist.rank == 0:
            print(f"run directory: {run_dir}\nconfig: {cfg.config} ({CONFIGS.get(cfg.config, ('',))[0]})\n"
                  f"{trainer.total_steps} steps of {cfg.train.batch} images on {dist.world} x {dist.device}")
        if args.resume:
            trainer.resume()
        last = trainer.train()
    except NonFiniteError as e:
        print(f"gankern train: stopped: {e}", file=sys.stderr)
        return 3
    except (ValueError, OSError) as e:
        if run_dir and not args.resume and dist.rank == 0 and os.path.isdir(run_dir) and not os.listdir(run_dir):
            os.rmdir(run_dir)                            # nothing was written: the number stays free
        return _error("train", e)
    finally:
        if tdist.is_initialized():
            tdist.destroy_process_group()
    if dist.rank == 0:
        grids = sorted(glob.glob(os.path.join(run_dir, "*-latest.png")))     # fakes, classes, translations, ...
        print(f"done: {json.dumps(last)}\n" + "".join(f"grid: {g}\n" for g in grids) +
              f"plot: {os.path.join(run_dir, 'plot.png')}\nmetrics: {os.path.join(run_dir, 'metrics.jsonl')}")
    return 0


def torchrun_command(argv: list[str], gpus: int) -> list[str]:
    """The torchrun command line that runs ``gankern train ARGV`` (less --gpus) in ``gpus`` processes."""
    out, skip = [], False
    for a in argv:
        name = a.split("=")[0]
        if not skip and len(name) >= 4 and "--gpus".startswith(name):     # --gpus N, --gpus=N, argparse's --gpu N
            skip = "=" not in a
            continue
        if not skip:
            out.append(a)
        skip = False
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(gpus),
            "-m", "gankern", *out]


def _launch_torchrun(args) -> int:
    """--gpus N > 1 outside torchrun: run this command again under torchrun in N processes; its exit status."""
    import subprocess

    import torch
    if not _on_cpu(args.device) and torch.cuda.device_count() < args.gpus:
        return _error("train", f"--gpus {args.gpus}: {torch.cuda.device_count()} CUDA device(s) visible "
                               f"(--device cpu runs {args.gpus} CPU processes)")
    cmd = torchrun_command(args.argv, args.gpus)
    print("launching: " + " ".join(cmd[1:]), file=sys.stderr)
    return subprocess.run(cmd).returncode


def load_generator(run: str, device: str = "cpu", ema: bool = True):
    """(G, RunConfig, num_classes, recipe) from a run directory's newest checkpoint (or a checkpoint file); sample
    with ``generate(G, n, recipe.z_dim, num_classes, seed, fn=recipe.generate)``."""
    import torch

    from . import checkpoint
    from .config import RunConfig
    from .recipes import RECIPES, Env
    if os.path.isfile(run):
        try:
            s = checkpoint.load(run, device)
        except Exception as e:                         # truncated, corrupt or not a checkpoint at all
            raise ValueError(f"{run}: not a readable checkpoint ({type(e).__name__})") from None
    else:
        _, s, skipped = checkpoint.load_newest(run, device)
        for msg in skipped:
            print(f"warning: checkpoint {msg}; using the previous one", file=sys.stderr)
    cfg = RunConfig.from_json(s["config"])
    k = int(s["num_classes"])
    recipe = RECIPES[cfg.recipe](cfg.options, Env(torch.device(device), 0, 1, k, int(s["channels"]),
                                                  cfg.train.resolution, 1, cfg.train.seed))
    G = recipe.nets[recipe.ema or "G"]
    G.load_state_dict(s["G_ema" if ema and recipe.ema else "G"])           # --no-ema: the trained G
    return G.to(device).eval(), cfg, k, recipe


def run_recipe(run: str | None) -> str | None:
    """The recipe name of a run directory (or of a checkpoint file in one), from its config.json; None when there is
    none (e.g. a network file of another project)."""
    if run is None:
        return None
    path = os.path.join(run if os.path.isdir(run) else os.path.dirname(os.path.abspath(run)), "config.json")
    try:
        return json.load(open(path)).get("recipe", "classic")
    except (OSError, ValueError, AttributeError):
        return None


def foreign_options(args, dests: tuple[str, ...], family: str, runs: str) -> int | None:
    """``generate_main``'s answer of a family for a run that is not of it: 2 with a message when its options
    (argparse ``dests``) were given (they would be ignored), else None (not its call)."""
    given = [f"--{d.replace('_', '-')}" for d in dests if getattr(args, d, None) is not None]
    if given and args.run is not None:
        return _error("generate", f"{', '.join(given)}: {family} options, and {args.run} is not {runs}")
    return None


def _foreign_flags(args) -> str | None:
    """The error of a ``generate`` call that mixes families, checked before any family runs (the first family that
    takes the call would ignore the others' flags): flags of two families (``args.family_flags``: each
    GENERATE_FAMILIES module's own, under the recipe it serves), a family's flags with a run of another family, or
    --interp / --frames with a run of a family that does not interpolate. None when the call is consistent; each
    family refuses its flags with other inputs itself (``foreign_options``)."""
    given = {fam: [f"--{d.replace('_', '-')}" for d, default in dests.items() if getattr(args, d) != default]
             for fam, dests in args.family_flags.items()}
    given = {fam: flags for fam, flags in given.items() if flags}
    if len(given) > 1:
        return "; ".join(f"{', '.join(f)}: options of {fam} runs" for fam, f in given.items()) + \
            ": one kind of run per call"
    recipe = run_recipe(args.run)
    if recipe not in args.family_flags:
        return None
    for fam, flags in given.items():
        if recipe != fam:
            return f"{', '.join(flags)}: options of {fam} runs, and {args.run} is a {recipe} run"
    if (args.interp or args.frames) and recipe not in _INTERP_FAMILIES:
        return f"--interp and --frames: interpolation of StyleGAN and BigGAN runs; {args.run} is a {recipe} run"
    return None


def _class_list(text: str) -> list[int]:
    """'3' -> [3], '0-9' -> [0, ..., 9], '1,4,7' -> [1, 4, 7]."""
    try:
        out = []
        for part in text.split(","):
            a, _, b = part.partition("-")
            out += list(range(int(a), int(b) + 1)) if b else [int(a)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K, A-B or A,B,... (class numbers), not {text!r}") from None
    if not out or min(out) < 0:
        raise argparse.ArgumentTypeError(f"expected class numbers >= 0, not {text!r}")
    return out


def check_out(path: str) -> None:
    """--out: a known image suffix, in an existing folder (ValueError / FileNotFoundError, before any sampling)."""
    from .outputs import image_format
    image_format(path)
    out_dir = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(out_dir):
        raise FileNotFoundError(f"--out {path}: the folder {out_dir} does not exist")


def generate_main(args) -> int:
    import torch

    from .loop import generate
    from .outputs import save_grid
    error = _foreign_flags(args)
    if error:
        return _error("generate", error)
    for module in GENERATE_FAMILIES:
        code = importlib.import_module(module).generate_main(args)
        if code is not None:
            return code
    if args.run is None:
        return _error("generate", "give --run DIR (or a checkpoint file)")
    if args.interp or args.frames:
        return _error("generate", "--interp and --frames: interpolation of StyleGAN and BigGAN runs; "
                                  f"{args.run} is not one")
    try:
        if args.trunc is not None and not args.trunc > 0:
            raise ValueError(f"--trunc {args.trunc}: the latent threshold must be > 0")
        check_out(args.out)
        G, cfg, k, recipe = load_generator(args.run, args.device, not args.no_ema)
        classes = args.cls or []
        if classes and not k:
            raise ValueError(f"--class {args.cls[0]}: this generator is unconditional")
        if any(c >= k for c in classes):
            raise ValueError(f"--class {max(classes)}: the generator has classes 0..{k - 1}")
        per = args.n or (10 if len(classes) > 1 else 64)
        n = per * max(len(classes), 1)
        labels = torch.tensor(classes).repeat_interleave(per) if len(classes) > 1 else \
            torch.full((n,), classes[0]) if classes else None
        images = generate(G, n, recipe.z_dim, k, args.seed, args.trunc, args.device, labels, recipe.generate)
        save_grid(images, args.out, nrow=per if len(classes) > 1 else None)
    except (ValueError, OSError) as e:
        return _error("generate", e)
    print(f"wrote {n} images to {args.out}")
    return 0
