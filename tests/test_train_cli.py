"""The `train`/`generate` CLI: configs, a short DCGAN run on the digits whose FID falls, bad input as one-line
messages (numbers, data, --outdir, generate's --class/--out), --threads, resume (corrupt newest checkpoint, the step-0
checkpoint, another batch size), TensorBoard events, the CPU presets of the slow configs."""
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


@pytest.mark.parametrize("argv,message", [
    (["--batch", "0"], "argument --batch: must be >= 1, not 0"),
    (["--accum", "0"], "argument --accum: must be >= 1, not 0"),
    (["--snap", "0"], "argument --snap: must be >= 1, not 0"),
    (["--kimg", "0"], "argument --kimg: must be a finite number > 0, not 0"),
    (["--kimg", "-2"], "argument --kimg: must be a finite number > 0, not -2"),
    (["--kimg", "inf"], "argument --kimg: must be a finite number > 0, not inf"),
    (["--res", "-8"], "argument --res: must be >= 1, not -8"),
    (["--res", "24"], "argument --res: must be a power of two (8, 16, 32, 64, ...), not 24"),
    (["--res", "x"], "argument --res: expected a whole number, not 'x'"),
    (["--workers", "-1"], "argument --workers: must be >= 0, not -1"),
    (["--threads", "0"], "argument --threads: must be >= 1, not 0"),
    (["--device", "gpu7"], "argument --device: 'gpu7' is not a device"),
])
def test_train_bad_numbers_are_one_line_usage_errors(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["train", "--outdir", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"gankern train: error: {message}" in err and "Traceback" not in err
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("assignment,message", [
    ("train.batch=0", "train.batch=0 must be >= 1"), ("train.log_steps=0", "train.log_steps=0 must be >= 1"),
    ("train.kimg=-1", "train.kimg=-1.0 must be a finite number > 0"), ("train.keep=-1", "train.keep=-1 must be >= 0"),
    ("train.resolution=12", "train.resolution=12 must be a power of two"),
])
def test_train_bad_values_through_set_are_messages(assignment, message, tmp_path, capsys):
    assert main(["train", "--outdir", str(tmp_path), "--set", assignment, "-q"]) == 2
    err = capsys.readouterr().err
    assert err == f"gankern train: error: {message}\n" and os.listdir(tmp_path) == []


def test_train_on_cuda_without_a_gpu_is_a_usage_error(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit):
        main(["train", "--device", "cuda:0", "--dry-run"])
    assert "argument --device: cuda:0: no CUDA GPU is visible here" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["missing-data", "bad-data", "res-from-set", "outdir-file", "outdir-dev-null",
                                  "outdir-sys"])
def test_train_data_and_outdir_problems_are_messages_and_leave_no_run_dir(case, tmp_path, capsys):
    out = tmp_path / "runs"
    (tmp_path / "file").write_text("x")
    np.save(tmp_path / "bad.npy", np.zeros((3, 5)))                  # neither (N, H, W) nor (N, H, W, C)
    argv, message = {
        "missing-data": (["--data", str(tmp_path / "nope")], f"--data {tmp_path / 'nope'}: no such file or folder"),
        "bad-data": (["--data", str(tmp_path / "bad.npy")], "bad.npy"),
        "res-from-set": (["--set", "train.resolution=4"], "resolution must be a power of two >= 8, not 4"),
        "outdir-file": (["--outdir", str(tmp_path / "file" / "runs")], f"--outdir {tmp_path / 'file' / 'runs'}: "
                                                                        "cannot make a run directory there"),
        "outdir-dev-null": (["--outdir", "/dev/null"], "--outdir /dev/null: not a directory"),
        "outdir-sys": (["--outdir", "/sys/gankern-runs"], "--outdir /sys/gankern-runs: cannot make a run directory"),
    }[case]
    if case == "outdir-sys" and not os.path.isdir("/sys/kernel"):
        pytest.skip("needs Linux's /sys, where no one can make a folder")
    rc = main(["train", "--outdir", str(out), "--kimg", "0.016", "--batch", "16", "--res", "8", "-q", *argv])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("gankern train: error: ") == 1 and message in err and "Traceback" not in err
    assert not out.exists() or os.listdir(out) == []                   # the failed run left no empty folder


def test_train_data_error_from_the_command_line_has_no_traceback(tmp_path):
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "gankern", "train", "--data", str(tmp_path / "nope"), "--outdir",
                        str(tmp_path)], capture_output=True, text=True, timeout=120, env={**os.environ,
                                                                                          "OMP_NUM_THREADS": "1"})
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith(f"gankern train: error: --data {tmp_path / 'nope'}")


