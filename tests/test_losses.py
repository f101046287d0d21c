"""gankern.losses against the formulas of the papers, written out with sigmoid/log directly."""
import pytest
import torch
import torch.nn.functional as F

from gankern import losses

r = torch.tensor([2.0, -0.5, 0.3, 1.5])
f = torch.tensor([-1.0, 0.7, -0.2, 0.1])
s = torch.sigmoid


@pytest.mark.parametrize("name,d,g", [
    ("saturating", -(torch.log(s(r)).mean() + torch.log(1 - s(f)).mean()), torch.log(1 - s(f)).mean()),
    ("nonsaturating", -(torch.log(s(r)).mean() + torch.log(1 - s(f)).mean()), -torch.log(s(f)).mean()),
    ("hinge", torch.clamp(1 - r, min=0).mean() + torch.clamp(1 + f, min=0).mean(), -f.mean()),
    ("wasserstein", f.mean() - r.mean(), -f.mean()),
    ("lsgan", 0.5 * ((r - 1) ** 2).mean() + 0.5 * (f ** 2).mean(), 0.5 * ((f - 1) ** 2).mean()),
])
def test_loss_formulas(name, d, g):
    torch.testing.assert_close(losses.d_loss(name, r, f), d)
    torch.testing.assert_close(losses.g_loss(name, f), g)


def test_one_sided_label_smoothing_is_bce_with_target():
    want = F.binary_cross_entropy_with_logits(r, torch.full_like(r, 0.9)) + \
        F.binary_cross_entropy_with_logits(f, torch.zeros_like(f))
    torch.testing.assert_close(losses.d_loss("nonsaturating", r, f, real_target=0.9), want)
    torch.testing.assert_close(losses.d_loss("lsgan", r, f, 0.9), 0.5 * ((r - 0.9) ** 2).mean() + 0.5 * (f ** 2).mean())


@pytest.mark.parametrize("name", ["hinge", "wasserstein"])
def test_smoothing_rejected_where_undefined(name):
    with pytest.raises(ValueError, match="label smoothing"):
        losses.d_loss(name, r, f, real_target=0.9)


def test_unknown_loss_lists_names():
    with pytest.raises(ValueError, match="hinge"):
        losses.get_loss("bogus")


def test_sigmoid_losses_are_stable_for_large_logits():
    big = torch.tensor([1e4, -1e4])
    for name in ("saturating", "nonsaturating"):
        assert torch.isfinite(losses.d_loss(name, big, -big)) and torch.isfinite(losses.g_loss(name, big))
    assert losses.d_loss("nonsaturating", big[:1], -big[:1]) == 0


def test_gradients_point_the_right_way():
    # D's loss falls when real logits rise and fake logits fall; G's loss falls when fake logits rise (for lsgan:
    # while the outputs lie between the targets 0 and 1).
    for name in losses.LOSSES:
        r0, f0 = (torch.tensor([0.2, 0.9]), torch.tensor([0.1, 0.6])) if name == "lsgan" else (r, f)
        rr, ff = r0.clone().requires_grad_(True), f0.clone().requires_grad_(True)
        losses.d_loss(name, rr, ff).backward()
        assert (rr.grad <= 0).all() and (ff.grad >= 0).all(), name
        ff2 = f0.clone().requires_grad_(True)
        losses.g_loss(name, ff2).backward()
        assert (ff2.grad <= 1e-12).all(), name
