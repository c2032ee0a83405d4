"""Circular-padding checks shared by the in-process tests and the Triton interpreter worker.

``check_all(pad_fn)`` compares ``pad_fn(x, pad)`` with ``F.pad(x, pad, mode="circular")``: forward values bit
for bit and the gradient exactly (integer-valued output gradients make every sum exact, whatever its order),
for pads 0..3 on each side, odd grid sizes (3 x 5: pads up to 3 wrap more than once per axis pair), both
memory formats and a crop view of a channels_last tensor; float64 ``gradcheck`` on a few pads. Returns counts.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

PADS = list(itertools.product(range(4), repeat=4))  # (left, right, top, bottom), 256 combinations
GRADCHECK_PADS = [(1, 1, 1, 1), (0, 2, 1, 0), (3, 1, 2, 3)]


def inputs(dtype=torch.float32) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 3, 5, generator=g, dtype=dtype)
    big = torch.randn(2, 3, 7, 9, generator=g, dtype=dtype).contiguous(memory_format=torch.channels_last)
    return {
        "contiguous": x,
        "channels_last": x.contiguous(memory_format=torch.channels_last),
        "crop_of_channels_last": big[:, :, 2:5, 1:6],  # a view: what the SR critic's first conv sees
    }


def check_case(pad_fn, x: torch.Tensor, pad: tuple[int, int, int, int]) -> None:
    xa = x.detach().clone(memory_format=torch.preserve_format).requires_grad_()
    xb = x.detach().clone(memory_format=torch.preserve_format).requires_grad_()
    ya, yb = pad_fn(xa, pad), F.pad(xb, pad, mode="circular")
    assert ya.shape == yb.shape and torch.equal(ya, yb), f"forward differs for pad {pad}"
    g = torch.randint(-4, 5, yb.shape, generator=torch.Generator().manual_seed(sum(pad)), dtype=x.dtype)
    ya.backward(g), yb.backward(g)
    assert torch.equal(xa.grad, xb.grad), f"gradient differs for pad {pad}"


def check_all(pad_fn) -> dict[str, int]:
    cases = 0
    for name, x in inputs().items():
        for pad in PADS:
            try:
                check_case(pad_fn, x, pad)
            except AssertionError as e:
                raise AssertionError(f"{name}: {e}") from None
            cases += 1
    gradchecks = 0
    for name, x in inputs(torch.float64).items():
        for pad in GRADCHECK_PADS:
            assert torch.autograd.gradcheck(lambda t, p=pad: pad_fn(t, p), (x.detach().requires_grad_(),),
                                            fast_mode=True), f"{name}: gradcheck {pad}"  # fmt: skip
            gradchecks += 1
    return {"cases": cases, "gradchecks": gradchecks}
