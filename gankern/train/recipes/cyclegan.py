"""CycleGAN (Zhu et al. 2017) as a recipe: generators A -> B and B -> A (one net "G", one optimizer, as the official
code), discriminators D_A and D_B (one net "D"); LSGAN loss, cycle loss lambda * |G_BA(G_AB(a)) - a| (and B's), the
identity loss lambda_idt * lambda * |G_AB(b) - b| (and A's), D on a history of 50 fakes per domain (the image pool,
kept in the recipe's state for exact resume), lr constant then linear decay (pix2pix's LinearDecay). Data: unpaired
images as 2C-channel items (gankern/data/paired.py). ``gankern translate --direction AB|BA`` applies G_AB / G_BA."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...data.paired import split_ab
from ...models.cyclegan import CycleDiscriminators, CycleGenerators
from ...models.pix2pix import init_weights
from .base import Batch, OptSpec, Phase, Recipe
from .pix2pix import LinearDecay, eval_batches, held_out, translation_sheet


class ImagePool:
    """Shrivastava et al.'s history of generated images: ``query(fakes, gen)`` returns, per image, the image itself
    while the pool fills; then with probability 1/2 a stored image (replaced by the new one), else the new one."""

    def __init__(self, size: int):
        self.size, self.images = size, []

    def query(self, fakes: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if self.size == 0:
            return fakes
        out = []
        for x in fakes.detach():
            if len(self.images) < self.size:
                self.images.append(x.clone())
                out.append(x)
            elif torch.rand((), generator=gen) < 0.5:
                i = int(torch.randint(self.size, (), generator=gen))
                out.append(self.images[i])
                self.images[i] = x.clone()
            else:
                out.append(x)
        return torch.stack(out)

    def state(self) -> torch.Tensor:
        return torch.stack(self.images) if self.images else torch.zeros(0)

    def load(self, t: torch.Tensor, device) -> None:
        self.images = [x.to(device) for x in t] if t.numel() else []


@dataclass
class CycleGANOptions:
    ngf: int = 64                # G's base width
    ndf: int = 64                # D's base width
    n_blocks: int = 9            # ResBlocks: 9 at 256 px, 6 at 128 px and below (the paper)
    n_down: int = 2              # stride-2 levels of G
    d_layers: int = 3            # PatchGAN stride-2 layers (3: 70x70 patches)
    norm: str = "instance"       # instance | batch
    cycle: float = 10.0          # lambda of the cycle losses (both directions)
    identity: float = 0.5        # identity loss weight, relative to cycle (0: off)
    pool: int = 50               # fakes kept per domain for D (0: D sees the newest fakes only)
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    decay_from: float = 0.5      # fraction of the run with constant lr; then linear decay to 0
    val_data: str = ""           # held-out unpaired digits (digits-styles:val): digits-FID of G_BA(B) in the log rows
    val_n: int = 256             # held-out B images used

    def validate(self) -> None:
        if self.norm not in ("batch", "instance"):
            raise ValueError(f"recipe.norm must be batch or instance, not '{self.norm}'")
        if not 0.0 <= self.decay_from <= 1.0 or self.pool < 0:
            raise ValueError(f"recipe.decay_from must lie in [0, 1] and recipe.pool be >= 0, got {self.decay_from}, "
                             f"{self.pool}")


class CycleGANRecipe(Recipe):
    """Nets G (G.AB, G.BA) and D (D.A, D.B); phases G then D, D on pooled fakes of this step's G phase; no G_ema."""
    Options = CycleGANOptions
    ema = None

    def __init__(self, options: CycleGANOptions, env):
        super().__init__(options, env)
        o = options
        if env.channels % 2:
            raise ValueError(f"cyclegan trains on unpaired images (2C channels: A then B), got {env.channels}-channel "
                             f"images: use --data unpaired:DIR or digits-styles")
        self.c = env.channels // 2
        if env.resolution % 2 ** o.n_down:
            raise ValueError(f"cyclegan: resolution {env.resolution} must divide by 2**n_down = {2 ** o.n_down}")
        self.nets = {"G": init_weights(CycleGenerators(self.c, ngf=o.ngf, n_blocks=o.n_blocks, n_down=o.n_down,
                                                       norm=o.norm)),
                     "D": init_weights(CycleDiscriminators(self.c, ndf=o.ndf, n_layers=o.d_layers, norm=o.norm))}
        self.optimizers = {n: OptSpec("adam", o.lr, tuple(o.betas)) for n in self.nets}
        self.phases = [Phase("G", "G"), Phase("D", "D")]
        self.decay = LinearDecay(self.nets, env.total_steps, o.decay_from)
        self.pools = {"A": ImagePool(o.pool), "B": ImagePool(o.pool)}
        self.fakes: list[tuple[torch.Tensor, torch.Tensor]] = []    # (fake A, fake B) per G round, for the D phase
        self.val = None

    def generate(self, G, z, c):
        raise ValueError("a cyclegan run translates images: use gankern translate --run DIR --input DIR --out DIR")

    def translate(self, G, x: torch.Tensor, direction: str = "AB") -> torch.Tensor:
        """G_AB(x) or G_BA(x) for x (N, C, R, R); ``gankern translate``."""
        return G(x, direction)

    def accumulate_gradients(self, phase, b: Batch, gain):
        o, G, D = self.options, self.nets["G"], self.nets["D"]
        a, real_b = split_ab(b.real)
        self.decay.before(phase)
        with self.env.autocast():
            if phase == "G":
                fake_b, fake_a = G(a, "AB"), G(real_b, "BA")
                gan = F.mse_loss(D(fake_b, "B"), torch.ones_like(D(fake_b, "B"))) + \
                    F.mse_loss(D(fake_a, "A"), torch.ones_like(D(fake_a, "A")))
                cycle = o.cycle * (F.l1_loss(G(fake_b, "BA"), a) + F.l1_loss(G(fake_a, "AB"), real_b))
                loss, stats = gan + cycle, {"G/gan": gan, "G/cycle": cycle}
                if o.identity > 0:
                    idt = o.cycle * o.identity * (F.l1_loss(G(real_b, "AB"), real_b) + F.l1_loss(G(a, "BA"), a))
                    loss, stats["G/idt"] = loss + idt, idt
                stats["G/loss"] = loss
                self.fakes.append((fake_a.detach(), fake_b.detach()))
            else:                                      # the fakes of this step's G phase (before G's update)
                fake_a, fake_b = self.fakes.pop(0) if self.fakes else (G(real_b, "BA"), G(a, "AB"))
                g = torch.Generator().manual_seed(b.seed)
                stats, loss = {}, 0
                for dom, real, fake in (("A", a, fake_a), ("B", real_b, fake_b)):
                    lr, lf = D(real, dom), D(self.pools[dom].query(fake, g), dom)
                    ld = 0.5 * (F.mse_loss(lr, torch.ones_like(lr)) + F.mse_loss(lf, torch.zeros_like(lf)))
                    stats[f"D/{dom}"], loss = ld, loss + ld
                stats["D/loss"] = loss
        self.env.backward(loss * gain)
        return {k: v.detach().float() for k, v in stats.items()}

    def after_step(self, phase, step):
        self.decay.after(phase, step)

    @torch.no_grad()
    def log_stats(self):
        """digits-FID (gankern's digits feature net, against all real digits) of G_BA (eval mode) applied to the
        held-out B images of ``val_data``, channels averaged to gray: how digit-like the B -> A translations are."""
        if not self.options.val_data:
            return {}
        from ..digits_features import fid_kid
        if self.val is None:
            self.val = held_out(self)
        out = eval_batches(self.nets["G"], split_ab(self.val)[1], "BA")
        fid = fid_kid(out.mean(1, keepdim=True).cpu(), self.env.resolution)["fid_digits"]
        return {"val/fid_digits_BA": torch.tensor(fid, device=self.env.device)}

    def snapshot_sheets(self, G, seed):
        """Held-out A | G_AB(A) | G_BA(G_AB(A)) rows, then B | G_BA(B) | G_AB(G_BA(B)) rows."""
        def columns(a, b):
            G = self.nets["G"]
            fake_b, fake_a = eval_batches(G, a, "AB"), eval_batches(G, b, "BA")
            rec_a, rec_b = eval_batches(G, fake_b, "BA"), eval_batches(G, fake_a, "AB")
            return [torch.cat([a, b]), torch.cat([fake_b, fake_a]), torch.cat([rec_a, rec_b])]
        return translation_sheet(self, columns, n=4)

    def state_dict(self):
        return {f"pool_{k}": p.state() for k, p in self.pools.items()}

    def load_state_dict(self, state):
        for k, p in self.pools.items():
            p.load(state[f"pool_{k}"], self.env.device)
