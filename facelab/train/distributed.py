"""Data-parallel training across processes, started by ``torchrun`` (``torch.distributed``).

    torchrun --standalone --nproc_per_node=N -m facelab.train.gan --out runs/world64 ...

Every rank runs the same step on its own slice of one global batch: :class:`Shard` draws each random
tensor for the whole batch from an RNG that every rank holds in the same state, and keeps every
``world``-th row starting at its ``rank``. The ranks therefore render different teacher faces and
different fakes, yet agree on everything drawn once per batch (the style-mixing cut), and a run's
RNG state means the same thing for any number of ranks, so a checkpoint written by rank 0 resumes
under any N. Interleaved rows (``rank::world``, not contiguous blocks) also keep the
discriminator's minibatch-standard-deviation groups, which are strided, the same as in one process.

Gradients are averaged with one ``all_reduce`` of all of a step's gradients flattened together, as
StyleGAN2-ADA does, rather than by wrapping the networks in ``DistributedDataParallel``: the lazy
regularisers differentiate twice (``create_graph=True``), each network is trained by several
losses that use different parts of it, and the generator's loss runs the discriminators frozen,
all of which fight DDP's bucketed hooks but cost a plain all-reduce nothing. With averaged gradients
and the running statistics (the path-length mean, the generator's W average) averaged too, one
step on N ranks at batch B/N each equals one step of one process at batch B, up to the order of
floating-point sums (``tests/test_train_distributed.py`` checks this with the gloo backend).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Shard:
    """This process's place in a data-parallel run: ``rank`` of ``world`` processes."""

    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls) -> "Shard":
        """The running process group's shard, or the single-process one when there is none."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def leader(self) -> bool:
        """Rank 0 writes checkpoints, samples and logs."""
        return self.rank == 0

    def local(self, n: int, what: str = "batch") -> int:
        """This rank's share of a global count ``n``."""
        if n % self.world:
            raise ValueError(f"{what} {n} does not split over {self.world} processes; "
                             f"pass a {what} divisible by {self.world} (--batch)")
        return n // self.world

    def take(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a tensor drawn for the whole batch."""
        return x[self.rank::self.world] if self.world > 1 else x

    def randn(self, n: int, *shape: int, device=None) -> torch.Tensor:
        """Standard normal [n / world, *shape]: this rank's rows of one [n, *shape] draw."""
        return self.take(torch.randn(n, *shape, device=device))

    def average_gradients(self, params) -> None:
        """Replace every parameter's gradient by its mean over the ranks (one all-reduce)."""
        if self.world == 1:
            return
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def average_(self, t: torch.Tensor) -> torch.Tensor:
        """Average a tensor over the ranks, in place; returns it."""
        if self.world > 1:
            dist.all_reduce(t)
            t /= self.world
        return t

    def any(self, flag: bool, device=None) -> bool:
        """True on every rank when ``flag`` is true on any: ranks must stop on the same step."""
        if self.world == 1:
            return flag
        t = torch.tensor([int(flag)], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())


def launched_by_torchrun() -> bool:
    return dist.is_available() and dist.is_torchelastic_launched()


def init_from_torchrun(device: str | None) -> str | None:
    """Join torchrun's process group (NCCL on CUDA, gloo on the CPU); returns this rank's device.

    ``device`` is the ``--device`` flag: on CUDA each rank takes the GPU of its ``LOCAL_RANK``.
    """
    from ..utils import get_device

    dev = get_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return str(dev)


def leave(*, wait: bool = True) -> None:
    """Leave the process group: after a barrier when the run ended normally (rank 0 may still be
    writing its snapshot), at once after an interruption (the ranks may then stand at different
    collectives, and a barrier would pair with the wrong one).

    Leaving explicitly matters: a gloo rank whose interpreter exits while another still holds the
    group open can abort (seen as SIGABRT under torchrun)."""
    if dist.is_available() and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()
