"""gankern.ops.fid.trace_sqrt_product: every method against scipy.linalg.sqrtm, the eager twin and exact values
(commuting covariances, scaled copies, low-rank covariances from features), and bad inputs."""
import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gankern.ops import fid

METHODS = tuple(fid.METHODS)


def rand_cov(d, lo=-6.0, hi=1.0, gen=None, q=None):
    """Q diag(logspace(hi, lo, d)) Q^T with a random orthogonal Q (GPU.md's construction), float64."""
    if q is None:
        q, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64, generator=gen))
    w = torch.logspace(hi, lo, d, dtype=torch.float64)
    s = (q * w) @ q.T
    return (s + s.T) / 2, q, w


def scipy_tsp(s1, s2):
    r = scipy.linalg.sqrtm(s1.numpy() @ s2.numpy())
    return float(np.trace(r).real)


@pytest.fixture
def gen():
    g = torch.Generator()
    g.seed()  # fresh inputs every run; the seed is printed on failure through the test ids below
    return g


@pytest.mark.parametrize("method", ("svd", "eigh"))
@pytest.mark.parametrize("d", (64, 97, 200))
def test_matches_scipy(method, d, gen):
    s1, _, _ = rand_cov(d, gen=gen)
    s2, _, _ = rand_cov(d, gen=gen)
    got = fid.trace_sqrt_product(s1, s2, method=method)
    assert got.dtype == torch.float64 and got.dim() == 0
    want = scipy_tsp(s1, s2)
    assert abs(float(got) - want) <= 1e-10 * abs(want), (float(got), want, gen.initial_seed())
    ref = float(fid.trace_sqrt_product_ref(s1, s2))
    assert abs(ref - want) <= 1e-10 * abs(want)


@pytest.mark.parametrize("d", (64, 113, 256))
def test_newton_schulz(d, gen):
    # GPU.md's spectrum (eigenvalues 1e1..1e-6 each): M's spectrum spans ~1e13; the scaled schedule converges
    s1, _, _ = rand_cov(d, gen=gen)
    s2, _, _ = rand_cov(d, gen=gen)
    want = float(fid.trace_sqrt_product(s1, s2, method="svd"))
    got = float(fid.trace_sqrt_product(s1, s2, method="newton_schulz"))
    assert abs(got - want) <= 1e-11 * want, (got, want)
    few = float(fid.trace_sqrt_product(s1, s2, method="newton_schulz", iters=8))
    assert abs(few - want) > 1e-6 * want  # the test can tell an unconverged iteration


def test_ns_schedule():
    sched = fid.ns_schedule()
    assert len(sched) <= 26 and sched[-1] == (1.5, -0.5)
    # scalar check of the whole schedule: s = sqrt(x) for x in [1e-16, 1] ends at 1 (so Y -> sqrt(x))
    s = np.sqrt(np.logspace(-16, 0, 200))
    for a, b in sched:
        s = s * (a + b * s * s)
    assert np.abs(s - 1).max() < 1e-12


@pytest.mark.parametrize("method", METHODS)
def test_commuting_exact(method, gen):
    # S1, S2 with one eigenbasis: Tr sqrtm(S1 S2) = sum sqrt(w1 w2) exactly
    d = 80
    s1, q, w1 = rand_cov(d, lo=-2.0, gen=gen)
    w2 = torch.rand(d, dtype=torch.float64, generator=gen) * 3 + 0.01
    s2 = (q * w2) @ q.T
    s2 = (s2 + s2.T) / 2
    want = float((w1 * w2).sqrt().sum())
    got = float(fid.trace_sqrt_product(s1, s2, method=method))
    assert abs(got - want) <= 1e-11 * want


@pytest.mark.parametrize("method", ("svd", "eigh"))
def test_fid_near_zero_cancellation(method, gen):
    # S2 = (1 + eps) S1: FID = (1 - sqrt(1 + eps))^2 Tr S1 exactly, tiny next to Tr S1 (cancellation)
    from gankern.metrics import frechet_distance
    d = 128
    s1, _, _ = rand_cov(d, gen=gen)
    mu = torch.randn(d, dtype=torch.float64, generator=gen)
    for eps in (0.0, 1e-6, 1e-3):
        s2 = s1 * (1 + eps)
        want = (1 - np.sqrt(1 + eps)) ** 2 * float(torch.trace(s1))
        got = frechet_distance(mu, s1, mu, s2, method=method)
        # svd: rounding only; eigh: sqrt(eps ||M||)-sized error per near-zero eigenvalue of M (module docstring)
        assert abs(got - want) <= {"svd": 1e-11, "eigh": 1e-6}[method], (eps, got, want)


def test_singular_low_rank_exact(gen):
    # fewer samples than dimensions: S_i = Xc_i^T Xc_i / (n_i - 1) has rank n_i - 1 < d. With L_i = Xc_i^T /
    # sqrt(n_i - 1): Tr sqrtm(S1 S2) = ||Xc1 Xc2^T||_* / sqrt((n1 - 1)(n2 - 1)), a small well-conditioned SVD.
    d, n1, n2 = 200, 61, 90
    x1 = torch.randn(n1, d, dtype=torch.float64, generator=gen) * torch.linspace(3, 0.1, d, dtype=torch.float64)
    x2 = torch.randn(n2, d, dtype=torch.float64, generator=gen) + 0.5
    c1, c2 = x1 - x1.mean(0), x2 - x2.mean(0)
    s1 = torch.from_numpy(np.cov(x1.numpy(), rowvar=False))
    s2 = torch.from_numpy(np.cov(x2.numpy(), rowvar=False))
    want = float(torch.linalg.svdvals(c1 @ c2.T).sum() / np.sqrt((n1 - 1) * (n2 - 1)))
    tol = {"svd": 1e-12, "eigh": 1e-9, "newton_schulz": 1e-3}
    for method in METHODS:
        got = float(fid.trace_sqrt_product(s1, s2, method=method))
        assert abs(got - want) <= tol[method] * want, (method, got, want)


