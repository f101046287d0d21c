"""LAPGAN (Denton et al. 2015): the Laplacian pyramid is exact, sampling runs the pyramid coarse to fine with one z,
the paper's SGD schedules (lr decay and momentum ramp per epoch), a short CPU run on digits trains every level without
NaN while digits-FID falls, and resume is bit-identical (across epochs of the schedules)."""
import pytest
import torch
from test_literature import assert_resumes_exactly
from test_train import one_thread, rows  # noqa: F401  (one_thread: an autouse fixture)

from gankern.models.lapgan import Generator, LAPGANModelConfig, Pyramid
from gankern.train import Trainer, named_config


def small(res=16, steps=100, batch=16, **train):
    cfg = named_config("lapgan")
    cfg.model.z0_dim, cfg.model.g0_hidden, cfg.model.g_ch, cfg.model.d_ch = 32, 128, 16, 16
    t = cfg.train
    t.resolution, t.batch, t.kimg, t.metrics, t.grid = res, batch, batch * steps / 1000, "none", 16
    t.log_steps, t.snap_steps, t.ckpt_steps = 10, steps, steps
    for k, v in train.items():
        setattr(t, k, v)
    return cfg


def test_laplacian_pyramid_reconstructs_the_image():
    x, p = torch.randn(3, 1, 32, 32, dtype=torch.float64), Pyramid().double()
    pyr = p.laplacian(x, 3)
    assert [t.shape[-1] for t, _ in pyr] == [8, 16, 32] and pyr[0][1] is None
    img = pyr[0][0]
    for h, low in pyr[1:]:
        torch.testing.assert_close(low, p.up(img))
        img = low + h
    torch.testing.assert_close(img, x)
    torch.testing.assert_close(pyr[1][0].mean(), torch.zeros((), dtype=torch.float64), atol=0.05, rtol=0)  # band-pass


def test_sampling_runs_the_pyramid_coarse_to_fine():
    torch.manual_seed(0)
    G = Generator(LAPGANModelConfig(levels=3, z0_dim=10, g0_hidden=16, g_ch=4), 32, 1)
    assert G.z_dim == 10 + 16 * 16 + 32 * 32
    z = torch.randn(5, G.z_dim)
    img = G(z)
    assert img.shape == (5, 1, 32, 32)
    coarse = G.level(0, z, None)
    mid = G.pyramid.up(coarse) + G.level(1, z, G.pyramid.up(coarse))
    torch.testing.assert_close(img, G.pyramid.up(mid) + G.level(2, z, G.pyramid.up(mid)))
    assert coarse.shape == (5, 1, 8, 8) and coarse.abs().max() <= 1
    z2 = z.clone()
    z2[:, -32 * 32:] += 1                                     # the finest noise plane is the finest level's input
    assert not torch.equal(G(z2), img)
    assert torch.equal(G.level(1, z2, G.pyramid.up(coarse)), G.level(1, z, G.pyramid.up(coarse)))
    with torch.no_grad():
        for m in G.refine:
            m[-1].weight.zero_()
            m[-1].bias.zero_()
    torch.testing.assert_close(G(z), G.pyramid.up(G.pyramid.up(coarse)))    # no residuals: the upsampled I_0
    with pytest.raises(ValueError, match="noise plane"):
        G(torch.randn(5, 10))
    with pytest.raises(ValueError, match="levels"):
        Generator(LAPGANModelConfig(levels=4), 16, 1)


def test_sgd_schedules_follow_the_paper(tmp_path):
    cfg = small(steps=6, batch=8, log_steps=1, snap_steps=6, ckpt_steps=6)
    cfg.options.epoch_kimg = 0.016                    # an epoch: 2 steps of 8
    tr = Trainer(cfg, str(tmp_path), progress=False)
    assert all(isinstance(o, torch.optim.SGD) for o in tr.opt.values())
    rec = tr.recipe
    for nimg, (lr, m) in {0: (0.02, 0.5), 15: (0.02, 0.5), 16: (0.02 / (1 + 4e-5), 0.5008),
                          160: (0.02 / (1 + 4e-5) ** 10, 0.508), 16 * 1000: (0.02 / (1 + 4e-5) ** 1000, 0.8)}.items():
        rec.nimg = nimg
        assert rec.schedule() == pytest.approx((lr, m), rel=1e-12), nimg
    rec.nimg = 0
    tr.train()
    assert rec.nimg == 48 and rec.schedule() == pytest.approx((0.02 / (1 + 4e-5) ** 3, 0.5024))
    for o in tr.opt.values():
        assert (o.param_groups[0]["lr"], o.param_groups[0]["momentum"]) == rec.schedule()
    assert [r["lapgan/momentum"] for r in rows(tmp_path) if "lapgan/momentum" in r] == \
        pytest.approx([0.5, 0.5008, 0.5008, 0.5016, 0.5016, 0.5024])
    cfg.options.optimizer = "rmsprop"
    with pytest.raises(ValueError, match="sgd or adam"):
        cfg.validate()


@pytest.mark.slow
def test_lapgan_trains_every_level_on_digits_and_fid_falls(tmp_path):
    cfg = small(steps=200, batch=32, metrics="digits-fid", metric_samples=400, log_steps=25, snap_steps=200,
                ckpt_steps=200)
    tr = Trainer(cfg, str(tmp_path), progress=False)
    tr.train()
    rs = rows(tmp_path)
    for r in rs:
        assert all(v == v and abs(v) != float("inf") for v in r.values() if isinstance(v, float)), r
    loss_rows = [r for r in rs if "D/loss" in r]
    assert all(f"D/loss{lv}" in r and f"G/loss{lv}" in r for r in loss_rows for lv in range(3))
    fid = [r["fid_digits"] for r in rs if "fid_digits" in r]
    assert len(fid) == 2 and fid[1] < 0.5 * fid[0], fid              # SGD (the paper's): 93.7 -> 43.9 (Adam: 33.9)
    assert tr.recipe.generate(tr.G_ema, torch.randn(4, tr.recipe.z_dim), None).shape == (4, 1, 16, 16)


def test_lapgan_resumes_exactly(tmp_path):
    cfg = small(steps=12, batch=8, log_steps=4, snap_steps=8, ckpt_steps=8)
    cfg.options.epoch_kimg, cfg.options.momentum_step = 0.024, 0.05     # the schedules change every 3 steps
    assert_resumes_exactly(cfg, tmp_path, 10)
