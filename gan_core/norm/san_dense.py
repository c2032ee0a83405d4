"""The dense SAN refresh: every (sampled) kernel on the device, static shapes, no host synchronization.

Same constant as the certified path of ``sparsity_aware`` (paper eq. 8, Lemma 1; docs/algorithms.md §1.2):

    c = max_{(i,j) in block} max_{u,v} |DFT_{H,W}(w_ij)[u, v]|,     s <- [EMA] (g c + eps)

computed without pruning: ``kernels (K, kh*kw) @ basis (kh*kw, 2F)`` gives Re and Im of every kernel's
DFT on the layer's grid (``kernel_dft.peak_basis``: one-sided frequencies, or the aliased planes of the
exact strided value), magnitudes squared, maximum over everything, one square root at the end. Its cost
is the full product, but its shape is fixed by (m, n, kh, kw, H, W, r) and nothing is read back by the
host: no ``.item()`` / ``float()`` / ``.tolist()`` / ``nonzero`` / host-to-device copy / data-dependent
shape, so a refresh can be captured in a CUDA graph or compiled with ``torch.compile(fullgraph=True)``,
and on an accelerator it queues behind the training step instead of stalling it.

Backends (:func:`dense_backend`):

* ``"triton"`` (CUDA with triton installed): ``san_triton`` fuses the product with the magnitude and the
  maximum (the spectrum is never written; memory is one float per tile) and fuses the finalize (sqrt,
  gain, eps, EMA, buffer writes) into one more launch; r < 1 adds one launch for the draw keys and the
  sorts of ``san_draws.device_block``.
* ``"torch"`` (CPU, other devices, no triton): the same quantity in plain PyTorch, chunked over kernels
  so the (chunk, 2F) spectrum buffer stays under ``chunk_bytes`` (4 MiB on CPU, cache-sized; 64 MiB
  elsewhere, few launches), plus half of that for the magnitudes. Also the fallback for a GPU that
  Triton cannot target: set ``SparsityAwareNorm.dense_backend = "torch"``.

How each path stays exact: both evaluate the paper's quantity literally (no bound, no pruning, no
approximation of the DFT) in IEEE float32 with the same float64-built basis as the certified path; the
results differ from it and from each other only by the order of float32 sums (~1e-7 relative, the
tests bound it against a float64 FFT). The torch product runs in float64 instead when the float32
matmul precision allows TF32 / bf16 (``kernel_dft.exact_matmul_dtype``); the Triton kernel uses explicit
float32 multiply-adds, never TF32. ``max_a mean`` of the strided value is taken as ``(max sum) / A``
(equal: correctly rounded division by A > 0 is monotone).
"""

from __future__ import annotations

import contextlib

import torch

from .kernel_dft import (
    DEFAULT_CHUNK_BYTES,
    check_conv_weight,
    check_input_grid,
    exact_matmul_dtype,
    pair,
    peak_basis,
    uses_exact_strided,
)
from .san_draws import device_block, draw_keys

__all__ = [
    "DENSE_BACKENDS",
    "DEVICE_CHUNK_BYTES",
    "dense_backend",
    "dense_basis",
    "dense_refresh_",
    "dense_san_constant",
    "draw_block",
    "load_triton_kernels",
    "peak_partials",
]

DENSE_BACKENDS = ("auto", "torch", "triton")
DEVICE_CHUNK_BYTES = 64 << 20  # spectrum buffer of the torch path on accelerators (CPU: DEFAULT_CHUNK_BYTES)


_TRITON_KERNELS: list = []  # [module or None] once looked up (a plain global: compiled code reads it as is)


def load_triton_kernels():
    """The ``san_triton`` module, or None where triton cannot be imported (imported on first use only)."""
    if not _TRITON_KERNELS:
        try:
            from . import san_triton
        except ImportError:
            san_triton = None
        _TRITON_KERNELS.append(san_triton)
    return _TRITON_KERNELS[0]