@pytest.fixture(scope="module")
def cgan_run(tmp_path_factory):
    """A 2-step conditional run on the digits (10 classes), 8x8."""
    out = tmp_path_factory.mktemp("runs")
    torch.set_num_threads(1)
    assert main(["train", "--config", "cgan", "--res", "8", "--batch", "16", "--kimg", "0.032", "--metrics", "none",
                 "-q", "--outdir", str(out)]) == 0
    (run,) = out.iterdir()
    return str(run)


@pytest.mark.parametrize("argv,message", [
    (["--n", "0"], "argument --n: must be >= 1, not 0"),
    (["--class", "-1"], "argument --class: expected K, A-B or A,B,... (class numbers), not '-1'"),
    (["--trunc", "nan"], "argument --trunc/--truncation: must be a finite number, not nan"),
    (["--truncation", "x"], "argument --trunc/--truncation: expected a number, not 'x'"),
    (["--threads", "-3"], "argument --threads: must be >= 1, not -3"),
])
def test_generate_bad_numbers_are_usage_errors(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["generate", "--run", str(tmp_path), "--out", str(tmp_path / "g.png"), *argv])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"gankern generate: error: {message}" in err and "Traceback" not in err


def test_generate_class_out_of_range_and_bad_out_are_messages(cgan_run, tmp_path, capsys):
    def err_of(*argv):
        assert main(["generate", "--run", cgan_run, "--out", str(tmp_path / "g.png"), *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("gankern generate: error: ") and "Traceback" not in err
        return err
    assert "--class 99: the generator has classes 0..9" in err_of("--class", "99")
    assert "--trunc 0.0: the latent threshold must be > 0" in err_of("--trunc", "0")
    assert "--seeds: StyleGAN options, and " in err_of("--seeds", "1-3")
    assert "--class 10: the generator has classes 0..9" in err_of("--class", "10")
    assert "'.txt' names no image format; use one of .png, .jpg" in err_of("--out", str(tmp_path / "g.txt"))
    assert f"the folder {tmp_path / 'no'} does not exist" in err_of("--out", str(tmp_path / "no" / "g.png"))
    assert os.listdir(tmp_path) == []


def test_generate_writes_the_format_of_the_suffix_and_the_class_asked_for(cgan_run, tmp_path, capsys):
    for name, fmt in (("g.jpg", "JPEG"), ("g.webp", "WEBP"), ("g.png", "PNG")):
        assert main(["generate", "--run", cgan_run, "--n", "4", "--out", str(tmp_path / name), "--class", "3"]) == 0
        with Image.open(tmp_path / name) as im:
            assert im.format == fmt and im.size == (2 * 66 + 2, 2 * 66 + 2)
    # --class 3 gives other images than the default labels (0, 1, 2, 3) for the same latents
    assert main(["generate", "--run", cgan_run, "--n", "4", "--out", str(tmp_path / "d.png")]) == 0
    a, b = np.asarray(Image.open(tmp_path / "g.png")), np.asarray(Image.open(tmp_path / "d.png"))
    assert not np.array_equal(a[:68], b[:68]) and np.array_equal(a[68:, 68:], b[68:, 68:])


def test_generate_truncation_keeps_latents_inside_and_tiles_differ(cgan_run, tmp_path):
    from gankern.train.cli import load_generator
    from gankern.train.loop import generate
    G, cfg, k, recipe = load_generator(cgan_run)
    x = generate(G, 8, recipe.z_dim, k, 0, 0.1, fn=recipe.generate)
    assert x.shape == (8, 1, 8, 8) and (x[0] - x[1]).abs().max() > 1e-4   # small T: tiles still differ


def test_threads_option_sets_torch_threads_and_default_is_one(cgan_run, tmp_path, monkeypatch):
    out = str(tmp_path / "g.png")
    assert main(["generate", "--run", cgan_run, "--n", "1", "--out", out, "--threads", "2"]) == 0
    assert torch.get_num_threads() == 2
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert main(["generate", "--run", cgan_run, "--n", "1", "--out", out]) == 0
    assert torch.get_num_threads() == 1
    torch.set_num_threads(2)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")                        # the user's setting is kept
    assert main(["generate", "--run", cgan_run, "--n", "1", "--out", out]) == 0
    assert torch.get_num_threads() == 2


def _train(out, *extra):
    """A tiny DCGAN run on the digits (8x8, small nets); returns main's exit code."""
    return main(["train", "--config", "dcgan", "--res", "8", "--outdir", str(out), "-q", "--metrics", "none",
                 "--set", "recipe.model.g_ch=8", "--set", "recipe.model.d_ch=8", *extra])


def _steps(run):
    return [json.loads(line)["step"] for line in open(os.path.join(run, "metrics.jsonl"))]


def test_resume_skips_a_truncated_newest_checkpoint_naming_it(tmp_path, capsys):
    assert _train(tmp_path, "--batch", "16", "--kimg", "0.064", "--snap", "2") == 0      # ckpts at 0, 2, 4
    (run,) = [str(p) for p in tmp_path.iterdir()]
    newest = os.path.join(run, "ckpt-00000004.pt")
    data = open(newest, "rb").read()
    open(newest, "wb").write(data[:len(data) // 2])                # a copy cut short, e.g. a full disk
    capsys.readouterr()
    assert main(["train", "--resume", run, "--kimg", "0.128", "-q"]) == 0
    out, err = capsys.readouterr()
    assert f"warning: checkpoint {newest} is unreadable (RuntimeError: PytorchStreamReader" in err
    assert "using the previous one" in err and f"from {os.path.join(run, 'ckpt-00000002.pt')}" in out
    assert _steps(run) == [2, 4, 6, 8]                                # log rows every 2 steps, none twice
    # gankern generate takes the newest good one too; a run with none that loads is a message
    assert main(["generate", "--run", run, "--n", "4", "--out", str(tmp_path / "g.png")]) == 0
    for _, path in __import__("gankern.train.checkpoint", fromlist=["x"]).list_checkpoints(run):
        open(path, "wb").write(b"not a checkpoint")
    capsys.readouterr()
    assert main(["train", "--resume", run, "--kimg", "0.2", "-q"]) == 2
    err = capsys.readouterr().err
    assert "gankern train: error: " in err and "no checkpoint loads" in err and "Traceback" not in err
    assert main(["generate", "--run", os.path.join(run, "ckpt-00000008.pt"), "--out", str(tmp_path / "g.png")]) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err


def test_resume_from_the_step0_checkpoint_writes_no_second_step0_row(tmp_path):
    assert _train(tmp_path, "--batch", "16", "--kimg", "0.032", "--snap", "1", "--metrics", "digits-fid",
                  "--set", "train.metric_samples=64") == 0
    (run,) = [str(p) for p in tmp_path.iterdir()]
    for _ in range(3):                                                # killed right after the step-0 checkpoint
        for name in os.listdir(run):
            if name.startswith("ckpt-") and name != "ckpt-00000000.pt":
                os.remove(os.path.join(run, name))
        assert main(["train", "--resume", run, "-q"]) == 0
    rows = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
    assert [(r["step"], "fid_digits" in r) for r in rows] == [(0, True), (1, False), (1, True), (2, False),
                                                               (2, True)]


def test_resume_with_another_batch_size_stops_at_kimg(tmp_path, capsys):
    assert _train(tmp_path, "--batch", "64", "--kimg", "0.256", "--snap", "2") == 0       # steps of 64 to 256 img
    (run,) = [str(p) for p in tmp_path.iterdir()]
    os.remove(os.path.join(run, "ckpt-00000004.pt"))                  # as if killed after step 2 (128 images)
    capsys.readouterr()
    assert main(["train", "--resume", run, "--batch", "16", "-q"]) == 0
    last = json.loads(open(os.path.join(run, "metrics.jsonl")).read().splitlines()[-1])
    assert (last["step"], last["kimg"]) == (10, 0.256)                # 2 steps of 64 + 8 of 16, not 16 of 16


def test_tensorboard_events_follow_the_flag(tmp_path, capsys):
    pytest.importorskip("tensorboard", reason="TensorBoard events need the tensorboard package")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    assert _train(tmp_path / "on", "--batch", "16", "--kimg", "0.032", "--snap", "1") == 0
    (run,) = [str(p) for p in (tmp_path / "on").iterdir()]
    ea = EventAccumulator(run, size_guidance={"scalars": 0, "images": 0}).Reload()
    assert [(e.step, round(e.value, 6)) for e in ea.Scalars("G/loss")] == \
        [(round(r["kimg"] * 1000), r["G/loss"]) for r in map(json.loads, open(os.path.join(run, "metrics.jsonl")))]
    assert [e.step for e in ea.Images("fakes")] == [0, 16, 32]
    assert os.path.exists(os.path.join(run, "plot.png"))
    assert _train(tmp_path / "off", "--batch", "16", "--kimg", "0.032", "--no-tensorboard") == 0
    (run,) = [str(p) for p in (tmp_path / "off").iterdir()]
    assert not [n for n in os.listdir(run) if n.startswith("events.out.tfevents")]


def test_tensorboard_asked_for_but_missing_is_a_message(tmp_path, monkeypatch, capsys):
    from gankern.train import outputs
    monkeypatch.setattr(outputs, "tensorboard_available", lambda: False)
    assert _train(tmp_path, "--tensorboard", "--kimg", "0.016") == 2
    assert "pip install 'gankern[tensorboard]'" in capsys.readouterr().err and not os.listdir(tmp_path)


def test_slow_configs_have_a_cpu_preset_and_say_so_on_a_cpu(capsys, monkeypatch):
    from gankern.train.config import CONFIGS
    for name in ("wgan-gp", "sngan", "sagan", "sngan-san"):
        full, cpu = named_config(name), named_config(f"{name}-cpu")
        assert (cpu.train.resolution, cpu.train.kimg, cpu.options.model.g_ch, cpu.options.model.d_ch) == \
            (16, 20.0, 32, 32)
        assert (cpu.options.loss, cpu.options.opt, cpu.recipe) == (full.options.loss, full.options.opt, full.recipe)
        assert main(["train", "--config", name, "--device", "cpu", "--dry-run"]) == 0
        assert f"note: {name} is slow on a CPU (README: seconds per kimg); --config {name}-cpu" in \
            capsys.readouterr().err
    assert main(["train", "--config", "dcgan", "--device", "cpu", "--dry-run"]) == 0
    assert main(["train", "--config", "sngan-cpu", "--device", "cpu", "--dry-run"]) == 0
    assert "note:" not in capsys.readouterr().err
    readme = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")).read()
    for name in [n for n in CONFIGS if n.endswith("-cpu")]:          # the README's table: slow ones and presets
        assert f"| {name} |" in readme and f"| {name[:-4]} |" in readme, name
