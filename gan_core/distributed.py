"""torchrun / DDP helpers: process-group setup from the environment, rank-aware logging, seeding.

``torchrun --nproc_per_node K <command>`` sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT; without
them everything runs as a single process (rank 0 of 1) and no process group is created.
"""

from __future__ import annotations

import gc
import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

__all__ = [
    "DistInfo",
    "all_reduce_flag",
    "barrier",
    "cleanup",
    "init_distributed",
    "pick_device",
    "seed_everything",
    "unwrap",
]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")  # noqa: RUF009 - immutable value
    owns_group: bool = False  # init_distributed created the process group (and cleanup destroys it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` (this rank's GPU), ``cuda:N``, ``mps``;
    a CUDA request without CUDA is an error, not a silent fallback."""
    if name in ("auto", ""):
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {name!r} requested but CUDA is not available to this torch build")
        if dev.index is None:
            dev = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(dev)
    return dev


def init_distributed(device: str = "auto") -> DistInfo:
    """Initialise the default process group when launched by torchrun (NCCL on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local)
    owns = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        owns = True
    return DistInfo(rank, world, local, dev, owns)


def cleanup(info: DistInfo, sync: bool = True) -> None:
    """Tear down what ``init_distributed`` set up.

    ``sync``: pass a barrier first (the normal end of a run), so that no rank closes its sockets while a peer
    still has gloo/NCCL work in flight; a peer then aborts ("terminate called without an active exception").
    Pass False on an error path, where a barrier could wait for a rank that died. A group the caller created
    itself is synchronised but left alive for the caller.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    gc.collect()  # release DDP reducers (they hold the group) before it goes
    if sync:
        dist.barrier()
    if info.owns_group:
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_flag(flag: bool, device: torch.device) -> bool:
    """True on every rank if ``flag`` is True on any rank (so that all ranks take the same branch)."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - the legacy global RNG other libraries may use
    torch.manual_seed(seed)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DDP (or DataParallel) wrapper."""
    return getattr(model, "module", model)
