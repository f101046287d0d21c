"""BigGAN-128 (BigGAN-PyTorch's 128 px model, ch 96; 70.4M G and 88.0M D parameters) at one batch: a G+D training
step (D step then G step, hinge loss, Adam, as BG's train_fns with num_D_steps 1) of gankern's model with one
batched SpectralNormGroup per network, side by side with the same model under eager per-layer spectral norm
(torch's parametrization, which stands in for BG's own per-layer SN), and the spectral-norm share of each step:
the spectral-norm work of one step alone (per network two updates, one with its backward, as in the step). The step
row ``gankern-recipe`` is the same step through the BigGAN recipe as the trainer runs it (BG's EMA included).

    python bench/bench_biggan.py [--quick]

Batch 32: BG's per-GPU batch in its 8-GPU 128 px script (256 / 8). fp32 (BG's default). ``--quick``: the tiny
preset, batch 2 (a smoke run on the CPU). Floor of the spectral-norm rows: per network two updates (weights read
twice, W / sigma written) and one backward (dW: read G and W, write dW), i.e. 9 passes over all SN weights.
"""
from __future__ import annotations

import contextlib
import os
import sys

import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from gankern import _bench  # noqa: E402
from gankern.models.biggan import build, preset  # noqa: E402
from gankern.nn import SpectralNormGroup  # noqa: E402
from gankern.nn.spectral_norm import SpectralNorm  # noqa: E402
from gankern.train.recipes.base import Batch, Env  # noqa: E402
from gankern.train.recipes.biggan import BigGANRecipe, Options  # noqa: E402

BATCH, QUICK_BATCH = 32, 2


def eager_twin(model: torch.nn.Module) -> torch.nn.Module:
    """The same model (same weights, u and v) with torch's spectral-norm parametrization on every layer. Built
    afresh, not deep-copied: a deep copy shares the parametrized classes, and removing a parametrization from
    the copy would remove it from the original too."""
    with next(model.parameters()).device:
        twin = type(model)(model.cfg)
    for m in twin.modules():
        if parametrize.is_parametrized(m, "weight") and isinstance(m.parametrizations.weight[0], SpectralNorm):
            sn = m.parametrizations.weight[0]
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)
            torch.nn.utils.parametrizations.spectral_norm(m, n_power_iterations=sn.n_power_iterations, eps=sn.eps,
                                                          dim=sn.dim)
    twin.load_state_dict(model.state_dict())  # the parametrizations share their keys
    return twin


def sn_modules(model):
    return [m for m in model.modules() if parametrize.is_parametrized(m, "weight")]


class Variant:
    """G, D, their optimizers and (gankern) their spectral-norm groups; ``step`` and ``sn_only`` per call."""

    def __init__(self, G, D, grouped: bool):
        self.G, self.D = G, D
        self.opt_G = torch.optim.Adam(G.parameters(), 1e-4, betas=(0.0, 0.999), eps=1e-6)
        self.opt_D = torch.optim.Adam(D.parameters(), 4e-4, betas=(0.0, 0.999), eps=1e-6)
        self.gG = SpectralNormGroup(G) if grouped else None
        self.gD = SpectralNormGroup(D) if grouped else None
        self.snG, self.snD = sn_modules(G), sn_modules(D)
        self.gradsG = [torch.randn_like(m.parametrizations.weight.original) for m in self.snG]
        self.gradsD = [torch.randn_like(m.parametrizations.weight.original) for m in self.snD]

    @staticmethod
    def cached(group):
        return group.cached() if group is not None else contextlib.nullcontext()

    def step(self, z, y, x):
        G, D = self.G, self.D
        with torch.no_grad(), self.cached(self.gG):                     # D step
            fake = G(z, y)
        with self.cached(self.gD):
            d_fake, d_real = D(torch.cat([fake, x]), torch.cat([y, y])).split(z.shape[0])
            loss_D = F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
            self.opt_D.zero_grad(set_to_none=True)
            loss_D.backward()
        self.opt_D.step()
        D.requires_grad_(False)                                         # G step
        with self.cached(self.gG), self.cached(self.gD):
            loss_G = -D(G(z, y), y).mean()
            self.opt_G.zero_grad(set_to_none=True)
            loss_G.backward()
        D.requires_grad_(True)
        self.opt_G.step()

    def sn_only(self):
        """The spectral-norm work of one step: G's update without grad, D's and G's with their backward, D's
        without parameter gradients."""
        def weights(mods):
            return [m.weight for m in mods]

        def backward(mods, grads):
            torch.autograd.grad(weights(mods), [m.parametrizations.weight.original for m in mods], grads)
        with torch.no_grad(), self.cached(self.gG):
            weights(self.snG)
        with self.cached(self.gD):
            backward(self.snD, self.gradsD)
        with self.cached(self.gG):
            backward(self.snG, self.gradsG)
        self.D.requires_grad_(False)
        with self.cached(self.gD):
            weights(self.snD)
        self.D.requires_grad_(True)


