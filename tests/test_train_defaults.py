"""Train-level defaults a recipe decides (StyleGAN2's cfg: batch, G_ema's half-life and ramp-up), under what the user
sets; the log rows' timing and memory; Inception FID at snapshots with its real statistics cached in the run."""
import json

import pytest
import torch

from gankern.cli import main
from gankern.train.config import named_config
from test_train import rows, tiny


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
    assert _ema(json.loads(_dry_other(capsys, "pggan"))) == (16, 11.1, 0.0)        # the official beta 0.999 at 16
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


def test_log_rows_carry_seconds_per_kimg_and_peak_memory(tmp_path, monkeypatch):
    from gankern.train import Trainer
    monkeypatch.setattr("gankern.train.snapshots.plot_run", lambda *a, **k: None)
    Trainer(tiny("dcgan", steps=4, batch=8, log_steps=2, snap_steps=4, ckpt_steps=4, grid=4), str(tmp_path),
            progress=False).train()
    ticks = [r for r in rows(tmp_path) if "img_per_s" in r]
    assert [r["step"] for r in ticks] == [2, 4]
    mem = "resources/peak_mem_gb" if torch.cuda.is_available() else "resources/peak_rss_gb"
    for r in ticks:
        assert r["timing/s_per_kimg"] == pytest.approx(1000 / r["img_per_s"], rel=0.02)
        assert 0 < r[mem] < 1024


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory):
    """A randomly initialized FID Inception-v3 state dict (the loader checks keys and shapes, not values), He-scaled
    so that its features are not ~0."""
    from gankern.metrics import inception as inc
    torch.manual_seed(0)
    m = inc.FIDInceptionV3()
    for mod in m.modules():
        if isinstance(mod, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(mod.weight, nonlinearity="relu")
    path = tmp_path_factory.mktemp("w") / inc.WEIGHTS_NAME
    torch.save({k: v for k, v in m.state_dict().items() if not k.endswith("num_batches_tracked")}, path)
    return str(path)


def _image_folder(path, n=4):
    import numpy as np
    from PIL import Image
    path.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path / f"{i}.png")
    return str(path)


class _First(torch.nn.Module):
    """The FID Inception's first 64 pool features: a 2048 x 2048 eigh takes seconds on a CPU, 64 x 64 none."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)[0][:, :64]


def _fid_train(out, data, *args) -> int:
    return main(["train", "--config", "dcgan", "--data", data, "--res", "8", "--batch", "4", "--kimg", "0.008",
                 "--snap", "2", "--device", "cpu", "--outdir", str(out), "-q", "--no-tensorboard", "--set",
                 "model.g_ch=8", "--set", "model.d_ch=8", "--set", "train.metric_samples=3", "--set", "train.grid=4",
                 *args])


def test_inception_fid_at_snapshots_with_the_reals_cached(tmp_path, monkeypatch, capsys, inception_weights):
    import os

    from gankern.metrics import inception as inc
    from gankern.train import inception_fid
    monkeypatch.setattr("gankern.train.snapshots.plot_run", lambda *a, **k: None)
    data = _image_folder(tmp_path / "imgs")
    # without the weights: auto is none with a notice; fid is an error before any run directory is made
    monkeypatch.setenv(inc.WEIGHTS_ENV, str(tmp_path / "absent.pth"))
    assert _fid_train(tmp_path / "r0", data, "--metrics", "fid") == 2
    assert "--metrics fid: $GANKERN_INCEPTION_WEIGHTS=" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "r0") or not os.listdir(tmp_path / "r0")
    assert main(["train", "--config", "dcgan", "--data", data, "--dry-run"]) == 0
    out = capsys.readouterr()
    assert "no FID Inception weights" in out.err and json.loads(out.out)["train"]["metrics"] == "auto"
    assert main(["train", "--config", "gan-ring", "--metrics", "fid", "--dry-run"]) == 2
    assert "2-D points" in capsys.readouterr().err
    # with them: auto picks fid (config.json keeps it), a row at each snapshot, the reals' statistics once
    monkeypatch.setenv(inc.WEIGHTS_ENV, inception_weights)
    load = inception_fid.load_fid_inception            # the loader finds and checks the weights; the FID runs on the
    monkeypatch.setattr(inception_fid, "load_fid_inception", lambda **k: _First(load(**k)))   # first 64 features
    real_passes = []
    compute = inception_fid.compute_stats
    monkeypatch.setattr(inception_fid, "compute_stats", lambda images, *a, **k: (
        real_passes.append(1) if isinstance(images, inception_fid._UnitImages) else None) or compute(images, *a, **k))
    out = tmp_path / "runs"
    assert _fid_train(out, data) == 0
    run = out / os.listdir(out)[0]
    assert json.loads((run / "config.json").read_text())["train"]["metrics"] == "fid"
    fids = [r["fid_inception"] for r in rows(run) if "fid_inception" in r]
    assert len(fids) == 2 and all(f > 0 and f == f for f in fids), fids               # steps 0 and 2
    assert len(real_passes) == 1 and os.path.exists(run / inception_fid.REALS)
    mtime = os.stat(run / inception_fid.REALS).st_mtime_ns
    assert main(["train", "--resume", str(run), "--kimg", "0.016", "--device", "cpu", "-q"]) == 0
    fid_rows = [r for r in rows(run) if "fid_inception" in r]
    assert [r["step"] for r in fid_rows] == [0, 2, 4] and len(real_passes) == 1       # resumed: read, not recomputed
    assert os.stat(run / inception_fid.REALS).st_mtime_ns == mtime
