"""gankern.metrics: FeatureStats (vs numpy.cov, merges, DDP), frechet_distance (vs pytorch-fid's formula on scipy),
KID (every backend vs StyleGAN2-ADA's formula), Inception Score, the FID Inception-v3 (weights loading), the image
reader and `gankern fid`."""
import argparse
import io
import os
import zipfile

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gankern
from gankern.metrics import FeatureStats, FIDReference, frechet_distance, inception_score, kid
from gankern.metrics import cli as fid_cli
from gankern.metrics import inception as inc
from gankern.metrics.extract import compute_stats
from gankern.metrics.images import ImageFiles


@pytest.fixture
def gen():
    g = torch.Generator()
    g.seed()
    return g


# -------------------------------------------------------------------------------------------------- FeatureStats
@pytest.mark.parametrize("block", (512, 16, 5))  # one Gram block; blocks of 16 and 5 columns (odd last block)
def test_feature_stats_matches_numpy_cov(block, gen, monkeypatch):
    from gankern.metrics import stats as stats_mod
    monkeypatch.setattr(stats_mod, "SYRK_BLOCK", block)
    d = 37
    # a mean far larger than the spread: the one-pass sum-of-outer-products formula loses digits here
    x = torch.randn(1001, d, dtype=torch.float64, generator=gen) * 1e-2 + 1e4
    want_mu, want_cov = x.numpy().mean(0), np.cov(x.numpy(), rowvar=False)
    stats = FeatureStats()
    for chunk in x.split(97):  # odd chunk sizes, last chunk of 31 rows
        stats.update(chunk)
    stats.update(x[:0])        # an empty chunk changes nothing
    mu, sigma = stats.mean_cov()
    assert mu.dtype == sigma.dtype == torch.float64 and stats.n == 1001
    np.testing.assert_allclose(mu.numpy(), want_mu, rtol=1e-14, atol=0)
    np.testing.assert_allclose(sigma.numpy(), want_cov, rtol=0, atol=1e-9 * np.abs(want_cov).max())
    naive = (x.T @ x - len(x) * torch.outer(x.mean(0), x.mean(0))) / (len(x) - 1)
    assert np.abs(naive.numpy() - want_cov).max() > 1e-3 * np.abs(want_cov).max()  # the test can tell


@settings(max_examples=15, deadline=None)
@given(cuts=st.lists(st.integers(0, 40), max_size=6), d=st.integers(1, 9), offset=st.floats(-1e3, 1e3))
def test_feature_stats_any_chunking(cuts, d, offset):
    x = torch.randn(41, d, dtype=torch.float64) + offset
    s = FeatureStats()
    edges = sorted(set([0, 41] + cuts))
    for a, b in zip(edges[:-1], edges[1:]):
        s.update(x[a:b])
    mu, sigma = s.mean_cov()
    np.testing.assert_allclose(mu.numpy(), x.numpy().mean(0), rtol=1e-12, atol=1e-12)
    want = np.cov(x.numpy(), rowvar=False).reshape(d, d)
    np.testing.assert_allclose(sigma.numpy(), want, rtol=1e-9, atol=1e-12)


def test_feature_stats_float32_input_and_merge(gen):
    x = torch.rand(300, 20, generator=gen)           # float32 features, accumulated in float64
    a, b = FeatureStats(), FeatureStats()
    a.update(x[:1])                                  # a single row: zero spread so far
    a.update(x[1:123])
    b.update(x[123:])
    a.merge(b).merge(FeatureStats())
    mu, sigma = a.mean_cov()
    x64 = x.double().numpy()
    np.testing.assert_allclose(mu.numpy(), x64.mean(0), rtol=1e-13)
    np.testing.assert_allclose(sigma.numpy(), np.cov(x64, rowvar=False), rtol=1e-11, atol=1e-14)
    c = FeatureStats().load_state_dict(a.state_dict())
    assert torch.equal(c.mean_cov()[1], sigma)


def test_feature_stats_bad_inputs():
    s = FeatureStats()
    with pytest.raises(TypeError, match="feats must be a torch.Tensor"):
        s.update(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="feats must have 2 dimensions"):
        s.update(torch.zeros(3))
    s.update(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="feats has 5 features per row but this FeatureStats holds 4"):
        s.update(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="at least 2 feature rows"):
        FeatureStats().update(torch.zeros(1, 4)).mean_cov()
    with pytest.raises(ValueError, match="cannot merge 6-dimensional"):
        s.merge(FeatureStats().update(torch.zeros(2, 6)))


