"""Run by test_ddp.py under torchrun (2 gloo processes): train a SAN critic a few steps, save its state.

Arguments: output folder, SAN algorithm ("auto" = certified on CPU, or "dense": the device-side draws).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from gan_core.norm import refresh_norm_constants
from sr_app.models import SRCritic


def main(out: Path, algorithm: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.set_num_threads(1)
    # different initial weights (DDP broadcasts rank 0's) and crops per rank; the norm's seed is shared, as in
    # sr-train, so every rank draws the same SAN subsets without any buffer being broadcast
    torch.manual_seed(100 + rank)
    D = SRCritic("san", num_blocks=2, crop_seed=rank, ratio=0.25, momentum=0.9, gain="auto", algorithm=algorithm)
    D = DistributedDataParallel(D, broadcast_buffers=False)  # so equal constants are not just broadcast
    opt = torch.optim.Adam(D.parameters(), lr=1e-3, betas=(0.5, 0.9))
    for _ in range(6):
        refresh_norm_constants(D)
        real, fake = torch.rand(2, 3, 24, 24), torch.rand(2, 3, 24, 24) ** 2  # rank-specific data
        loss = torch.relu(1 - D(real)).mean() + torch.relu(1 + D(fake)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    refresh_norm_constants(D)
    torch.save(D.module.state_dict(), out / f"rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
