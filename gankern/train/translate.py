"""``gankern translate``: apply the generator of an image-to-image run (pix2pix, CycleGAN) to an image or a folder."""
from __future__ import annotations

import sys


def add_parsers(sub) -> None:
    p = sub.add_parser("translate", help="translate images with a pix2pix or CycleGAN run",
                       description="Apply a trained image-to-image generator (newest checkpoint of --run) to an image "
                                   "or every image of a folder (resized to the run's resolution); writes PNGs with the "
                                   "same names under --out.")
    p.add_argument("--run", required=True, metavar="DIR", help="run directory (or a ckpt-*.pt file)")
    p.add_argument("--input", required=True, metavar="DIR_OR_IMAGE", help="an image file or a folder of images")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--direction", choices=["AB", "BA"], default="AB",
                   help="A -> B (default) or, for CycleGAN, B -> A")
    p.add_argument("--aligned", action="store_true", help="inputs are aligned A|B images: translate their left half")
    p.add_argument("--device", default="cpu", metavar="DEV", help="(default: %(default)s)")
    p.set_defaults(func=translate_main)


def translate_main(args) -> int:
    import torch

    from ..data.paired import load_images, save_images
    from .cli import load_generator
    try:
        G, cfg, _, recipe = load_generator(args.run, args.device, ema=False)
        if not hasattr(recipe, "translate"):
            raise ValueError(f"{args.run}: recipe '{cfg.recipe}' does not translate images (pix2pix and cyclegan "
                             f"runs do); use gankern generate")
        names, x = load_images(args.input, cfg.train.resolution, recipe.c, args.aligned,
                               labels=getattr(recipe, "label_input", False))
        with torch.no_grad():
            y = torch.cat([recipe.translate(G, x[i:i + 64].to(args.device), args.direction)
                           for i in range(0, len(x), 64)])
    except (FileNotFoundError, ValueError) as e:
        print(f"gankern translate: error: {e}", file=sys.stderr)
        return 2
    paths = save_images(y, names, args.out)
    print(f"wrote {len(paths)} images ({cfg.recipe}, {args.direction}) to {args.out}")
    return 0