class RecipeVariant:
    """The BigGAN recipe's step as the trainer runs it (gankern/train/loop.py's run_phase, without the data loader
    and DDP): per phase requires_grad set on its net, one batched SN group update of each net around
    ``accumulate_gradients``, Adam, ``after_step`` (BG's EMA); with BG's 128 px script settings (num_D_steps 1,
    G_ortho 0) so that it does the same work as the other two variants."""

    def __init__(self, cfg, preset_name: str, device):
        env = Env(device, 0, 1, cfg.n_classes, cfg.channels, cfg.resolution, 1, 0,
                  backward=lambda loss: loss.backward(retain_graph=True))
        with device:
            self.r = BigGANRecipe(Options(preset=preset_name, num_D_steps=1, G_ortho=0.0), env)
        self.opt = {n: spec.build(self.r.nets[n].parameters()) for n, spec in self.r.optimizers.items()}
        self.sn = {n: SpectralNormGroup(self.r.nets[n]) for n in self.opt}

    def step(self, z, y, x):
        for ph in self.r.phases:
            for m in self.r.nets.values():
                m.requires_grad_(m is self.r.nets[ph.net])
            self.opt[ph.net].zero_grad(set_to_none=True)
            with self.sn["G"].cached(), self.sn["D"].cached():      # the trainer: every SN net at every phase
                self.r.accumulate_gradients(ph.name, Batch(x, y, z, y, 0), 1.0)
            self.opt[ph.net].step()
            self.r.after_step(ph.name, 0)


def run(quick: bool = False) -> list[dict]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    preset_name = "tiny" if quick else "128"
    cfg = preset(preset_name)
    batch = QUICK_BATCH if quick else BATCH
    torch.manual_seed(0)
    with device:
        G, D = build(cfg)
    variants = {"eager": Variant(eager_twin(G), eager_twin(D), grouped=False),
                "gankern-group": Variant(G, D, grouped=True)}
    g = torch.Generator(device=device).manual_seed(1)
    z = torch.randn(batch, G.z_dim, generator=g, device=device)
    y = torch.randint(0, cfg.n_classes, (batch,), generator=g, device=device)
    x = torch.rand(batch, cfg.channels, cfg.resolution, cfg.resolution, generator=g, device=device) * 2 - 1
    name = f"biggan{cfg.resolution}-ch{cfg.g_ch}-bs{batch}"
    sn_bytes = sum(m.parametrizations.weight.original.numel() * 4 for m in sn_modules(G) + sn_modules(D))
    count = [sum(p.numel() for p in m.parameters()) / 1e6 for m in (G, D)]
    shape = f"G {count[0]:.1f}M + D {count[1]:.1f}M params"
    stepping = {**variants, "gankern-recipe": RecipeVariant(cfg, preset_name, device)}
    steps = _bench.measure("biggan", f"{name}-step", shape, torch.float32,
                           {k: (lambda _, v=v: v.step(z, y, x)) for k, v in stepping.items()}, None)
    sns = _bench.measure("biggan", f"{name}-sn", f"{len(sn_modules(G)) + len(sn_modules(D))} SN layers, "
                         f"{sn_bytes / 4e6:.1f}M weights", torch.float32,
                         {k: (lambda _, v=v: v.sn_only()) for k, v in variants.items()},
                         _bench.floor_ms(bytes_moved=9 * sn_bytes))
    sn_ms = {r["backend"]: r["ms"] for r in sns}
    for step in steps:
        if step["ms"]:
            step["images_per_s"] = batch / (step["ms"] / 1e3)
    for sn in sns:
        step_ms = next(r["ms"] for r in steps if r["backend"] == sn["backend"])
        if sn["ms"] and step_ms:
            sn["sn_share"] = sn_ms[sn["backend"]] / step_ms
    return steps + sns


if __name__ == "__main__":
    _bench.main("biggan", run)
