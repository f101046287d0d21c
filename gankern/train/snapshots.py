"""What a run writes besides checkpoints and the log: config.json and run.json, image grids of G_ema on fixed
latents, digits-FID/KID or Inception FID rows and the loss plot; and ``generate``, the sampler of snapshots and
``gankern generate``."""
from __future__ import annotations

import json
import os
import resource
import sys

import torch

from . import checkpoint
from .dist import derive_seed
from .outputs import TensorBoard, plot_run, save_grid
from .stats import NonFiniteError, first_nonfinite


def write_run_files(tr) -> None:
    """config.json (read back by --resume) and run.json (recipe, world, device, torch version) of Trainer ``tr``."""
    os.makedirs(tr.run_dir, exist_ok=True)
    _write_atomic(os.path.join(tr.run_dir, "config.json"), tr.cfg.to_json())
    _write_atomic(os.path.join(tr.run_dir, "run.json"), json.dumps(
        {"recipe": tr.cfg.recipe, "world": tr.dist.world, "device": str(tr.dist.device),
         "torch": torch.__version__, "total_steps": tr.total_steps}, indent=2))


def start_outputs(tr) -> None:
    """Run files, and TensorBoard's writer when on (a resumed run drops the events after its checkpoint)."""
    write_run_files(tr)
    if tr.tensorboard:
        tr.tb = TensorBoard(tr.run_dir, purge_nimg=(tr.nimg + 1 if tr.step else 0) if tr.resumed else None)


def log_tick(tr, img_per_s: float) -> dict:
    """The log row of Trainer ``tr`` at a log step: the window's means (one host read), SN sigmas and the recipe's
    stats; raises NonFiniteError (saving the state) at the first non-finite loss of the window or weight."""
    means, bad = tr.window.read({**{f"sigma/{n}/{k}": v for n, g in tr.sn.items() for k, v in g.sigmas.items()},
                                 **tr.recipe.log_stats()})
    if bad:
        _fail(tr, bad[0], f"loss '{bad[1]}' = {bad[2]}")
    if bad := first_nonfinite({**tr.nets, **({"G_ema": tr.G_ema} if tr.G_ema is not None else {})}):
        _fail(tr, tr.step, f"tensor '{bad}'")
    row = {"step": tr.step, "kimg": tr.nimg / 1000, "img_per_s": round(img_per_s, 2),
           "timing/s_per_kimg": round(1000 / max(img_per_s, 1e-9), 3), **_peak_memory(tr.dist.device), **means}
    if tr.rank0:
        tr.log.append(row)
        if tr.tb:
            tr.tb.scalars(row)
    return row


def _peak_memory(device: torch.device) -> dict:
    """S2A's resources/peak_gpu_mem_gb: on CUDA the peak of allocated memory since the previous tick (GiB; the
    peak is reset), elsewhere ``resources/peak_rss_gb``: the process' peak resident set since it started."""
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2 ** 30
        torch.cuda.reset_peak_memory_stats(device)
        return {"resources/peak_mem_gb": round(peak, 3)}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return {"resources/peak_rss_gb": round(rss / 2 ** 30, 3)}


def _fail(tr, step: int, what: str) -> None:
    path = os.path.join(tr.run_dir, f"nonfinite-step{step:08d}.pt")
    if tr.rank0:
        checkpoint.save(tr.state_dict(), path)
    raise NonFiniteError(f"step {step}: {what} is not finite (NaN/Inf); the state at step {tr.step} was saved to "
                         f"{path} for inspection. Lower the learning rates, or use amp=off / bf16.")


def sample(tr, n: int, seed: int, truncation: float | None = None, net: torch.nn.Module | None = None):
    """n images (n, C, R, R) from Trainer ``tr``'s G_ema (or ``net``), latents fixed by seed, labels cycling 0..K-1."""
    return generate(net or tr.G_ema, n, tr.recipe.z_dim, tr.num_classes, seed, truncation, tr.dist.device,
                    fn=tr.recipe.generate)


