"""SinGAN on scikit-learn's sample photograph (offline): trains coarse to fine on the CPU without NaN and its
reconstruction error falls, resume from a mid-scale checkpoint is bit-identical, ``gankern generate`` samples any
size and injects an image at a chosen scale, bad input gets a message; the pyramid follows the official defaults."""
import glob
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from gankern.cli import main
from gankern.data import open_dataset
from gankern.models.singan import pyramid_shapes, widths
from gankern.train import Trainer
from gankern.train.cli import load_generator
from gankern.train.config import named_config
from gankern.train.recipes.singan import SinGANOptions, n_scales

STEPS = 60                       # 3 scales of 20 steps


def _cfg():
    cfg = named_config("singan-cpu")            # sample:china at 32 px (32x21), coarsest shorter side 16
    o, t = cfg.options, cfg.train
    o.width, o.max_width, o.scale_factor, o.sifid_n = 8, 8, 0.6, 2      # ceil(log(16/32) / log(0.6)) + 1 = 3 scales
    t.kimg, t.log_steps, t.snap_steps, t.ckpt_steps, t.keep = STEPS / 1000, 5, 10, 10, 0
    return cfg


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("singan") / "run")
    Trainer(_cfg(), d, progress=False, tensorboard=False).train()
    return d


def _rows(run):
    return [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]


def test_pyramid_follows_the_official_defaults():
    o = SinGANOptions()
    assert n_scales(o, 256) == 10 and n_scales(o, 25) == 1          # 256 px down to 25 px at ~0.75
    shapes = pyramid_shapes(256, 256, 10, 25)
    assert shapes[0] == (25, 25) and shapes[-1] == (256, 256)
    r = shapes[-2][0] / 256
    assert abs(r - (25 / 256) ** (1 / 9)) < 0.01 and 0.75 < r < 0.8  # the fitted factor of a square image
    assert pyramid_shapes(171, 256, 10, 25)[0] == (25, 37)           # the shorter side is min_size
    assert widths(10) == [32] * 4 + [64] * 4 + [128] * 2
    with pytest.raises(ValueError, match="shorter side below recipe.min_size"):
        pyramid_shapes(12, 32, 3, 16)


def test_single_image_data():
    ds = open_dataset("sample:flower", 64)
    assert ds.images.shape == (1, 3, 43, 64) and len(ds) == 1
    assert -1 <= ds.images.min() < ds.images.max() <= 1
    with pytest.raises(ValueError, match="sample:china, sample:flower"):
        open_dataset("sample:nope", 64)


def test_trains_and_reconstruction_error_falls(run):
    rows = _rows(run)
    assert [r["step"] for r in rows] == list(range(5, STEPS + 1, 5))
    assert all(math.isfinite(v) for r in rows for v in r.values())
    assert [r["rec/scale"] for r in rows] == [0.0] * 4 + [1.0] * 4 + [2.0] * 4
    assert rows[0]["G/rec"] > 3 * rows[3]["G/rec"]                    # scale 0 learns to reconstruct from z_rec
    assert rows[0]["rec/rmse"] > 2 * rows[3]["rec/rmse"]              # the logged metric (G in eval mode) too
    assert rows[-1]["sifid_digits"] < 0.5 * rows[0]["sifid_digits"]   # and the samples' patches near the image's
    G = load_generator(run)[0]
    real = open_dataset("sample:china", 32).images
    assert G.trained == 2 and tuple(G.pyramid()[-1]) == tuple(real.shape[-2:])
    rmse = (G.reconstruct() - real).pow(2).mean().sqrt().item()
    assert rmse < 0.5 * real.pow(2).mean().sqrt().item()             # an untrained G reconstructs ~0
    assert abs(rmse - rows[-1]["rec/rmse"]) < 1e-4
    assert all(0 < r["sifid_digits"] < 1e3 for r in rows)
    amp = G.noise_amp.tolist()
    assert amp[0] == 1.0 and all(0 < a < 0.1 for a in amp[1:])       # 0.1 x RMSE of the upsampled reconstruction


def test_resume_mid_scale_is_bit_identical(run, tmp_path):
    b = str(tmp_path / "b")
    os.makedirs(b)
    shutil.copy(os.path.join(run, "ckpt-00000030.pt"), b)           # mid scale 1; then its lr decay and scale 2
    Trainer(_cfg(), b, progress=False, tensorboard=False).resume().train()
    want, got = (torch.load(os.path.join(d, f"ckpt-{STEPS:08d}.pt"), weights_only=True) for d in (run, b))
    for k in ("G", "D", "G_ema", "opt_G", "opt_D", "recipe"):
        assert _same(want[k], got[k]), k
    assert got["recipe"]["done"] == STEPS


