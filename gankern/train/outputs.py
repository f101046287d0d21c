"""What a run writes for people: image grids, metric rows (metrics.jsonl, the source of truth), a plot of them
(``plot.png``, matplotlib), the same scalars and grids in TensorBoard event files when tensorboard is installed, and
a tqdm progress bar."""
from __future__ import annotations

import importlib.util
import json
import math
import os
import sys

import numpy as np
import torch


def image_grid(images: torch.Tensor, nrow: int | None = None, pad: int = 2, scale: int | None = None) -> np.ndarray:
    """images (N, C, H, W) in [-1, 1], C in {1, 3} -> uint8 grid (rows*H', cols*W', 3), tiles upscaled (nearest)
    to at least 64 px unless ``scale`` is given."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    N, _, H, W = x.shape
    s = scale or max(1, 64 // max(H, W))
    x = x.repeat_interleave(s, 2).repeat_interleave(s, 3)
    H, W = H * s, W * s
    cols = nrow or math.ceil(math.sqrt(N))
    rows = math.ceil(N / cols)
    grid = np.full((rows * (H + pad) + pad, cols * (W + pad) + pad, 3), 255, np.uint8)
    for i in range(N):
        r, c = divmod(i, cols)
        grid[pad + r * (H + pad):pad + r * (H + pad) + H, pad + c * (W + pad):pad + c * (W + pad) + W] = \
            x[i].permute(1, 2, 0).numpy()
    return grid


def image_format(path: str) -> str:
    """The pillow format that ``path``'s suffix names (``.png`` -> PNG, ``.jpg`` -> JPEG, ...); ValueError if none."""
    from PIL import Image
    ext = os.path.splitext(path)[1].lower()
    known = Image.registered_extensions()
    if ext not in known:
        common = ", ".join(e for e in (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif") if e in known)
        raise ValueError(f"{path}: '{ext or '(no suffix)'}' names no image format; use one of {common}")
    return known[ext]


def save_grid(images: torch.Tensor, path: str, nrow: int | None = None) -> str:
    """Write ``image_grid(images)`` atomically, in the format that the suffix of path names; returns path."""
    from PIL import Image
    fmt = image_format(path)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        Image.fromarray(image_grid(images, nrow)).save(tmp, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


class JsonlLog:
    """Append-only JSONL file of rows that carry a ``step``; ``truncate(step)`` drops the rows after a checkpoint
    (and a half-written last line) when a run resumes."""

    def __init__(self, path: str):
        self.path = path

    def append(self, row: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")

    def rows(self) -> list[dict]:
        if not os.path.exists(self.path):
            return []
        out = []
        for line in open(self.path):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass                                   # the line a killed run was writing
        return out

    def truncate(self, step: int) -> None:
        keep = [r for r in self.rows() if r.get("step", 0) <= step]
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in keep)
        os.replace(tmp, self.path)


_NOT_PLOTTED = ("step", "kimg")


def plot_group(key: str) -> str:
    """The panel a metrics.jsonl key is drawn in: sigmas, gradient norms, ``D/*``, ``G/*``, ``Dreg/*``, ...,
    speed, or metrics (FID/KID and the other keys without a '/')."""
    if "sigma" in key:
        return "sigmas"
    if key.endswith("gnorm"):
        return "gradient norms"
    if "/" in key:
        return key.split("/", 1)[0] + "/*"
    return "speed" if key == "img_per_s" else "metrics"


def _points(rows: list[dict], key: str) -> tuple[list[float], list[float], int]:
    """(kimg, value) of the rows that hold a finite ``key``, and the count of rows where it is NaN/Inf."""
    vals = [(float(r["kimg"]), float(r[key])) for r in rows if "kimg" in r and isinstance(r.get(key), (int, float))]
    pts = [(x, y) for x, y in vals if math.isfinite(y)]
    return [x for x, _ in pts], [y for _, y in pts], len(vals) - len(pts)


def _widen(lo: float, hi: float, log: bool) -> tuple[float, float]:
    """Limits around a single value (one row, or a constant series), so that no axis is degenerate."""
    if log:
        return lo / 2, hi * 2
    d = max(abs(lo) * 0.1, 0.05)
    return lo - d, hi + d


def plot_figure(rows: list[dict], max_legend: int = 10):
    """A matplotlib Figure of metric rows (from metrics.jsonl): one panel per :func:`plot_group`, kimg on x, a log
    y axis where a panel's positive values span a decade or more; NaN/Inf values are counted in the title."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    groups: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
    bad: dict[str, int] = {}
    for key in sorted({k for r in rows for k in r} - set(_NOT_PLOTTED)):
        xs, ys, n_bad = _points(rows, key)
        g = plot_group(key)
        bad[g] = bad.get(g, 0) + n_bad
        if xs or n_bad:
            groups.setdefault(g, {})[key] = (xs, ys)
    order = sorted(groups, key=lambda g: (g in ("metrics", "speed", "sigmas", "gradient norms"), g))
    cols = 1 if len(order) <= 2 else 2
    nrows = max(1, math.ceil(len(order) / cols))
    fig = Figure(figsize=(6.4 * cols, 3.2 * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, cols, squeeze=False).ravel()
    for ax in axes[len(order):]:
        ax.set_visible(False)
    if not order:
        axes[0].set_visible(True)
        axes[0].set_axis_off()
        axes[0].text(0.5, 0.5, "nothing logged yet", ha="center", va="center")
    for ax, group in zip(axes, order):
        series = groups[group]
        xs = [x for v in series.values() for x in v[0]]
        ys = [y for v in series.values() for y in v[1]]
        ax.set_title(group + (f" ({bad[group]} NaN/Inf values not drawn)" if bad[group] else ""), fontsize=10)
        ax.set_xlabel("kimg (thousands of real images shown)")
        ax.grid(True, alpha=0.3)
        if not ys:
            ax.text(0.5, 0.5, "only NaN/Inf values", ha="center", va="center", transform=ax.transAxes)
            continue
        log = min(ys) > 0 and max(ys) / min(ys) >= 10
        for i, (key, (x, y)) in enumerate(series.items()):
            ax.plot(x, y, marker="o" if len(x) <= 20 else None, markersize=3, linewidth=1.2,
                    label=key if i < max_legend else None)
        ax.set_yscale("log" if log else "linear")
        if min(xs) == max(xs):
            ax.set_xlim(*_widen(xs[0], xs[0], False))
        if min(ys) == max(ys):
            ax.set_ylim(*_widen(ys[0], ys[0], log))
        ax.set_ylabel("value" + (" (log scale)" if log else ""))
        ax.legend(fontsize=7, loc="best", title=f"{max_legend} of {len(series)}" if len(series) > max_legend else None)
    return fig


def plot_run(rows: list[dict], path: str) -> str:
    """Write :func:`plot_figure` of the rows as a PNG at path (atomically); returns path."""
    tmp = f"{path}.tmp{os.getpid()}.png"
    plot_figure(rows).savefig(tmp, dpi=100)
    os.replace(tmp, path)
    return path


def tensorboard_available() -> bool:
    """Whether torch.utils.tensorboard can write events here (the ``tensorboard`` package is installed)."""
    return importlib.util.find_spec("tensorboard") is not None


class TensorBoard:
    """The run's scalars and image grids as TensorBoard events in ``run_dir`` (``tensorboard --logdir runs``), the
    x axis in images shown (nimg), so that runs with different batch sizes line up. metrics.jsonl stays the source
    of truth; ``purge_nimg`` (on resume) drops the events a killed run wrote after its checkpoint."""

    def __init__(self, run_dir: str, purge_nimg: int | None = None):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise ImportError("TensorBoard events need the tensorboard package: pip install 'gankern[tensorboard]'"
                              ) from e
        self.writer = SummaryWriter(run_dir, purge_step=purge_nimg)

    def scalars(self, row: dict) -> None:
        """Every finite number of a metric row (step and kimg apart), at the row's kimg * 1000."""
        nimg = round(row["kimg"] * 1000)
        for k, v in row.items():
            if k not in _NOT_PLOTTED and isinstance(v, (int, float)) and not isinstance(v, bool):
                self.writer.add_scalar(k, v, nimg)
        self.writer.flush()

    def grid(self, tag: str, images: torch.Tensor, nimg: int, nrow: int | None = None) -> None:
        """images (N, C, H, W) in [-1, 1] as one image_grid (``nrow`` images a row)."""
        self.writer.add_image(tag, image_grid(images, nrow), nimg, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class Progress:
    """tqdm's bar on stderr over the images of a run (a bar in terminals and notebooks; where stderr is not a
    terminal, e.g. a log file, one line every 30 s): images/s, ETA and the latest losses.
    ``update(nimg, info)`` moves the bar to nimg images; ``write(line)`` prints above it."""

    def __init__(self, total_images: int, start: int = 0, enabled: bool = True):
        from tqdm.auto import tqdm
        tty = getattr(sys.stderr, "isatty", lambda: False)()
        self.bar = tqdm(total=total_images, initial=start, unit="img", unit_scale=True, disable=not enabled,
                        dynamic_ncols=True, mininterval=0.5 if tty else 30.0, file=sys.stderr)

    def update(self, nimg: int, info: str = "") -> None:
        self.bar.update(nimg - self.bar.n)
        if info:
            self.bar.set_postfix_str(info, refresh=False)

    def write(self, line: str) -> None:
        if not self.bar.disable:
            self.bar.write(line, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()