def snapshot(tr, bar=None) -> dict:
    """Grid of G_ema on fixed latents and the grids of the recipe's optional ``snapshot_sheets(G, seed)`` (G_ema, or
    the trained G of a recipe without one: image-to-image's input | output | target), FID/KID (digits-fid) or
    Inception FID (fid: gankern.train.inception_fid), and the loss plot of Trainer ``tr``; returns the metric row
    (empty without metrics), printed under the progress ``bar``."""
    t, row = tr.cfg.train, {}
    grids = {"fakes": (sample(tr, t.grid, derive_seed(t.seed, "grid") % 2 ** 31), None)} if tr.G_ema is not None else {}
    if hasattr(tr.recipe, "snapshot_sheets"):                # a recipe's own grids: {name: (images, nrow)}
        G = tr.G_ema if tr.G_ema is not None else tr.nets["G"]
        grids.update(tr.recipe.snapshot_sheets(G, derive_seed(t.seed, "sheets") % 2 ** 31))
    for name, (images, nrow) in grids.items():
        save_grid(images, os.path.join(tr.run_dir, f"{name}{tr.step:08d}.png"), nrow)
        save_grid(images, os.path.join(tr.run_dir, f"{name}-latest.png"), nrow)
        if tr.tb:
            tr.tb.grid(name, images, tr.nimg, nrow)
    if tr.G_ema is not None and tr.metrics in ("digits-fid", "fid"):
        if tr.metrics == "digits-fid":
            from .digits_features import fid_kid
            row = fid_kid(sample(tr, t.metric_samples, derive_seed(t.seed, "metric") % 2 ** 31), t.resolution)
        else:
            row = {"fid_inception": inception_fid(tr)(
                lambda n, i: sample(tr, n, derive_seed(t.seed, "metric", i) % 2 ** 31), t.metric_samples)}
        row = {"step": tr.step, "kimg": tr.nimg / 1000, **{k: round(v, 5) for k, v in row.items()}}
        tr.log.append(row)
        if tr.tb:
            tr.tb.scalars(row)
        if bar is not None:
            bar.write(f"step {tr.step}: " + " ".join(f"{k}={v:.4g}" for k, v in row.items()
                                                    if k not in ("step", "kimg")))
    plot_run(tr.log.rows(), os.path.join(tr.run_dir, "plot.png"))
    return row


def inception_fid(tr):
    """Trainer ``tr``'s InceptionFID (built at its first snapshot: the Inception and the data set's statistics)."""
    if "inception_fid" not in tr.__dict__:
        from .inception_fid import InceptionFID
        tr.inception_fid = InceptionFID(tr.run_dir, tr.dataset, tr.dist.device)
    return tr.inception_fid


@torch.no_grad()
def generate(G: torch.nn.Module, n: int, z_dim: int, num_classes: int, seed: int, truncation: float | None = None,
             device: torch.device | str = "cpu", labels: torch.Tensor | None = None, fn=None) -> torch.Tensor:
    """n images from G (eval mode; ``fn(G, z, c)``, default ``G(z, c)``) with z ~ N(0, I) fixed by seed; with
    ``truncation`` t, entries of z with |z| > t are redrawn (BigGAN's truncation trick). Labels cycle 0..K-1 unless
    given. Returns (n, C, R, R) in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, z_dim, generator=g)
    if truncation is not None:
        for _ in range(100):
            bad = z.abs() > truncation
            if not bad.any():
                break
            z[bad] = torch.randn(int(bad.sum()), generator=g)
        z = z.clamp(-truncation, truncation)
    y = None
    if num_classes:
        y = (labels if labels is not None else torch.arange(n) % num_classes).to(device)
    fn = fn or (lambda G, z, c: G(z, c))
    was = G.training
    G.eval()
    out = torch.cat([fn(G, z[i:i + 256].to(device), None if y is None else y[i:i + 256]).float()
                     for i in range(0, n, 256)])
    G.train(was)
    return out


def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
