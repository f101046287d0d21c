"""The BigGAN recipe (gankern/train/recipes/biggan.py): options -> model, BG's losses, orthogonal regularization
once per optimizer step, BG's EMA with ema_start, standing statistics and sample sheets; end to end through the
trainer and the CLI: train on the labelled digits, resume exactly, sigmas in the log, generate by class from a run
and from a BigGAN-PyTorch state dict."""
import copy
import dataclasses
import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from gankern.cli import main
from gankern.models import biggan as B
from gankern.nn import SpectralNormGroup
from gankern.train.cli import load_generator
from gankern.train.config import named_config
from gankern.train.digits_features import extractor
from gankern.train.dist import Dist
from gankern.train.dist import derive_seed
from gankern.train.loop import Trainer, generate
from gankern.train.outputs import image_grid
from gankern.train.recipes.base import Batch, Env
from gankern.train.recipes.biggan import BigGANRecipe, Options, interp_sheet, model_config, sample_sheet

from test_biggan import BG_CASES, bg_ortho_grad, save_bg, trained_bg
from test_train import one_thread  # noqa: F401  (autouse: one thread as the spawned ranks, float32 sums in one order)


def env(num_classes=10, device="cpu", resolution=32, channels=1):
    """The trainer's Env on the CPU: backward keeps the graph (the batched spectral norm's node serves every
    accumulation round of a step)."""
    return Env(torch.device(device), 0, 1, num_classes, channels, resolution, 100, 0,
               backward=lambda loss: loss.backward(retain_graph=True))


def recipe(num_classes=10, **options):
    torch.manual_seed(0)
    return BigGANRecipe(Options(**options), env(num_classes))


