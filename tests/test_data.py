"""Data sets (digits, folders, zips, arrays, labels) and the resumable, DDP-sharded loader."""
import json
import zipfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from gankern.data import InfiniteLoader, digits, open_dataset


def test_digits_are_the_sklearn_images_upscaled():
    from sklearn.datasets import load_digits
    d = load_digits()
    ds = digits(32)
    assert len(ds) == 1797 and ds.images.shape == (1797, 1, 32, 32) and ds.num_classes == 10
    assert ds.images.min() == -1 and ds.images.max() <= 1
    back = F.avg_pool2d(ds.images, 4)                        # area-downsample back to 8x8
    want = torch.from_numpy(d.images / 16.0).float()[:, None] * 2 - 1
    assert (back - want).abs().mean() < 0.2                   # bilinear up + area down blurs a little
    assert torch.corrcoef(torch.stack([back.flatten(), want.flatten()]))[0, 1] > 0.95
    assert torch.equal(ds.labels, torch.from_numpy(d.target).long())


def _png(path, value, size=(12, 8), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.zeros((size[1], size[0], 3), np.uint8)
    a[:, :, 0] = value
    a[:, : size[0] // 6] = 255                                # a left band that the center crop must drop
    Image.fromarray(a).convert(mode).save(path)


def _tree(root):
    for cls, v in (("cats", 10), ("dogs", 200)):
        for i in range(3):
            _png(root / cls / f"{i}.png", v + i)
    return root


def test_folder_recursive_center_crop_and_subfolder_labels(tmp_path):
    ds = open_dataset(str(_tree(tmp_path / "imgs")), 8, subfolder_labels=True)
    assert len(ds) == 6 and ds.num_classes == 2 and ds.class_names == ["cats", "dogs"]
    x, y = ds[4]                                              # dogs/1.png
    assert x.shape == (3, 8, 8) and y == 1
    # 12x8 -> center 8x8 crop drops the white band (first 2 columns); red channel = 201
    torch.testing.assert_close(x[0], torch.full((8, 8), 201 / 127.5 - 1))
    assert x[1].max() == -1


def test_zip_matches_folder_and_labels_file(tmp_path):
    root = _tree(tmp_path / "imgs")
    with zipfile.ZipFile(tmp_path / "imgs.zip", "w") as z:
        for p in sorted(root.rglob("*.png")):
            z.write(p, p.relative_to(root).as_posix())
    names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
    labels = {n: i % 3 for i, n in enumerate(names)}
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": [[n, v] for n, v in labels.items()]}))
    a = open_dataset(str(root), 8, subfolder_labels=True)
    b = open_dataset(str(tmp_path / "imgs.zip"), 8, labels_file=str(tmp_path / "dataset.json"))
    assert a.names == b.names
    for i in range(len(a)):
        torch.testing.assert_close(a[i][0], b[i][0])
        assert b[i][1] == labels[b.names[i]]
    (tmp_path / "labels.csv").write_text("\n".join(f"{n},{v}" for n, v in labels.items()))
    c = open_dataset(str(tmp_path / "imgs.zip"), 8, labels_file=str(tmp_path / "labels.csv"))
    assert c.labels.tolist() == b.labels.tolist()


def test_grayscale_and_missing_labels(tmp_path):
    _png(tmp_path / "g" / "a.png", 90, mode="L")
    ds = open_dataset(str(tmp_path / "g"), 4, channels=1)
    assert ds[0][0].shape == (1, 4, 4) and ds.num_classes == 0 and ds[0][1] == -1
    (tmp_path / "l.csv").write_text("other.png,1\n")
    with pytest.raises(ValueError, match="no label"):
        open_dataset(str(tmp_path / "g"), 4, labels_file=str(tmp_path / "l.csv"))
    with pytest.raises(FileNotFoundError):
        open_dataset(str(tmp_path / "nope"), 4)


@pytest.mark.parametrize("layout", ["NHWC", "NCHW", "NHW"])
def test_npz_and_npy_layouts(tmp_path, layout):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (5, 6, 6, 3), dtype=np.uint8)
    arr = {"NHWC": x, "NCHW": x.transpose(0, 3, 1, 2), "NHW": x[..., 0]}[layout]
    np.savez(tmp_path / "d.npz", x=arr, y=np.arange(5) % 2)
    np.save(tmp_path / "d.npy", arr)
    a, b = open_dataset(str(tmp_path / "d.npz"), 6), open_dataset(str(tmp_path / "d.npy"), 6)
    c = 1 if layout == "NHW" else 3
    assert a.images.shape == (5, c, 6, 6) and a.num_classes == 2 and b.num_classes == 0
    torch.testing.assert_close(a.images[2, 0], torch.from_numpy(x[2, :, :, 0]).float() / 127.5 - 1)
    torch.testing.assert_close(a.images, b.images)
    assert open_dataset(str(tmp_path / "d.npz"), 2).images.shape[-1] == 2     # area resize


def test_loader_epochs_are_permutations_and_resume_and_shards_agree():
    ds = digits(8)
    one = InfiniteLoader(ds, 64, seed=3)
    seen = torch.cat([one.indices(k) for k in range(len(ds) // 64)])
    assert len(set(seen.tolist())) == len(seen)                      # no repeats inside an epoch
    batches = [next(one) for _ in range(40)]                         # crosses an epoch boundary (28 per epoch)
    again = InfiniteLoader(ds, 64, seed=3, start=30)
    torch.testing.assert_close(next(again)[0], batches[30][0])
    r0, r1 = (InfiniteLoader(ds, 64, rank=r, world=2, seed=3) for r in (0, 1))
    for k in range(3):
        x0, y0 = next(r0)
        x1, y1 = next(r1)
        torch.testing.assert_close(torch.cat([x0, x1]), batches[k][0])
        assert torch.equal(torch.cat([y0, y1]), batches[k][1])
    assert not torch.equal(InfiniteLoader(ds, 64, seed=4).indices(0), one.indices(0))
    with pytest.raises(ValueError, match="divide"):
        InfiniteLoader(ds, 63, world=2)


def test_mirror_flips_half_and_file_loader_with_workers(tmp_path):
    ds = digits(8)
    plain, flipped = InfiniteLoader(ds, 256, seed=1), InfiniteLoader(ds, 256, seed=1, mirror=True)
    a, b = next(plain)[0], next(flipped)[0]
    same = (a == b).flatten(1).all(1)
    mirrored = (a.flip(-1) == b).flatten(1).all(1)
    assert (same | mirrored).all() and 80 < mirrored.sum() < 176
    files = open_dataset(str(_tree(tmp_path / "imgs")), 8)
    ld = InfiniteLoader(files, 4, seed=0, num_workers=2)
    x, y = next(ld)
    idx = ld.indices(0)
    torch.testing.assert_close(x, torch.stack([files[int(i)][0] for i in idx]))
