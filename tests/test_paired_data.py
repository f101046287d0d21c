"""Image-to-image data (gankern/data/paired.py): built-in digits pairs, aligned A|B files, A/ B/ folders, trainA/
trainB/ folders, and the clear errors of bad layouts."""
import numpy as np
import pytest
import torch
from PIL import Image

from gankern.data import InfiniteLoader, open_dataset
from gankern.data.paired import load_images, split_ab


def _png(path, a):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a.astype(np.uint8)).save(path)


def test_builtin_sets_are_pairs_with_held_out_split():
    e, ev, s = open_dataset("digits-edges", 32), open_dataset("digits-edges:val", 32), open_dataset("digits-styles", 32)
    assert (e.channels, len(e), len(ev), s.channels) == (2, 1500, 297, 6)
    a, b = split_ab(e.images[:16])
    assert set(a.unique().tolist()) <= {-1.0, 1.0} and b.shape == (16, 1, 32, 32)
    a, b = split_ab(s.images)
    assert torch.equal(a[:, 0], a[:, 1]) and (b[:, 2] < b[:, 0]).float().mean() > 0.2   # gray vs orange


def test_aligned_paired_and_unpaired_folders(tmp_path):
    rng = np.random.default_rng(0)
    ab = rng.integers(0, 256, (3, 8, 16, 3))
    for i in range(3):
        _png(tmp_path / "al" / f"{i}.png", ab[i])
        _png(tmp_path / "pr" / "A" / f"{i}.png", ab[i][:, :8])
        _png(tmp_path / "pr" / "B" / f"{i}.png", ab[i][:, 8:])
        _png(tmp_path / "un" / "trainA" / f"a{i}.png", ab[i][:, :8])
    for i in range(5):
        _png(tmp_path / "un" / "trainB" / f"b{i}.png", ab[i % 3][:, 8:])
    al, pr = open_dataset(f"aligned:{tmp_path / 'al'}", 8), open_dataset(f"paired:{tmp_path / 'pr'}", 8)
    assert al.channels == 6 and len(al) == 3
    for i in range(3):
        x = al[i][0]
        assert torch.allclose(x, pr[i][0]) and torch.allclose((x[:3] + 1) * 127.5, torch.from_numpy(
            ab[i][:, :8].transpose(2, 0, 1)).float(), atol=1e-3)
    un = open_dataset(f"unpaired:{tmp_path / 'un'}", 8)
    assert len(un) == 5 and un.channels == 6
    x, _ = next(InfiniteLoader(un, 4, num_workers=0))
    assert x.shape == (4, 6, 8, 8)
    names, imgs = load_images(str(tmp_path / "al"), 8, 3, aligned=True)
    assert names == ["0.png", "1.png", "2.png"] and torch.allclose(imgs[1], al[1][0][:3])


def test_bad_layouts_say_what_is_wrong(tmp_path):
    _png(tmp_path / "A" / "x.png", np.zeros((4, 4)))
    _png(tmp_path / "B" / "y.png", np.zeros((4, 4)))
    with pytest.raises(ValueError, match="same names"):
        open_dataset(f"paired:{tmp_path}", 8)
    with pytest.raises(FileNotFoundError, match="trainA"):
        open_dataset(f"unpaired:{tmp_path}", 8)
    with pytest.raises(ValueError, match="split must be"):
        open_dataset("digits-edges:test", 8)
    with pytest.raises(ValueError, match="even channel count"):
        split_ab(torch.zeros(1, 3, 4, 4))
