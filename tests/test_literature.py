"""The GANs of the literature beyond the classic table (issue 15): each trains a few steps on digits (or the 2-D ring)
without NaN, a quantity of its paper moves the right way, and an interrupted run resumes bit-identically."""
import pytest
import torch
from test_train import one_thread, rows, tiny  # noqa: F401  (one_thread: an autouse fixture)

from gankern.train import Trainer


def train(cfg, run_dir):
    tr = Trainer(cfg, str(run_dir), progress=False)
    tr.train()
    for r in rows(run_dir):
        assert all(v == v and abs(v) != float("inf") for v in r.values() if isinstance(v, float)), r
    return tr


def assert_resumes_exactly(cfg, tmp_path, crash_step):
    """A run that crashes after checkpoint ``ckpt_steps`` and resumes ends equal to an uninterrupted one."""
    full = train(cfg, tmp_path / "full")
    crashing = Trainer(cfg, str(tmp_path / "part"), progress=False)
    run_phase = crashing.run_phase

    def crash(phase, step):
        if step == crash_step:
            raise RuntimeError("crash")
        return run_phase(phase, step)
    crashing.run_phase = crash
    with pytest.raises(RuntimeError, match="crash"):
        crashing.train()
    part = Trainer(cfg, str(tmp_path / "part"), progress=False).resume()
    assert 0 < part.step < crash_step + 1
    part.train()
    for name, net in full.nets.items():
        for k, v in net.state_dict().items():
            assert torch.equal(v, part.nets[name].state_dict()[k]), (name, k)
    for k, v in (full.G_ema.state_dict() if full.G_ema is not None else {}).items():     # recipes without G_ema
        assert torch.equal(v, part.G_ema.state_dict()[k]), k
    drop = ("img_per_s", "timing/s_per_kimg", "resources/peak_mem_gb", "resources/peak_rss_gb")  # time, memory
    assert [{k: v for k, v in r.items() if k not in drop} for r in rows(tmp_path / "full")] == \
        [{k: v for k, v in r.items() if k not in drop} for r in rows(tmp_path / "part")]


def mean(rs, key):
    return sum(r[key] for r in rs) / len(rs)


def test_acgan_classifier_learns_generated_classes(tmp_path):
    cfg = tiny("acgan", steps=150, batch=32, log_steps=25, snap_steps=150, ckpt_steps=150)
    rs = [r for r in rows(train(cfg, tmp_path).run_dir) if "G/acc" in r]
    assert rs[0]["G/acc"] < 0.3 and rs[-1]["G/acc"] > 0.5, [r["G/acc"] for r in rs]   # chance: 0.1
    assert rs[-1]["D/acc_real"] > rs[0]["D/acc_real"]


def test_acgan_resumes_exactly(tmp_path):
    assert_resumes_exactly(tiny("acgan", steps=20, batch=8, log_steps=5, snap_steps=10, ckpt_steps=10), tmp_path, 15)


def test_infogan_information_term_rises_and_sweep_varies_one_code(tmp_path):
    cfg = tiny("infogan", steps=120, batch=32, log_steps=20, snap_steps=120, ckpt_steps=120)
    cfg.opt.d_lr = 1e-3                      # Q learns with D's optimizer: faster here, for a short test
    tr = train(cfg, tmp_path)
    rs = [r for r in rows(tmp_path) if "G/mi" in r]
    mi, mi_cat = [r["G/mi"] for r in rs], [r["G/mi_cat"] for r in rs]
    assert mi[-1] > mi[0] + 0.3 and mi_cat[-1] > mi_cat[0] + 0.3, (mi, mi_cat)       # nats; mi_cat <= log(10) = 2.3
    rec = tr.recipe
    img = rec.sweep(tr.G_ema, 0, rows=3, seed=1)
    assert img.shape == (30, 1, 8, 8)
    again = rec.sweep(tr.G_ema, 0, rows=3, seed=1)
    assert torch.equal(img, again)
    cont = rec.sweep(tr.G_ema, 2, rows=3, steps=5, seed=1).view(3, 5, -1)
    assert (cont[:, 0] - cont[:, -1]).abs().max() > 0 and cont.shape == (3, 5, 64)
    with pytest.raises(ValueError, match="codes 0..2"):
        rec.sweep(tr.G_ema, 3)
    from PIL import Image

    from gankern.cli import main                          # the same from the command line
    png = str(tmp_path / "sweep.png")
    assert main(["generate", "--run", str(tmp_path), "--sweep", "2", "--sweep-steps", "5", "--n", "3", "--seed", "1",
                 "--out", png]) == 0
    assert Image.open(png).size == (5 * 66 + 2, 3 * 66 + 2)            # 5 x 3 tiles (shown at 64 px) + padding
    assert main(["generate", "--run", str(tmp_path), "--sweep", "3", "--out", png]) == 2
    assert main(["generate", "--run", str(tmp_path), "--sweep", "0", "--sweep-steps", "1", "--out", png]) == 2