def test_cached_factor(gen):
    s1, _, _ = rand_cov(96, gen=gen)
    s2, _, _ = rand_cov(96, gen=gen)
    l1 = fid.psd_factor(s1)
    assert torch.allclose(l1 @ l1.T, s1, rtol=0, atol=1e-12)
    for method in METHODS:
        a = fid.trace_sqrt_product(s1, s2, method=method)
        b = fid.trace_sqrt_product(s1, s2, method=method, factor1=l1)
        assert torch.equal(a, b)
    # float32 statistics are accepted and computed in float64
    got = float(fid.trace_sqrt_product(s1.float(), s2.float()))
    assert abs(got - float(fid.trace_sqrt_product(s1, s2))) <= 1e-5 * got


# ---------------------------------------------------------------------------------------------------- bad inputs
def test_bad_inputs():
    s, _, _ = rand_cov(8)
    with pytest.raises(TypeError, match="sigma1 must be a torch.Tensor"):
        fid.trace_sqrt_product(s.numpy(), s)
    with pytest.raises(ValueError, match="sigma2 must be square"):
        fid.trace_sqrt_product(s, s[:, :5])
    with pytest.raises(ValueError, match="sigma1 must have 2 dimensions"):
        fid.trace_sqrt_product(s[None], s)
    with pytest.raises(ValueError, match="sigma2 has shape .* 8-dimensional"):
        fid.trace_sqrt_product(s, rand_cov(9)[0])
    with pytest.raises(TypeError, match="sigma2 must have dtype"):
        fid.trace_sqrt_product(s, s.long())
    bad = s.clone()
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="sigma2 has non-finite"):
        fid.trace_sqrt_product(s, bad)
    bad = s.clone()
    bad[0, 3] += 1.0
    with pytest.raises(ValueError, match="sigma1 is not symmetric"):
        fid.trace_sqrt_product(bad, s)
    with pytest.raises(ValueError, match="sigma1 is not positive semidefinite"):
        fid.trace_sqrt_product(-s, s)
    with pytest.raises(ValueError, match="method must be one of"):
        fid.trace_sqrt_product(s, s, method="sqrtm")
    with pytest.raises(ValueError, match="iters must be a positive int"):
        fid.trace_sqrt_product(s, s, method="newton_schulz", iters=0)
    with pytest.raises(ValueError, match="factor1 has shape"):
        fid.trace_sqrt_product(s, s, factor1=torch.zeros(5, 5, dtype=torch.float64))


@settings(max_examples=25, deadline=None)
@given(d1=st.integers(1, 6), d2=st.integers(1, 6), extra=st.integers(0, 2), asym=st.floats(1e-3, 1e3))
def test_bad_inputs_fuzz(d1, d2, extra, asym):
    a = torch.eye(d1, dtype=torch.float64)
    b = torch.eye(d2, dtype=torch.float64)
    if extra:
        b = b.reshape((1,) * extra + b.shape)
    if d1 != d2 or extra:
        with pytest.raises(ValueError, match="sigma2"):
            fid.trace_sqrt_product(a, b)
    if d1 > 1:
        n = a.clone()
        n[0, -1] += asym
        with pytest.raises(ValueError, match="not symmetric"):
            fid.trace_sqrt_product(n, a)
    else:
        assert float(fid.trace_sqrt_product(a, a)) == 1.0


# ---------------------------------------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.parametrize("method", METHODS)
def test_gpu_matches_cpu(method):
    g = torch.Generator().manual_seed(7)
    s1, _, _ = rand_cov(257, lo=-3.0, gen=g)
    s2, _, _ = rand_cov(257, lo=-3.0, gen=g)
    want = float(fid.trace_sqrt_product(s1, s2, method="svd"))
    got = fid.trace_sqrt_product(s1.cuda(), s2.cuda(), method=method)
    assert got.device.type == "cuda"
    assert abs(float(got) - want) <= 1e-10 * want


# ----------------------------------------------------------------------------------------------------------------
# uint8 images, as pytorch-fid's users pass them from loaders (issue 17)

def test_inception_and_compute_stats_take_uint8_images():
    import gankern.metrics as metrics
    torch.manual_seed(0)
    net = metrics.FIDInceptionV3(resize_input=False).eval()
    u8 = torch.randint(0, 256, (2, 3, 80, 80), dtype=torch.uint8)
    with torch.no_grad():
        got, want = net(u8), net(u8.float() / 255)
    torch.testing.assert_close(got, want)
    extractor = torch.nn.Sequential(torch.nn.AvgPool2d(8), torch.nn.Flatten())
    mu, sigma = metrics.compute_stats(u8.repeat(3, 1, 1, 1), extractor, batch_size=4).mean_cov()
    mu_f, sigma_f = metrics.compute_stats(u8.repeat(3, 1, 1, 1).float() / 255, extractor, batch_size=4).mean_cov()
    torch.testing.assert_close(mu, mu_f)
    torch.testing.assert_close(sigma, sigma_f)
    with pytest.raises(TypeError, match="uint8 in \\[0, 255\\] or float in \\[0, 1\\]"):
        net(u8.long())
