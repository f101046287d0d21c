"""What a run writes for people: image grids (PNG), metric rows (JSONL), a loss plot (PNG drawn with pillow, so
matplotlib is not needed) and a one-line progress bar with images/s and ETA."""
from __future__ import annotations

import json
import math
import os
import sys
import time

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


def save_grid(images: torch.Tensor, path: str, nrow: int | None = None) -> str:
    """Write ``image_grid(images)`` as a PNG (atomically) and return the path."""
    from PIL import Image
    tmp = path + ".tmp.png"
    Image.fromarray(image_grid(images, nrow)).save(tmp)
    os.replace(tmp, path)
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


_COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


def line_plot(panels: list[tuple[str, dict[str, tuple[list, list]]]], path: str, width: int = 640,
              panel_height: int = 240) -> str:
    """Stacked line plots drawn with pillow. panels: [(title, {series name: (xs, ys)})]; writes a PNG at path."""
    from PIL import Image, ImageDraw
    img = Image.new("RGB", (width, panel_height * max(len(panels), 1)), "white")
    d = ImageDraw.Draw(img)
    L, R, T, B = 60, 10, 22, 28
    for p, (title, series) in enumerate(panels):
        y0 = p * panel_height
        pts = [(x, y) for xs, ys in series.values() for x, y in zip(xs, ys) if y is not None and math.isfinite(y)]
        d.text((L, y0 + 4), title, fill="black")
        box = (L, y0 + T, width - R, y0 + panel_height - B)
        d.rectangle(box, outline="black")
        if not pts:
            continue
        xmin, xmax = min(x for x, _ in pts), max(x for x, _ in pts)
        ymin, ymax = min(y for _, y in pts), max(y for _, y in pts)
        xmax, ymax = (xmax if xmax > xmin else xmin + 1), (ymax if ymax > ymin else ymin + 1)

        def to_px(x, y):
            return (box[0] + (x - xmin) / (xmax - xmin) * (box[2] - box[0]),
                    box[3] - (y - ymin) / (ymax - ymin) * (box[3] - box[1]))
        for label, yv in ((f"{ymax:.3g}", ymax), (f"{ymin:.3g}", ymin)):
            d.text((4, to_px(xmin, yv)[1] - 6), label, fill="black")
        d.text((box[0], box[3] + 4), f"{xmin:g}", fill="black")
        d.text((box[2] - 40, box[3] + 4), f"{xmax:g}", fill="black")
        for i, (name, (xs, ys)) in enumerate(series.items()):
            c = _COLORS[i % len(_COLORS)]
            line = [to_px(x, y) for x, y in zip(xs, ys) if y is not None and math.isfinite(y)]
            if len(line) > 1:
                d.line(line, fill=c, width=2)
            elif line:
                d.ellipse([line[0][0] - 2, line[0][1] - 2, line[0][0] + 2, line[0][1] + 2], fill=c)
            d.text((box[2] - 150, box[1] + 4 + 12 * i), name, fill=c)
    tmp = path + ".tmp.png"
    img.save(tmp)
    os.replace(tmp, path)
    return path


def plot_run(rows: list[dict], path: str) -> str:
    """The run's loss plot: G/D losses, D outputs and (when present) FID/KID against kimg."""
    def series(keys):
        return {k: ([r["kimg"] for r in rows if k in r], [r[k] for r in rows if k in r]) for k in keys
                if any(k in r for r in rows)}
    loss_keys = sorted({k for r in rows for k in r if k.endswith("loss")})
    panels = [("losses vs kimg", series(loss_keys)), ("D outputs vs kimg", series(["D/real", "D/fake"]))]
    for k in ("fid_digits", "kid_digits_x1000"):                  # one panel each: their scales differ
        if any(k in r for r in rows):
            panels.append((f"{k} vs kimg", series([k])))
    return line_plot(panels, path)


class Progress:
    """A one-line progress bar on stderr: step, %, images/s, ETA and the latest losses."""

    def __init__(self, total_steps: int, batch: int, start_step: int = 0, enabled: bool = True, every_s: float = 1.0):
        self.total, self.batch, self.enabled, self.every = total_steps, batch, enabled, every_s
        self.t0, self.s0, self.last = time.time(), start_step, 0.0

    def rate(self, step: int) -> float:
        """Images per second since this bar started."""
        return (step - self.s0) * self.batch / max(time.time() - self.t0, 1e-9)

    def update(self, step: int, info: str = "", force: bool = False) -> None:
        now = time.time()
        if not self.enabled or (now - self.last < self.every and not force):
            return
        self.last = now
        ips = self.rate(step)
        eta = (self.total - step) * self.batch / max(ips, 1e-9)
        bar = "#" * int(20 * step / max(self.total, 1))
        sys.stderr.write(f"\r[{bar:<20}] {step}/{self.total} {100 * step / max(self.total, 1):5.1f}% "
                         f"{ips:7.1f} img/s ETA {int(eta) // 60}m{int(eta) % 60:02d}s {info}   ")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
