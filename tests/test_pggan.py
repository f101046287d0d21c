"""PGGAN (Karras et al. 2018): the fade-in schedule, the fade-in's continuity in G and D, the reals' blending, the
minibatch per resolution and the Adam-state reset at each fade-in's start and end, a short CPU run on digits that grows
4 -> 8 without NaN while digits-FID falls, and resume after SIGKILL mid-fade (with the batch changed at the new
resolution) that ends bit-identical to the uninterrupted run."""
import copy
import glob
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F
from test_literature import assert_resumes_exactly
from test_train import one_thread, rows  # noqa: F401  (one_thread: an autouse fixture)

from gankern.cli import main
from gankern.models.pggan import Discriminator, Generator, PGGANModelConfig
from gankern.train import Trainer, named_config
from gankern.train.feed import Feed
from gankern.train.cli import load_generator
from gankern.train.digits_features import fid_kid
from gankern.train.recipes import Env
from gankern.train.recipes.pggan import PGGANRecipe, progress
from gankern.train.snapshots import sample


def small(res=16, steps=100, batch=16, fade=0.32, stable=0.32, **train):
    cfg = named_config("pggan-cpu")
    cfg.model.z_dim, cfg.model.ch_base, cfg.model.ch_max = 16, 64, 16
    cfg.grow.fade_kimg, cfg.grow.stable_kimg = fade, stable
    t = cfg.train
    t.resolution, t.batch, t.kimg, t.metrics, t.grid = res, batch, batch * steps / 1000, "none", 16
    t.log_steps, t.snap_steps, t.ckpt_steps = 10, steps, steps
    for k, v in train.items():
        setattr(t, k, v)
    return cfg


def test_progress_schedule():
    # stage 0 for 4 kimg; then per stage 2 kimg of fade-in (alpha linear 0 -> 1) and 4 kimg stable; stage 3 stays
    want = {0: (0, 1.0), 3.9: (0, 1.0), 4: (1, 0.0), 4.5: (1, 0.25), 5: (1, 0.5), 6: (1, 1.0), 9.9: (1, 1.0),
            10: (2, 0.0), 11.5: (2, 0.75), 16: (3, 0.0), 17: (3, 0.5), 18: (3, 1.0), 1000: (3, 1.0)}
    for kimg, (stage, alpha) in want.items():
        s, a = progress(kimg, 0, 3, 2.0, 4.0)
        assert s == stage and a == pytest.approx(alpha), (kimg, s, a)
    assert progress(3, 1, 3, 0.0, 2.0) == (2, 1.0)                     # no fade: a new stage starts at alpha 1
    assert progress(0, 2, 2, 1.0, 1.0) == (2, 1.0)                     # start at the data resolution: no growing
    with pytest.raises(ValueError, match="start_res"):
        cfg = small()
        cfg.grow.start_res = 6
        cfg.validate()


def test_fade_in_starts_where_the_previous_stage_ends():
    torch.manual_seed(0)
    cfg = PGGANModelConfig(z_dim=8, ch_base=64, ch_max=8)
    G, D = Generator(cfg, 16, 1), Discriminator(cfg, 16, 1)
    z = torch.randn(8, 8)
    assert G(z, None, 0, 1.0).shape == (8, 1, 4, 4) and G(z, None, 2, 0.3).shape == (8, 1, 16, 16)
    # alpha 0: the new stage's image is the previous stage's image, upsampled; D's score that of the pooled image
    assert torch.equal(G(z, None, 2, 0.0), F.interpolate(G(z, None, 1, 1.0), scale_factor=2, mode="nearest"))
    x = torch.randn(8, 1, 16, 16)
    torch.testing.assert_close(D(x, None, 0.0), D(F.avg_pool2d(x, 2), None, 1.0), rtol=0, atol=1e-6)
    assert not torch.allclose(D(x, None, 0.5), D(x, None, 0.0))
    G.set_progress(1, 0.5)                                             # the buffers: G_ema and generate use them
    assert torch.equal(G(z), G(z, None, 1, 0.5))
    with pytest.raises(ValueError, match="4 \\* 2\\^s"):
        D(torch.randn(8, 1, 12, 12))


def test_reals_follow_the_stage_and_blend_during_fade_in(tmp_path):
    tr = Trainer(small(), str(tmp_path), progress=False)
    rec, x = tr.recipe, torch.randn(4, 1, 16, 16)
    rec.nimg = 0
    rec._advance()
    assert (rec.stage, rec.alpha) == (0, 1.0) and torch.equal(rec.reals(x), F.avg_pool2d(x, 4))
    rec.nimg = 320 + 80                                                 # a quarter into stage 1's fade-in
    rec._advance()
    x8 = F.avg_pool2d(x, 2)
    coarse = F.interpolate(F.avg_pool2d(x8, 2), scale_factor=2, mode="nearest")
    assert rec.stage == 1 and rec.alpha == pytest.approx(0.25)
    torch.testing.assert_close(rec.reals(x), 0.75 * coarse + 0.25 * x8)
    assert int(tr.nets["G"].stage) == 1 and float(tr.nets["G"].alpha) == pytest.approx(0.25)
    assert rec.generate(tr.nets["G"], torch.randn(4, 16), None).shape == (4, 1, 16, 16)  # upsampled for FID


