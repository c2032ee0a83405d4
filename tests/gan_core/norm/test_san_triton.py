"""The Triton kernels of the dense SAN refresh, run by Triton's interpreter on CPU tensors, equal the
PyTorch path: draw keys and the finalize bit for bit, the fused magnitude-maximum to float32 rounding."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("triton_worker.py")


def test_triton_kernels_under_the_interpreter_equal_the_torch_path():
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(Path(__file__).resolve().parents[3]))
    proc = subprocess.run([sys.executable, str(WORKER)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.startswith("OK triton == torch"), proc.stdout
