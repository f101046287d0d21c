"""gankern.steer: the structured solutions against the paper's dense formulas (Kronecker products of the spatial
operators with I_C, built here on small layers), the walks' algebra, the first layers it finds in gankern's
generators, principal directions, bad input; and, on a DCGAN trained here on scikit-learn's digits, the shift
directions move the digits' center of mass and the zoom direction their size, monotonically."""
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from gankern import steer
from gankern.models import ModelConfig, build
from gankern.models import biggan as B
from gankern.models.stylegan2 import Generator as StyleGAN2Generator


def small_dcgan(seed=0, **changes):
    torch.manual_seed(seed)
    G, _ = build(ModelConfig(arch="dcgan", z_dim=6, g_ch=4, **changes), 16, 1)
    with torch.no_grad():   # give BatchNorm1d statistics and an affine part that matter
        bn = G.fc[1]
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.normal_()
        bn.bias.normal_()
        G.fc[0].bias.normal_()
    return G.eval()


def dense_solution(W, b, P_s, D_s, C):
    """The paper's code: dense P = I_C kron P_s, D = I_C kron D_s, q = (W^T D^T D W)^-1 W^T D^T (P - D) b and
    M = (W^T D^T D W)^-1 W^T D^T D P W."""
    P, D = torch.kron(torch.eye(C, dtype=W.dtype), P_s), torch.kron(torch.eye(C, dtype=W.dtype), D_s)
    pinv = torch.inverse(W.T @ D.T @ D @ W) @ W.T @ D.T
    return pinv @ (P - D) @ b, pinv @ D @ P @ W


def test_first_layer_of_dcgan_folds_batchnorm():
    G = small_dcgan()
    fl = steer.first_layer(G)
    z = torch.randn(5, 6, dtype=torch.float64)
    expected = G.fc[:2].double()(z)
    torch.testing.assert_close(z @ fl.weight.T + fl.bias, expected)
    assert fl.shape == (G.top, 4, 4) and fl.start == 0 and fl.z_dim == 6


@pytest.mark.parametrize("transform", ["shift_x", "shift_y", "zoom", "matrix"])
def test_linear_and_nonlinear_directions_match_the_dense_formula(transform):
    G = small_dcgan()
    fl = steer.first_layer(G)
    if transform == "matrix":
        transform = torch.rand(16, 16, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    P_s, D_s = steer.transform_operators(transform, 4, 4)
    q, M = dense_solution(fl.weight, fl.bias, P_s, D_s, G.top)
    torch.testing.assert_close(steer.directions(G, transform, "linear").q, q)
    d = steer.directions(G, transform, "nonlinear")
    torch.testing.assert_close(d._M, M)
    z = torch.randn(3, 6, dtype=torch.float64)
    expected = z.clone()
    for _ in range(3):
        expected = expected @ M.T + q
    torch.testing.assert_close(d(z, 3), expected)
    torch.testing.assert_close(d(z, 0), z)


def test_nonlinear_negative_steps_use_the_inverse_transform():
    G = small_dcgan()
    fl = steer.first_layer(G)
    for transform in ("shift_x", "zoom"):
        q, M = dense_solution(fl.weight, fl.bias, *steer.transform_operators(transform, 4, 4, -1), G.top)
        z = torch.randn(2, 6, dtype=torch.float64)
        torch.testing.assert_close(steer.directions(G, transform, "nonlinear")(z, -2), (z @ M.T + q) @ M.T + q)


def test_transform_operators_are_index_maps_and_masks():
    P, D = steer.transform_operators("shift_x", 3, 4)
    img = torch.arange(12, dtype=torch.float64)
    moved = (P @ img).view(3, 4)
    torch.testing.assert_close(moved[:, 1:], img.view(3, 4)[:, :-1])
    assert (moved[:, 0] == 0).all() and (D.diag().view(3, 4)[:, 0] == 0).all() and D.diag().sum() == 9
    P, _ = steer.transform_operators("shift_y", 3, 4, -1)
    torch.testing.assert_close((P @ img).view(3, 4)[:-1], img.view(3, 4)[1:])
    P, D = steer.transform_operators("zoom", 4, 4)
    assert P.diag().view(4, 4)[1:3, 1:3].all() and P.sum() == 4 and torch.equal(D, torch.eye(16, dtype=D.dtype))


def test_great_circle_keeps_the_norm_and_turns_by_alpha():
    G = small_dcgan()
    d = steer.directions(G, "shift_x", "circle")
    qh = d.q / d.q.norm()
    z = torch.randn(4, 6, dtype=torch.float64)
    torch.testing.assert_close(d(z, 0.0), z)
    for alpha in (0.3, -1.1, 2.0):
        zt = d(z, alpha)
        torch.testing.assert_close(zt.norm(dim=1), z.norm(dim=1))
        cos = (zt * d(z, 0.0)).sum(1) / z.norm(dim=1) ** 2   # the angle between z and z(alpha) is alpha
        torch.testing.assert_close(cos, torch.full_like(cos, torch.cos(torch.tensor(alpha)).item()).double())
        resid = zt - (zt @ qh)[:, None] * qh   # stays in span(z, q)
        perp = z - (z @ qh)[:, None] * qh
        torch.testing.assert_close(resid / resid.norm(dim=1, keepdim=True),
                                   perp / perp.norm(dim=1, keepdim=True) * torch.sign((resid * perp).sum(1))[:, None])


def test_biggan_hierarchical_first_chunk_and_principal_directions():
    G = B.Generator(B.preset("tiny")).eval()
    fl = steer.first_layer(G)
    chunk = G.z_dim // G.num_slots
    assert fl.weight.shape == (G.linear.out_features, chunk) and fl.z_dim == G.z_dim
    d = steer.directions(G, "shift_y")
    assert d.q[chunk:].abs().sum() == 0 and d.q[:chunk].abs().sum() > 0
    z = torch.randn(2, G.z_dim)
    moved = d(z, 1.5)
    torch.testing.assert_close(moved[:, chunk:], z[:, chunk:])
    V = steer.principal_directions(G, 3)
    assert V.shape == (3, G.z_dim) and V[:, chunk:].abs().sum() == 0
    Vh = torch.linalg.svd(G.linear.weight.detach().double()).Vh[:3]
    torch.testing.assert_close(V[:, :chunk].abs(), Vh.abs())
    torch.testing.assert_close(V @ V.T, torch.eye(3, dtype=V.dtype))
    # a BigGAN-deep G reads z after the class embedding
    Gd = B.Generator(B.preset("tiny", deep=True)).eval()
    torch.testing.assert_close(steer.first_layer(Gd).weight, Gd.linear.weight.detach().double()[:, Gd.shared_dim:])


def test_stylegan2_principal_directions_in_w_space_and_transform_message():
    G = StyleGAN2Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=8, img_channels=1,
                           mapping_kwargs=dict(num_layers=1), synthesis_kwargs=dict(channel_base=32, channel_max=8))
    V = steer.principal_directions(G, 4)
    assert V.shape == (4, 8)
    torch.testing.assert_close(V @ V.T, torch.eye(4, dtype=V.dtype))
    with pytest.raises(ValueError, match="learned constant"):
        steer.directions(G, "zoom")