def test_infogan_resumes_exactly(tmp_path):
    assert_resumes_exactly(tiny("infogan", steps=20, batch=8, log_steps=5, snap_steps=10, ckpt_steps=10), tmp_path,
                           15)


def test_ring_metrics_count_modes_and_quality():
    from gankern.data.ring import ring, ring_centers, ring_metrics
    pts = ring(4000).images
    assert ring_metrics(pts) == {"hq": pytest.approx(1.0, abs=0.01), "modes": 8, "dist": pytest.approx(0.025, 0.1)}
    collapsed = ring_centers()[:3].repeat(100, 1)
    assert ring_metrics(torch.cat([collapsed, torch.zeros(300, 2)])) == {"hq": 0.5, "modes": 3, "dist": 1.0}


@pytest.mark.parametrize("name", ["gan-ring", "unrolled-gan"])
def test_ring_gans_train_and_log_ring_metrics(name, tmp_path):
    # a few CPU seconds do not converge on the ring (it takes thousands of steps: bench/ring_compare.py); here the
    # run is finite and logs the metrics of every log window
    cfg = tiny(name, steps=60, batch=64, log_steps=20, snap_steps=60, ckpt_steps=60)
    cfg.options.unroll = min(cfg.options.unroll, 3)
    train(cfg, tmp_path)
    rs = [r for r in rows(tmp_path) if "ring/hq" in r]
    assert len(rs) == 3 and all(0 <= r["ring/modes"] <= 8 and 0 <= r["ring/hq"] <= 1 and r["ring/dist"] > 0
                                for r in rs), rs
    assert rs[-1]["ring/dist"] < rs[0]["ring/dist"], rs                # the samples move toward the modes


def test_unrolled_gradient_differs_from_plain_and_resumes_exactly(tmp_path):
    cfg = tiny("unrolled-gan", steps=20, batch=32, log_steps=5, snap_steps=10, ckpt_steps=10)
    cfg.options.unroll = 3
    tr = Trainer(cfg, str(tmp_path / "probe"), progress=False)
    rec, G, D = tr.recipe, tr.nets["G"], tr.nets["D"]
    D.requires_grad_(False)
    real, z = torch.randn(32, 1, 1, 2), torch.randn(32, cfg.model.z_dim)
    grads = []
    for k in (0, 3):
        rec.options.unroll = k
        G.zero_grad()
        lf = torch.func.functional_call(D, rec.unrolled_D(real, G(z)), (G(z),))
        torch.nn.functional.softplus(-lf).mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in G.parameters()]))
    assert not torch.allclose(grads[0], grads[1])       # G's gradient sees D's answer
    with pytest.raises(ValueError, match="2-D points"):
        rec.accumulate_gradients("G", type("B", (), {"real": torch.zeros(2, 1, 8, 8)})(), 1.0)
    rec.options.unroll = 3
    assert_resumes_exactly(cfg, tmp_path, 15)


def test_unrolled_adam_continues_from_the_trainers_D_optimizer_state(tmp_path):
    """The unroll starts from D's Adam moments and step count (the paper's code rewires the optimizer's own update
    ops): one unrolled step is the step the trainer's torch.optim.Adam of D would take next on the same batch, and
    with a zero lr the unrolled D is D itself."""
    import copy
    cfg = tiny("unrolled-gan", steps=7, batch=32, log_steps=7, snap_steps=7, ckpt_steps=7)
    cfg.options.unroll = 1
    tr = train(cfg, tmp_path)
    rec, D = tr.recipe, tr.nets["D"]
    assert all(int(st["step"]) == 7 for st in tr.opt["D"].state.values())
    real, fake = torch.randn(32, 1, 1, 2), torch.randn(32, 1, 1, 2)
    D2 = copy.deepcopy(D).requires_grad_(True)
    opt2 = torch.optim.Adam(D2.parameters(), cfg.options.opt.d_lr, betas=tuple(cfg.options.opt.d_betas))
    opt2.load_state_dict(copy.deepcopy(tr.opt["D"].state_dict()))        # its own tensors: step() works in place
    from gankern.train.recipes.unrolled import _d_loss
    _d_loss(D2(real), D2(fake)).backward()
    opt2.step()
    for (k, w), w2 in zip(rec.unrolled_D(real, fake).items(), D2.parameters()):
        torch.testing.assert_close(w, w2, rtol=1e-5, atol=1e-7, msg=lambda m: f"{k}: {m}")
    assert not torch.equal(w2, dict(D.named_parameters())[k])
    rec.options.opt.d_lr = 0.0
    for k, w in rec.unrolled_D(real, fake).items():
        assert torch.equal(w, dict(tr.nets["D"].named_parameters())[k])


