"""`gankern steer`: image grids of closed-form latent walks (gankern.steer) of a trained run's generator."""
import sys

_DEFAULT_RANGE = {"linear": 3.0, "nonlinear": 3.0, "circle": 0.6}


def add_parsers(sub):
    p = sub.add_parser("steer", help="walk a trained generator's latent space along closed-form directions",
                       description="Writes a PNG grid: one row per latent, one column per step of the walk, along the "
                                   "closed-form direction of a transform (shift_x, shift_y, zoom; Spingarn-Eliezer "
                                   "et al. 2021) computed from G's first layer, or (--principal K) one row per "
                                   "principal direction for one latent.")
    p.add_argument("--run", required=True, metavar="DIR", help="run directory (or a ckpt-*.pt file)")
    p.add_argument("--transform", default="zoom", choices=["shift_x", "shift_y", "zoom"],
                   help="(default: %(default)s)")
    p.add_argument("--path", default="linear", choices=["linear", "nonlinear", "circle"],
                   help="linear: z + a q; nonlinear: whole steps of z <- M z + q; circle: a great circle, a in radians "
                        "(default: %(default)s)")
    p.add_argument("--steps", type=int, default=7, metavar="S", help="images per walk (default: %(default)s)")
    p.add_argument("--range", dest="range_", type=float, metavar="A",
                   help="walk from -A to A (default: 3 for linear and nonlinear, 0.6 rad for circle)")
    p.add_argument("--principal", type=int, metavar="K",
                   help="instead: the first K principal directions (linear path), one row each, for one latent")
    p.add_argument("--n", type=int, default=4, metavar="N", help="latents, one row each (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, metavar="INT", help="latent seed (default: %(default)s)")
    p.add_argument("--layer", metavar="NAME", help="name of G's first Linear, if gankern does not find it")
    p.add_argument("--out", default="walk.png", metavar="PNG", help="output file (default: %(default)s)")
    p.add_argument("--no-ema", action="store_true", help="use G instead of G_ema")
    p.add_argument("--device", default="cpu", metavar="DEV", help="(default: %(default)s)")
    p.set_defaults(func=steer_main)


def _fail(message: str) -> int:
    print(f"gankern steer: error: {message}", file=sys.stderr)
    return 2


def steer_main(args) -> int:
    import torch

    from . import steer
    from .train.cli import load_generator
    from .train.outputs import save_grid
    if args.steps < 1 or args.n < 1 or (args.principal is not None and args.principal < 1):
        return _fail("--steps, --n and --principal must be positive")
    try:
        G, _, num_classes, recipe = load_generator(args.run, args.device, not args.no_ema)
    except FileNotFoundError as e:
        return _fail(str(e))
    r = _DEFAULT_RANGE[args.path] if args.range_ is None else args.range_
    alphas = torch.linspace(-r, r, args.steps).tolist() if args.steps > 1 else [0.0]
    if args.path == "nonlinear" and args.principal is None:
        alphas = [round(a) for a in alphas]
    try:
        if args.principal is not None:
            steer.first_layer(G, args.layer)   # a generator walked in z (StyleGAN2's directions are in w space)
            V = steer.principal_directions(G, args.principal, layer=args.layer)
            z0 = torch.randn(1, V.shape[1], generator=torch.Generator().manual_seed(args.seed))
            z = torch.stack([z0[0] + a * v for v in V for a in alphas]).float()
        else:
            d = steer.directions(G, args.transform, args.path, layer=args.layer)
            z0 = torch.randn(args.n, d.z_dim, generator=torch.Generator().manual_seed(args.seed))
            z = d.walk(z0, alphas).transpose(0, 1).reshape(-1, d.z_dim)   # row per latent
    except (ValueError, TypeError) as e:
        return _fail(str(e))
    y = (torch.arange(len(z)) // len(alphas) % num_classes).to(args.device) if num_classes else None
    with torch.no_grad():
        images = torch.cat([recipe.generate(G, z[i:i + 256].to(args.device), None if y is None else y[i:i + 256])
                            .float() for i in range(0, len(z), 256)])
    save_grid(images, args.out, nrow=len(alphas))
    rows = f"{args.principal} principal directions" if args.principal else f"{args.n} latents, {args.transform}"
    print(f"wrote {args.out}: {rows}, {args.path} path, alpha {alphas[0]:g} .. {alphas[-1]:g} in {len(alphas)} steps")
    return 0
