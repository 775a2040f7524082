"""Data-parallel training across processes launched by ``torchrun``.

``torchrun --nproc_per_node N -m gentool train ...`` starts N processes; each trains on its
shard of every epoch, gradients are averaged across processes after each backward pass, and
rank 0 alone writes checkpoints, samples and logs. The averaging is done here rather than by
wrapping modules in ``DistributedDataParallel`` because GAN and energy-model steps (several
optimizers, several backward passes, hand-computed updates) do not fit DDP's one forward, one
backward pattern; the arithmetic is the same all-reduce DDP performs. NCCL on GPUs, gloo on CPUs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def launched_world() -> World:
    """Read torchrun's environment (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    return World(int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")), size)


def init(world: World, device: "torch.device") -> None:
    """Join the process group (once per process)."""
    if not world.distributed:
        return
    import torch.distributed as dist

    if device.type == "cuda":
        import torch

        torch.cuda.set_device(device)  # NCCL collectives then use this process's own GPU
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")


def shutdown(world: World, *, synced: bool = True) -> None:
    """Tear the process group down. ``synced``: every process got here normally, so wait for all
    of them first (a gloo process that destroys the group while a peer's last message is in
    flight can abort: "terminate called without an active exception", seen once in CI). After an
    error on one process the others may never arrive: then no barrier."""
    if world.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            if synced:
                dist.barrier()
            dist.destroy_process_group()


def broadcast_parameters(modules: Iterable["torch.nn.Module"], world: World) -> None:
    """Make every process start from rank 0's weights and buffers."""
    if not world.distributed:
        return
    import torch.distributed as dist

    for module in modules:
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)


def broadcast_buffers(modules: Iterable["torch.nn.Module"], world: World) -> None:
    """Give every process rank 0's buffers (batch-norm statistics), as DDP does."""
    if not world.distributed:
        return
    import torch.distributed as dist

    for module in modules:
        for t in module.buffers():
            dist.broadcast(t.data, src=0)


def any_flag(flag: bool, world: World) -> bool:
    """True on every process if ``flag`` is true on any (a NaN, a Ctrl-C): all stop together."""
    if not world.distributed:
        return flag
    import torch
    import torch.distributed as dist

    backend_cuda = dist.get_backend() == "nccl"
    t = torch.tensor([1.0 if flag else 0.0], device="cuda" if backend_cuda else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def average_gradients(params: Iterable["torch.nn.Parameter"], world: World) -> None:
    """All-reduce and average the gradients of ``params`` (flattened into one buffer).

    A parameter without a gradient on this process gets zeros, so every process reduces a
    buffer of the same layout.
    """
    if not world.distributed:
        return
    import torch
    import torch.distributed as dist

    params = [p for p in params if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in params]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world.size
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset : offset + n].view_as(g))
        offset += n


def all_reduce_mean(t: "torch.Tensor", world: World) -> "torch.Tensor":
    """Average a tensor across processes (for hand-computed updates, e.g. Boltzmann machines)."""
    if not world.distributed:
        return t
    import torch.distributed as dist

    t = t.clone()
    dist.all_reduce(t)
    return t / world.size


def barrier(world: World) -> None:
    if world.distributed:
        import torch.distributed as dist

        dist.barrier()
