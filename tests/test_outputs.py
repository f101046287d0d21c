"""What a run writes for people: matplotlib's plot.png (panels per group, kimg on x, log scale where values span
decades, no degenerate axis), TensorBoard events (scalars and grids read back), grids in the suffix's format, and
tqdm progress bars (training and FID features)."""
import io
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from tqdm import tqdm

from gankern.train import outputs


def _event_accumulator():
    pytest.importorskip("tensorboard", reason="TensorBoard events need the tensorboard package")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    return EventAccumulator


def _rows(n=30):
    rows = [{"step": 0, "kimg": 0.0, "fid_digits": 120.0, "kid_digits_x1000": 80.0}]
    for s in range(1, n + 1):
        rows.append({"step": s, "kimg": s * 0.064, "img_per_s": 900.0, "D/loss": 2.0 * 0.8 ** s,
                     "D/real": 1 - 0.1 * s, "G/loss": 0.7 + 0.01 * s, "G/gnorm": 3.0, "D/gnorm": 5.0,
                     "sigma/D.conv1": 1.0 + 0.01 * s})
    rows.append({"step": n, "kimg": n * 0.064, "fid_digits": 0.9, "kid_digits_x1000": 0.2})
    return rows


def _panels(fig):
    return {ax.get_title().split(" (")[0]: ax for ax in fig.axes if ax.get_visible()}


def test_plot_has_a_labelled_panel_per_group_with_log_scale_where_values_span_decades(tmp_path):
    fig = outputs.plot_figure(_rows())
    panels = _panels(fig)
    assert set(panels) == {"D/*", "G/*", "metrics", "speed", "sigmas", "gradient norms"}
    for name, ax in panels.items():
        assert ax.get_xlabel().startswith("kimg"), name
        assert ax.get_ylabel().startswith("value"), name
        lo, hi = ax.get_xlim()
        assert lo <= 0.064 and hi >= 30 * 0.064, name                    # kimg on x
    assert panels["metrics"].get_yscale() == "log"                        # FID 120 -> 0.9, KID 80 -> 0.2
    assert panels["D/*"].get_yscale() == "linear"                         # D/real goes negative
    assert panels["G/*"].get_yscale() == "linear"                         # 0.71 .. 1.0
    assert {t.get_text() for t in panels["D/*"].get_legend().get_texts()} == {"D/loss", "D/real"}
    assert {t.get_text() for t in panels["gradient norms"].get_legend().get_texts()} == {"D/gnorm", "G/gnorm"}
    path = outputs.plot_run(_rows(), str(tmp_path / "plot.png"))
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (1280, 960)             # 2 columns x 3 rows of panels
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]          # no temp file left


@pytest.mark.parametrize("rows", [
    [{"step": 0, "kimg": 0.0, "fid_digits": 50.0}],                       # the first snapshot of a run
    [{"step": 50, "kimg": 3.2, "D/loss": 0.5, "G/loss": 0.5}],            # one log row, equal values
    [{"step": s, "kimg": s / 10, "G/loss": 2.0} for s in range(3)],       # a constant series
])
def test_plot_of_a_single_row_or_constant_series_has_no_degenerate_axis(rows, tmp_path):
    fig = outputs.plot_figure(rows)
    for ax in _panels(fig).values():
        for lo, hi in (ax.get_xlim(), ax.get_ylim()):
            assert hi - lo > 1e-2 * max(abs(lo), abs(hi), 1), (ax.get_title(), lo, hi)
        xs = [x for line in ax.get_lines() for x in line.get_xdata()]
        ys = [y for line in ax.get_lines() for y in line.get_ydata()]
        assert all(ax.get_xlim()[0] < x < ax.get_xlim()[1] for x in xs)   # every point inside the axes
        assert all(ax.get_ylim()[0] < y < ax.get_ylim()[1] for y in ys)
    outputs.plot_run(rows, str(tmp_path / "plot.png"))


def test_plot_counts_nan_and_inf_instead_of_hiding_them():
    rows = [{"step": s, "kimg": s / 10, "D/loss": v, "G/loss": float("nan")}
            for s, v in enumerate([0.5, 0.4, float("nan"), float("inf")])]
    panels = _panels(outputs.plot_figure(rows))
    assert panels["D/*"].get_title() == "D/* (2 NaN/Inf values not drawn)"
    assert panels["G/*"].get_title() == "G/* (4 NaN/Inf values not drawn)"
    assert [t.get_text() for t in panels["G/*"].texts] == ["only NaN/Inf values"]
    assert [t.get_text() for t in outputs.plot_figure([]).axes[0].texts] == ["nothing logged yet"]


def test_plot_names_at_most_max_legend_series_of_a_large_group():
    rows = [{"step": 1, "kimg": 0.1, **{f"sigma/D.l{i:02d}": 1.0 + i for i in range(25)}},
            {"step": 2, "kimg": 0.2, **{f"sigma/D.l{i:02d}": 1.1 + i for i in range(25)}}]
    ax = _panels(outputs.plot_figure(rows, max_legend=10))["sigmas"]
    assert len(ax.get_lines()) == 25 and len(ax.get_legend().get_texts()) == 10
    assert ax.get_legend().get_title().get_text() == "10 of 25"


