"""Circular padding as one Triton kernel each way: the CUDA path of :func:`gan_core.norm.circular_pad2d`.

Forward: one program per ``BLOCK`` elements of the padded output ``y`` (B, C, H + top + bottom,
W + left + right), walked in the output's memory order (NCHW or channels_last, so stores are coalesced),
reads ``x[b, c, (i - top) mod H, (j - left) mod W]`` through ``x``'s strides (any layout, views included)
and stores it: one read and one write per output element, no intermediate tensor.

Backward: one program per ``BLOCK`` elements of the input gradient ``dx`` (B, C, H, W), walked in
``dx``'s memory order. Input row ``h`` appears in the padded output at row ``h + top`` (always), at row
``h + top + H`` when ``h < bottom`` (bottom strip) and at row ``h + top - H`` when ``h >= H - top``
(top strip); columns likewise. ``dx[b, c, h, w]`` is the sum of ``dy`` over the positions it was copied
to (at most 2 x 2 when ``top + bottom <= H`` and ``left + right <= W``, as in every critic conv; at
most 3 x 3 otherwise): a gather with masked loads, no atomics and a fixed summation order, so the result
is deterministic. The sum runs in float32 (float64 for float64 tensors) and is rounded once.

Exactness: the forward is a copy, bit-equal to ``F.pad(x, pad, mode="circular")``. The backward equals
its gradient exactly whenever the sums are exact in the accumulation type (e.g. integer-valued
gradients), and to the rounding of a <= 9-term sum otherwise (PyTorch's own order differs).

Requires ``pad`` sides <= the size they wrap (checked by the caller). Runs on CUDA tensors, and on CPU
tensors when ``TRITON_INTERPRET=1`` was set before Triton was imported (how the tests check it).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["triton_circular_pad2d"]

BLOCK = 1024
_INT32_LIMIT = 2**31 - 1


@triton.jit
def _wrap(i, n):
    # i in [-n, 2n): i mod n without a division
    i = tl.where(i < 0, i + n, i)
    return tl.where(i >= n, i - n, i)


@triton.jit
def _decode(idx, C, H, W, CHANNELS_LAST: tl.constexpr):
    # (b, c, h, w) of the element at linear position idx of a dense (B, C, H, W) tensor in memory order
    if CHANNELS_LAST:
        c = idx % C
        t = idx // C
        w = t % W
        t = t // W
        h = t % H
        b = t // H
    else:
        w = idx % W
        t = idx // W
        h = t % H
        t = t // H
        c = t % C
        b = t // C
    return b, c, h, w


@triton.jit
def _pad_forward_kernel(
    x_ptr, y_ptr, numel, C, H, W, Hp, Wp, top, left,
    sxb, sxc, sxh, sxw,
    CHANNELS_LAST: tl.constexpr, WIDE: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    if WIDE:
        idx = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    else:
        idx = pid * BLOCK + tl.arange(0, BLOCK)
    mask = idx < numel
    b, c, i, j = _decode(idx, C, Hp, Wp, CHANNELS_LAST)
    h = _wrap(i - top, H)
    w = _wrap(j - left, W)
    v = tl.load(x_ptr + b * sxb + c * sxc + h * sxh + w * sxw, mask=mask)
    tl.store(y_ptr + idx, v, mask=mask)


@triton.jit
def _pad_backward_kernel(
    g_ptr, dx_ptr, numel, C, H, W, top, bottom, left, right,
    sgb, sgc, sgh, sgw,
    CHANNELS_LAST: tl.constexpr, WIDE: tl.constexpr, ACC_F64: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    if WIDE:
        idx = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    else:
        idx = pid * BLOCK + tl.arange(0, BLOCK)
    mask = idx < numel
    b, c, h, w = _decode(idx, C, H, W, CHANNELS_LAST)
    base = g_ptr + b * sgb + c * sgc
    # the (up to) three padded rows and columns each input row / column was copied to
    r0 = (h + top) * sgh
    r1 = (h + top + H) * sgh  # bottom strip
    r2 = (h + top - H) * sgh  # top strip
    q0 = (w + left) * sgw
    q1 = (w + left + W) * sgw  # right strip
    q2 = (w + left - W) * sgw  # left strip
    in_r1 = h < bottom
    in_r2 = h >= H - top
    in_q1 = w < right
    in_q2 = w >= W - left
    if ACC_F64:
        acc = tl.load(base + r0 + q0, mask=mask, other=0.0).to(tl.float64)
    else:
        acc = tl.load(base + r0 + q0, mask=mask, other=0.0).to(tl.float32)
    acc += tl.load(base + r0 + q1, mask=mask & in_q1, other=0.0).to(acc.dtype)
    acc += tl.load(base + r0 + q2, mask=mask & in_q2, other=0.0).to(acc.dtype)
    acc += tl.load(base + r1 + q0, mask=mask & in_r1, other=0.0).to(acc.dtype)
    acc += tl.load(base + r1 + q1, mask=mask & in_r1 & in_q1, other=0.0).to(acc.dtype)
    acc += tl.load(base + r1 + q2, mask=mask & in_r1 & in_q2, other=0.0).to(acc.dtype)
    acc += tl.load(base + r2 + q0, mask=mask & in_r2, other=0.0).to(acc.dtype)
    acc += tl.load(base + r2 + q1, mask=mask & in_r2 & in_q1, other=0.0).to(acc.dtype)
    acc += tl.load(base + r2 + q2, mask=mask & in_r2 & in_q2, other=0.0).to(acc.dtype)
    tl.store(dx_ptr + idx, acc.to(dx_ptr.dtype.element_ty), mask=mask)


def padded_layout(x: torch.Tensor) -> torch.memory_format:
    """channels_last when ``x``'s channels are its innermost dimension (a channels_last tensor or a crop of
    one), so the padded tensor (and the conv reading it) keeps that layout; else contiguous."""
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    if not x.is_contiguous() and x.shape[1] > 1 and x.stride(1) == 1:
        return torch.channels_last
    return torch.contiguous_format


def _wide(numel: int, t: torch.Tensor) -> bool:
    """64-bit index arithmetic when a linear index or an element offset of ``t`` may pass 2**31 - 1."""
    reach = sum((n - 1) * abs(s) for n, s in zip(t.shape, t.stride(), strict=True))
    return numel + BLOCK > _INT32_LIMIT or reach > _INT32_LIMIT


class _TritonCircularPad2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, pad: tuple[int, int, int, int]) -> torch.Tensor:
        left, right, top, bottom = pad
        B, C, H, W = x.shape
        fmt = padded_layout(x)
        ctx.pad, ctx.shape, ctx.layout = pad, (B, C, H, W), fmt
        y = torch.empty((B, C, H + top + bottom, W + left + right), dtype=x.dtype, device=x.device, memory_format=fmt)
        n = y.numel()
        if n:
            _pad_forward_kernel[(triton.cdiv(n, BLOCK),)](
                x, y, n, C, H, W, H + top + bottom, W + left + right, top, left, *x.stride(),
                CHANNELS_LAST=fmt == torch.channels_last, WIDE=_wide(n, x), BLOCK=BLOCK,
            )  # fmt: skip
        return y

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        left, right, top, bottom = ctx.pad
        B, C, H, W = ctx.shape
        dx = torch.empty((B, C, H, W), dtype=g.dtype, device=g.device, memory_format=ctx.layout)
        n = dx.numel()
        if n:
            _pad_backward_kernel[(triton.cdiv(n, BLOCK),)](
                g, dx, n, C, H, W, top, bottom, left, right, *g.stride(),
                CHANNELS_LAST=ctx.layout == torch.channels_last, WIDE=_wide(n, g),
                ACC_F64=g.dtype == torch.float64, BLOCK=BLOCK,
            )  # fmt: skip
        return dx, None


def triton_circular_pad2d(x: torch.Tensor, pad: tuple[int, int, int, int]) -> torch.Tensor:
    """``F.pad(x, pad, mode="circular")`` for a (B, C, H, W) tensor by one Triton kernel (backward: one more).

    Args:
        x: (B, C, H, W), any dtype Triton loads, any strides; CUDA (or CPU under ``TRITON_INTERPRET=1``).
        pad: ``(left, right, top, bottom)``, each >= 0 and at most the size it wraps (not checked here:
            :func:`gan_core.norm.circular_pad2d` checks it).

    Returns:
        (B, C, H + top + bottom, W + left + right), channels_last when ``x``'s channels are innermost
        (:func:`padded_layout`), else contiguous.
    """
    return _TritonCircularPad2d.apply(x, tuple(pad))
