"""InfoGAN (Chen et al. 2016, "InfoGAN: Interpretable Representation Learning by Information Maximizing GANs"): G reads
noise plus a categorical code and continuous codes; a Q head sharing D's body predicts the codes of generated images,
and D/Q and G minimize the GAN loss minus ``weight`` times the mutual-information lower bound
L_I = H(c) + E log Q(c | G(z, c)) (categorical: softmax; continuous: unit-variance Gaussian), logged as ``*/mi``.

The trainer's latents are Gaussian: the recipe's z is (noise, one column for the categorical code, one per continuous
code), and the code columns map through the normal CDF to a uniform category and to uniform values in [-1, 1], so
snapshots, metrics, ``gankern generate`` and resume need nothing more. :meth:`InfoGANRecipe.sweep` varies one code
while the noise and the other codes stay fixed."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ... import losses
from ...models import build
from ...models.acgan import AuxHead
from .base import Batch
from .classic import ClassicOptions, ClassicRecipe


@dataclass
class InfoConfig:
    n_cat: int = 10              # categories of the categorical code (0: none)
    n_cont: int = 2              # continuous codes, uniform in [-1, 1]
    weight: float = 1.0          # lambda: weight of the information term in D/Q's and G's losses


@dataclass
class InfoGANOptions(ClassicOptions):
    info: InfoConfig = field(default_factory=InfoConfig)

    def conditional(self) -> bool:
        return False                                 # G takes codes, not labels

    def validate(self) -> None:
        super().validate()
        if self.info.n_cat < 0 or self.info.n_cont < 0 or self.info.n_cat + self.info.n_cont == 0:
            raise ValueError(f"info.n_cat={self.info.n_cat}, info.n_cont={self.info.n_cont}: InfoGAN needs at least "
                             f"one code (n_cat >= 2 or n_cont >= 1)")
        if self.info.n_cat == 1:
            raise ValueError("info.n_cat=1: a categorical code needs at least 2 categories (0 turns it off)")


class InfoGANRecipe(ClassicRecipe):
    """The classic recipe (losses, optimizers, penalties, phases), unconditional, with codes in G's input and a Q head
    (gankern.models.acgan.AuxHead) on D's features."""
    Options = InfoGANOptions

    def __init__(self, options: InfoGANOptions, env):
        m, i = options.model, options.info
        super().__init__(dataclasses.replace(options, model=dataclasses.replace(m, cond="none")), env)
        self.options, self.num_classes = options, 0
        self.z_dim = m.z_dim + (1 if i.n_cat else 0) + i.n_cont
        G, _ = build(dataclasses.replace(m, cond="none", z_dim=m.z_dim + i.n_cat + i.n_cont), env.resolution,
                     env.channels)
        self.nets = {"G": G, "D": AuxHead(self.nets["D"], i.n_cat + i.n_cont, m.mbdisc)}

    def codes(self, z):
        """z (N, z_dim) -> noise (N, model.z_dim), category (N,) long or None, continuous codes (N, n_cont)."""
        nz, i = self.options.model.z_dim, self.options.info
        u = 0.5 * (1 + torch.erf(z[:, nz:].float() / math.sqrt(2)))
        cat = (u[:, 0] * i.n_cat).long().clamp(max=i.n_cat - 1) if i.n_cat else None
        return z[:, :nz], cat, (2 * u[:, 1 if i.n_cat else 0:] - 1).to(z.dtype)

    def g_input(self, noise, cat, cont):
        """G's input: noise (N, nz), one-hot category (N, n_cat), continuous codes (N, n_cont)."""
        parts = [noise] + ([F.one_hot(cat, self.options.info.n_cat).to(noise.dtype)] if cat is not None else [])
        return torch.cat(parts + [cont], 1)

    def run_G(self, z, c, **kw):
        return self.nets["G"](self.g_input(*self.codes(z)))

    def generate(self, G, z, c):
        return G(self.g_input(*self.codes(z)))

    @torch.no_grad()
    def sweep(self, G, code: int, rows: int = 4, steps: int = 10, seed: int = 0, span: float = 2.0):
        """Images (rows * steps, C, R, R): row r has fixed noise and codes drawn from ``seed``; along the row, code
        ``code`` (0: the categorical one when n_cat > 0, its categories 0..n_cat-1; else a continuous code, from
        -span to span, the paper's extrapolation past [-1, 1]) varies and the others stay fixed."""
        i = self.options.info
        n_codes = (1 if i.n_cat else 0) + i.n_cont
        if not 0 <= code < n_codes:
            raise ValueError(f"code {code}: this InfoGAN has codes 0..{n_codes - 1}")
        dev = next(G.parameters()).device
        z = torch.randn(rows, self.z_dim, generator=torch.Generator().manual_seed(seed)).to(dev)
        noise, cat, cont = self.codes(z)
        is_cat = bool(i.n_cat) and code == 0
        steps = i.n_cat if is_cat else steps
        noise, cont = noise.repeat_interleave(steps, 0), cont.repeat_interleave(steps, 0)
        cat = cat.repeat_interleave(steps, 0) if cat is not None else None
        if is_cat:
            cat = torch.arange(steps, device=dev).repeat(rows)
        else:
            cont = cont.clone()
            cont[:, code - (1 if i.n_cat else 0)] = torch.linspace(-span, span, steps, device=dev).repeat(rows)
        was = G.training
        G.eval()
        out = G(self.g_input(noise, cat, cont))
        G.train(was)
        return out

    def _info(self, q, cat, cont):
        """(loss -L_I + const, the lower bound L_I in nats, its categorical part) of Q's outputs q (N, n_cat + n_cont)
        for the codes (the continuous part of the bound is negative: Q's unit variance is wider than U[-1, 1])."""
        i, q = self.options.info, q.float()
        nll = q.new_zeros(())
        h = 0.0
        if i.n_cat:
            nll = nll + F.cross_entropy(q[:, :i.n_cat], cat)
            h += math.log(i.n_cat)
        mi_cat = h - nll
        if i.n_cont:
            nll = nll + 0.5 * ((q[:, i.n_cat:] - cont.float()) ** 2).sum(1).mean() + 0.5 * i.n_cont * math.log(
                2 * math.pi)
            h += i.n_cont * math.log(2.0)                                  # entropy of U[-1, 1]
        return nll, h - nll, mi_cat

    def accumulate_gradients(self, phase, b: Batch, gain):
        if phase == "Dreg":
            return super().accumulate_gradients(phase, b, gain)
        lc, w, env = self.options.loss, self.options.info.weight, self.env
        with env.autocast():
            noise, cat, cont = self.codes(b.z)
            fake = self.nets["G"](self.g_input(noise, cat, cont))
            lf, q = self.nets["D"].forward_aux(fake)
            nll, mi, mi_cat = self._info(q, cat, cont)
            if phase == "G":
                adv = losses.g_loss(lc.name, lf)
                loss = adv + w * nll
                stats = {"G/loss": adv, "G/mi": mi, "G/mi_cat": mi_cat}
            else:
                lr = self.run_D(b.real, None, b.seed)
                adv = losses.d_loss(lc.name, lr, lf, lc.real_target)
                loss = adv + w * nll
                stats = {"D/loss": adv, "D/real": lr.float().mean(), "D/fake": lf.float().mean(), "D/mi": mi}
                if not self.lazy:
                    pen = self._penalties(b, fake, "D")
                    stats.update(pen)
                    loss = loss + sum(pen.values())
        env.backward(loss * gain)
        return {k: v.detach().float() for k, v in stats.items()}


