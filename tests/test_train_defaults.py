"""Train-level defaults a recipe decides (StyleGAN2's cfg: batch, G_ema's half-life and ramp-up), under what the user
sets; the log rows' timing and memory; Inception FID at snapshots with its real statistics cached in the run."""
import json

import pytest

from gankern.cli import main
from gankern.train.config import named_config


def _dry(capsys, *args) -> dict:
    assert main(["train", "--config", "stylegan2", "--device", "cpu", "--dry-run", *args]) == 0
    return json.loads(capsys.readouterr().out)["train"]


def _ema(t: dict) -> tuple:
    return t["batch"], t["ema_kimg"], t["ema_rampup"]


def test_stylegan2_cfg_decides_batch_and_ema_unless_set(capsys, tmp_path):
    assert _ema(_dry(capsys, "--set", "recipe.cfg=paper256")) == (64, 20.0, 0.0)       # S2A's paper256: no ramp-up
    assert _ema(_dry(capsys, "--set", "recipe.cfg=stylegan2")) == (32, 10.0, 0.0)
    assert _ema(_dry(capsys, "--set", "recipe.cfg=cifar")) == (64, 500.0, 0.05)
    assert _ema(_dry(capsys)) == (32, 10.0, 0.05)                                   # auto at 32 px, one GPU
    assert _ema(_dry(capsys, "--res", "256")) == (16, 5.0, 0.05)                    # auto: batch 16, ema 16 * 10 / 32
    assert _ema(_dry(capsys, "--res", "256", "--gpus", "4")) == (64, 20.0, 0.05)    # auto scales with the GPUs
    # explicit values win, by flag or --set, whatever they equal
    assert _ema(_dry(capsys, "--set", "recipe.cfg=paper256", "--batch", "32")) == (32, 20.0, 0.0)
    assert _ema(_dry(capsys, "--set", "recipe.cfg=paper256", "--set", "train.ema_kimg=10",
                     "--set", "train.ema_rampup=0.05")) == (64, 10.0, 0.05)
    # the Python API's named config: the cfg's values at the default resolution
    t = named_config("stylegan").train
    assert (t.batch, t.ema_kimg, t.ema_rampup) == (32, 10.0, 0.05)
    # other recipes keep their rows' values
    assert _ema(json.loads(_dry_other(capsys, "pggan"))) == (16, 10.0, 0.05)
    # resume reads config.json back as written: the cfg's defaults are not applied again
    run = tmp_path / "run"
    run.mkdir()
    assert main(["train", "--config", "stylegan2", "--set", "recipe.cfg=paper256", "--device", "cpu",
                 "--dry-run"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    cfg["train"]["ema_kimg"] = 7.0
    (run / "config.json").write_text(json.dumps(cfg))
    assert main(["train", "--resume", str(run), "--device", "cpu", "--dry-run"]) == 0
    assert _ema(json.loads(capsys.readouterr().out)["train"]) == (64, 7.0, 0.0)


def _dry_other(capsys, name: str) -> str:
    assert main(["train", "--config", name, "--device", "cpu", "--dry-run"]) == 0
    return json.dumps(json.loads(capsys.readouterr().out)["train"])


def test_bad_cfg_is_a_message(capsys):
    assert main(["train", "--config", "stylegan2", "--set", "recipe.cfg=nope", "--dry-run"]) == 2
    assert "recipe.cfg must be one of" in capsys.readouterr().err
    with pytest.raises(ValueError, match="power of two"):
        from gankern.train.recipes.stylegan2 import StyleGAN2Options, StyleGAN2Recipe
        StyleGAN2Recipe.train_defaults(StyleGAN2Options(), 2)


def _tiny_run(name="dcgan", steps=4, **train):
    cfg = named_config(name)
    t = cfg.train
    t.resolution, t.batch, t.kimg, t.log_steps, t.snap_steps, t.ckpt_steps = 8, 8, 8 * steps / 1000, 2, steps, steps
    t.metrics, t.grid = "none", 4
    for k, v in train.items():
        setattr(t, k, v)
    cfg.model.g_ch = cfg.model.d_ch = 8
    cfg.model.z_dim = 16
    return cfg


def _rows(run) -> list[dict]:
    return [json.loads(line) for line in open(run / "metrics.jsonl")]


def test_log_rows_carry_seconds_per_kimg_and_peak_memory(tmp_path, monkeypatch):
    import torch

    from gankern.train import Trainer
    monkeypatch.setattr("gankern.train.snapshots.plot_run", lambda *a, **k: None)
    Trainer(_tiny_run(), str(tmp_path), progress=False).train()
    ticks = [r for r in _rows(tmp_path) if "img_per_s" in r]
    assert [r["step"] for r in ticks] == [2, 4]
    mem = "resources/peak_mem_gb" if torch.cuda.is_available() else "resources/peak_rss_gb"
    for r in ticks:
        assert r["timing/s_per_kimg"] == pytest.approx(1000 / r["img_per_s"], rel=0.02)
        assert 0 < r[mem] < 1024
