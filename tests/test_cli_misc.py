"""`gankern fid --download` without network and `gankern bench` without a GPU: messages, not tracebacks or silence."""
import json
import os
import socket
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
from PIL import Image

from gankern import _bench, cli
from gankern.metrics import inception

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _images(folder, n=2):
    folder.mkdir()
    for i in range(n):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(folder / f"{i}.png")
    return str(folder)


@pytest.mark.parametrize("failure", ["offline", "http404"])
def test_fid_download_without_network_says_so_and_where_to_put_the_file(tmp_path, monkeypatch, capsys, failure):
    for var, sub in (("HOME", "home"), ("GANKERN_CACHE", "cache"), ("TORCH_HOME", "torch")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.delenv(inception.WEIGHTS_ENV, raising=False)
    urls = []

    def no_network(url, *args, **kwargs):        # what urlopen raises with no route / no DNS, or a missing file
        urls.append(url)
        if failure == "offline":
            raise urllib.error.URLError(socket.gaierror(-3, "Temporary failure in name resolution"))
        raise urllib.error.HTTPError(url, 404, "Not Found", None, None)

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    a, b = _images(tmp_path / "a"), _images(tmp_path / "b")
    rc = cli.main(["fid", a, b, "--download", "--device", "cpu", "--num-workers", "0", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1 and urls == [inception.WEIGHTS_URL]
    assert err.startswith("gankern fid: error: cannot download the FID Inception weights") and "Traceback" not in err
    assert ("looks offline" in err and "name resolution" in err) if failure == "offline" else "HTTP 404" in err
    for place in (tmp_path / "cache", tmp_path / "home" / ".cache" / "gankern", tmp_path / "torch" / "hub" /
                  "checkpoints"):
        assert str(place / inception.WEIGHTS_NAME) in err
    assert inception.WEIGHTS_URL in err and "--weights PATH" in err
    assert os.listdir(tmp_path / "cache") == []                    # no partial download left behind


def test_bench_without_gpu_quick_says_why_and_writes_outside_the_source_tree(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("OUT", raising=False)
    monkeypatch.chdir(tmp_path)
    results = os.path.join(ROOT, "bench", "results")
    before = sorted(os.listdir(results)) if os.path.isdir(results) else []
    assert cli.main(["bench", "fid", "--quick"]) == 0
    out, err = capsys.readouterr()
    assert "no CUDA GPU is visible" in err and "--quick: small shapes" in err
    assert "cuda: " in err                                          # why the cuda backend is not timed here
    assert "fid: trace_sqrt_product" in err                         # each workload is announced as it starts
    rows = json.load(open(tmp_path / "bench_fid.json"))
    assert rows and {r["family"] for r in rows} == {"fid"} and all(r["gpu"] == "cpu" for r in rows)
    assert all(r["ms"] is not None or r["error"] for r in rows)
    assert "| not run because |" in out
    assert (sorted(os.listdir(results)) if os.path.isdir(results) else []) == before
    # --out names a folder
    assert cli.main(["bench", "fid", "--quick", "--out", str(tmp_path / "res")]) == 0
    assert os.path.isfile(tmp_path / "res" / "bench_fid.json")


def test_bench_full_shapes_without_gpu_warn_first_and_rows_that_fail_say_why(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ran = []
    monkeypatch.setattr(_bench, "main", lambda fam, run, argv: ran.append((fam, argv)))
    assert cli.main(["bench", "resample", "--out", "x.json"]) == 0
    err = capsys.readouterr().err
    assert "take many minutes here; --quick runs small shapes" in err and ran == [("resample", ["--out", "x.json"])]

    def broken(_):
        raise RuntimeError("torch.compile with aot_autograd does not currently support double backward")

    rows = _bench.measure("fam", "w", (2, 3), torch.float32, {"eager": lambda _: None, "torch.compile": broken}, 1.0)
    assert rows[1]["ms"] is None and "double backward" in rows[1]["error"]
    table = _bench.format_rows(rows).splitlines()
    assert table[-1].startswith("| fam | w | torch.compile |") and "double backward |" in table[-1]
    assert cli.main(["bench", "no_such_family"]) == 2 and "unknown families" in capsys.readouterr().err


def test_bench_i2i_quick_times_every_model_through_its_recipe():
    """bench/bench_i2i.py --quick: a step of pix2pix, pix2pixHD, CycleGAN (batch 1 and 2) and SinGAN (batch 1, its
    finest scale) on both backends, each with a time (a recipe that no longer runs there shows as an error row)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("bench_i2i", os.path.join(os.path.dirname(__file__), "..", "bench",
                                                                            "bench_i2i.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rows = mod.run(quick=True)
    assert [(r["workload"], r["backend"]) for r in rows[::2]] == [(f"{m} step", "eager") for m in
                                                                  ("pix2pix",) * 2 + ("pix2pixhd",) * 2 +
                                                                  ("cyclegan",) * 2 + ("singan",)]
    assert all(r["ms"] and r["ms"] > 0 and "error" not in r for r in rows), [r.get("error") for r in rows]
