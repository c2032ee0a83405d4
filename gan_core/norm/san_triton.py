"""Triton kernels of the dense SAN refresh (CUDA): the peak |DFT|^2 never written out, the finalize fused.

Imported only where ``triton`` is installed (``san_dense`` falls back to plain PyTorch otherwise). The
kernels run on CUDA tensors, and on CPU tensors under ``TRITON_INTERPRET=1`` (set before this module is
imported), which is how the tests check them against the PyTorch path without a GPU.

* :func:`triton_peak_partials`: one program per tile of BLOCK_K kernels x BLOCK_F frequencies computes

      power[k, f] = sum_a ( (sum_t w[k, t] B[t, 0, a, f])^2 + (sum_t w[k, t] B[t, 1, a, f])^2 )

  in registers (explicit float32 multiply-adds over the kh*kw taps: no ``tl.dot``, so no TF32 whatever
  the matmul precision settings) and stores only the tile's maximum. The (K, 2F) spectrum of the PyTorch
  path is never written: memory is one float per tile. For r < 1 the tile gathers its kernels through
  the drawn row / column indices (no copy of the block). Same quantity as the GEMM of ``san_dense``; the
  sums run in another order, so the two agree to float32 rounding (~1e-7 relative), not bit for bit.
* :func:`triton_finalize_`: one program reduces the partial maxima and writes the layer's buffers:
  ``s <- g sqrt(max / A) + eps`` the first time, ``mu s + (1 - mu) (g sqrt(max / A) + eps)`` once
  ``initialized`` (mu > 0), then ``initialized <- True``, ``draws += 1``. Correctly rounded sqrt and
  division and no FMA contraction, so from the same maximum it writes the same bits as the PyTorch
  finalize.
* :func:`triton_draw_keys`: the counter-based keys of ``san_draws.draw_keys`` in one launch (same
  integer operations in int64, same bits).

Each launcher is also a ``torch.library.custom_op`` (``gan_core::san_*``, with fake implementations giving
the static output shapes), used while torch.compile traces, so a compiled step can hold the refresh.

Block sizes are fixed (no autotuning: autotuning would time kernels, i.e. synchronize, on first use).
They are sized for the CUDA cores of a recent NVIDIA GPU and not tuned on one yet.
"""

import torch
import triton
import triton.language as tl

__all__ = ["BLOCK_F", "BLOCK_K", "triton_draw_keys", "triton_finalize_", "triton_peak_partials"]

BLOCK_K = 32  # kernels per tile
BLOCK_F = 128  # frequencies per tile
FINALIZE_BLOCK = 1024


@triton.jit
def _mul32(x, LO: tl.constexpr, HI: tl.constexpr):
    return (x * LO + ((x * HI) & 0xFFFF) * 65536) & 0xFFFFFFFF


@triton.jit
def _hash32(x):
    x = x ^ (x >> 16)
    x = _mul32(x, 0x352D, 0x7FEB)
    x = x ^ (x >> 15)
    x = _mul32(x, 0xA68B, 0x846C)
    return x ^ (x >> 16)


@triton.jit
def _draw_keys_kernel(seed_ptr, draw_ptr, out_ptr, num_out, total, BLOCK: tl.constexpr):
    seed = tl.load(seed_ptr).to(tl.int64)
    draw = tl.load(draw_ptr).to(tl.int64)
    h = _hash32((seed & 0xFFFFFFFF) ^ 0x9E3779B9)
    h = _hash32(h ^ ((seed >> 32) & 0xFFFFFFFF))
    h = _hash32(h ^ (draw & 0xFFFFFFFF))
    h = _hash32(h ^ ((draw >> 32) & 0xFFFFFFFF))
    k_out = _hash32(h ^ 0x85EBCA6B)
    k_in = _hash32(h ^ 0xC2B2AE35)
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    is_in = idx >= num_out
    i = tl.where(is_in, idx - num_out, idx)
    k_axis = tl.where(is_in, k_in, k_out)
    key = _hash32(_hash32((i + k_axis) & 0xFFFFFFFF) ^ k_axis)
    tl.store(out_ptr + idx, key, mask=idx < total)


