"""Data sets (digits, folders, zips, arrays, labels) and the resumable, DDP-sharded loader."""
import gc
import json
import weakref
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
    # freed when dropped, not by the garbage collector (which tears the queues down first: 10 s of worker joins)
    gc.disable()
    try:
        ref = weakref.ref(ld)
        del ld
        assert ref() is None
    finally:
        gc.enable()


# ---------------------------------------------------------------------------------------------- pixel ranges
def _u8(seed=0, shape=(4, 6, 6, 3)):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@pytest.mark.parametrize("kind", ["npz", "npy"])
@pytest.mark.parametrize("stored", ["uint8", "float32-0..255", "float64-0..1", "float32--1..1", "int64-8bit",
                                    "uint16-8bit", "uint16-16bit", "int32-16bit", "float16-0..1"])
def test_array_range_is_decided_from_dtype_and_values(tmp_path, caplog, kind, stored):
    x8 = _u8()
    x = {"uint8": x8, "float32-0..255": x8.astype(np.float32), "float64-0..1": x8 / 255.0,
         "float32--1..1": (x8 / 127.5 - 1).astype(np.float32), "int64-8bit": x8.astype(np.int64),
         "uint16-8bit": x8.astype(np.uint16), "uint16-16bit": x8.astype(np.uint16) * 257,
         "int32-16bit": x8.astype(np.int32) * 257, "float16-0..1": (x8 / 255.0).astype(np.float16)}[stored]
    path = tmp_path / f"d.{kind}"
    np.savez(path, x=x) if kind == "npz" else np.save(path, x)
    with caplog.at_level("INFO", logger="gankern.data"):
        ds = open_dataset(str(path), 6)
    want = torch.from_numpy(x8.transpose(0, 3, 1, 2)).float() / 127.5 - 1
    tol = 2e-3 if stored == "float16-0..1" else 1e-6              # float16 holds 0..1 to about 3 decimal digits
    torch.testing.assert_close(ds.images, want, atol=tol, rtol=0)
    lines = [r.getMessage() for r in caplog.records if r.name == "gankern.data"]
    assert len(lines) == 1 and "\n" not in lines[0] and lines[0] == ds.summary
    expect = {"uint8": "0..255", "float32-0..255": "0..255", "float64-0..1": "0..1", "float32--1..1": "-1..1",
              "int64-8bit": "8-bit (0..255)", "uint16-8bit": "8-bit (0..255)", "uint16-16bit": "16-bit (0..65535)",
              "int32-16bit": "16-bit (0..65535)", "float16-0..1": "0..1"}[stored]
    assert f"read as {expect}" in lines[0] and str(x.dtype) in lines[0]


def test_bool_arrays_are_0_1_and_bad_arrays_are_refused_with_how_to_convert(tmp_path):
    b = np.random.default_rng(1).random((3, 4, 4)) > 0.5
    np.save(tmp_path / "b.npy", b)
    torch.testing.assert_close(open_dataset(str(tmp_path / "b.npy"), 4).images[:, 0],
                               torch.from_numpy(b).float() * 2 - 1)
    bad = {"over255": np.full((2, 4, 4), 300.0, np.float32), "negative-int": np.full((2, 4, 4), -3, np.int16),
           "over16bit": np.full((2, 4, 4), 70000, np.int64), "nan": np.full((2, 4, 4), np.nan, np.float32),
           "below-1": np.full((2, 4, 4), -2.0), "complex": np.zeros((2, 4, 4), np.complex64)}
    for name, x in bad.items():
        np.save(tmp_path / f"{name}.npy", x)
        with pytest.raises(ValueError, match="uint8|nan_to_num|np.save") as e:
            open_dataset(str(tmp_path / f"{name}.npy"), 4)
        assert name in str(e.value)                              # the message names the file


def test_array_labels_are_checked(tmp_path):
    x = _u8(shape=(4, 6, 6))
    for y, msg in ((np.array([0, 1, -1, 2]), "labels must be 0, 1"), (np.array([0, 1]), r"shape \(2,\)"),
                   (np.array([0.5, 1, 2, 3]), "integers")):
        np.savez(tmp_path / "d.npz", x=x, y=y)
        with pytest.raises(ValueError, match=msg):
            open_dataset(str(tmp_path / "d.npz"), 6)
    with pytest.raises(ValueError, match="folders and zips"):
        open_dataset(str(tmp_path / "d.npz"), 6, subfolder_labels=True)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_dataset(str(tmp_path / "none.npz"), 6)
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(ValueError, match="cannot read it"):
        open_dataset(str(tmp_path / "junk.npy"), 6)


