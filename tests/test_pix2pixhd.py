"""pix2pixHD on the built-in digits-labels pairs: the networks' shapes and features, the global run trains without NaN
and its held-out L1 improves, the local enhancer starts from the global run's G and keeps it frozen for fix_global,
the VGG19 loss loads torchvision's layout without running code, resume is bit-identical, and ``gankern translate``
maps label images."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from test_literature import assert_resumes_exactly

from gankern.models.pix2pixhd import LocalEnhancer, MultiscaleDiscriminator, VGG19Features
from gankern.train import Trainer
from gankern.train.config import named_config


def _cfg(steps=30, **opts):
    cfg = named_config("pix2pixhd")
    o, t = cfg.options, cfg.train
    o.ngf, o.ndf, o.n_blocks_global, o.d_layers, o.val_n, o.lr = 8, 8, 1, 1, 48, 2e-3
    for k, v in opts.items():
        setattr(o, k, v)
    t.batch, t.kimg, t.log_steps, t.snap_steps, t.ckpt_steps, t.workers = 8, steps * 8 / 1000, 10, 10, 10, 0
    return cfg


def _rows(d):
    return [json.loads(line) for line in open(os.path.join(d, "metrics.jsonl"))]


@pytest.fixture(scope="module")
def global_run(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("p2hd") / "run")
    cfg = _cfg()
    cfg.train.resolution = 16
    Trainer(cfg, d, progress=False).train()
    return d


def test_networks_shapes_and_features():
    x = torch.randn(2, 5, 32, 32)
    G = LocalEnhancer(5, 3, ngf=4, n_blocks=1, n_down_global=2, n_blocks_global=1)
    assert G(x).shape == (2, 3, 32, 32) and G(x).abs().max() <= 1
    feats = MultiscaleDiscriminator(5, 4, n_layers=2, num_D=3)(torch.randn(2, 5, 48, 48))
    assert len(feats) == 3 and all(len(f) == 4 for f in feats)                 # 3 LeakyReLU groups + logits
    assert [f[-1].shape[-1] for f in feats] == [10, 4, 1]                        # 48 / 2**i px: s / 4 - 2 logits


def test_global_trains_and_held_out_l1_improves(global_run):
    rows = _rows(global_run)
    assert [r["step"] for r in rows] == [10, 20, 30]
    assert all(np.isfinite(v) for r in rows for v in r.values())
    assert {"G/gan", "G/feat", "D/loss", "val/psnr", "val/ssim"} <= set(rows[-1])
    assert rows[-1]["val/l1"] < 0.9 * rows[0]["val/l1"], [r["val/l1"] for r in rows]


def test_local_enhancer_starts_from_the_global_run_and_keeps_it_frozen(global_run, tmp_path):
    cfg = _cfg(steps=4, local=1, init_global=global_run, fix_global=0.5)
    cfg.train.log_steps = cfg.train.snap_steps = cfg.train.ckpt_steps = 2
    tr = Trainer(cfg, str(tmp_path / "local"), progress=False)
    g1 = torch.load(os.path.join(global_run, "ckpt-00000030.pt"), weights_only=True)["G"]
    for k, v in tr.nets["G"].global_.state_dict().items():
        assert torch.equal(v, g1[k]), k
    tr.total_steps = 2                                    # the first half: G1 frozen, the enhancer trains
    tr.train()
    G = tr.nets["G"]
    assert all(torch.equal(v, g1[k]) for k, v in G.global_.state_dict().items())
    front = {k: v.clone() for k, v in G.front.state_dict().items()}
    tr.total_steps = 4
    tr.train()
    assert not all(torch.equal(v, g1[k]) for k, v in G.global_.state_dict().items())
    assert not all(torch.equal(v, front[k]) for k, v in G.front.state_dict().items())
    with pytest.raises(ValueError, match="not a global"):
        Trainer(_cfg(local=1, init_global=str(tmp_path / "local")), str(tmp_path / "x"), progress=False)


def test_vgg19_loss_from_a_torchvision_layout_file(tmp_path):
    net = VGG19Features()
    state = {**net.state_dict(), "classifier.0.weight": torch.zeros(2, 2)}     # the classifier is ignored
    path = str(tmp_path / "vgg19.pth")
    torch.save(state, path)
    got = VGG19Features.from_file(path)
    feats = got(torch.randn(1, 3, 32, 32))
    assert [f.shape[1] for f in feats] == [64, 128, 256, 512, 512] and feats[-1].shape[-1] == 2
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, str(tmp_path / "bad.pth"))
    with pytest.raises(ValueError, match="not torchvision's VGG19 state dict"):
        VGG19Features.from_file(str(tmp_path / "bad.pth"))

    class Evil:                                            # a pickle that would run code is refused
        def __reduce__(self):
            return (os.system, ("echo pwned",))
    torch.save({"x": Evil()}, str(tmp_path / "evil.pth"))
    with pytest.raises(ValueError, match="without running code"):
        VGG19Features.from_file(str(tmp_path / "evil.pth"))
    cfg = _cfg(steps=2, vgg=path)
    cfg.train.log_steps = cfg.train.snap_steps = cfg.train.ckpt_steps = 2
    Trainer(cfg, str(tmp_path / "run"), progress=False).train()
    rows = _rows(str(tmp_path / "run"))
    assert np.isfinite(rows[-1]["G/vgg"]) and rows[-1]["G/vgg"] > 0


def test_resume_is_bit_identical(tmp_path):
    cfg = _cfg(steps=6)
    cfg.train.resolution, cfg.train.ckpt_steps, cfg.train.snap_steps, cfg.train.log_steps = 16, 3, 3, 3
    assert_resumes_exactly(cfg, tmp_path, 5)


def test_bad_settings_are_messages(tmp_path):
    with pytest.raises(ValueError, match="coarsest of 4 D scales"):
        Trainer(_cfg(num_D=4), str(tmp_path / "a"), progress=False)
    tr = Trainer(_cfg(n_labels=5), str(tmp_path / "b"), progress=False)
    with pytest.raises(ValueError, match="set it to at least 11"):
        tr.recipe.onehot(torch.full((1, 1, 4, 4), 10 / 255 * 2 - 1))


def test_translate_cli(global_run, tmp_path, capsys):
    from gankern.cli import main
    from gankern.data import open_dataset
    a = open_dataset("digits-labels:val", 16).images[:2, :1]
    src = tmp_path / "in"
    src.mkdir()
    for i, img in enumerate(a):
        Image.fromarray(((img[0].numpy() + 1) * 127.5).round().astype(np.uint8)).save(src / f"l{i}.png")
    assert main(["translate", "--run", global_run, "--input", str(src), "--out", str(tmp_path / "out")]) == 0
    assert sorted(os.listdir(tmp_path / "out")) == ["l0.png", "l1.png"]
    assert np.asarray(Image.open(tmp_path / "out" / "l0.png")).shape == (16, 16)
    assert main(["translate", "--run", global_run, "--input", str(src), "--out", str(tmp_path / "o"),
                 "--direction", "BA"]) == 2
    assert "label maps to images only" in capsys.readouterr().err


def test_label_maps_keep_their_ids_when_resized(tmp_path):
    """labels:DIR reads A as label maps (mode L or P) with nearest-neighbour resizing: a 64 px map at 32 px holds only
    the ids it had (bilinear or Lanczos would make new ones at the edges); other modes are refused with a message."""
    from gankern.data import open_dataset
    from gankern.data.paired import load_labels
    for d in ("A", "B"):
        (tmp_path / d).mkdir()
    ids = np.zeros((64, 64), np.uint8)
    ids[10:40, 5:50], ids[30:60, 20:64] = 7, 24
    Image.fromarray(ids).save(tmp_path / "A" / "x.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(tmp_path / "B" / "x.png")
    ds = open_dataset(f"labels:{tmp_path}", 32, 3)
    a = ds[0][0][:3]
    got = set(((a + 1) * 127.5).round().long().unique().tolist())
    assert got == {0, 7, 24} and a.shape == (3, 32, 32)
    Image.fromarray(ids).convert("RGB").save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="single-channel PNG of label ids"):
        load_labels(str(tmp_path / "rgb.png"), 32, 3)