def test_batch_per_resolution_and_adam_reset_at_each_fade_in(tmp_path):
    # 4 px for 2 steps of 16, then 8 px (batch 8) fading in over 0.064 kimg (8 steps), then 8 px stable
    cfg = small(res=8, steps=8, fade=0.064, stable=0.032, log_steps=1)    # 0.128 kimg: 2 x 16 + 12 x 8
    cfg.options.batch_per_res = "8:8"
    tr = Trainer(cfg, str(tmp_path), progress=False)
    rec, seen = tr.recipe, []
    after = rec.after_step

    def spy(phase, step):
        after(phase, step)
        if phase == "G":
            states = [len(o.state) for o in tr.opt.values()]
            seen.append((rec.stage, rec.alpha, rec.batch, tr.feed.batch, tr.feed.position, states))
    rec.after_step = spy
    tr.train()
    assert [s[:2] for s in seen[:3]] == [(0, 1.0), (1, 0.0), (1, 0.125)] and seen[9][:2] == (1, 1.0), seen
    assert [s[3] for s in seen] == [16] * 2 + [8] * 12                  # the feed's batch of each step
    assert [s[4] for s in seen] == [16, 32] + [32 + 8 * i for i in range(1, 13)]   # the image stream goes on
    resets = [i for i, s in enumerate(seen) if s[5] == [0, 0]]           # right after the step that starts / ends it
    assert resets == [1, 9], seen
    assert tr.nimg == 2 * 16 + 12 * 8 and rec.nimg == tr.nimg and tr.step == 14
    assert [r["pggan/batch"] for r in rows(tmp_path) if "pggan/batch" in r] == [16.0] * 2 + [8.0] * 12
    cfg.options.reset_opt = False
    tr = Trainer(cfg, str(tmp_path / "keep"), progress=False)
    tr.train()
    assert all(len(o.state) > 0 for o in tr.opt.values())
    for bad in ("8", "8:0", "6:8", "x:y"):
        cfg.options.batch_per_res = bad
        with pytest.raises(ValueError, match="batch_per_res"):
            cfg.validate()


def test_paper_preset_batches_fit_the_minibatch_stddev_groups():
    cfg = named_config("pggan")                        # the paper's: 16, then 256:14, 512:6, 1024:3, groups of 16
    cfg.model.ch_base, cfg.model.ch_max, cfg.model.z_dim = 1024, 4, 8
    assert cfg.train.batch == 16 and cfg.model.mbstd_group == 16
    rec = PGGANRecipe(cfg.options, Env(torch.device("cpu"), 0, 4, 0, 1, 1024, 1, 0))   # 4 ranks: multiples of 4
    assert rec._batches == {256: 12, 512: 4, 1024: 4}
    rec.nimg = 10 ** 9
    rec._advance()
    assert rec.stage == 8 and rec.batch == 4
    cfg.model.mbstd_group = 4
    with pytest.raises(ValueError, match="256:14 gives 14 images per rank"):
        PGGANRecipe(cfg.options, Env(torch.device("cpu"), 0, 1, 0, 1, 1024, 1, 0))
    PGGANRecipe(cfg.options, Env(torch.device("cpu"), 0, 1, 0, 1, 128, 1, 0))      # 256 px and up are not trained


def test_resume_at_the_step_where_the_batch_changes_and_adam_was_reset(tmp_path):
    cfg = small(res=8, steps=8, fade=0.064, stable=0.032, log_steps=1, ckpt_steps=2, snap_steps=4)
    cfg.options.batch_per_res = "8:8"                 # checkpoint 2: 4 px done, Adam reset, the next step has batch 8
    assert_resumes_exactly(cfg, tmp_path, 3)


def test_feed_continues_the_image_stream_across_batch_changes(tmp_path):
    tr = Trainer(small(), str(tmp_path), progress=False)
    one = Feed(tr.dataset, tr.cfg.train, tr.dist, 16, 0)
    got = []
    for b in (16, 16, 24, 8, 8, 16):
        one.next_step(b)
        got.append(one.real(0)[0])
    stream = torch.cat(got)                                             # 88 images, batch sizes in between
    again = Feed(tr.dataset, tr.cfg.train, tr.dist, 16, 0)
    again.next_step(88)
    torch.testing.assert_close(again.real(0)[0], stream, rtol=0, atol=0)
    mid = Feed(tr.dataset, tr.cfg.train, tr.dist, 16, 0, start=56)      # resume after 56 images, at batch 8
    mid.next_step(8)
    assert one.position == 88 and torch.equal(mid.real(0)[0], stream[56:64])