def _mode_files(root, g8, rgb8):
    """The same 6x6 pictures saved in every pillow mode the reader supports; returns {file: expected (C, 6, 6)}."""
    root.mkdir(parents=True, exist_ok=True)
    gray = torch.from_numpy(g8).float()[None] / 127.5 - 1
    color = torch.from_numpy(rgb8.transpose(2, 0, 1)).float() / 127.5 - 1
    rgba = np.concatenate([rgb8, np.full((6, 6, 1), 7, np.uint8)], 2)           # alpha is dropped
    Image.fromarray(g8).save(root / "l.png")
    Image.fromarray(rgb8).save(root / "rgb.png")
    Image.fromarray(rgba).save(root / "rgba.png")
    pal = Image.fromarray(rgb8).convert("P", palette=Image.Palette.ADAPTIVE, colors=256)
    pal.save(root / "p.png")
    Image.fromarray(g8.astype(np.uint16) * 257).save(root / "i16.png")          # 16-bit PNG: mode I;16
    Image.fromarray(g8.astype(np.int32) * 257).save(root / "i32.tif")           # mode I
    Image.fromarray(g8.astype(np.float32) / 255).save(root / "f32.tif")         # mode F
    modes = {n: Image.open(root / n).mode for n in ("l.png", "rgb.png", "rgba.png", "p.png", "i16.png", "i32.tif",
                                                     "f32.tif")}
    assert modes == {"l.png": "L", "rgb.png": "RGB", "rgba.png": "RGBA", "p.png": "P", "i16.png": "I;16",
                     "i32.tif": "I", "f32.tif": "F"}
    return {"l.png": gray, "rgb.png": color, "rgba.png": color, "p.png": color, "i16.png": gray, "i32.tif": gray,
            "f32.tif": gray}


@pytest.mark.parametrize("container", ["folder", "zip"])
def test_every_image_mode_is_read_in_its_range(tmp_path, caplog, container):
    rng = np.random.default_rng(2)
    g8 = rng.integers(0, 256, (6, 6), dtype=np.uint8)
    rgb8 = rng.choice(np.array([[0, 0, 0], [255, 255, 255], [12, 200, 99], [250, 3, 128]], np.uint8), (6, 6))
    want = _mode_files(tmp_path / "m", g8, rgb8)
    path = tmp_path / "m"
    if container == "zip":
        path = tmp_path / "m.zip"
        with zipfile.ZipFile(path, "w") as z:
            for n in want:
                z.write(tmp_path / "m" / n, n)
    with caplog.at_level("INFO", logger="gankern.data"):
        rgb, one = open_dataset(str(path), 6), open_dataset(str(path), 6, channels=1)
    for i, n in enumerate(rgb.names):
        x = want[n]
        torch.testing.assert_close(rgb[i][0], x.expand(3, 6, 6), atol=1e-6, rtol=0, msg=n)
        if x.shape[0] == 1:
            torch.testing.assert_close(one[i][0], x, atol=1e-6, rtol=0, msg=n)
    lines = [r.getMessage() for r in caplog.records if r.name == "gankern.data"]
    assert len(lines) == 2 and "mode F" in lines[0] and "I;16 and I as 0..65535" in lines[0]  # f32.tif sorts first
    assert open_dataset(str(path), 3)[rgb.names.index("i16.png")][0].shape == (3, 3, 3)   # resized in float


def test_16bit_images_keep_their_precision_and_bad_wide_images_are_refused(tmp_path):
    (tmp_path / "w").mkdir()
    v = np.array([[0, 256, 40000], [65535, 1000, 30000], [7, 8, 9]], np.uint16)
    Image.fromarray(v).save(tmp_path / "w" / "a.png")
    torch.testing.assert_close(open_dataset(str(tmp_path / "w"), 3, channels=1)[0][0][0],
                               torch.from_numpy(v.astype(np.float32) / 65535 * 2 - 1), atol=1e-6, rtol=0)
    for name, a in (("f.tif", np.full((3, 3), 2.0, np.float32)), ("i.tif", np.full((3, 3), -5, np.int32))):
        d = tmp_path / name[0]
        d.mkdir()
        Image.fromarray(a).save(d / name)
        with pytest.raises(ValueError, match=f"{name}.*save it as an 8- or 16-bit PNG"):
            open_dataset(str(d), 3)[0]
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot read image .*x.png"):          # at load time, not in a worker
        open_dataset(str(tmp_path / "bad"), 3)


def test_subfolder_labels_reject_top_level_images_and_labels_are_checked(tmp_path):
    root = _tree(tmp_path / "imgs")
    _png(root / "stray.png", 5)
    with pytest.raises(ValueError, match=r"1 of 7 images lie at the top level \(e.g. stray.png\)"):
        open_dataset(str(root), 8, subfolder_labels=True)
    names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
    (tmp_path / "l.csv").write_text("\n".join(f"{n},{-1 if n == 'stray.png' else 0}" for n in names))
    with pytest.raises(ValueError, match="labels must be 0, 1"):
        open_dataset(str(root), 8, labels_file=str(tmp_path / "l.csv"))
    (tmp_path / "l.csv").write_text("\n".join(f"{n},cat" for n in names))
    with pytest.raises(ValueError, match="integer label"):
        open_dataset(str(root), 8, labels_file=str(tmp_path / "l.csv"))
    (root / "stray.png").unlink()
    assert open_dataset(str(root), 8, subfolder_labels=True).num_classes == 2
