"""Trainer core v2: the batched spectral norm of every SN config (one update per optimizer step, sigmas logged), no
host sync per step, lazy G regularization with StyleGAN2's mb_ratio correction, and a recipe written outside the
package (registered through the public API) that trains on the digits and resumes bit-identically with its state."""
import dataclasses
import importlib
import json
import os
import sys
import textwrap

import pytest
import torch

import gankern.ops.spectral_norm as sn_ops
from gankern.nn import SpectralNormGroup
from gankern import cli
from gankern.train import OptSpec, Phase, RunConfig, Trainer, checkpoint, named_config, register_recipe, set_field
from gankern.train.recipes import RECIPES
from gankern.train.recipes.classic import ClassicRecipe


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)                 # the CI box has 2 cores shared by several jobs
    yield
    torch.set_num_threads(n)


def tiny(cfg, steps, batch=8, **train):
    t = cfg.train
    t.resolution, t.batch, t.kimg, t.log_steps = 8, batch, batch * steps / 1000, steps
    t.snap_steps = t.ckpt_steps = steps
    t.metrics, t.grid = "none", 16
    for k, v in train.items():
        setattr(t, k, v)
    if hasattr(cfg.options, "model"):
        cfg.model.g_ch = cfg.model.d_ch = 8
        cfg.model.z_dim = 16
    return cfg


def rows(run):
    return [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]


def test_sngan_d_step_is_one_batched_spectral_norm_update_per_optimizer_step(tmp_path, monkeypatch):
    tr = Trainer(tiny(named_config("sngan"), steps=2), str(tmp_path), progress=False)
    d_layers = len(SpectralNormGroup(tr.nets["D"]).entries)
    assert set(tr.sn) == {"D"} and d_layers >= 4
    calls, phase = [], [None]
    run = sn_ops.spectral_normalize_all

    def counting(weights, *args, **kw):
        calls.append((phase[0], len(weights)))
        return run(weights, *args, **kw)
    monkeypatch.setattr(sn_ops, "spectral_normalize_all", counting)
    run_phase = tr.run_phase

    def tagged(ph, step):
        phase[0] = ph.name
        return run_phase(ph, step)
    tr.run_phase = tagged
    tr.train()
    # per step: n_critic 5 D steps, then the G step (D runs in it too): one batched call each, no per-layer call
    assert calls == ([("D", d_layers)] * 5 + [("G", d_layers)]) * 2
    assert int(next(iter(tr.opt["D"].state.values()))["step"]) == 10


@pytest.mark.parametrize("name", ["sngan", "sagan"])
def test_gradient_accumulation_leaves_spectral_norm_training_unchanged(tmp_path, name):
    """One batched SN update per optimizer step of every SN net, whatever the number of rounds (per-layer SN would
    run a power iteration per call, so per round)."""
    outs = []
    for accum in (1, 2):
        cfg = tiny(named_config(name), steps=3, accum=accum, ema_kimg=0.0)
        cfg.model.g_norm = "none"                            # BatchNorm statistics depend on the round size
        tr = Trainer(cfg, str(tmp_path / str(accum)), progress=False)
        tr.train()
        outs.append([torch.cat([t.flatten() for t in list(net.parameters()) + list(net.buffers())])
                     for net in tr.nets.values()])
    for a, b in zip(*outs):                                   # fp32 sums over rounds in another order
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_logged_sigmas_are_the_layers_sigmas(tmp_path, monkeypatch):
    cfg = tiny(named_config("sagan"), steps=3)
    tr = Trainer(cfg, str(tmp_path), progress=False)
    seen = {}
    update = SpectralNormGroup.update

    def recording(group):
        out = update(group)
        for name, mod, tname, sn in group.entries:           # sigma = u^T W v of the vectors the update left
            w = sn_ops.as_matrix(mod.parametrizations[tname].original.detach(), sn.dim).double()
            seen[(id(group), name)] = float(sn._u.double() @ w @ sn._v.double())
        return out
    monkeypatch.setattr(SpectralNormGroup, "update", recording)
    tr.train()
    (row,) = [r for r in rows(tmp_path) if r["step"] == 3]
    for net in ("G", "D"):
        group = tr.sn[net]
        names = {k.split("/", 2)[2] for k in row if k.startswith(f"sigma/{net}/")}
        assert names == {e[0] for e in group.entries}
        for name in names:
            # the row rounds to 6 decimals; fp32 kernel vs the float64 product above: 1e-5 relative
            assert row[f"sigma/{net}/{name}"] == pytest.approx(seen[(id(group), name)], rel=1e-5, abs=2e-6)


