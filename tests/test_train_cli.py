"""The `train`/`generate` CLI, the digits-FID extractor, and a short DCGAN run on the digits whose FID falls."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from gankern.cli import main
from gankern.train import digits_features as df
from gankern.train.config import RunConfig, named_config, set_field


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_list_configs_and_help(capsys):
    assert main(["train", "--list-configs"]) == 0
    out = capsys.readouterr().out
    for name in ("gan", "dcgan", "cgan", "cgan-proj", "wgan", "wgan-gp", "lsgan", "sngan", "sagan"):
        assert f"\n{name} " in "\n" + out
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--resume DIR" in capsys.readouterr().out


def test_dry_run_applies_overrides_and_config_round_trips(capsys):
    assert main(["train", "--config", "wgan-gp", "--kimg", "3", "--set", "loss.gp=5", "--set",
                 "opt.g_betas=0,0.99", "--dry-run"]) == 0
    cfg = RunConfig.from_json(capsys.readouterr().out)
    assert cfg.loss.gp == 5 and cfg.opt.g_betas == (0.0, 0.99) and cfg.train.kimg == 3 and cfg.opt.n_critic == 5
    assert RunConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="SECTION.FIELD"):
        set_field(named_config("dcgan"), "loss.nope=1")
    assert main(["train", "--config", "nope", "--dry-run"]) == 2


def test_digits_extractor_classifies_and_fid_orders_sets():
    net = df.extractor()
    from gankern.data import digits
    ds = digits(16)
    acc = (net.logits(ds.images).argmax(1) == ds.labels).float().mean().item()
    assert acc > 0.97
    good = df.fid_kid(ds.images[:900], 16)
    noise = df.fid_kid(torch.rand(900, 1, 16, 16) * 2 - 1, 16)
    blurred = df.fid_kid(torch.nn.functional.avg_pool2d(ds.images[:900], 3, 1, 1), 16)
    assert good["fid_digits"] < blurred["fid_digits"] < noise["fid_digits"]
    assert good["kid_digits_x1000"] < blurred["kid_digits_x1000"] < noise["kid_digits_x1000"]


def test_dcgan_on_digits_fid_falls_and_generate_writes_grid(tmp_path, capsys):
    args = ["train", "--config", "dcgan", "--data", "digits", "--res", "16", "--kimg", "19.2", "--batch", "64",
            "--snap", "150", "--outdir", str(tmp_path), "-q", "--set", "train.metric_samples=500",
            "--set", "model.g_ch=16", "--set", "model.d_ch=16"]
    assert main(args) == 0                                           # 300 steps
    (run,) = [os.path.join(tmp_path, d) for d in os.listdir(tmp_path)]
    rows = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
    fid = [r["fid_digits"] for r in rows if "fid_digits" in r]
    assert len(fid) == 3 and fid[2] < 0.5 * fid[0], fid
    assert os.path.exists(os.path.join(run, "fakes00000300.png")) and os.path.exists(os.path.join(run, "plot.png"))
    out = str(tmp_path / "grid.png")
    assert main(["generate", "--run", run, "--n", "16", "--out", out, "--truncation", "1.0"]) == 0
    img = np.asarray(Image.open(out))
    assert img.shape == (4 * 66 + 2, 4 * 66 + 2, 3) and img.std() > 10   # 4x4 tiles of 16 px shown at 64 px
    assert main(["generate", "--run", str(tmp_path / "none"), "--out", out]) == 2


def test_resume_without_checkpoint_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "config.json").write_text(named_config("gan").to_json())
    assert main(["train", "--resume", str(tmp_path), "-q"]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "missing"), "-q"]) == 2
