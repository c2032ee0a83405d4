"""Under DDP every rank draws the same SAN subsets: constants and weights stay identical across ranks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("ddp_worker.py")


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["auto", "dense"])
def test_two_process_gloo_ranks_stay_identical(tmp_path, algorithm):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[3]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(WORKER)]
    proc = subprocess.run([*cmd, str(tmp_path), algorithm], env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert a.keys() == b.keys()
    checked = 0
    for key in a:
        if "running_" in key or "num_batches_tracked" in key:
            continue  # BatchNorm statistics are per rank with broadcast_buffers=False
        assert torch.equal(a[key], b[key]), key
        checked += 1
    san_s = [k for k in a if k.endswith("parametrizations.weight.0.s")]
    assert len(san_s) == 4 and all(int(a[k.replace(".s", ".draws")]) == 7 for k in san_s)
    assert checked > 30
