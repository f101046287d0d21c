"""Trainer core: every named config trains without NaN and its D separates reals from fakes; phases, n_critic, lazy
regularization, EMA, accumulation, AMP, NaN stop, checkpoints and in-process resume."""
import json
import os

import pytest
import torch

from gankern.train import CONFIGS, NonFiniteError, Trainer, named_config
from gankern.train import checkpoint


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)                 # the CI box has 2 cores shared by several jobs
    yield
    torch.set_num_threads(n)


def tiny(name, steps=200, batch=16, res=8, **train):
    cfg = named_config(name)
    t = cfg.train
    t.resolution, t.batch, t.kimg, t.log_steps = res, batch, batch * steps / 1000, 50
    t.snap_steps = t.ckpt_steps = 50 * max(1, steps // 100)
    t.metrics, t.grid = "none", 16
    for k, v in train.items():
        setattr(t, k, v)
    cfg.model.g_ch = cfg.model.d_ch = 8
    cfg.model.z_dim = 16
    return cfg


def rows(run):
    return [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]


@pytest.mark.parametrize("name", [n for n, (_, row) in CONFIGS.items() if row["recipe"] == "classic"])
def test_every_config_trains_without_nan_and_d_learns(name, tmp_path):
    cfg = tiny(name, steps=200)
    tr = Trainer(cfg, str(tmp_path), progress=False)
    g0 = [p.detach().clone() for p in tr.nets['G'].parameters()]
    last = tr.train()
    assert tr.step == 200 and last["step"] == 200
    for r in rows(tmp_path):
        assert all(v == v and abs(v) != float("inf") for k, v in r.items() if isinstance(v, float)), r
    # over the run, D scores reals above fakes (the sign every loss in the table asks of D)
    loss_rows = [r for r in rows(tmp_path) if "D/real" in r]
    assert sum(r["D/real"] - r["D/fake"] for r in loss_rows) > 0, loss_rows
    assert any((a - b).abs().max() > 1e-4 for a, b in zip(tr.nets['G'].parameters(), g0))
    assert os.path.exists(tmp_path / "fakes-latest.png") and os.path.exists(tmp_path / "plot.png")


def test_n_critic_and_lazy_regularization_count_optimizer_steps(tmp_path):
    cfg = tiny("dcgan-r1", steps=12, batch=8)
    cfg.opt.n_critic = 2
    tr = Trainer(cfg, str(tmp_path), progress=False)
    tr.train()
    d_steps = int(next(iter(tr.opt["D"].state.values()))["step"])
    g_steps = int(next(iter(tr.opt["G"].state.values()))["step"])
    assert g_steps == 12 and d_steps == 12 * 2 + 12 // 4          # reg phase at steps 0, 4, 8
    assert any("Dreg/r1" in r for r in rows(tmp_path))


def test_wgan_clipping_bounds_d_weights(tmp_path):
    tr = Trainer(tiny("wgan", steps=5, batch=8), str(tmp_path), progress=False)
    tr.train()
    assert max(p.abs().max().item() for p in tr.nets['D'].parameters()) <= 0.01 + 1e-7


def test_ema_rampup_formula(tmp_path):
    cfg = tiny("gan", steps=1, batch=8)
    cfg.train.ema_kimg, cfg.train.ema_rampup = 10.0, 0.5
    tr = Trainer(cfg, str(tmp_path), progress=False)
    with torch.no_grad():
        for p, q in zip(tr.nets['G'].parameters(), tr.G_ema.parameters()):
            p.fill_(1.0)
            q.fill_(0.0)
    tr.nimg = 32                     # half-life min(10000, 32 * 0.5) = 16 images -> beta = 0.5 ** (8 / 16)
    tr.update_ema()
    beta = 0.5 ** 0.5
    p = next(tr.G_ema.parameters())
    torch.testing.assert_close(p, torch.full_like(p, 1 - beta))


def test_accumulation_matches_full_batch(tmp_path):
    outs = []
    for accum in (1, 2):
        cfg = tiny("gan", steps=5, batch=8, accum=accum, ema_kimg=0.0)
        cfg.model.g_norm = "none"                     # BatchNorm statistics depend on the round size
        tr = Trainer(cfg, str(tmp_path / str(accum)), progress=False)
        tr.train()
        outs.append(torch.cat([p.flatten() for p in tr.nets['G'].parameters()]))
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("amp,name", [("bf16", "dcgan"), ("fp16", "wgan-gp"), ("fp16", "dcgan-r1")])
def test_autocast_trains_with_penalties(tmp_path, amp, name):
    cfg = tiny(name, steps=20, batch=8, amp=amp)
    tr = Trainer(cfg, str(tmp_path), progress=False)
    last = tr.train()
    assert all(v == v for v in last.values()) and tr.amp_dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    assert tr.scaler["D"].is_enabled() == (amp == "fp16")


def test_nan_stops_with_step_and_tensor_name_and_saves_state(tmp_path):
    tr = Trainer(tiny("dcgan", steps=20, batch=8), str(tmp_path / "a"), progress=False)
    with torch.no_grad():
        tr.nets['D'].head.out.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match=r"step 0: loss 'D/loss'"):
        tr.train()
    assert os.path.exists(tmp_path / "a" / "nonfinite-step00000000.pt")
    tr = Trainer(tiny("dcgan", steps=20, batch=8), str(tmp_path / "b"), progress=False)
    with torch.no_grad():
        tr.G_ema.fc[0].weight[0, 0] = float("inf")     # G_ema takes no part in the losses: the weight check finds it
    tr.cfg.train.ema_kimg = 0.0
    tr.update_ema = lambda: None
    with pytest.raises(NonFiniteError, match=r"step 20: tensor 'G_ema.fc.0.weight'"):
        tr.train()