@pytest.mark.slow
def test_sigkill_then_resume_from_the_cli_matches_the_uninterrupted_run(run, tmp_path):
    args = [sys.executable, "-m", "gankern", "train", "--config", "singan-cpu", "--kimg", str(STEPS / 1000), "--snap",
            "10", "--keep", "0", "--no-tensorboard", "-q", "--outdir", str(tmp_path), "--set", "train.log_steps=5",
            *[a for kv in ("width=8", "max_width=8", "scale_factor=0.6", "sifid_n=2") for a in ("--set", f"recipe.{kv}")]]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while not glob.glob(str(tmp_path / "0*" / "ckpt-0000003*.pt")) and time.time() - t0 < 100 and p.poll() is None:
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait()
    (b,) = glob.glob(str(tmp_path / "0*"))
    killed_at = int(sorted(glob.glob(os.path.join(b, "ckpt-*.pt")))[-1][-11:-3])
    assert 30 <= killed_at < STEPS, killed_at                          # mid scale 1 (steps 20..39), not the end
    r = subprocess.run([sys.executable, "-m", "gankern", "train", "--resume", b, "-q"], env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    want, got = (torch.load(os.path.join(d, f"ckpt-{STEPS:08d}.pt"), weights_only=True) for d in (run, b))
    for k in ("G", "D", "G_ema", "opt_G", "opt_D", "recipe"):
        assert _same(want[k], got[k]), k


def _same(a, b) -> bool:
    """a and b equal exactly (nested dicts / lists of tensors and numbers)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(map(_same, a, b))
    return a == b


def test_generate_any_size_from_the_cli(run, tmp_path):
    out = str(tmp_path / "g.png")
    assert main(["generate", "--run", run, "--n", "4", "--size", "40x24", "--out", out]) == 0
    grid = np.asarray(Image.open(out))
    assert grid.shape == (2 * (24 + 2) + 2, 2 * (40 + 2) + 2, 3)     # 2 x 2 tiles of 40 x 24
    assert main(["generate", "--run", run, "--n", "4", "--size", "40x24", "--out", str(tmp_path / "h.png")]) == 0
    assert np.array_equal(grid, np.asarray(Image.open(tmp_path / "h.png")))
    G, _, _, recipe = load_generator(run)
    z = torch.randn(3, 1)
    tall = recipe.sample(G, z, (50, 20))
    assert tall.shape == (3, 3, 50, 20) and torch.isfinite(tall).all()
    assert G.pyramid((50, 20))[0] == (round(16 * 50 / 21), round(24 * 20 / 32))   # noise maps scaled alike
    torch.testing.assert_close(recipe.sample(G, z[1:2]), recipe.sample(G, z)[1:2])  # sample i: not a function of n
    assert not torch.equal(tall[0], tall[1])


def test_injection_and_start_scale(run, tmp_path):
    G, _, _, recipe = load_generator(run)
    S = G.trained
    paint = torch.full((1, 3, 21, 32), -0.8)
    paint[:, 0, :, :16] = 0.8                                        # red left half, dark right half
    out = recipe.sample(G, torch.randn(4, 1), start=1, inject=paint)
    assert out.shape == (4, 3, 21, 32)
    assert (out[:, 0, :, :16].mean() - out[:, 0, :, 16:].mean()).item() > 0.5    # the painting's layout is kept
    rec = G.reconstruct()
    near, far = (recipe.sample(G, torch.randn(4, 1), start=s) for s in (S, 0))
    assert (near - rec).pow(2).mean() < 0.5 * (far - rec).pow(2).mean()           # layout of the reconstruction
    png = tmp_path / "paint.png"
    Image.fromarray(((paint[0].permute(1, 2, 0).numpy() + 1) * 127.5).astype(np.uint8)).save(png)
    out = str(tmp_path / "inj.png")
    assert main(["generate", "--run", run, "--n", "2", "--inject", str(png), "--scale-start", str(S),
                 "--out", out]) == 0
    grid = np.asarray(Image.open(out)).astype(float)
    assert grid[:, :, 0].mean() > grid[:, :, 2].mean()
    black, white = tmp_path / "black.png", tmp_path / "white.png"         # harmonization's mask: output kept where 1
    Image.fromarray(np.zeros((21, 32), np.uint8)).save(black)
    Image.fromarray(np.full((21, 32), 255, np.uint8)).save(white)
    def masked(mask, seed):
        path = str(tmp_path / f"m{mask.stem}{seed}.png")
        assert main(["generate", "--run", run, "--n", "2", "--inject", str(png), "--scale-start", str(S), "--mask",
                     str(mask), "--seed", str(seed), "--out", path]) == 0
        return np.asarray(Image.open(path)).astype(float)
    assert np.array_equal(masked(white, 0), grid)                    # all white: the output everywhere
    assert not np.array_equal(masked(white, 1), grid)                # (which depends on the noise)
    assert np.array_equal(masked(black, 0), masked(black, 1))        # all black: the injected image, no noise left
    assert main(["generate", "--run", run, "--mask", str(black), "--out", out]) == 2


def test_bad_input_gets_a_message(run, tmp_path, capsys):
    out = str(tmp_path / "x.png")
    for size in ("64", "0x5", "axb"):
        with pytest.raises(SystemExit):
            main(["generate", "--run", run, "--size", size, "--out", out])
        assert "expected WxH" in capsys.readouterr().err
    assert main(["generate", "--run", run, "--scale-start", "7", "--out", out]) == 2
    assert "scale 7 is out of range: this SinGAN has scales 0..2" in capsys.readouterr().err
    assert main(["generate", "--run", run, "--size", "40x24", "--scale-start", "1", "--out", out]) == 2
    assert "sample it at the training size" in capsys.readouterr().err
    assert main(["generate", "--run", run, "--inject", str(tmp_path / "none.png"), "--out", out]) == 2
    assert "no such image file" in capsys.readouterr().err
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"recipe": "classic"}))
    assert main(["generate", "--run", str(other), "--size", "40x24", "--out", out]) == 2
    assert "--size: SinGAN options" in capsys.readouterr().err
    cfg = _cfg()
    cfg.train.resolution = 16                                        # 16x11: shorter side below min_size 16
    with pytest.raises(ValueError, match="raise --res"):
        Trainer(cfg, str(tmp_path / "small"), progress=False, tensorboard=False).train()
