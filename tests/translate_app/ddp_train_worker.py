"""Run by test_train.py under torchrun: a tiny translate-train run on 2 gloo ranks; each rank saves its nets."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from gan_core.config import load_config
from translate_app.config import SpadeTrainConfig
from translate_app.train import train

if __name__ == "__main__":
    root, out = sys.argv[1], Path(sys.argv[2])
    torch.set_num_threads(1)
    cfg = load_config(
        SpadeTrainConfig,
        Path(__file__).resolve().parents[2] / "configs" / "spade_tiny.yaml",
        [f"data.root={root}", "train.device=cpu", "loss.vgg_loss_weight=0", "log.fid_every=0"],
    )
    dist.init_process_group("gloo")  # train() reuses the group and leaves it to us
    rank = dist.get_rank()
    result = train(cfg, out / "run")
    torch.save({"G": result.G.state_dict(), "D": result.D.state_dict()}, out / f"rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()