def _ddp_worker(rank, world, path, parts, out):
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=world)
    s = FeatureStats(dim=parts[0].shape[1])
    if len(parts[rank]):
        s.update(parts[rank])
    s.all_reduce()
    mu, sigma = s.mean_cov()
    torch.save({"n": s.n, "mu": mu, "sigma": sigma}, f"{out}.{rank}")
    dist.destroy_process_group()


def test_feature_stats_all_reduce(tmp_path, gen):
    x = torch.randn(83, 9, dtype=torch.float64, generator=gen) + 5
    parts = [x[:50], x[50:], x[:0]]  # the third rank sees no rows
    torch.multiprocessing.spawn(_ddp_worker, args=(3, str(tmp_path / "pg"), parts, str(tmp_path / "r")), nprocs=3)
    for r in range(3):
        got = torch.load(tmp_path / f"r.{r}")
        assert got["n"] == 83
        np.testing.assert_allclose(got["mu"].numpy(), x.numpy().mean(0), rtol=1e-14)
        np.testing.assert_allclose(got["sigma"].numpy(), np.cov(x.numpy(), rowvar=False), rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------------------------------------- frechet_distance
def pytorch_fid_distance(mu1, sigma1, mu2, sigma2):
    """pytorch-fid's calculate_frechet_distance (scipy sqrtm)."""
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1.dot(sigma2))
    covmean = covmean.real if np.iscomplexobj(covmean) else covmean
    return diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)


@pytest.mark.parametrize("d", (31, 128))
def test_frechet_distance_matches_pytorch_fid(d, gen):
    def stats(shift):
        x = torch.randn(3 * d, d, dtype=torch.float64, generator=gen) @ torch.randn(d, d, dtype=torch.float64,
                                                                                       generator=gen) + shift
        return x.mean(0).numpy(), np.cov(x.numpy(), rowvar=False)
    mu1, s1 = stats(0.0)
    mu2, s2 = stats(0.3)
    want = pytorch_fid_distance(mu1, s1, mu2, s2)
    for kw in ({}, {"method": "eigh"}):
        got = frechet_distance(mu1, s1, mu2, s2, **kw)        # numpy in
        assert isinstance(got, float) and abs(got - want) <= 1e-9 * want
    got = frechet_distance(*(torch.from_numpy(a).float() for a in (mu1, s1, mu2, s2)))  # float32 tensors in
    assert abs(got - want) <= 1e-4 * want
    ref = FIDReference(mu1, s1, method="eigh")                # cached reference factor, reused
    for _ in range(2):
        assert abs(ref(mu2, s2) - want) <= 1e-9 * want
    with pytest.raises(ValueError, match="sigma has shape"):
        FIDReference(mu1[:-1], s1)


def test_frechet_distance_bad_inputs():
    mu, s = np.zeros(4), np.eye(4)
    with pytest.raises(ValueError, match="mu1 and mu2 have different lengths"):
        frechet_distance(mu, s, np.zeros(5), np.eye(5))
    with pytest.raises(ValueError, match="sigma2 has shape .* expected \\(4, 4\\)"):
        frechet_distance(mu, s, mu, np.eye(5))
    with pytest.raises(ValueError, match="mu2 has non-finite"):
        frechet_distance(mu, s, np.full(4, np.nan), s)
    with pytest.raises(ValueError, match="sigma1 is not symmetric"):
        frechet_distance(mu, np.triu(np.ones((4, 4))), mu, s)
    with pytest.raises(ValueError, match="sigma1 must have 2 dimensions"):
        frechet_distance(mu, np.ones(4), mu, s)