def test_named_layer_and_bad_input():
    G = small_dcgan()
    d = steer.directions(G, "shift_x", layer="fc.0")   # the Linear alone, without the BatchNorm
    q, _ = dense_solution(G.fc[0].weight.detach().double(), G.fc[0].bias.detach().double(),
                          *steer.transform_operators("shift_x", 4, 4), G.top)
    torch.testing.assert_close(d.q, q)
    with pytest.raises(ValueError, match="path must be one of"):
        steer.directions(G, "shift_x", "spiral")
    with pytest.raises(ValueError, match="transform must be one of"):
        steer.directions(G, "rotate")
    with pytest.raises(ValueError, match=r"must be \(h w, h w\)"):
        steer.directions(G, torch.eye(9))
    with pytest.raises(ValueError, match="whole steps"):
        steer.directions(G, "zoom", "nonlinear")(torch.randn(1, 6), 0.5)
    with pytest.raises(ValueError, match="z_dim"):
        steer.directions(G, "zoom")(torch.randn(1, 5), 1.0)
    with pytest.raises(ValueError, match="exceeds"):
        steer.principal_directions(G, 7)
    with pytest.raises(TypeError, match="nn.Linear"):
        steer.directions(G, "zoom", layer="net.0")
    with pytest.raises(ValueError, match="shape="):
        steer.directions(torch.nn.Linear(3, 10), "zoom", layer=torch.nn.Linear(3, 10))


# ---------------------------------------------------------------------------------------------------------------
# on a generator trained on digits