def test_began_convergence_measure_falls_and_k_moves(tmp_path):
    cfg = tiny("began", steps=100, batch=32, log_steps=20, snap_steps=100, ckpt_steps=100)
    cfg.began.lr = 1e-3
    tr = train(cfg, tmp_path)
    rs = [r for r in rows(tmp_path) if "G/M_global" in r]
    assert rs[-1]["G/M_global"] < 0.7 * rs[0]["G/M_global"], [r["G/M_global"] for r in rs]
    assert 0 <= rs[-1]["began/k"] <= 1 and any(r["began/k"] > 0 for r in rs)
    assert abs(float(tr.recipe.state_dict()["k"]) - rs[-1]["began/k"]) < 1e-5


def test_began_resumes_exactly(tmp_path):
    cfg = tiny("began", steps=20, batch=8, log_steps=5, snap_steps=10, ckpt_steps=10)
    cfg.began.lr = 1e-3
    assert_resumes_exactly(cfg, tmp_path, 15)


def test_pulling_away_term():
    from gankern.train.recipes.ebgan import pulling_away
    assert pulling_away(torch.eye(4) * 3).item() == 0.0
    assert pulling_away(torch.ones(5, 3)).item() == pytest.approx(1.0)
    h = torch.randn(6, 4)
    s = torch.nn.functional.cosine_similarity(h[:, None], h[None], dim=2) ** 2
    assert pulling_away(h).item() == pytest.approx(((s.sum() - s.diagonal().sum()) / 30).item(), rel=1e-5)


def test_ebgan_energies_separate(tmp_path):
    cfg = tiny("ebgan", steps=100, batch=32, log_steps=20, snap_steps=100, ckpt_steps=100, metrics="digits-fid",
               metric_samples=400)
    train(cfg, tmp_path)
    fid = [r["fid_digits"] for r in rows(tmp_path) if "fid_digits" in r]
    assert len(fid) == 2 and fid[1] < 0.9 * fid[0], fid                 # 79.2 -> 63.1
    rs = [r for r in rows(tmp_path) if "D/real" in r]
    gap = [r["D/real"] - r["D/fake"] for r in rs]          # E(fake) - E(real): D learns to push fakes up
    assert gap[-1] > 0 and rs[-1]["D/real"] > rs[0]["D/real"], (gap, [r["D/real"] for r in rs])
    assert all(0 <= r["G/pt"] <= 1 for r in rows(tmp_path) if "G/pt" in r)


def test_ebgan_resumes_exactly(tmp_path):
    assert_resumes_exactly(tiny("ebgan", steps=20, batch=8, log_steps=5, snap_steps=10, ckpt_steps=10), tmp_path, 15)


def test_msgan_mode_seeking_term(tmp_path):
    from gankern.train import named_config
    bad = named_config("dcgan")
    bad.loss.mode_seeking = 1.0
    with pytest.raises(ValueError, match="conditional G"):
        bad.validate()
    ratios = {}
    for w in (0.0, 1.0):
        cfg = tiny("msgan", steps=60, batch=32, log_steps=20, snap_steps=60, ckpt_steps=60,
                   metrics="digits-fid" if w else "none", metric_samples=400)
        cfg.loss.mode_seeking = w
        tr = train(cfg, tmp_path / str(w))
        z = torch.randn(2, 200, cfg.model.z_dim, generator=torch.Generator().manual_seed(5))
        c = torch.arange(200) % 10
        G = tr.nets["G"].eval()
        with torch.no_grad():
            ratios[w] = ((G(z[0], c) - G(z[1], c)).abs().mean() / (z[0] - z[1]).abs().mean()).item()
    rs = [r for r in rows(tmp_path / "1.0") if "G/ms_ratio" in r]
    assert len(rs) == 3 and all(r["G/ms"] > 0 for r in rs)
    fid = [r["fid_digits"] for r in rows(tmp_path / "1.0") if "fid_digits" in r]
    assert len(fid) == 2 and fid[1] < 0.9 * fid[0], fid                 # 70.8 -> 50.8
    assert ratios[1.0] > ratios[0.0], ratios          # the term makes G's images vary more with z


def test_msgan_on_acgan_resumes_exactly(tmp_path):
    cfg = tiny("acgan", steps=20, batch=8, log_steps=5, snap_steps=10, ckpt_steps=10)
    cfg.loss.mode_seeking = 1.0
    assert_resumes_exactly(cfg, tmp_path, 15)
    assert all("G/ms_ratio" in r for r in rows(tmp_path / "full") if "G/loss" in r)


def test_ring_comparison_is_one_command(tmp_path):
    """bench/ring_compare.py: both ring configs trained from the CLI, their metrics and the plot written."""
    import importlib.util
    import json
    import os
    spec = importlib.util.spec_from_file_location("ring_compare", os.path.join(os.path.dirname(__file__), "..",
                                                                               "bench", "ring_compare.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "cmp"
    assert mod.main(["--kimg", "0.256", "--unroll", "2", "--out", str(out), "--set", "train.batch=64",
                     "--set", "train.log_steps=2"]) == 0
    got = json.load(open(out / "compare.json"))
    assert set(got) == {"gan-ring", "unrolled-gan"} and all(len(v) >= 2 for v in got.values())
    assert os.path.getsize(out / "compare.png") > 0