# ----------------------------------------------------------------------------------------------------------- KID
def stylegan2_kid(real, gen_feats, num_subsets, max_subset_size, seed):
    """StyleGAN2-ADA's compute_kid, numpy float64, with gankern's subset draws."""
    n = real.shape[1]
    m = min(min(real.shape[0], gen_feats.shape[0]), max_subset_size)
    g = torch.Generator().manual_seed(seed)
    ix = [torch.randperm(gen_feats.shape[0], generator=g)[:m].numpy() for _ in range(num_subsets)]
    iy = [torch.randperm(real.shape[0], generator=g)[:m].numpy() for _ in range(num_subsets)]
    t = 0
    for s in range(num_subsets):
        x, y = gen_feats[ix[s]], real[iy[s]]
        a = (x @ x.T / n + 1) ** 3 + (y @ y.T / n + 1) ** 3
        b = (x @ y.T / n + 1) ** 3
        t += (a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m
    return t / num_subsets / m


@pytest.mark.parametrize("backend", ("ref", "triton"), indirect=True)
@pytest.mark.parametrize("dtype", (torch.float64, torch.float32))
@pytest.mark.parametrize("n_real,n_fake,d,subset", [(70, 53, 45, 40), (33, 90, 67, 1000), (80, 75, 20, 70)])
def test_kid_matches_stylegan2(backend, dtype, n_real, n_fake, d, subset, gen):
    real = torch.rand(n_real, d, dtype=torch.float64, generator=gen)
    fake = torch.rand(n_fake, d, dtype=torch.float64, generator=gen) * 1.1
    want = stylegan2_kid(real.to(dtype).double().numpy(), fake.to(dtype).double().numpy(), 3, subset, seed=5)
    got = kid(real.to(dtype), fake.to(dtype), num_subsets=3, max_subset_size=subset, seed=5)
    assert abs(got - want) <= 1e-9 * abs(want) + 1e-12, (got, want)


def test_kid_identical_and_bad_inputs(gen):
    x = torch.rand(50, 8, dtype=torch.float64, generator=gen)
    with pytest.raises(ValueError, match="feats_real has 8 features per row but feats_fake has 9"):
        kid(x, torch.rand(50, 9, dtype=torch.float64))
    with pytest.raises(ValueError, match="num_subsets must be a positive int"):
        kid(x, x, num_subsets=0)
    with pytest.raises(ValueError, match="feats_fake has non-finite"):
        kid(x, torch.full((5, 8), float("inf"), dtype=torch.float64))
    with pytest.raises(ValueError, match="feats_real needs at least 2 rows"):
        kid(x[:1], x)
    with pytest.raises(gankern.BackendUnavailable, match="kid has no cuda kernels"):
        with gankern.use_backend("cuda"), gankern._ext.simulate_cuda():
            kid(x, x)


# ------------------------------------------------------------------------------------------------ Inception Score
def test_inception_score(gen):
    logits = torch.randn(103, 17, dtype=torch.float64, generator=gen) * 3
    p = torch.softmax(logits, 1).numpy()
    scores = []
    for part in np.array_split(p, 4):
        py = part.mean(0, keepdims=True)
        scores.append(np.exp((part * (np.log(part) - np.log(py))).sum(1).mean()))
    mean, std = inception_score(logits, splits=4)
    assert abs(mean - np.mean(scores)) < 1e-12 and abs(std - np.std(scores)) < 1e-12
    # extremes: identical predictions give 1; confident predictions spread over C classes give C
    assert inception_score(torch.zeros(10, 5), splits=2)[0] == pytest.approx(1.0, abs=1e-12)
    sharp = torch.eye(5, dtype=torch.float64).repeat(4, 1) * 100
    assert inception_score(sharp, splits=1)[0] == pytest.approx(5.0, rel=1e-9)
    with pytest.raises(ValueError, match="splits \\(30\\) must not exceed"):
        inception_score(logits[:20], splits=30)
    with pytest.raises(ValueError, match="logits has non-finite"):
        inception_score(torch.full((4, 3), float("nan")), splits=1)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(0, 4), d=st.integers(1, 4), splits=st.integers(-1, 3))
def test_bad_shapes_fuzz(n, d, splits):
    x = torch.rand(n, d, dtype=torch.float64)
    if n < 2:
        with pytest.raises(ValueError, match="needs at least 2 rows"):
            kid(x, torch.rand(5, d, dtype=torch.float64))
    if splits < 1:
        with pytest.raises(ValueError, match="splits must be a positive int"):
            inception_score(torch.rand(5, 3), splits=splits)
    elif splits > n:
        with pytest.raises(ValueError, match="must not exceed"):
            inception_score(torch.rand(n, 3), splits=splits)