def test_checkpoints_are_weights_only_with_retention(tmp_path):
    cfg = tiny("dcgan", steps=200, batch=8, keep=2)
    Trainer(cfg, str(tmp_path), progress=False).train()
    cks = checkpoint.list_checkpoints(str(tmp_path))
    assert [s for s, _ in cks] == [100, 200]
    s = torch.load(cks[-1][1], weights_only=True)
    for k in ("G", "D", "G_ema", "opt_G", "opt_D", "scaler_G", "scaler_D", "step", "nimg", "rng_cpu", "recipe",
              "config", "loader_position"):
        assert k in s, k
    assert s["step"] == 200 and s["nimg"] == 1600
    assert json.loads(s["config"]) == json.loads(open(tmp_path / "config.json").read())


def test_resume_continues_exactly(tmp_path):
    cfg = tiny("dcgan-improved", steps=40, batch=8, ckpt_steps=20, log_steps=10, snap_steps=20)
    full = Trainer(cfg, str(tmp_path / "full"), progress=False)
    full.train()
    crashing = Trainer(cfg, str(tmp_path / "part"), progress=False)
    run_phase = crashing.run_phase

    def crash_at_25(phase, step):
        if step == 25 and phase.name == "G":
            raise RuntimeError("crash")
        return run_phase(phase, step)
    crashing.run_phase = crash_at_25
    with pytest.raises(RuntimeError, match="crash"):
        crashing.train()
    part = Trainer(cfg, str(tmp_path / "part"), progress=False).resume()
    assert part.step == 20
    part.train()
    for k, v in full.G_ema.state_dict().items():
        assert torch.equal(v, part.G_ema.state_dict()[k]), k
    for k, v in full.nets["D"].state_dict().items():
        assert torch.equal(v, part.nets["D"].state_dict()[k]), k
    a = [r["G/loss"] for r in rows(tmp_path / "full") if "G/loss" in r]
    b = [r["G/loss"] for r in rows(tmp_path / "part") if "G/loss" in r]
    assert a == b and len(a) == 4


def test_latest_ignores_and_removes_half_written_checkpoints(tmp_path):
    cfg = tiny("gan", steps=100, batch=8)
    Trainer(cfg, str(tmp_path), progress=False).train()
    stale = tmp_path / ".ckpt-00000150.pt.tmp1234"
    stale.write_bytes(b"half a checkpoint")
    assert checkpoint.latest(str(tmp_path)).endswith("ckpt-00000100.pt")
    assert not stale.exists()