def batch(r, n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = torch.randint(0, max(r.num_classes, 1), (n,), generator=g) if r.num_classes else None
    return Batch(torch.rand(n, 1, 32, 32, generator=g) * 2 - 1, c, torch.randn(n, r.z_dim, generator=g),
                 None if c is None else torch.randint(0, r.num_classes, (n,), generator=g), seed)


def test_options_pick_the_preset_and_bgs_overrides():
    o = Options()
    r = BigGANRecipe(o, env())
    assert o.preset == "tiny" and r.cfg == B.preset("tiny")          # auto: tiny on the CPU, written back
    assert dataclasses.replace(Options(), preset="auto").preset == "auto"
    cfg = model_config(Options(preset="128", G_ch=32, D_ch=16, dim_z=60, shared_dim=0, G_attn="0", D_attn="32"),
                       64, 3, 7)
    assert (cfg.resolution, cfg.n_classes, cfg.g_ch, cfg.d_ch, cfg.z_dim, cfg.shared_dim, cfg.g_attn, cfg.d_attn) \
        == (64, 7, 32, 16, 60, 0, (), (32,))
    assert model_config(Options(preset="128"), 64, 3, 7).g_attn == (32,)   # the preset's attention, moved
    cfg = model_config(Options(preset="32", G_shared=1, hier=1, shared_dim=16), 32, 3, 10)
    assert cfg.shared and cfg.hier and not B.preset("32").shared
    deep = BigGANRecipe(Options(deep=True), env()).cfg
    assert deep.deep and deep.g_depth == 2
    for bad, match in [(dict(preset="huge"), "preset"), (dict(hier=2), "hier"), (dict(G_attn="x"), "G_attn"),
                       (dict(num_D_steps=0), "num_D_steps"), (dict(ema_decay=1.0), "ema_decay"),
                       (dict(G_ortho=-1.0), "G_ortho")]:
        with pytest.raises(ValueError, match=match):
            BigGANRecipe(Options(**bad), env())
    with pytest.raises(ValueError, match="px"):
        BigGANRecipe(Options(), env(resolution=48))


def test_phases_and_optimizers_are_bgs():
    r = recipe(num_D_steps=3, G_lr=2e-4, D_lr=5e-4, adam_eps=1e-8)
    assert [(p.name, p.net, p.repeats) for p in r.phases] == [("D", "D", 3), ("G", "G", 1)]
    assert (r.optimizers["G"].lr, r.optimizers["D"].lr, r.optimizers["G"].betas, r.optimizers["D"].eps) == \
        (2e-4, 5e-4, (0.0, 0.999), 1e-8)
    assert r.ema == "G_ema_bg" and r.z_dim == r.nets["G"].z_dim == 32


def test_d_step_is_bgs_hinge_on_one_call_and_g_runs_in_training_mode_without_gradients():
    r = recipe(D_ortho=0.0)
    ref = copy.deepcopy(r.nets)
    b = batch(r)
    stats = r.accumulate_gradients("D", b, 1.0)
    # BG's G_D: G in training mode without gradients (its BN statistics and power iterations move), one D call
    with torch.no_grad():
        fake = ref["G"](b.z, b.c_gen)
    out = ref["D"](torch.cat([fake, b.real]), torch.cat([b.c_gen, b.c]))
    loss_real, loss_fake = torch.relu(1 - out[4:]).mean(), torch.relu(1 + out[:4]).mean()
    (loss_real + loss_fake).backward()
    torch.testing.assert_close(stats["D/loss_real"], loss_real.detach())
    torch.testing.assert_close(stats["D/loss_fake"], loss_fake.detach())
    for (n, p), q in zip(r.nets["D"].named_parameters(), ref["D"].parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=n)
    for (n, x), y in zip(r.nets["G"].named_buffers(), ref["G"].buffers()):   # running stats, u, v
        torch.testing.assert_close(x, y, msg=n)
    assert all(p.grad is None for p in r.nets["G"].parameters())
    stats = r.accumulate_gradients("G", b, 1.0)
    assert set(stats) == {"G/loss", "G/ortho"}


@pytest.mark.parametrize("phase", ["G", "D"])
def test_orthogonal_regularization_joins_each_optimizer_step_once(phase):
    """Two accumulation rounds (gain 1/2 each) with and without ortho: the difference of the gradients is BG's
    utils.ortho gradient, once, on every weight of 2+ dims except G's shared embedding."""
    grads = []
    for strength in (0.0, 0.05):
        r = recipe(**{f"{phase}_ortho": strength})
        group = SpectralNormGroup(r.nets[phase])
        for m in r.nets.values():
            m.requires_grad_(m is r.nets[phase])
        with group.cached():
            stats = [r.accumulate_gradients(phase, batch(r, seed=j), 0.5) for j in range(2)]
        if strength:             # the trainer's mean over the rounds of the logged term is the term
            want = B.orthogonal_regularization(B.ortho_weights(r.nets[phase]), strength)
            torch.testing.assert_close(sum(s.get(f"{phase}/ortho", 0) for s in stats) / 2, want.detach())
        grads.append({n: p.grad.clone() for n, p in r.nets[phase].named_parameters()})
        r.after_step(phase, 0)
    net = r.nets[phase]
    chosen = {id(p) for p in B.ortho_weights(net)}
    for n, p in net.named_parameters():
        want = bg_ortho_grad(p.detach(), 0.05) if id(p) in chosen else torch.zeros_like(p)
        torch.testing.assert_close(grads[1][n] - grads[0][n], want, atol=1e-5, rtol=1e-4, msg=n)
    assert (phase == "G") == any("shared" in n for n in grads[0])
    assert r._ortho_due[phase]                                          # due again at the next optimizer step


def trainer(tmp_path, name, batch=8, accum=1, **options):
    cfg = named_config("biggan")
    cfg.train.data, cfg.train.resolution, cfg.train.batch, cfg.train.accum = "digits", 32, batch, accum
    cfg.train.metrics = "none"
    cfg.options = dataclasses.replace(cfg.options, num_D_steps=1, **options)
    return Trainer(cfg, str(tmp_path / name), Dist(), progress=False, tensorboard=False)


@pytest.mark.parametrize("bn", ["eval", "train"])
def test_g_and_d_accumulations_split_the_batch_and_keep_the_gradients(tmp_path, bn):
    """BG's num_G_accumulations / num_D_accumulations: K rounds of B/K images give the gradients of one round of B
    (the losses are means, each round weighted 1/K; the orthogonal term joins once; the spectral norms of both nets
    are one batched update per optimizer step, so every round sees the same W / sigma).
    What is compared: G's and D's gradients after one D step and one G step of the trainer (the same step, so the
    same latents and reals), with G's BatchNorms in eval mode (running statistics: each image depends on its own
    z and class only). In training mode BatchNorm normalizes each round by the statistics of its B/K images (as
    BG's accumulations, one G forward each), so the gradients differ there: that case checks that the rounds
    really are split (and the per-phase counts reach the trainer), not that they agree."""
    runs = {"one": trainer(tmp_path, "one"), "G2D4": trainer(tmp_path, "gd", num_G_accumulations=2,
                                                              num_D_accumulations=4),
            "accum4": trainer(tmp_path, "acc", accum=4)}          # --accum: the default of both
    grads = {}
    for name, tr in runs.items():
        for m in tr.nets["G"].modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.train(bn == "train")
        for ph in tr.recipe.phases:
            tr.run_phase(ph, 0)
            grads[name, ph.net] = {n: p.grad.clone() for n, p in tr.nets[ph.net].named_parameters()}
    assert [p.accum for p in runs["G2D4"].recipe.phases] == [4, 2]
    for name in ("G2D4", "accum4"):
        for net in ("G", "D"):
            for n, g in grads["one", net].items():
                if bn == "eval":     # float32 sums over the batch in another order: errors scale with the largest
                    torch.testing.assert_close(grads[name, net][n], g, rtol=1e-4, atol=1e-5 * g.abs().max().item(),
                                               msg=lambda m: f"{name} {net}.{n}: {m}")
            if bn == "train":
                assert not torch.allclose(grads[name, "G"]["linear.parametrizations.weight.original"],
                                          grads["one", "G"]["linear.parametrizations.weight.original"])
    with pytest.raises(ValueError, match="rounds that divide the batch"):
        trainer(tmp_path, "bad", num_G_accumulations=3)


def test_ema_is_a_copy_before_ema_start_then_bgs_decay():
    r = recipe(ema_start=2, ema_decay=0.75)
    G, E = r.nets["G"], r.nets["G_ema_bg"]
    for step in range(3):
        with torch.no_grad():
            for p in G.parameters():
                p.add_(0.1 * (step + 1))
            for b in G.buffers():
                if b.is_floating_point():
                    b.add_(1.0)
        before = [p.clone() for p in E.parameters()]
        r.after_step("G", step)
        for pe, p, pb in zip(E.parameters(), G.parameters(), before):
            torch.testing.assert_close(pe, p if step < 1 else 0.75 * pb + 0.25 * p)
        for be, b in zip(E.buffers(), G.buffers()):
            assert torch.equal(be, b)
    assert r.state_dict()["g_steps"] == 3
    r2 = recipe()
    r2.load_state_dict(r.state_dict())
    assert r2.g_steps == 3
    with pytest.raises(ValueError, match="recipe options"):
        recipe(G_ch=4).load_state_dict(r.state_dict())


def test_generate_uses_standing_stats_once_per_g_step_and_sheets_are_one_row_per_class():
    r = recipe(num_standing_accumulations=2, standing_batch=8)
    G = r.nets["G_ema_bg"]
    z, c = torch.randn(3, r.z_dim), torch.tensor([1, 2, 3])
    a = r.generate(G, z, c)
    mean = [m.running_mean.clone() for m in G.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    want = copy.deepcopy(G)
    B.standing_stats(want, 2, 8, None, torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, want(z, c))
    r.generate(G, z, c)                                                   # same G step: no second pass
    assert all(torch.equal(m.running_mean, x) for m, x in
               zip([m for m in G.modules() if isinstance(m, torch.nn.BatchNorm2d)], mean))
    sheet = sample_sheet(r, G, [3, 5, 7], 4, seed=1, truncation=0.5)
    assert sheet.shape == (12, 1, 32, 32)
    zs = B.truncated_z(4, r.z_dim, 0.5, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(sheet, G(zs.repeat(3, 1), torch.tensor([3, 5, 7]).repeat_interleave(4)))
    assert not torch.allclose(sheet[:4], sheet[4:8])                       # the class changes the images
    for fix_z, fix_y in ((False, False), (True, False), (False, True)):
        rows = interp_sheet(r, G, 2, 3, seed=2, fix_z=fix_z, fix_y=fix_y).view(2, 5, 1, 32, 32)
        g = torch.Generator().manual_seed(2)
        z0, z1 = torch.randn(2, r.z_dim, generator=g), torch.randn(2, r.z_dim, generator=g)
        y0, y1 = torch.randint(0, 10, (2,), generator=g), torch.randint(0, 10, (2,), generator=g)
        ends = G(torch.cat([z0, z0 if fix_z else z1]), torch.cat([y0, y0 if fix_y else y1])).view(2, 2, 1, 32, 32)
        torch.testing.assert_close(rows[:, [0, 4]], ends.transpose(0, 1))
        mid = G((z0 + (z0 if fix_z else z1)) / 2, embedding=(G.shared(y0) + G.shared(y0 if fix_y else y1)) / 2)
        torch.testing.assert_close(rows[:, 2], mid)


def test_unlabelled_data_trains_as_one_class():
    r = recipe(num_classes=0, num_standing_accumulations=1, standing_batch=4)
    b = batch(r)
    assert b.c is None and r.cfg.n_classes == 1
    r.accumulate_gradients("D", b, 1.0)
    r.accumulate_gradients("G", b, 1.0)
    assert r.generate(r.nets["G_ema_bg"], b.z, None).shape == (4, 1, 32, 32)
    with pytest.raises(ValueError, match="class-conditional"):
        recipe().run_G(b.z, None)


# ---------------------------------------------------------------------------------------------------------------
# end to end: the trainer and the CLI

ENV = dict(os.environ, OMP_NUM_THREADS="1")
# the tiny preset (auto on the CPU) at batch 8; cheap standing statistics and grids (class sheets of 3 per class);
# EMA starting at G step 2
ARGS = ["--data", "digits", "--res", "32", "--batch", "8", "--metrics", "none", "-q", "--set", "train.grid=10",
        "--set", "recipe.num_standing_accumulations=2", "--set", "recipe.standing_batch=8",
        "--set", "recipe.ema_start=2", "--set", "recipe.ema_decay=0.5", "--set", "recipe.sheet_samples=3"]


def gankern(*args):
    r = subprocess.run([sys.executable, "-m", "gankern", *args], env=ENV, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def last_checkpoint(outdir):
    (run,) = glob.glob(os.path.join(outdir, "0*"))
    return run, torch.load(sorted(glob.glob(os.path.join(run, "ckpt-*.pt")))[-1], weights_only=True)


@pytest.fixture(scope="module")
def run_4_steps(tmp_path_factory):
    """`gankern train --config biggan` on the labelled digits for 4 steps (checkpoints at 2 and 4)."""
    out = tmp_path_factory.mktemp("a")
    r = gankern("train", "--config", "biggan", *ARGS, "--kimg", "0.032", "--snap", "2", "--outdir", str(out))
    return (*last_checkpoint(out), r)


def test_train_resume_exact_sigmas_logged(run_4_steps, tmp_path, capsys):
    """4 steps straight == 2 steps + resume + 2 steps, bit for bit (nets, BG's EMA, optimizers, recipe state);
    every SN layer's sigma in the log."""
    run_a, want, r = run_4_steps
    assert "4 steps of 8 images" in r.stdout
    assert main(["train", "--config", "biggan", *ARGS, "--kimg", "0.016", "--snap", "2", "--outdir",
                 str(tmp_path / "b")]) == 0                               # in this process: no start-up cost
    run_b, half = last_checkpoint(tmp_path / "b")
    assert half["step"] == 2 and half["recipe"]["g_steps"] == 2
    assert main(["train", "--resume", run_b, "--kimg", "0.032", "-q"]) == 0
    assert f"resumed {run_b} at step 2" in capsys.readouterr().out
    _, got = last_checkpoint(tmp_path / "b")
    assert got["step"] == want["step"] == 4 and got["recipe"] == want["recipe"] and want["recipe"]["g_steps"] == 4
    for net in ("G", "D", "G_ema_bg", "G_ema"):
        for k, v in want[net].items():
            assert torch.equal(v, got[net][k]), (net, k)
    for opt in ("opt_G", "opt_D"):
        for i, s in want[opt]["state"].items():
            assert all(torch.equal(v, got[opt]["state"][i][k]) for k, v in s.items()), (opt, i)
    assert not torch.equal(want["G_ema_bg"]["linear.bias"], want["G"]["linear.bias"])   # the EMA started
    cfg = json.load(open(os.path.join(run_a, "config.json")))
    assert cfg["recipe"] == "biggan" and cfg["options"]["preset"] == "tiny"
    rows = [json.loads(line) for line in open(os.path.join(run_a, "metrics.jsonl"))]
    G, D = B.build(B.preset("tiny"))
    for net, name in ((G, "G"), (D, "D")):
        logged = {k for k in rows[-1] if k.startswith(f"sigma/{name}/")}
        assert logged == {f"sigma/{name}/{n}" for n in SpectralNormGroup(net).update()}
    assert all(k in rows[-1] for k in ("D/loss_real", "D/loss_fake", "G/loss", "G/ortho"))
    # BG's class sheet at every snapshot: one row per class, 3 images each, G_ema after standing statistics
    G, _, _, rec = load_generator(run_a)
    sheet = sample_sheet(rec, G, list(range(10)), 3, derive_seed(0, "sheets") % 2 ** 31)
    for step in (0, 2, 4):
        assert os.path.exists(os.path.join(run_a, f"classes{step:08d}.png"))
    assert np.array_equal(read_png(os.path.join(run_a, "classes-latest.png")), image_grid(sheet, 3))


def test_sigkill_then_resume_is_bit_identical(run_4_steps, tmp_path):
    """The run of the fixture again, killed (SIGKILL) once its step-2 checkpoint is on disk, then resumed: the
    same step-4 checkpoint bit for bit (nets, BG's EMA, optimizers, recipe state), log rows neither lost nor
    repeated."""
    run_a, want, _ = run_4_steps
    p = subprocess.Popen([sys.executable, "-m", "gankern", "train", "--config", "biggan", *ARGS, "--kimg", "0.032",
                          "--snap", "2", "--outdir", str(tmp_path)], env=ENV, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    t0 = time.time()
    while not glob.glob(str(tmp_path / "0*" / "ckpt-00000002.pt")) and p.poll() is None and time.time() - t0 < 200:
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait()
    (run,) = glob.glob(str(tmp_path / "0*"))
    assert sorted(os.listdir(run)).count("ckpt-00000004.pt") == 0, "the run ended before the kill"
    gankern("train", "--resume", run, "-q")
    _, got = last_checkpoint(tmp_path)
    assert got["step"] == want["step"] == 4 and got["recipe"] == want["recipe"]
    for net in ("G", "D", "G_ema_bg", "G_ema", "opt_G", "opt_D"):
        for k, v in _flat(want[net]).items():
            assert torch.equal(v, _flat(got[net])[k]), (net, k)
    steps = [json.loads(line)["step"] for line in open(os.path.join(run, "metrics.jsonl"))]
    assert steps == [json.loads(line)["step"] for line in open(os.path.join(run_a, "metrics.jsonl"))]


def _flat(d, prefix=""):
    """The tensors of a nested state dict, by path."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        elif isinstance(v, torch.Tensor):
            out[f"{prefix}{k}"] = v
    return out


@pytest.mark.slow
def test_ddp_two_cpu_ranks_with_cross_replica_batchnorm_match_one_process(run_4_steps, tmp_path):
    """torchrun, 2 CPU ranks (gloo) of 4 images each == one process of 8: G's BatchNorms take the statistics of all
    8 images (cross-replica), the rest is the trainer's DDP. Adam's first steps turn float rounding on near-zero
    gradients into steps of up to lr, so a few entries may differ by ~1e-4; without the cross-replica statistics
    nearly every entry differs (93% by more than 1e-5, measured)."""
    _, one, _ = run_4_steps
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
                        "gankern", "train", "--config", "biggan", *ARGS, "--kimg", "0.032", "--snap", "2",
                        "--outdir", str(tmp_path)], env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    run, two = last_checkpoint(tmp_path)
    assert '"world": 2' in open(os.path.join(run, "run.json")).read() and two["step"] == 4
    for net in ("G", "D", "G_ema"):
        diff = torch.cat([(one[net][k] - two[net][k]).abs().flatten() for k in one[net]
                          if one[net][k].is_floating_point()])
        assert (diff > 1e-5).float().mean() < 0.01 and diff.max() < 2e-3, (net, diff.max())
    bn = [k for k in one["G"] if k.endswith("running_var")]
    assert bn and all(torch.allclose(one["G"][k], two["G"][k], rtol=1e-3, atol=1e-5) for k in bn)


def read_png(path):
    return np.asarray(Image.open(path).convert("RGB"))


def test_generate_sheets_by_class_from_a_run(run_4_steps, tmp_path, capsys):
    """`gankern generate --class 0-9 --trunc`: one row per class (BG's sample sheet, through the recipe: standing
    statistics on truncated z); one class; errors without a traceback."""
    run, _, _ = run_4_steps
    assert main(["generate", "--run", run, "--class", "0-9", "--n", "2", "--trunc", "0.5", "--out",
                 str(tmp_path / "s.png")]) == 0
    G, _, k, r = load_generator(run)
    want = sample_sheet(r, G, list(range(10)), 2, 0, 0.5)
    assert np.array_equal(read_png(tmp_path / "s.png"), image_grid(want, 2))
    assert main(["generate", "--run", run, "--class", "7", "--n", "3", "--out", str(tmp_path / "c.png")]) == 0
    assert read_png(tmp_path / "c.png").shape == image_grid(want[:3], None).shape
    for args, msg in ((["--class", "10"], "classes 0..9"), (["--class", "x"], "class numbers"), ([], "--run DIR"),
                      (["--n", "0"], "--n: must be >= 1"), (["--trunc", "0"], "must be > 0"),
                      (["--frames", "4"], "give --interp"), (["--interp", "z", "--class", "1"], "leave out --class"),
                      (["--interp", "z", "--frames", "1"], "--frames: must be >= 2"),
                      (["--interp", "w"], "--interp w: StyleGAN's"),
                      (["--biggan-config", "tiny"], "a biggan run has its own config")):
        argv = ["generate", *(["--run", run] if args else []), *args, "--out", str(tmp_path / "x.png")]
        try:
            code = main(argv)
        except SystemExit as e:                                           # argparse's own errors
            code = e.code
        assert code == 2 and msg in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "x.png")


def test_generate_truncates_the_standing_statistics_too(run_4_steps, tmp_path):
    """The grid of `gankern generate --trunc T`: standing statistics with z truncated at T (BG's sample.py
    accumulates them with the sampling z_), then G in eval mode on truncated z, classes cycling."""
    run, _, _ = run_4_steps
    assert main(["generate", "--run", run, "--n", "6", "--trunc", "0.4", "--seed", "3", "--out",
                 str(tmp_path / "g.png")]) == 0
    G, _, _, r = load_generator(run)
    want = copy.deepcopy(G)
    B.standing_stats(want, 2, 8, 0.4, torch.Generator().manual_seed(r.env.seed))
    images = generate(want, 6, r.z_dim, 10, 3, 0.4)
    assert np.array_equal(read_png(tmp_path / "g.png"), image_grid(images))
    untruncated = copy.deepcopy(G)
    B.standing_stats(untruncated, 2, 8, None, torch.Generator().manual_seed(r.env.seed))
    assert not np.array_equal(image_grid(generate(untruncated, 6, r.z_dim, 10, 3, 0.4)), image_grid(images))


@pytest.mark.parametrize("interp, fix", [("z", dict(fix_y=True)), ("class", dict(fix_z=True)), ("both", {})])
def test_generate_interpolation_sheets(run_4_steps, tmp_path, interp, fix):
    """`gankern generate --interp z|class|both --frames N --rows R`: BG's interpolation sheets (fix_y, fix_z)."""
    run, _, _ = run_4_steps
    out = str(tmp_path / "i.png")
    assert main(["generate", "--run", run, "--interp", interp, "--frames", "4", "--rows", "3", "--trunc", "0.8",
                 "--out", out]) == 0
    G, _, _, r = load_generator(run)
    want = interp_sheet(r, G, 3, 2, 0, truncation=0.8, **fix)
    assert np.array_equal(read_png(out), image_grid(want, 4))


def test_biggan_options_on_other_runs_are_refused(tmp_path, capsys):
    assert main(["train", "--config", "gan", "--data", "digits", "--res", "8", "--kimg", "0.004", "--batch", "4",
                 "--metrics", "none", "-q", "--no-tensorboard", "--outdir", str(tmp_path)]) == 0
    (run,) = glob.glob(str(tmp_path / "0*"))
    assert main(["generate", "--run", run, "--interp", "z", "--out", str(tmp_path / "x.png")]) == 2
    assert "--interp and --frames: interpolation of StyleGAN and BigGAN runs" in capsys.readouterr().err
    assert main(["generate", "--run", run, "--rows", "2", "--out", str(tmp_path / "x.png")]) == 2
    assert "--rows: BigGAN options" in capsys.readouterr().err


@pytest.mark.parametrize("recipe, argv, message", [
    ("stylegan2", ["--rows", "2"], "--rows: options of biggan runs, and {run} is a stylegan2 run"),
    ("stylegan2", ["--biggan-config", "tiny"], "--biggan-config: options of biggan runs, and {run} is a stylegan2"),
    ("singan", ["--rows", "3", "--interp", "z"], "--rows: options of biggan runs, and {run} is a singan run"),
    ("singan", ["--interp", "z"], "--interp and --frames: interpolation of StyleGAN and BigGAN runs; {run} is a "
                                  "singan run"),
    ("infogan", ["--frames", "3"], "--interp and --frames: interpolation of StyleGAN and BigGAN runs"),
    ("biggan", ["--seeds", "1-3", "--noise-mode", "none"], "--seeds, --noise-mode: options of stylegan2 runs, and "
                                                           "{run} is a biggan run"),
    ("biggan", ["--size", "8x8"], "--size: options of singan runs, and {run} is a biggan run"),
    ("biggan", ["--sweep", "0"], "--sweep: options of infogan runs, and {run} is a biggan run"),
    ("biggan", ["--rows", "2", "--mix-rows", "1"], "--mix-rows: options of stylegan2 runs; --rows: options of "
                                                   "biggan runs: one kind of run per call"),
])
def test_generate_refuses_the_flags_of_another_family(tmp_path, capsys, recipe, argv, message):
    """A family's generate flags with a run of another family: an error before anything loads (the family that
    takes the call would ignore them), whichever family comes first in GENERATE_FAMILIES."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"recipe": recipe}))
    assert main(["generate", "--run", str(run), *argv, "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gankern generate: error: ") and message.format(run=run) in err, err
    assert "Traceback" not in err and not os.path.exists(tmp_path / "x.png")


def test_train_refuses_stylegan2_flags_with_biggan(tmp_path, capsys):
    for flag, value in (("--gamma", "1"), ("--aug", "ada"), ("--p", "0.2"), ("--target", "0.6")):
        assert main(["train", "--config", "biggan", flag, value, "--kimg", "0.01", "--outdir", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert f"{flag}: config 'biggan' (recipe biggan) has no such option; it is a StyleGAN2 option" in err, err
    assert os.listdir(tmp_path) == []


def test_generate_from_a_biggan_pytorch_state_dict(tmp_path):
    """`gankern generate --run G.pth --class --trunc`: BG's own images for the same z and classes; --interp too."""
    c = BG_CASES["biggan-32-hier-attn"]
    bg_G, bg_D = trained_bg(c, seed=0)
    G_path, _ = save_bg(tmp_path, bg_G, bg_D, {k: v for k, v in c.items() if k != "num_svs"})
    assert main(["generate", "--run", G_path, "--class", "1,3", "--n", "3", "--trunc", "0.7", "--seed", "5",
                 "--out", str(tmp_path / "bg.png")]) == 0
    z = B.truncated_z(3, bg_G.dim_z, 0.7, generator=torch.Generator().manual_seed(5)).repeat(2, 1)
    with torch.no_grad():
        want = bg_G(z, bg_G.shared(torch.tensor([1, 1, 1, 3, 3, 3])))
    got = read_png(tmp_path / "bg.png").astype(int)
    assert np.abs(got - image_grid(want, 3).astype(int)).max() <= 1          # float tolerance, rounded to uint8
    assert main(["generate", "--run", G_path, "--interp", "both", "--frames", "3", "--rows", "2", "--out",
                 str(tmp_path / "bgi.png")]) == 0
    assert read_png(tmp_path / "bgi.png").shape == image_grid(want, 3).shape


@pytest.mark.slow
def test_a_tiny_conditional_biggan_learns_the_class_condition(tmp_path):
    """`gankern train --config biggan-cpu` (the tiny preset at 16 px, batch 32, lrs 1e-3 / 2e-3) for 300 steps on
    the labelled digits: finite losses throughout, digits-FID falls, and the digits-FID net's classifier (99% on
    held-out real digits) names the requested class of most of G_ema's samples (standing statistics, 50 per class).
    Measured at step 300 with seeds 0, 1, 2: agreement 81%, 76%, 96% (chance: 10%; the class condition appears
    between steps 200 and 300; at BG's lrs, at width 4, or at batch 16 / 32 with one D step it stays at 10-38% through
    300-400 steps); digits-FID 34.9 -> 5.5 (seed 0). 66 s of CPU time on one thread (the training: 58 s)."""
    assert main(["train", "--config", "biggan-cpu", "--kimg", "9.6", "--snap", "300", "--metrics", "digits-fid", "-q",
                 "--no-tensorboard", "--outdir", str(tmp_path), "--set", "train.metric_samples=500",
                 "--set", "train.log_steps=50"]) == 0
    (run,) = glob.glob(str(tmp_path / "0*"))
    rows = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
    losses = [v for r in rows for k, v in r.items() if "loss" in k]
    assert len(losses) == 3 * 6 and np.isfinite(losses).all()         # D/loss_real, D/loss_fake, G/loss
    fid = [(r["step"], r["fid_digits"]) for r in rows if "fid_digits" in r]
    assert [s for s, _ in fid] == [0, 300] and fid[-1][1] < 0.5 * fid[0][1], fid
    G, _, k, r = load_generator(run)
    y = torch.arange(10).repeat_interleave(50)
    z = B.truncated_z(len(y), G.z_dim, generator=torch.Generator().manual_seed(123))
    with torch.no_grad():
        agreement = (extractor().logits(r.generate(G, z, y)).argmax(1) == y).float().mean().item()
    assert agreement > 0.5, agreement


def test_bf16_mixed_precision_trains(tmp_path):
    """--amp bf16 (autocast on the CPU too): finite losses and sigmas, float32 weights and optimizer state."""
    assert main(["train", "--config", "biggan", *ARGS, "--res", "16", "--kimg", "0.016", "--amp", "bf16",
                 "--no-tensorboard", "--outdir", str(tmp_path)]) == 0
    run, ckpt = last_checkpoint(tmp_path)
    (row,) = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
    assert row["step"] == 2 and all(np.isfinite(v) for k, v in row.items() if "/" in k)
    assert all(v.dtype == torch.float32 for net in ("G", "D", "G_ema") for v in ckpt[net].values()
               if v.is_floating_point())


def test_train_refuses_a_resolution_biggan_has_not(tmp_path, capsys):
    assert main(["train", "--config", "biggan", "--res", "8", "--kimg", "0.01", "--outdir", str(tmp_path), "-q"]) == 2
    assert "BigGAN trains at 16, 32, 64, 128, 256 px, not 8" in capsys.readouterr().err