def add_generate_options(gen) -> None:
    """InfoGAN's option of ``gankern generate`` (gankern.train.cli's parser)."""
    g = gen.add_argument_group("InfoGAN options")
    g.add_argument("--sweep", type=int, metavar="CODE", help="vary latent code CODE along each row (0: the "
                   "categorical code when there is one, else the continuous ones), the other codes and the noise fixed "
                   "per row (--n rows, default 8; --seed)")
    g.add_argument("--sweep-steps", type=int, default=10, metavar="N", help="images per row of a continuous code's "
                   "sweep, from -2 to 2 (default: %(default)s; a categorical code: one per category)")


def generate_main(args) -> int | None:
    """``gankern generate --sweep CODE`` on an infogan run: one row per latent draw, the code varied along it."""
    import sys

    from ..cli import load_generator, run_recipe
    from ..outputs import save_grid
    if args.sweep is None:
        return None
    try:
        if run_recipe(args.run) != "infogan":
            raise ValueError(f"--sweep: an InfoGAN option, and {args.run} is not an infogan run")
        if args.sweep_steps < 2:
            raise ValueError(f"--sweep-steps {args.sweep_steps}: a sweep has at least 2 steps")
        G, _, _, recipe = load_generator(args.run, args.device, not args.no_ema)
        images = recipe.sweep(G, args.sweep, rows=args.n or 8, steps=args.sweep_steps, seed=args.seed)
        save_grid(images, args.out, nrow=images.shape[0] // (args.n or 8))
    except (ValueError, OSError) as e:
        print(f"gankern generate: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote a sweep of code {args.sweep} ({images.shape[0]} images) to {args.out}")
    return 0