@pytest.fixture(scope="module")
def digits_generator():
    """gankern's DCGAN G (16 x 16, z_dim 16) after 400 non-saturating GAN steps on scikit-learn's digits
    (about 15 s on one CPU core; seeded, single-threaded, so the same G every run)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x = torch.tensor(load_digits().images, dtype=torch.float32)[:, None] / 16
    x = F.interpolate(x, size=16, mode="bilinear", align_corners=False) * 2 - 1
    G, D = build(ModelConfig(arch="dcgan", z_dim=16, g_ch=16, d_ch=16), 16, 1)
    opt_G = torch.optim.Adam(G.parameters(), 2e-3, betas=(0.5, 0.99))
    opt_D = torch.optim.Adam(D.parameters(), 2e-3, betas=(0.5, 0.99))
    for _ in range(400):
        real = x[torch.randint(0, len(x), (64,))]
        loss_D = F.softplus(-D(real)).mean() + F.softplus(D(G(torch.randn(64, 16)).detach())).mean()
        opt_D.zero_grad()
        loss_D.backward()
        opt_D.step()
        loss_G = F.softplus(-D(G(torch.randn(64, 16)))).mean()
        opt_G.zero_grad()
        loss_G.backward()
        opt_G.step()
    torch.set_num_threads(threads)
    return G.eval()


def measure(G, z):
    """Per image (in [-1, 1]): horizontal and vertical center of mass of the intensity (x + 1) / 2, in pixels, and
    the bounding box area of the pixels brighter than half."""
    with torch.no_grad():
        I = (G(z)[:, 0] + 1) / 2
    pos = torch.arange(I.shape[-1], dtype=I.dtype)
    mass = I.sum((1, 2))
    on = I > 0.5
    bbox = on.any(2).sum(1) * on.any(1).sum(1)
    return (I.sum(1) * pos).sum(1) / mass, (I.sum(2) * pos).sum(1) / mass, bbox.float()


@pytest.mark.parametrize("path,alphas", [("linear", [-8, -4, -2, 0, 2, 4, 8]),
                                         ("circle", [-1.2, -0.6, -0.3, 0, 0.3, 0.6, 1.2])])
def test_shift_directions_move_the_center_of_mass_monotonically(digits_generator, path, alphas):
    """Mean over 64 latents; positive alpha moves the content towards +x (+y); the other coordinate moves less."""
    z = torch.randn(64, 16, generator=torch.Generator().manual_seed(1))
    for transform, axis in (("shift_x", 0), ("shift_y", 1)):
        d = steer.directions(digits_generator, transform, path)
        com = torch.stack([measure(digits_generator, d(z, a))[axis].mean() for a in alphas])
        assert (com.diff() > 0).all(), (transform, path, com)
        assert com[-1] - com[0] > 0.4, (transform, path, com)   # pixels of a 16 x 16 image


@pytest.mark.parametrize("path,alphas", [("linear", [-8, -4, -2, 0, 2, 4, 8]),
                                         ("circle", [-0.6, -0.3, 0, 0.3, 0.6])])
def test_zoom_direction_changes_the_digit_size(digits_generator, path, alphas):
    """The paper's zoom operator (keep the central half of the first feature map) shrinks the digit's bounding
    box as alpha grows (mean over 64 latents), by more than 8% of its size at alpha = 0."""
    z = torch.randn(64, 16, generator=torch.Generator().manual_seed(2))
    d = steer.directions(digits_generator, "zoom", path)
    bbox = torch.stack([measure(digits_generator, d(z, a))[2].mean() for a in alphas])
    assert (bbox.diff() < 0).all(), (path, bbox)
    assert bbox[0] - bbox[-1] > 0.08 * bbox[len(alphas) // 2], (path, bbox)


# ---------------------------------------------------------------------------------------------------------------
# gankern steer

def test_cli_writes_walk_and_principal_grids(tmp_path, monkeypatch, capsys):
    from PIL import Image

    from gankern import cli
    from gankern.train import cli as train_cli
    G = small_dcgan()
    recipe = type("Recipe", (), {"generate": staticmethod(lambda G, z, c: G(z, c))})
    monkeypatch.setattr(train_cli, "load_generator", lambda run, device, ema: (G, None, 0, recipe))
    out = str(tmp_path / "walk.png")
    assert cli.main(["steer", "--run", "R", "--transform", "shift_x", "--path", "circle", "--steps", "5", "--n", "3",
                     "--out", out]) == 0
    w, h = Image.open(out).size
    assert (w, h) == (5 * 66 + 2, 3 * 66 + 2)   # 16 px tiles upscaled to 64, 2 px padding
    assert "3 latents, shift_x, circle path" in capsys.readouterr().out
    assert cli.main(["steer", "--run", "R", "--principal", "2", "--steps", "3", "--out", out]) == 0
    assert Image.open(out).size == (3 * 66 + 2, 2 * 66 + 2)
    assert cli.main(["steer", "--run", "R", "--path", "nonlinear", "--steps", "3", "--out", out]) == 0
    assert "alpha -3 .. 3" in capsys.readouterr().out
    assert cli.main(["steer", "--run", "R", "--principal", "99", "--out", out]) == 2
    assert "exceeds" in capsys.readouterr().err


def test_cli_missing_run_is_a_message(tmp_path, capsys):
    from gankern import cli
    assert cli.main(["steer", "--run", str(tmp_path / "none"), "--out", str(tmp_path / "w.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gankern steer: error:") and "Traceback" not in err
