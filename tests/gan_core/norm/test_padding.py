"""circular_pad2d's three implementations against F.pad(mode="circular"), and which one runs where."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gan_core.norm import padding
from gan_core.norm.padding import circular_pad2d, circular_pad_backend, set_conv_padding

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pad_cases import PADS, check_all, inputs

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("backend", ["slices", "concat"])
def test_cpu_implementations_equal_torch_exactly(backend):
    def pad_fn(x, pad):
        with circular_pad_backend(backend):
            return circular_pad2d(x, pad)

    counts = check_all(pad_fn)
    assert counts == {"cases": 3 * len(PADS), "gradchecks": 9}


def test_layout_is_kept_on_the_cpu_path():
    x = inputs()["channels_last"]
    assert circular_pad2d(x, 1).is_contiguous(memory_format=torch.channels_last)
    assert circular_pad2d(inputs()["contiguous"], 1).is_contiguous()


def test_eager_cpu_uses_the_slices_function():
    x = torch.randn(1, 2, 4, 4, requires_grad=True)
    assert padding._implementation(x) == "slices"
    assert type(circular_pad2d(x, 1).grad_fn).__name__ == "_CircularPad2dBackward"


def test_compiled_code_uses_concatenation_without_graph_breaks():
    graphs = []

    def capture(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    conv = set_conv_padding(torch.nn.Conv2d(3, 4, 3, padding=1), "circular")
    x = torch.randn(2, 3, 5, 7)
    out = torch.compile(conv, backend=capture, fullgraph=True)(x)  # fullgraph: a break would raise
    assert len(graphs) == 1 and "torch.cat" in graphs[0].code
    ref = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="circular"), conv.weight, conv.bias)
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)


def test_backend_names_are_checked():
    with pytest.raises(ValueError, match="must be one of"), circular_pad_backend("fast"):
        pass
    # a pad wider than the grid wraps several times (F.pad refuses it): numpy's "wrap" padding is the oracle
    x = torch.arange(9.0).view(1, 1, 3, 3)
    expected = np.pad(x.numpy(), ((0, 0), (0, 0), (4, 0), (0, 0)), mode="wrap")
    assert np.array_equal(circular_pad2d(x, (0, 0, 4, 0)).numpy(), expected)


@pytest.mark.slow
def test_triton_kernels_equal_torch_under_the_interpreter():
    """The CUDA path's kernels, run on CPU tensors by Triton's interpreter (set before Triton is imported)."""
    pytest.importorskip("triton")
    worker = Path(__file__).with_name("triton_pad_worker.py")
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, str(worker)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    counts = json.loads(proc.stdout.strip().splitlines()[-1])
    assert counts == {"cases": 3 * len(PADS), "gradchecks": 9, "conv_checks": 1}