def dense_backend(backend: str, device: torch.device) -> str:
    """``"auto"`` -> ``"triton"`` on CUDA when triton is installed, else ``"torch"``; others are checked.

    ``"triton"`` on CPU tensors works only under ``TRITON_INTERPRET=1`` (the tests' oracle runs).
    """
    if backend not in DENSE_BACKENDS:
        raise ValueError(f"backend must be one of {DENSE_BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "triton" if device.type == "cuda" and load_triton_kernels() is not None else "torch"
    if backend == "triton" and load_triton_kernels() is None:
        raise RuntimeError("backend='triton' needs the triton package")
    return backend


def _no_autocast(device: torch.device):
    """Autocast off on ``device`` (the constant is float32 by definition); nothing to do where none exists."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def _chunk_bytes(chunk_bytes: int | None, device: torch.device) -> int:
    if chunk_bytes is not None:
        return int(chunk_bytes)
    return DEFAULT_CHUNK_BYTES if device.type == "cpu" else DEVICE_CHUNK_BYTES


def draw_block(
    num_out: int, num_in: int, ratio: float, seed: torch.Tensor, draw: torch.Tensor, backend: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The block of draw number ``draw`` (0-dim int64, on the device) for ``seed`` (``san_draws``):
    sorted (k_out,) and (k_in,) int64 indices on ``seed``'s device, no host read."""
    if dense_backend(backend, seed.device) == "triton":
        keys = load_triton_kernels().triton_draw_keys(num_out, num_in, seed, draw)
    else:
        keys = draw_keys(num_out, num_in, seed, draw)
    return device_block(num_out, num_in, ratio, keys)


def _torch_peak_partials(w, basis, rows, cols, chunk_bytes):
    T, _, A, F = basis.shape
    dtype = exact_matmul_dtype(w.device)
    if rows is not None:
        w = w.index_select(0, rows).index_select(1, cols)
    flat = w.reshape(-1, T).to(dtype)
    B = basis.reshape(T, 2 * A * F).to(dtype)
    rows_per_chunk = max(1, chunk_bytes // (2 * A * F * flat.element_size()))
    maxima = []
    for start in range(0, flat.shape[0], rows_per_chunk):
        spec = flat[start : start + rows_per_chunk] @ B  # (c, 2AF): [Re | Im] per alias plane
        spec = spec.view(-1, 2, A, F).square_()
        power = spec[:, 0] + spec[:, 1]  # |DFT|^2, (c, A, F)
        if A > 1:
            power = power.sum(dim=1)
        maxima.append(power.amax().float())
    return torch.stack(maxima)


def peak_partials(
    weight: torch.Tensor,
    basis: torch.Tensor,
    rows: torch.Tensor | None = None,
    cols: torch.Tensor | None = None,
    *,
    backend: str = "auto",
    chunk_bytes: int | None = None,
) -> torch.Tensor:
    """Partial maxima (per tile or chunk) of ``sum_a |DFT(w_ij)|^2`` over the kernels and frequencies.

    Args:
        weight: (m, n, kh, kw) float32 conv weight.
        basis: (kh*kw, 2, A, F) float32 from ``kernel_dft.peak_basis`` on the weight's device.
        rows, cols: the drawn block (int64 indices on the device), or None for every kernel.
        backend: ``"auto" | "torch" | "triton"`` (:func:`dense_backend`).
        chunk_bytes: spectrum buffer bound of the torch path (default: 4 MiB on CPU, 64 MiB elsewhere).

    Returns:
        1-D float32 tensor on the weight's device; ``max / A`` is the squared constant.
    """
    if dense_backend(backend, weight.device) == "triton":
        m, n = weight.shape[:2]
        flat = weight.reshape(m * n, -1)
        return load_triton_kernels().triton_peak_partials(flat, basis, rows, cols, num_in=n)
    return _torch_peak_partials(weight, basis, rows, cols, _chunk_bytes(chunk_bytes, weight.device))


def dense_basis(
    weight: torch.Tensor,
    input_size: tuple[int, int],
    stride: int | tuple[int, int] = 1,
    dilation: int | tuple[int, int] = 1,
    strided: str = "bound",
) -> torch.Tensor:
    """(kh*kw, 2, A, F) float32 basis of ``weight``'s layer on its grid, on the weight's device (cached).

    A > 1 (the aliased planes) only for ``strided="exact"`` with a stride dividing the grid. Raises
    ValueError for an empty grid (a grid smaller than the kernel is fine: the kernel wraps). Built on the
    host and copied to the device on first use of a (kernel, grid) pair: warm a refresh up once before
    capturing or compiling it (a SAN layer keeps its basis, which compiled code then reads as a tensor
    instead of tracing its construction).
    """
    check_conv_weight(weight)
    dh, dw = pair(dilation)
    H, W = check_input_grid(weight, input_size, (dh, dw))
    sh, sw = pair(stride) if uses_exact_strided((H, W), stride, strided) else (1, 1)
    kh, kw = weight.shape[2:]
    return peak_basis(kh, kw, dh, dw, H, W, sh, sw, str(weight.device))


def dense_san_constant(
    weight: torch.Tensor,
    input_size: tuple[int, int],
    rows: torch.Tensor | None = None,
    cols: torch.Tensor | None = None,
    *,
    stride: int | tuple[int, int] = 1,
    dilation: int | tuple[int, int] = 1,
    strided: str = "bound",
    backend: str = "auto",
    chunk_bytes: int | None = None,
) -> torch.Tensor:
    """||W||_{0,inf} over every kernel (or the block ``rows`` x ``cols``) without pruning; no gain.

    Args: as ``sparsity_aware.san_constant`` (stride, dilation, strided), plus the block as device
    indices and :func:`peak_partials`' backend and chunk_bytes. Returns a 0-dim float32 tensor on the
    weight's device, computed in float32 even under autocast.
    """
    with _no_autocast(weight.device), torch.no_grad():
        basis = dense_basis(weight, input_size, stride, dilation, strided)
        w, alias = weight.detach().float(), basis.shape[2]
        power = peak_partials(w, basis, rows, cols, backend=backend, chunk_bytes=chunk_bytes).amax()
        if alias > 1:
            power = power / alias
        return power.sqrt()


def _torch_finalize_(partials, s, initialized, draws, alias, gain, eps, momentum):
    power = partials.amax()
    if alias > 1:
        power = power / alias
    new = power.sqrt() * gain + eps
    if momentum > 0:
        new = torch.where(initialized, s * momentum + (1.0 - momentum) * new, new)
    s.copy_(new)
    initialized.fill_(True)
    draws.add_(1)


@torch.no_grad()
def dense_refresh_(
    weight: torch.Tensor,
    s: torch.Tensor,
    initialized: torch.Tensor,
    draws: torch.Tensor,
    seed: torch.Tensor,
    *,
    input_size: tuple[int, int],
    ratio: float = 1.0,
    gain: float = 1.0,
    eps: float = 0.0,
    momentum: float = 0.0,
    stride: int | tuple[int, int] = 1,
    dilation: int | tuple[int, int] = 1,
    strided: str = "bound",
    backend: str = "auto",
    chunk_bytes: int | None = None,
    basis: torch.Tensor | None = None,
) -> None:
    """One SAN refresh of a layer's buffers, in place and on the device (the CUDA-graph-capturable unit).

    ``s <- g c + eps`` on the first refresh (``initialized`` False), ``mu s + (1 - mu) (g c + eps)``
    after, with ``c`` the constant over the block of draw number ``draws`` for ``seed`` (r < 1; every
    kernel for r = 1); then ``initialized <- True`` and ``draws += 1``. Reads and writes only the given
    tensors (0-dim: float32 ``s``, bool ``initialized``, int64 ``draws`` and ``seed``, all on the weight's
    device), so a replayed CUDA graph of it recomputes from the current weights and draws a new block.
    The cadence (``update_every``) is the caller's: ``SparsityAwareNorm.refresh`` counts on the host.
    ``basis``: :func:`dense_basis` of this layer when the caller keeps it (default: looked up here).
    """
    with _no_autocast(weight.device):
        if basis is None:
            basis = dense_basis(weight, input_size, stride, dilation, strided)
        w, alias = weight.detach().float(), basis.shape[2]
        rows = cols = None
        if ratio < 1.0:
            rows, cols = draw_block(w.shape[0], w.shape[1], ratio, seed, draws, backend)
        partials = peak_partials(w, basis, rows, cols, backend=backend, chunk_bytes=chunk_bytes)
        if dense_backend(backend, w.device) == "triton":
            load_triton_kernels().triton_finalize_(
                partials, s, initialized, draws, alias=alias, gain=gain, eps=eps, momentum=momentum
            )
        else:
            _torch_finalize_(partials, s, initialized, draws, alias, gain, eps, momentum)
