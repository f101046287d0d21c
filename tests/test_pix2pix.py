"""pix2pix on the built-in digits-edges pairs: trains without NaN and its held-out L1 / PSNR improve, the recipe's
linear lr decay is the step taken with a scaled lr, resume from a checkpoint is bit-identical, and ``gankern
translate`` works from the CLI."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from gankern.train import Trainer
from gankern.train.config import named_config
from gankern.train.recipes.pix2pix import LinearDecay, psnr_ssim


def _cfg(steps=30):
    cfg = named_config("pix2pix")
    o, t = cfg.options, cfg.train
    o.ngf, o.ndf, o.val_n, o.lr, o.d_layers = 8, 8, 48, 2e-3, 2
    t.batch, t.kimg, t.log_steps, t.snap_steps, t.ckpt_steps, t.workers = 16, steps * 16 / 1000, 10, 10, 10, 0
    return cfg


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("p2p") / "run")
    Trainer(_cfg(), d, progress=False).train()
    return d


def _rows(d):
    return [json.loads(line) for line in open(os.path.join(d, "metrics.jsonl"))]


def test_trains_and_held_out_l1_psnr_improve(run):
    rows = _rows(run)
    assert [r["step"] for r in rows] == [10, 20, 30]
    assert all(np.isfinite(v) for r in rows for v in r.values())
    assert rows[-1]["val/l1"] < 0.9 * rows[0]["val/l1"] and rows[-1]["G/l1"] < rows[0]["G/l1"]
    assert rows[-1]["val/psnr"] > rows[0]["val/psnr"]


def test_resume_is_bit_identical(run, tmp_path):
    b = str(tmp_path / "b")
    os.makedirs(b)
    shutil.copy(os.path.join(run, "ckpt-00000010.pt"), b)
    Trainer(_cfg(), b, progress=False).resume().train()
    want, got = (torch.load(os.path.join(d, "ckpt-00000030.pt"), weights_only=True) for d in (run, b))
    for k in ("G", "D", "opt_G", "opt_D"):
        for name, v in (want[k].items() if k in "GD" else enumerate(want[k]["state"].values())):
            w = v if k in "GD" else v["exp_avg"]
            g = got[k][name] if k in "GD" else list(got[k]["state"].values())[name]["exp_avg"]
            assert torch.equal(w, g), (k, name)


def test_linear_decay_scales_the_adam_step():
    torch.manual_seed(0)
    nets = {"G": torch.nn.Linear(3, 2), "H": torch.nn.Linear(3, 2)}
    nets["H"].load_state_dict(nets["G"].state_dict())
    dec = LinearDecay(nets, total_steps=4, decay_from=0.5)
    assert [dec.factor(s) for s in range(4)] == [1.0, 1.0, 1 - 1 / 3, 1 - 2 / 3]
    x = torch.randn(5, 3)
    oG, oH = torch.optim.Adam(nets["G"].parameters(), 1e-2), torch.optim.Adam(nets["H"].parameters(), 1e-2 / 3)
    for net, opt in (("G", oG), ("H", oH)):
        dec.before(net)
        nets[net](x).square().sum().backward()
        opt.step()
    dec.after("G", 3)
    for p, q in zip(nets["G"].parameters(), nets["H"].parameters()):
        torch.testing.assert_close(p, q)


def test_psnr_ssim_of_identical_and_noisy_images():
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    psnr, ssim = psnr_ssim(x, x)
    assert psnr > 90 and abs(ssim.item() - 1) < 1e-4
    y = x + 0.2 * torch.randn_like(x)
    psnr, ssim = psnr_ssim(y, x)
    mse = ((y.clamp(-1, 1) - x) / 2).pow(2).flatten(1).mean(1)
    torch.testing.assert_close(psnr, (10 * torch.log10(1 / mse)).mean())
    assert 0 < ssim < 0.99 and psnr_ssim(x + 0.5 * torch.randn_like(x), x)[1] < ssim


def test_translate_cli(run, tmp_path, capsys):
    from gankern.cli import main
    from gankern.data import open_dataset
    a = open_dataset("digits-edges:val", 32).images[:3, :1]
    src = tmp_path / "in"
    src.mkdir()
    for i, img in enumerate(a):
        Image.fromarray(((img[0].numpy() + 1) * 127.5).round().astype(np.uint8)).save(src / f"e{i}.png")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "gankern", "translate", "--run", run, "--out", str(tmp_path / "out")]
    r = subprocess.run(cmd + ["--input", str(src)], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    outs = sorted(os.listdir(tmp_path / "out"))
    assert outs == ["e0.png", "e1.png", "e2.png"] and np.asarray(Image.open(tmp_path / "out" / "e1.png")).shape == (
        32, 32)
    assert main(cmd[3:] + ["--input", str(src), "--direction", "BA"]) == 2
    assert "A -> B only" in capsys.readouterr().err
    assert main(cmd[3:] + ["--input", str(tmp_path / "nothing")]) == 2
    assert "no such image or folder" in capsys.readouterr().err
