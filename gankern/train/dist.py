"""This process's place in a (torchrun) job, the gradient all-reduce, and the seeds derived from (run seed, step,
tag, ...)."""
from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist


@dataclass
class Dist:
    """This process's place in a (torchrun) job."""
    rank: int = 0
    world: int = 1
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))

    @staticmethod
    def from_env(device: str | None = None) -> "Dist":
        """Join the torchrun job described by RANK/WORLD_SIZE/LOCAL_RANK (gloo on the CPU, nccl on GPUs)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
        cuda = torch.cuda.is_available() and device != "cpu"
        if device == "cuda" and world > 1:                 # --device cuda under torchrun: this rank's GPU
            device = f"cuda:{local}"
        dev = torch.device(device) if device else torch.device(f"cuda:{local}" if cuda else "cpu")
        if cuda and dev.type == "cuda":
            torch.cuda.set_device(dev)
        if world > 1 and not tdist.is_initialized():
            tdist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        return Dist(rank, world, dev)

    def average_grads(self, net: torch.nn.Module) -> None:
        """Average the gradients of ``net``'s trained parameters over the ranks: one all-reduce (as StyleGAN2-ADA
        does; works with double backward and with requires_grad toggled between phases, unlike DDP's hooks)."""
        if self.world > 1:
            params = [p for p in net.parameters() if p.requires_grad]
            flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params])
            tdist.all_reduce(flat)
            for p, g in zip(params, (flat / self.world).split([p.numel() for p in params])):
                p.grad = g.view_as(p)


def derive_seed(*parts) -> int:
    """A 56-bit seed fixed by ``parts`` (e.g. run seed, step, phase tag): the same on every rank and after a resume."""
    return int.from_bytes(hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=7).digest(), "little")