def test_no_host_sync_in_the_trainer_between_log_steps(tmp_path, monkeypatch):
    cfg = tiny(named_config("dcgan-improved"), steps=8, log_steps=4, snap_steps=8, ckpt_steps=8)
    tr = Trainer(cfg, str(tmp_path), progress=False)
    syncs = []
    train_dir = os.path.dirname(sys.modules["gankern.train.loop"].__file__)

    def spy(name):
        real = getattr(torch.Tensor, name)

        def f(self, *a, **kw):
            caller = sys._getframe(1).f_code.co_filename
            if caller.startswith(train_dir) and not caller.endswith(("snapshots.py", "outputs.py", "checkpoint.py")):
                syncs.append((tr.step, name, caller, sys._getframe(1).f_lineno))
            return real(self, *a, **kw)
        return f
    for name in ("item", "tolist", "__bool__", "__float__", "__int__", "cpu", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, spy(name))
    tr.train()
    assert syncs and {s[0] for s in syncs} <= {4, 8}, syncs       # only at the log steps (after step 4 and 8)


class LazyGRecipe(ClassicRecipe):
    """Classic + a toy G regularizer (mean squared output) every 4 steps, with G's optimizer mb_ratio-corrected."""

    def __init__(self, options, env):
        super().__init__(options, env)
        self.phases.append(Phase("Greg", "G", interval=4))
        self.optimizers["G"] = OptSpec("adam", 1e-3, (0.5, 0.99), reg_interval=4)

    def accumulate_gradients(self, phase, b, gain):
        if phase != "Greg":
            return super().accumulate_gradients(phase, b, gain)
        pen = self.run_G(b.z, b.c_gen).square().mean()
        self.env.backward(pen * 0.1 * gain)
        return {"Greg/pen": pen.detach()}


def test_lazy_g_regularization_runs_at_its_interval_with_the_corrected_optimizer(tmp_path, monkeypatch):
    monkeypatch.setitem(RECIPES, "lazy-g", LazyGRecipe)
    cfg = tiny(named_config("dcgan-r1"), steps=9, log_steps=1, snap_steps=9, ckpt_steps=9)
    cfg.recipe = "lazy-g"
    tr = Trainer(cfg, str(tmp_path), progress=False)
    g = tr.opt["G"].param_groups[0]
    assert g["lr"] == pytest.approx(1e-3 * 0.8) and g["betas"] == pytest.approx((0.5 ** 0.8, 0.99 ** 0.8))
    d = tr.opt["D"].param_groups[0]                           # classic lazy R1 keeps today's uncorrected D optimizer
    assert d["lr"] == cfg.opt.d_lr and d["betas"] == cfg.opt.d_betas
    tr.train()
    assert int(next(iter(tr.opt["G"].state.values()))["step"]) == 9 + 3           # Greg at steps 0, 4, 8
    assert int(next(iter(tr.opt["D"].state.values()))["step"]) == 9 + 3           # Dreg at steps 0, 4, 8
    assert [r["step"] for r in rows(tmp_path) if "Greg/pen" in r] == [1, 5, 9]    # rows are logged after the step


