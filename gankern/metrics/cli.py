"""`gankern fid PATH1 PATH2`: FID between two image sets (folders, zips) or saved statistics (.npz)."""
from __future__ import annotations

import functools
import sys
import urllib.error


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "fid", help="Frechet Inception Distance between two image folders/zips or .npz statistics",
        description="FID with pytorch-fid's Inception-v3 and statistics format. PATH is a folder of images "
                    "(searched recursively), a zip of images, or an .npz with 'mu' and 'sigma'. Images of any size "
                    "are resized to 299x299 (bilinear), as pytorch-fid does.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="two paths (FID), or one with --save-stats")
    p.add_argument("--weights", default=None,
                   help="pt_inception-2015-12-05-6726825d.pth (default: $GANKERN_INCEPTION_WEIGHTS, then the cache)")
    p.add_argument("--download", action="store_true",
                   help="download the weights into the cache ($GANKERN_CACHE or ~/.cache/gankern) if not found "
                        "(needs network)")
    p.add_argument("--batch-size", type=int, default=50, help="images per forward pass (default: 50)")
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when available)")
    p.add_argument("--num-workers", type=int, default=4, help="image decoding processes (default: 4)")
    p.add_argument("--method", choices=("svd", "eigh", "newton_schulz"), default=None,
                   help="matrix square-root method (gankern.ops.fid; default: svd on the CPU, eigh on CUDA)")
    p.add_argument("--save-stats", metavar="OUT.npz", default=None,
                   help="write the first PATH's statistics (pytorch-fid's .npz format)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


class DownloadError(RuntimeError):
    """--download could not fetch the weights; the message says where to put the file by hand."""


def _load_model(weights, download: bool, device):
    """The FID Inception-v3; a failed download becomes a DownloadError naming the URL and the places searched."""
    from . import inception
    try:
        return inception.load_fid_inception(weights, download=download, device=device)
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        if isinstance(e, urllib.error.HTTPError):
            why = f"the server answered HTTP {e.code} {e.reason}"
        else:
            why = f"this machine looks offline ({getattr(e, 'reason', e)})"
        places = [str(d / inception.WEIGHTS_NAME) for d in inception._cache_dirs()]
        raise DownloadError(
            f"cannot download the FID Inception weights: {why}. Download {inception.WEIGHTS_URL} on a machine with "
            f"network access and put it at one of: {', '.join(places)}; or pass --weights PATH, or set "
            f"${inception.WEIGHTS_ENV}") from None


def run(args) -> int:
    import torch

    from .extract import stats_of_path
    from .stats import frechet_distance, save_stats

    paths = args.paths
    if len(paths) > 2 or (len(paths) == 1 and not args.save_stats):
        print("gankern fid: give two paths, or one path with --save-stats OUT.npz", file=sys.stderr)
        return 2
    if args.batch_size < 1:
        print(f"gankern fid: --batch-size must be positive, got {args.batch_size}", file=sys.stderr)
        return 2
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = functools.lru_cache(None)(lambda: _load_model(args.weights, args.download, device))
    try:
        stats = [stats_of_path(p, model, batch_size=args.batch_size, device=device,
                               num_workers=args.num_workers, progress=not args.quiet) for p in paths]
        if args.save_stats:
            save_stats(args.save_stats, *stats[0])
            print(f"saved the statistics of {paths[0]} to {args.save_stats}", file=sys.stderr)
        if len(stats) == 2:
            mu1, s1, mu2, s2 = (torch.as_tensor(a, dtype=torch.float64, device=device) for pair in stats for a in pair)
            print(f"FID: {frechet_distance(mu1, s1, mu2, s2, method=args.method):.6f}")
    except (FileNotFoundError, ValueError, DownloadError) as e:
        print(f"gankern fid: error: {e}", file=sys.stderr)
        return 1
    return 0