# ----------------------------------------------------------------------------------------------- Inception-v3
TORCHVISION_KEYS = {  # a sample of torchvision's inception_v3(num_classes=1008, aux_logits=False) keys and shapes
    "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
    "Conv2d_4a_3x3.bn.running_var": (192,),
    "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
    "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
    "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
    "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
    "Mixed_7b.branch3x3dbl_1.conv.weight": (448, 1280, 1, 1),
    "Mixed_7c.branch3x3_2b.conv.weight": (384, 384, 3, 1),
    "Mixed_7c.branch_pool.conv.weight": (192, 2048, 1, 1),
    "fc.weight": (1008, 2048),
    "fc.bias": (1008,),
}


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """A state dict with the keys and shapes of pt_inception-2015-12-05 (no num_batches_tracked, as in the file)."""
    torch.manual_seed(0)
    m = inc.FIDInceptionV3()
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.1, 0.1)
            mod.running_var.uniform_(0.5, 1.5)
    sd = {k: v for k, v in m.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path_factory.mktemp("w") / inc.WEIGHTS_NAME
    torch.save(sd, path)
    return path, sd


def test_inception_state_dict_layout(weights_file):
    _, sd = weights_file
    for k, shape in TORCHVISION_KEYS.items():
        assert tuple(sd[k].shape) == shape, k
    assert not any(k.startswith("AuxLogits") for k in sd)
    assert len([k for k in sd if k.endswith("conv.weight")]) == 94  # torchvision Inception3 minus AuxLogits


def test_inception_load_and_forward(weights_file, monkeypatch, tmp_path):
    path, sd = weights_file
    model = inc.load_fid_inception(path)
    assert not model.training
    assert torch.equal(model.Mixed_7c.branch_pool.conv.weight, sd["Mixed_7c.branch_pool.conv.weight"])
    # found through the environment variable and through the cache directory as well
    monkeypatch.setenv(inc.WEIGHTS_ENV, str(path))
    assert inc.find_weights() == path
    monkeypatch.delenv(inc.WEIGHTS_ENV)
    monkeypatch.setenv("GANKERN_CACHE", str(path.parent))
    assert inc.find_weights() == path
    monkeypatch.setenv("GANKERN_CACHE", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="were not found; looked at"):
        inc.find_weights()
    # the smallest input the network takes, without the resize: shapes of the outputs
    model.resize_input = False
    with torch.no_grad():
        pool, logits = model(torch.rand(2, 3, 75, 75))
    assert pool.shape == (2, 2048) and logits.shape == (2, 1008)
    assert torch.allclose(logits, model.fc(pool))
    with pytest.raises(ValueError, match="images must have shape"):
        model(torch.rand(2, 1, 75, 75))


def test_inception_bad_state_dicts(weights_file, tmp_path):
    _, sd = weights_file
    model = inc.FIDInceptionV3()
    bad = dict(sd)
    bad.pop("Mixed_6b.branch1x1.conv.weight")
    bad["AuxLogits.fc.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="missing keys \\['Mixed_6b.branch1x1.conv.weight'\\].*unexpected keys"):
        inc.load_state(model, bad)
    bad = dict(sd)
    bad["fc.weight"] = torch.zeros(1000, 2048)
    with pytest.raises(ValueError, match="wrong shapes.*fc.weight: \\(1000, 2048\\)"):
        inc.load_state(model, bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        inc.load_fid_inception(tmp_path / "nope.pth")


def test_fid_pooling_variants():
    # pytorch-fid's blocks: average pools that leave the padding out of the count, a max pool in Mixed_7c
    x = torch.ones(1, 1, 4, 4)
    assert torch.equal(inc._avg3(x), x)
    assert inc.FIDInceptionV3().Mixed_7c.pool == "max" and inc.FIDInceptionV3().Mixed_7b.pool == "avg"


# --------------------------------------------------------------------------------------- images, extract, CLI
def _png(arr):
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def image_dir(tmp_path):
    rng = np.random.default_rng()
    d = tmp_path / "imgs"
    (d / "sub").mkdir(parents=True)
    arrs = {"a.png": rng.integers(0, 256, (20, 24, 3), dtype=np.uint8),
            "sub/b.png": rng.integers(0, 256, (31, 17, 3), dtype=np.uint8),   # another size
            "c.png": rng.integers(0, 256, (20, 24), dtype=np.uint8)}          # grayscale
    for name, a in arrs.items():
        (d / name).write_bytes(_png(a))
    (d / "notes.txt").write_text("not an image")
    return d, arrs


def test_image_reader(image_dir, tmp_path):
    d, arrs = image_dir
    ds = ImageFiles(d, size=None)
    assert ds.names == ["a.png", "c.png", os.path.join("sub", "b.png")]
    assert torch.equal(ds[0], torch.from_numpy(arrs["a.png"]).permute(2, 0, 1).float() / 255)
    assert torch.equal(ds[1][0], ds[1][2])  # grayscale -> RGB
    ds = ImageFiles(d)                      # resized per image, as pytorch-fid's model does
    want = torch.nn.functional.interpolate(torch.from_numpy(arrs["sub/b.png"]).permute(2, 0, 1)[None].float() / 255,
                                           size=(299, 299), mode="bilinear", align_corners=False)[0]
    assert ds[2].shape == (3, 299, 299) and torch.allclose(ds[2], want)
    z = tmp_path / "imgs.zip"
    with zipfile.ZipFile(z, "w") as f:
        for name, a in arrs.items():
            f.writestr(name, _png(a))
    zs = ImageFiles(z, size=None)
    assert zs.names == ["a.png", "c.png", "sub/b.png"] and torch.equal(zs[0], ImageFiles(d, size=None)[0])
    (d / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot read image .*broken.png"):
        [ImageFiles(d)[i] for i in range(4)]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images found"):
        ImageFiles(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFiles(tmp_path / "missing")


def test_compute_stats_custom_extractor(image_dir):
    d, _ = image_dir
    pool = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(3), torch.nn.Flatten())   # any nn.Module: (B, 27)
    stats = compute_stats(d, pool, batch_size=2)
    ims = torch.stack([ImageFiles(d)[i] for i in range(3)])
    feats = pool(ims).double().numpy()
    mu, sigma = stats.mean_cov()
    np.testing.assert_allclose(mu.numpy(), feats.mean(0), rtol=1e-6)
    np.testing.assert_allclose(sigma.numpy(), np.cov(feats, rowvar=False), rtol=1e-5, atol=1e-9)
    assert torch.equal(compute_stats(ims, pool, batch_size=2).mean_cov()[1], sigma)


def _cli(argv):
    p = argparse.ArgumentParser(prog="gankern")
    fid_cli.add_parsers(p.add_subparsers(dest="command"))
    args = p.parse_args(argv)
    return args.func(args)


def test_cli_with_stats_files(tmp_path, capsys, gen):
    from gankern.metrics import save_stats
    x1 = torch.randn(40, 6, dtype=torch.float64, generator=gen)
    x2 = torch.randn(50, 6, dtype=torch.float64, generator=gen) + 1
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    save_stats(a, x1.mean(0), np.cov(x1.numpy(), rowvar=False))
    save_stats(b, x2.mean(0), np.cov(x2.numpy(), rowvar=False))
    assert _cli(["fid", str(a), str(b), "--device", "cpu", "--method", "eigh"]) == 0
    got = float(capsys.readouterr().out.split("FID:")[1])
    with np.load(a) as fa, np.load(b) as fb:
        want = pytorch_fid_distance(fa["mu"], fa["sigma"], fb["mu"], fb["sigma"])
    assert abs(got - want) < 1e-5
    np.savez(tmp_path / "bad.npz", mean=np.zeros(3))
    assert _cli(["fid", str(a), str(tmp_path / "bad.npz"), "--device", "cpu"]) == 1
    assert "missing array(s) ['mu', 'sigma']" in capsys.readouterr().err
    assert _cli(["fid", str(a)]) == 2


def test_cli_images_end_to_end(image_dir, weights_file, tmp_path, capsys):
    d, _ = image_dir
    path, _ = weights_file
    out = tmp_path / "s.npz"
    argv = ["fid", str(d), "--save-stats", str(out), "--weights", str(path), "--device", "cpu",
            "--batch-size", "2", "--num-workers", "0"]
    assert _cli(argv) == 0
    with np.load(out) as f:
        assert f["mu"].shape == (2048,) and f["sigma"].shape == (2048, 2048) and np.isfinite(f["sigma"]).all()
    assert "features: 100%" in capsys.readouterr().err  # the progress bar (tqdm)
    (d / "broken.png").write_bytes(b"\x89PNG garbage")
    assert _cli(argv) == 1
    assert "cannot read image" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", (torch.float32, torch.float64))
def test_gpu_kid_triton(dtype):
    g = torch.Generator().manual_seed(1)
    real = torch.rand(3001, 2048, generator=g, dtype=torch.float64).to(dtype).cuda()
    fake = (torch.rand(2500, 2048, generator=g, dtype=torch.float64) * 1.05).to(dtype).cuda()
    want = stylegan2_kid(real.double().cpu().numpy(), fake.double().cpu().numpy(), 4, 1000, seed=2)
    with gankern.use_backend("triton"):
        got = kid(real, fake, num_subsets=4, max_subset_size=1000, seed=2)
    assert abs(got - want) <= 1e-9 * abs(want) + 1e-12


@pytest.mark.gpu
def test_gpu_feature_stats():
    x = torch.rand(20011, 2048, device="cuda") * 3 + 100
    s = FeatureStats()
    for c in x.split(4999):
        s.update(c)
    mu, sigma = s.mean_cov()
    assert sigma.device.type == "cuda"
    want = np.cov(x.double().cpu().numpy(), rowvar=False)
    np.testing.assert_allclose(sigma.cpu().numpy(), want, rtol=0, atol=1e-10 * np.abs(want).max())