USER_RECIPE = '''
    """A user's GAN, outside gankern: their G, D and loss, plus a piece of state (a running mean of D's real logits,
    pulled towards by a small drift term) that must survive a checkpoint."""
    from dataclasses import dataclass

    import torch
    import torch.nn.functional as F
    from torch import nn

    from gankern.train import OptSpec, Phase, Recipe


    @dataclass
    class MyOptions:
        z_dim: int = 16
        width: int = 64
        lr: float = 1e-3
        drift: float = 0.01


    class MyGAN(Recipe):
        Options = MyOptions

        def __init__(self, o, env):
            super().__init__(o, env)
            n, shape = env.channels * env.resolution ** 2, (env.channels, env.resolution, env.resolution)
            self.z_dim = o.z_dim
            self.nets = {"G": nn.Sequential(nn.Linear(o.z_dim, o.width), nn.ReLU(), nn.Linear(o.width, n), nn.Tanh(),
                                            nn.Unflatten(1, shape)),
                         "D": nn.Sequential(nn.Flatten(), nn.Linear(n, o.width), nn.LeakyReLU(0.2),
                                            nn.Linear(o.width, 1))}
            self.optimizers = {k: OptSpec("adam", o.lr, (0.5, 0.99)) for k in self.nets}
            self.phases = [Phase("D", "D"), Phase("G", "G")]
            self.mean_real = torch.zeros((), device=env.device)

        def run_G(self, z, c):
            return self.nets["G"](z)

        def run_D(self, img, c):
            return self.nets["D"](img).squeeze(1)

        def generate(self, G, z, c):
            return G(z)

        def accumulate_gradients(self, phase, b, gain):
            with self.env.autocast():
                if phase == "D":
                    real, fake = self.run_D(b.real, None), self.run_D(self.run_G(b.z, None).detach(), None)
                    loss = F.softplus(-real).mean() + F.softplus(fake).mean()
                    loss = loss + self.options.drift * (real - self.mean_real).square().mean()
                    self.mean_real = self.mean_real.lerp(real.detach().float().mean(), 0.1)
                else:
                    loss = F.softplus(-self.run_D(self.run_G(b.z, None), None)).mean()
            self.env.backward(loss * gain)
            return {f"{phase}/loss": loss.detach(), "mean_real": self.mean_real}

        def state_dict(self):
            return {"mean_real": self.mean_real}

        def load_state_dict(self, state):
            self.mean_real = state["mean_real"].to(self.env.device)
'''


def readme_recipe() -> str:
    """The module of the README's "Write a recipe for your own GAN" section."""
    text = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")).read()
    section = text[text.index("## Write a recipe for your own GAN"):]
    return section[section.index("```python\n") + 10:section.index("```\n", section.index("```python\n") + 10)]


@pytest.mark.parametrize("source", ["readme", "stateful"])
def test_user_recipe_from_outside_the_package_trains_and_resumes_bit_identically(tmp_path, monkeypatch, source):
    name = f"user_gan_{source}"
    (tmp_path / f"{name}.py").write_text(readme_recipe() if source == "readme" else textwrap.dedent(USER_RECIPE))
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = importlib.import_module(name)
    options = mod.MyOptions(width=32, lr=1e-3)
    monkeypatch.setitem(RECIPES, "my-gan", None)                  # the registry is as it was after the test
    assert register_recipe("my-gan", mod.MyGAN) is mod.MyGAN and RECIPES["my-gan"] is mod.MyGAN
    with pytest.raises(TypeError, match="subclass of gankern.train.Recipe"):
        register_recipe("nope", object)

    def cfg():
        c = RunConfig(config="my-gan", recipe="my-gan", options=dataclasses.replace(options))
        return tiny(c, steps=40, log_steps=10, snap_steps=20, ckpt_steps=20)
    assert RunConfig.from_json(cfg().to_json()) == cfg()
    c = cfg()
    set_field(c, "recipe.lr=0.5")
    assert c.options.lr == 0.5
    full = Trainer(cfg(), str(tmp_path / "full"), progress=False)
    last = full.train()
    assert last["step"] == 40 and all(v == v for v in last.values())
    assert os.path.exists(tmp_path / "full" / "fakes-latest.png")
    ck = torch.load(checkpoint.latest(str(tmp_path / "full")), weights_only=True)
    if source == "stateful":
        assert float(full.recipe.mean_real) != 0.0
        assert torch.equal(ck["recipe"]["mean_real"], full.recipe.mean_real)
    out = str(tmp_path / "grid.png")
    assert cli.main(["generate", "--run", str(tmp_path / "full"), "--n", "4", "--out", out]) == 0
    assert os.path.exists(out)

    crashing = Trainer(cfg(), str(tmp_path / "part"), progress=False)
    run_phase = crashing.run_phase

    def crash_at_27(ph, step):
        if step == 27:
            raise RuntimeError("crash")
        return run_phase(ph, step)
    crashing.run_phase = crash_at_27
    with pytest.raises(RuntimeError, match="crash"):
        crashing.train()
    part = Trainer(cfg(), str(tmp_path / "part"), progress=False).resume()
    assert part.step == 20
    if source == "stateful":
        assert float(part.recipe.mean_real) != 0.0
    part.train()
    if source == "stateful":
        assert torch.equal(part.recipe.mean_real, full.recipe.mean_real)
    for net in ("G", "D"):
        for k, v in full.nets[net].state_dict().items():
            assert torch.equal(v, part.nets[net].state_dict()[k]), (net, k)
    assert [r["D/loss"] for r in rows(tmp_path / "full")] == [r["D/loss"] for r in rows(tmp_path / "part")]
