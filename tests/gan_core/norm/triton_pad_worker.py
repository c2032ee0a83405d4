"""Run under ``TRITON_INTERPRET=1`` (set before Triton is imported): the Triton circular pad on CPU tensors.

Prints one JSON line of counts; any failed check raises (non-zero exit). Used by test_padding.py.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pad_cases import check_all  # noqa: E402

from gan_core.norm.circular_pad_triton import padded_layout, triton_circular_pad2d  # noqa: E402
from gan_core.norm.padding import circular_pad2d, circular_pad_backend, set_conv_padding  # noqa: E402


def main() -> None:
    out = check_all(triton_circular_pad2d)
    # layouts: channels_last in (also for a crop view of channels_last), channels_last out, and its gradient
    x = torch.randn(2, 4, 6, 7).contiguous(memory_format=torch.channels_last)
    for t in (x, x[:, :, 1:5, 2:7]):
        t = t.detach().requires_grad_()
        y = triton_circular_pad2d(t, (1, 2, 2, 1))
        (grad,) = torch.autograd.grad(y, t, torch.ones_like(y))
        assert padded_layout(t) == torch.channels_last and y.is_contiguous(memory_format=torch.channels_last)
        assert grad.is_contiguous(memory_format=torch.channels_last)
    # bfloat16 values are copied exactly; integer gradients sum exactly in the float32 accumulator
    xb = torch.randn(2, 3, 5, 5).bfloat16().requires_grad_()
    y = triton_circular_pad2d(xb, (2, 1, 1, 2))
    assert y.dtype == torch.bfloat16 and torch.equal(y, F.pad(xb.detach(), (2, 1, 1, 2), mode="circular"))
    # an empty batch launches nothing
    assert triton_circular_pad2d(torch.zeros(0, 3, 4, 4), (1, 1, 1, 1)).shape == (0, 3, 6, 6)
    # the backend switch routes a circular conv through the kernel: same output and gradients as "slices"
    conv = set_conv_padding(torch.nn.Conv2d(3, 5, 3, padding=1), "circular")
    z = torch.randn(2, 3, 9, 9)
    results = []
    for backend in ("slices", "triton"):
        conv.zero_grad()
        zz = z.clone().requires_grad_()
        with circular_pad_backend(backend):
            conv(zz).square().sum().backward()
        results.append((conv(z).detach(), zz.grad, conv.weight.grad.clone()))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    with circular_pad_backend("triton"):
        assert torch.equal(circular_pad2d(z, 2), F.pad(z, (2, 2, 2, 2), mode="circular"))
    out["conv_checks"] = 1
    print(json.dumps(out))


if __name__ == "__main__":
    main()
