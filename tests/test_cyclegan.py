"""CycleGAN on the built-in unpaired digits-styles: trains without NaN, its cycle loss and the held-out digits-FID of
B -> A fall, the image pool behaves as Shrivastava et al.'s history, resume from a checkpoint (pool included) is
bit-identical, and ``gankern translate`` runs both directions from the CLI."""
import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from gankern.cli import main
from gankern.train import Trainer
from gankern.train.config import named_config
from gankern.train.recipes.cyclegan import ImagePool


def _cfg():
    cfg = named_config("cyclegan")
    o, t = cfg.options, cfg.train
    o.ngf, o.ndf, o.n_blocks, o.d_layers, o.lr, o.pool = 8, 8, 2, 2, 2e-3, 6
    t.batch, t.kimg, t.log_steps, t.snap_steps, t.ckpt_steps, t.workers = 4, 20 * 4 / 1000, 10, 10, 10, 0
    return cfg


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("cyc") / "run")
    Trainer(_cfg(), d, progress=False).train()
    return d


def test_trains_and_cycle_loss_falls(run):
    rows = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
    assert [r["step"] for r in rows] == [10, 20]
    assert all(np.isfinite(v) for r in rows for v in r.values())
    assert rows[-1]["G/cycle"] < 0.8 * rows[0]["G/cycle"] and rows[-1]["G/idt"] < rows[0]["G/idt"]
    assert rows[-1]["val/fid_digits_BA"] < rows[0]["val/fid_digits_BA"]      # B -> A looks more like the digits


def test_resume_is_bit_identical_with_the_image_pool(run, tmp_path):
    b = str(tmp_path / "b")
    os.makedirs(b)
    shutil.copy(os.path.join(run, "ckpt-00000010.pt"), b)
    mid = torch.load(os.path.join(b, "ckpt-00000010.pt"), weights_only=True)
    assert mid["recipe"]["pool_A"].shape == (6, 3, 32, 32)           # full after 10 steps of 4
    Trainer(_cfg(), b, progress=False).resume().train()
    want, got = (torch.load(os.path.join(d, "ckpt-00000020.pt"), weights_only=True) for d in (run, b))
    for k in ("G", "D"):
        for name, v in want[k].items():
            assert torch.equal(v, got[k][name]), (k, name)
    for k in ("pool_A", "pool_B"):
        assert torch.equal(want["recipe"][k], got["recipe"][k])


def test_image_pool_returns_new_or_stored_fakes():
    pool, g = ImagePool(3), torch.Generator().manual_seed(0)
    first = torch.arange(3.0)[:, None]
    assert torch.equal(pool.query(first, g), first)                  # filling: the fakes themselves
    new = torch.full((64, 1), 9.0)
    out = pool.query(new, g)
    old = (out != 9).sum().item()
    assert 0 < old <= 3 and set(out.flatten().tolist()) <= {0.0, 1.0, 2.0, 9.0}
    assert ImagePool(0).query(new, g) is new


def test_translate_both_directions_from_the_cli(run, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(src / "x.png")
    for d in ("AB", "BA"):
        out = tmp_path / d
        assert main(["translate", "--run", run, "--input", str(src / "x.png"), "--out", str(out),
                     "--direction", d]) == 0
        assert np.asarray(Image.open(out / "x.png")).shape == (32, 32, 3)
    a, b = (np.asarray(Image.open(tmp_path / d / "x.png")) for d in ("AB", "BA"))
    assert not np.array_equal(a, b)
    assert main(["translate", "--run", str(tmp_path / "none"), "--input", str(src), "--out", str(tmp_path)]) == 2
    assert "no checkpoint" in capsys.readouterr().err