@pytest.mark.slow
def test_pggan_grows_on_digits_and_fid_falls(tmp_path):
    # 4 px for 40 steps, 8 px fading in over 40 steps, then 80 steps at 8 px (batch 16)
    cfg = small(res=8, steps=160, fade=0.64, stable=0.64, metrics="digits-fid", metric_samples=400, log_steps=20,
                snap_steps=160, ckpt_steps=160)
    cfg.model.ch_base, cfg.model.ch_max = 256, 32
    tr = Trainer(cfg, str(tmp_path), progress=False)
    untrained = copy.deepcopy(tr.nets["G"])
    untrained.set_progress(1, 1.0)
    fid_untrained = fid_kid(sample(tr, 400, 123, net=untrained), 8)["fid_digits"]
    tr.train()
    rs = rows(tmp_path)
    for r in rs:
        assert all(v == v and abs(v) != float("inf") for v in r.values() if isinstance(v, float)), r
    grow = [(r["pggan/res"], r["pggan/alpha"]) for r in rs if "pggan/res" in r]
    assert grow == sorted(grow) and {g[0] for g in grow} == {4.0, 8.0} and any(0 < a < 1 for _, a in grow), grow
    fid = [r["fid_digits"] for r in rs if "fid_digits" in r]           # step 0 (4 px, upsampled) and the end
    assert len(fid) == 2 and fid[1] < fid[0] and fid[1] < 0.4 * fid_untrained, (fid, fid_untrained)
    assert tr.recipe.state_dict() == {"nimg": 160 * 16, "stage": 1, "alpha": 1.0}
    assert int(tr.G_ema.stage) == 1                                    # G_ema follows G's stage


ENV = dict(os.environ, OMP_NUM_THREADS="1")
ARGS = ["--config", "pggan-cpu", "--data", "digits", "--res", "8", "--batch", "16", "--metrics", "none", "-q",
        "--no-tensorboard", "--kimg", "0.64", "--snap", "20", "--set", "model.z_dim=16", "--set", "model.ch_base=32",
        "--set", "model.ch_max=8", "--set", "grow.stable_kimg=0.16", "--set", "grow.fade_kimg=0.32",
        "--set", "train.grid=16", "--set", "recipe.batch_per_res=8:8"]
# 70 steps: 4 px for 10 of 16 images, then 8 px at 8 images a step, fading in over steps 10..50


def _final(outdir):
    (run,) = glob.glob(os.path.join(outdir, "0*"))
    return run, torch.load(sorted(glob.glob(os.path.join(run, "ckpt-*.pt")))[-1], weights_only=True)


@pytest.mark.slow
def test_sigkill_mid_fade_then_resume_matches_uninterrupted_run(tmp_path):
    run_cmd = [sys.executable, "-m", "gankern", "train", *ARGS]
    r = subprocess.run(run_cmd + ["--outdir", str(tmp_path / "a")], env=ENV, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    _, want = _final(tmp_path / "a")
    p = subprocess.Popen(run_cmd + ["--outdir", str(tmp_path / "b")], env=ENV, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    t0 = time.time()
    while not glob.glob(str(tmp_path / "b" / "0*" / "ckpt-00000040.pt")) and time.time() - t0 < 100:
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait()
    run, killed = _final(tmp_path / "b")
    assert 20 <= killed["step"] < 70 and 0 < killed["recipe"]["alpha"] < 1, killed["recipe"]   # mid-fade
    r = subprocess.run([sys.executable, "-m", "gankern", "train", "--resume", run, "-q"], env=ENV,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    _, got = _final(tmp_path / "b")
    assert got["step"] == want["step"] == 70 and got["recipe"] == want["recipe"] and got["nimg"] == 640
    for net in ("G", "G_ema", "D", "opt_G", "opt_D"):
        a, b = want[net], got[net]
        if net.startswith("opt"):
            a, b = {k: v for k, s in a["state"].items() for k, v in s.items()}, \
                {k: v for k, s in b["state"].items() for k, v in s.items()}
        for k, v in a.items():
            assert torch.equal(v, b[k]), (net, k)
    G, _, _, recipe = load_generator(run)                 # gankern generate: G_ema at its stage, data resolution
    assert int(G.stage) == 1 and recipe.generate(G, torch.randn(4, 16), None).shape == (4, 1, 8, 8)
    assert main(["generate", "--run", run, "--n", "4", "--out", str(tmp_path / "grid.png")]) == 0
