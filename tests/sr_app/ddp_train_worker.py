"""Run by test_train.py under torchrun: a tiny sr-train gan run on 2 gloo ranks; each rank saves its nets."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from gan_core.config import load_config
from sr_app.config import SRTrainConfig
from sr_app.train import train

if __name__ == "__main__":
    hr, vgg, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    torch.set_num_threads(1)
    cfg = load_config(
        SRTrainConfig,
        Path(__file__).resolve().parents[2] / "configs" / "sr_tiny.yaml",
        [f"data.train_dirs=[{hr}]", f"loss.vgg_weights_file={vgg}", "train.device=cpu", "model.san_ratio=0.25"],
    )
    dist.init_process_group("gloo")  # train() reuses the group and leaves it to us
    rank = dist.get_rank()
    result = train(cfg, out / "run")
    torch.save(
        {"G": result.G.state_dict(), "G_ema": result.G_ema.state_dict(), "D": result.D.state_dict()},
        out / f"rank{rank}.pt",
    )
    dist.barrier()  # no rank tears down its sockets while a peer is still using them
    dist.destroy_process_group()