def test_tensorboard_events_hold_the_rows_and_the_grid(tmp_path):
    EventAccumulator = _event_accumulator()
    assert outputs.tensorboard_available()
    tb = outputs.TensorBoard(str(tmp_path))
    rows = _rows(3)
    for r in rows:
        tb.scalars(r)
    images = torch.rand(4, 1, 8, 8) * 2 - 1
    tb.grid("fakes", images, 192)
    tb.close()
    ea = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0, "images": 0}).Reload()
    tags = set(ea.Tags()["scalars"])
    assert tags == {"fid_digits", "kid_digits_x1000", "img_per_s", "D/loss", "D/real", "G/loss", "G/gnorm",
                    "D/gnorm", "sigma/D.conv1"}
    loss = ea.Scalars("D/loss")
    assert [e.step for e in loss] == [64, 128, 192]                       # x = images shown
    assert np.allclose([e.value for e in loss], [2.0 * 0.8 ** s for s in (1, 2, 3)])
    assert [e.step for e in ea.Scalars("fid_digits")] == [0, 192]
    (img,) = ea.Images("fakes")
    decoded = np.asarray(Image.open(io.BytesIO(img.encoded_image_string)))
    assert img.step == 192 and np.array_equal(decoded, outputs.image_grid(images))


def test_tensorboard_purge_drops_events_written_after_the_resumed_checkpoint(tmp_path):
    EventAccumulator = _event_accumulator()
    tb = outputs.TensorBoard(str(tmp_path))
    for s in range(1, 5):
        tb.scalars({"step": s, "kimg": s / 10, "G/loss": float(s)})
    tb.close()
    tb = outputs.TensorBoard(str(tmp_path), purge_nimg=300)              # resumed from the step at 0.2 kimg
    tb.scalars({"step": 3, "kimg": 0.3, "G/loss": 30.0})
    tb.close()
    ea = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0}).Reload()
    assert [(e.step, e.value) for e in ea.Scalars("G/loss")] == [(100, 1.0), (200, 2.0), (300, 30.0)]


@pytest.mark.parametrize("suffix,fmt", [(".png", "PNG"), (".jpg", "JPEG"), (".JPEG", "JPEG"), (".webp", "WEBP")])
def test_save_grid_writes_the_format_the_suffix_names(tmp_path, suffix, fmt):
    images = torch.rand(9, 3, 16, 16) * 2 - 1
    path = outputs.save_grid(images, str(tmp_path / f"grid{suffix}"))
    with Image.open(path) as im:
        assert im.format == fmt and im.size == (3 * 66 + 2, 3 * 66 + 2)
        if fmt == "PNG":
            assert np.array_equal(np.asarray(im), outputs.image_grid(images))
    assert len(list(tmp_path.iterdir())) == 1
    with pytest.raises(ValueError, match=r"'.txt' names no image format; use one of \.png, \.jpg"):
        outputs.save_grid(images, str(tmp_path / "grid.txt"))
    with pytest.raises(ValueError, match="no suffix"):
        outputs.image_format("grid")


def test_training_progress_is_tqdm_over_images(capsys):
    bar = outputs.Progress(640, start=128)
    assert isinstance(bar.bar, tqdm) and bar.bar.unit == "img"
    assert (bar.bar.total, bar.bar.n) == (640, 128)
    bar.update(320, "D/loss=0.100")
    bar.write("step 5: fid=1")
    bar.update(640)
    bar.close()
    err = capsys.readouterr().err
    assert "step 5: fid=1" in err and "640/640" in err and "D/loss=0.100" in err and "img/s" in err
    assert bar.bar.mininterval == 30.0                                    # stderr is no terminal here: a log file
    quiet = outputs.Progress(640, enabled=False)
    quiet.update(640, "x")
    quiet.write("hidden")
    quiet.close()
    assert capsys.readouterr().err == ""


def test_fid_feature_progress_is_tqdm(capsys):
    from gankern.metrics import compute_stats
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 5))
    stats = compute_stats(torch.rand(7, 3, 4, 4), net, batch_size=3, progress=True)
    err = capsys.readouterr().err
    assert "features: 100%" in err and "7/7" in err and "img/s" in err
    assert stats.n == 7 and not math.isnan(float(stats.mean_cov()[0].sum()))
    compute_stats(torch.rand(7, 3, 4, 4), net, batch_size=3, progress=False)
    assert capsys.readouterr().err == ""


def test_jsonl_log_skips_a_half_written_line_and_truncates(tmp_path):
    log = outputs.JsonlLog(str(tmp_path / "metrics.jsonl"))
    for s in range(3):
        log.append({"step": s, "kimg": s / 10})
    with open(log.path, "a") as f:
        f.write('{"step": 3, "ki')
    assert [r["step"] for r in log.rows()] == [0, 1, 2]
    log.truncate(1)
    assert [json.loads(line)["step"] for line in open(log.path)] == [0, 1]
