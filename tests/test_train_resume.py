"""`gankern train` killed with SIGKILL mid-run resumes from its last checkpoint and ends bit-identical to a run that
was never interrupted; DDP over 2 CPU processes (`--gpus 2 --device cpu`: torchrun, gloo) matches one process with the
same global batch."""
import glob
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

ENV = dict(os.environ, OMP_NUM_THREADS="1")
ARGS = ["--config", "gan", "--data", "digits", "--res", "8", "--batch", "16", "--metrics", "none", "-q",
        "--set", "model.g_ch=8", "--set", "model.d_ch=8", "--set", "model.z_dim=16", "--set", "model.g_norm=none",
        "--set", "train.grid=16"]


def gankern(*args, **kw):
    return subprocess.run([sys.executable, "-m", "gankern", *args], env=ENV, capture_output=True, text=True,
                          timeout=120, **kw)


def final_state(outdir):
    (run,) = glob.glob(os.path.join(outdir, "0*"))
    cks = sorted(glob.glob(os.path.join(run, "ckpt-*.pt")))
    return run, torch.load(cks[-1], weights_only=True)


# StyleGAN2 (recipe stylegan2: lazy R1 and path length, ADA, its state pl_mean and p in the checkpoint) at 8 px, 16
# channels, regularizers and ADA's adjustment every few steps so that a short run exercises them all
STYLEGAN2 = ["--config", "stylegan2", "--data", "digits", "--res", "8", "--batch", "8", "--metrics", "none", "-q",
             "--gamma", "1", "--aug", "ada", "--p", "0.3", "--target", "0.6", "--set", "recipe.cfg=tiny",
             "--set", "recipe.fmaps=0.00390625", "--set", "recipe.r1_interval=4", "--set", "recipe.pl_interval=2",
             "--set", "recipe.ada_interval=2", "--set", "recipe.ada_kimg=0.2", "--set", "train.grid=4"]


def same(a, b, where=""):
    """Recursive bit-equality of checkpoint entries (tensors, numbers, dicts, lists)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for k, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{where}[{k}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


@pytest.mark.parametrize("args, steps, snap, kill_after", [
    (ARGS + ["--kimg", "4.8", "--snap", "20"], 300, 20, 60),                  # 300 steps, a checkpoint every 20
    (STYLEGAN2 + ["--kimg", "0.24", "--snap", "5", "--set", "train.snap_steps=30"], 30, 5, 10)],   # grids: 0, 30
    ids=["gan", "stylegan2"])
def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path, args, steps, snap, kill_after):
    r = gankern("train", *args, "--outdir", str(tmp_path / "a"))
    assert r.returncode == 0, r.stderr
    _, want = final_state(tmp_path / "a")

    p = subprocess.Popen([sys.executable, "-m", "gankern", "train", *args, "--outdir", str(tmp_path / "b")],
                         env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while not glob.glob(str(tmp_path / "b" / "0*" / f"ckpt-{kill_after:08d}.pt")) and time.time() - t0 < 100:
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    run, _ = final_state(tmp_path / "b")
    killed_at = int(sorted(glob.glob(os.path.join(run, "ckpt-*.pt")))[-1][-11:-3])
    assert kill_after <= killed_at < steps, killed_at                  # it really was cut short

    r = gankern("train", "--resume", run, "-q")
    assert r.returncode == 0, r.stderr
    assert f"resumed {run} at step {killed_at}" in r.stdout
    _, got = final_state(tmp_path / "b")
    assert got["step"] == want["step"] == steps
    for key in ("G", "G_ema", "D", "opt_G", "opt_D", "recipe"):       # stylegan2's recipe: pl_mean, ADA's p and r_t
        same(want[key], got[key], key)
    if "stylegan2" in args:
        assert float(want["recipe"]["pl_mean"]) > 0 and want["recipe"]["ada"]["p"] != 0.3
    steps_logged = [int(line.split('"step": ')[1].split(",")[0]) for line in open(os.path.join(run, "metrics.jsonl"))]
    assert steps_logged == sorted(steps_logged) and len(steps_logged) == len(set(steps_logged)) == steps // snap


def test_ddp_two_cpu_processes_match_one_process(tmp_path):
    args = ARGS + ["--kimg", "0.48", "--snap", "30", "--set", "train.log_steps=10"]   # 30 steps
    r = gankern("train", *args, "--outdir", str(tmp_path / "one"))
    assert r.returncode == 0, r.stderr
    r = gankern("train", *args, "--outdir", str(tmp_path / "two"), "--gpus", "2", "--device", "cpu")   # torchrun
    assert r.returncode == 0, r.stderr[-3000:]
    assert "launching: -m torch.distributed.run --standalone --nproc_per_node 2 -m gankern train" in r.stderr
    run, two = final_state(tmp_path / "two")
    _, one = final_state(tmp_path / "one")
    assert '"world": 2' in open(os.path.join(run, "run.json")).read()
    for net in ("G", "D", "G_ema"):
        for k, v in one[net].items():
            torch.testing.assert_close(two[net][k], v, rtol=1e-4, atol=1e-5, msg=f"{net}.{k}")
    # and the two runs did move away from the initial weights (so the comparison means something)
    assert not torch.equal(one["G"]["net.0.weight"], torch.load(sorted(glob.glob(os.path.join(
        run, "ckpt-*.pt")))[0], weights_only=True)["G"]["net.0.weight"]) or one["step"] == 30


def test_torchrun_command_drops_gpus_and_keeps_the_rest():
    from gankern.train.cli import torchrun_command
    for argv in (["train", "--gpus", "4", "--config", "stylegan2", "--gamma", "1"],
                 ["train", "--config", "stylegan2", "--gpus=4", "--gamma", "1"],
                 ["train", "--config", "stylegan2", "--gamma", "1", "--gpu", "4"]):
        cmd = torchrun_command(argv, 4)
        assert cmd == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "4", "-m",
                       "gankern", "train", "--config", "stylegan2", "--gamma", "1"], argv