@triton.jit
def _peak_power_kernel(
    w_ptr,
    rows_ptr,
    cols_ptr,
    basis_ptr,
    out_ptr,
    K,
    num_sel_in,
    num_in,
    F,
    T: tl.constexpr,
    A: tl.constexpr,
    SAMPLED: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_F: tl.constexpr,
):
    pid_k = tl.program_id(0)
    pid_f = tl.program_id(1)
    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    offs_f = pid_f * BLOCK_F + tl.arange(0, BLOCK_F)
    mask_k = offs_k < K
    mask_f = offs_f < F
    if SAMPLED:  # kernel (rows[k // k_in], cols[k % k_in]) of the drawn block
        r = tl.load(rows_ptr + offs_k // num_sel_in, mask=mask_k, other=0)
        c = tl.load(cols_ptr + offs_k % num_sel_in, mask=mask_k, other=0)
        kernel = r.to(tl.int64) * num_in + c
    else:
        kernel = offs_k.to(tl.int64)
    w_row = w_ptr + kernel * T
    power = tl.zeros((BLOCK_K, BLOCK_F), dtype=tl.float32)
    for a in tl.static_range(A):
        re = tl.zeros((BLOCK_K, BLOCK_F), dtype=tl.float32)
        im = tl.zeros((BLOCK_K, BLOCK_F), dtype=tl.float32)
        for t in tl.static_range(T):
            wt = tl.load(w_row + t, mask=mask_k, other=0.0)
            cos_t = tl.load(basis_ptr + (2 * t * A + a) * F + offs_f, mask=mask_f, other=0.0)
            sin_t = tl.load(basis_ptr + ((2 * t + 1) * A + a) * F + offs_f, mask=mask_f, other=0.0)
            re += wt[:, None] * cos_t[None, :]
            im += wt[:, None] * sin_t[None, :]
        power += re * re + im * im
    tile_max = tl.max(tl.max(power, axis=1), axis=0)  # masked entries are 0 <= every power
    tl.store(out_ptr + pid_k * tl.num_programs(1) + pid_f, tile_max)


@triton.jit
def _finalize_kernel(
    partials_ptr,
    P,
    s_ptr,
    init_ptr,
    draws_ptr,
    alias,
    gain,
    eps,
    momentum,
    one_minus_momentum,
    EMA: tl.constexpr,
    BLOCK: tl.constexpr,
):
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for start in range(0, P, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        acc = tl.maximum(acc, tl.load(partials_ptr + offs, mask=offs < P, other=0.0))
    power = tl.div_rn(tl.max(acc, axis=0), alias)
    new = tl.sqrt_rn(power) * gain + eps
    if EMA:
        old = tl.load(s_ptr)
        was_set = tl.load(init_ptr) != 0
        new = tl.where(was_set, old * momentum + one_minus_momentum * new, new)
    tl.store(s_ptr, new)
    tl.store(init_ptr, tl.full((), 1, tl.uint8))
    tl.store(draws_ptr, tl.load(draws_ptr) + 1)


def _grid(K: int, F: int) -> tuple[int, int]:
    return triton.cdiv(K, BLOCK_K), triton.cdiv(F, BLOCK_F)


def _launch_draw_keys(seed: torch.Tensor, draw: torch.Tensor, num_out: int, num_in: int) -> torch.Tensor:
    total = num_out + num_in
    out = torch.empty(total, dtype=torch.int64, device=seed.device)
    block = 256
    _draw_keys_kernel[(triton.cdiv(total, block),)](seed, draw, out, num_out, total, BLOCK=block)
    return out


def _launch_peak(
    kernels: torch.Tensor, basis: torch.Tensor, rows: torch.Tensor | None, cols: torch.Tensor | None, num_in: int
) -> torch.Tensor:
    T, _, A, F = basis.shape
    kernels, basis = kernels.contiguous(), basis.contiguous()
    sampled = rows is not None
    if sampled:
        K, num_sel_in = rows.numel() * cols.numel(), cols.numel()
    else:
        K, num_sel_in = kernels.shape[0], 1
        rows = cols = kernels  # unused pointers
    grid = _grid(K, F)
    out = torch.empty(grid[0] * grid[1], dtype=torch.float32, device=kernels.device)
    _peak_power_kernel[grid](
        kernels, rows, cols, basis, out, K, num_sel_in, num_in, F,
        T=T, A=A, SAMPLED=sampled, BLOCK_K=BLOCK_K, BLOCK_F=BLOCK_F,
    )  # fmt: skip
    return out


def _launch_finalize(
    partials: torch.Tensor,
    s: torch.Tensor,
    initialized: torch.Tensor,
    draws: torch.Tensor,
    alias: float,
    gain: float,
    eps: float,
    momentum: float,
) -> None:
    _finalize_kernel[(1,)](
        partials, partials.numel(), s, initialized.view(torch.uint8), draws,
        float(alias), float(gain), float(eps), float(momentum), 1.0 - float(momentum),
        EMA=momentum > 0, BLOCK=FINALIZE_BLOCK, enable_fp_fusion=False,
    )  # fmt: skip


# The same launches as custom ops, for compiled code: torch.compile (fullgraph) and inductor see opaque ops
# with static output shapes (their fake implementations) instead of tracing the Python launchers. Eager
# calls skip the op dispatch (tens of microseconds per call) and launch directly.
@torch.library.custom_op("gan_core::san_draw_keys", mutates_args=())
def draw_keys_op(seed: torch.Tensor, draw: torch.Tensor, num_out: int, num_in: int) -> torch.Tensor:
    return _launch_draw_keys(seed, draw, num_out, num_in)


@draw_keys_op.register_fake
def _(seed, draw, num_out, num_in):
    return seed.new_empty(num_out + num_in, dtype=torch.int64)


@torch.library.custom_op("gan_core::san_peak_partials", mutates_args=())
def peak_partials_op(
    kernels: torch.Tensor, basis: torch.Tensor, rows: torch.Tensor | None, cols: torch.Tensor | None, num_in: int
) -> torch.Tensor:
    return _launch_peak(kernels, basis, rows, cols, num_in)


@peak_partials_op.register_fake
def _(kernels, basis, rows, cols, num_in):
    K = kernels.shape[0] if rows is None else rows.shape[0] * cols.shape[0]
    gk, gf = _grid(K, basis.shape[3])
    return kernels.new_empty(gk * gf, dtype=torch.float32)


@torch.library.custom_op("gan_core::san_finalize_", mutates_args=("s", "initialized", "draws"))
def finalize_op(
    partials: torch.Tensor,
    s: torch.Tensor,
    initialized: torch.Tensor,
    draws: torch.Tensor,
    alias: float,
    gain: float,
    eps: float,
    momentum: float,
) -> None:
    _launch_finalize(partials, s, initialized, draws, alias, gain, eps, momentum)


@finalize_op.register_fake
def _(partials, s, initialized, draws, alias, gain, eps, momentum):
    return None


def triton_draw_keys(num_out: int, num_in: int, seed: torch.Tensor, draw: torch.Tensor) -> torch.Tensor:
    """Same as ``san_draws.draw_keys`` (one launch): (num_out + num_in,) int64 keys on ``seed``'s device."""
    launch = draw_keys_op if torch.compiler.is_compiling() else _launch_draw_keys
    return launch(seed, draw, num_out, num_in)


def triton_peak_partials(
    kernels: torch.Tensor,
    basis: torch.Tensor,
    rows: torch.Tensor | None = None,
    cols: torch.Tensor | None = None,
    num_in: int = 1,
) -> torch.Tensor:
    """Per-tile maxima of ``sum_a |DFT|^2`` over the kernels (or the drawn block) and frequencies.

    Args:
        kernels: (m*n, kh*kw) float32, row ``i*n + j`` = kernel (i, j).
        basis: (kh*kw, 2, A, F') float32 (``kernel_dft.peak_basis``).
        rows, cols: drawn out / in channel indices (int64, on the device), or None for every kernel.
        num_in: n (in channels of the weight), used with ``rows`` / ``cols``.

    Returns:
        (tiles,) float32; its maximum divided by A is the squared SAN constant.
    """
    T, _, A, F = basis.shape
    if kernels.dtype != torch.float32 or basis.dtype != torch.float32:
        raise ValueError("triton_peak_partials needs float32 kernels and basis")
    if 2 * T * A * F >= 2**31:
        raise ValueError(f"DFT basis of {2 * T * A * F} values is too large for 32-bit offsets")
    launch = peak_partials_op if torch.compiler.is_compiling() else _launch_peak
    return launch(kernels, basis, rows, cols, num_in)


def triton_finalize_(
    partials: torch.Tensor,
    s: torch.Tensor,
    initialized: torch.Tensor,
    draws: torch.Tensor,
    *,
    alias: int,
    gain: float,
    eps: float,
    momentum: float,
) -> None:
    """In place, one launch: ``s``, ``initialized``, ``draws`` from the partial maxima (module docstring)."""
    launch = finalize_op if torch.compiler.is_compiling() else _launch_finalize
    launch(partials, s, initialized, draws, float(alias), float(gain), float(eps), float(momentum))
