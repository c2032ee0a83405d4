"""Sparsity Aware Normalization (SAN): the constant ||W||_{0,inf} of a conv layer, exactly and fast.

Kligvasser & Michaeli, "Sparsity Aware Normalization for GANs" (AAAI 2021). For a conv layer with
kernels ``w_ij`` (out channel i, in channel j) and cyclic padding on an H x W grid, Lemma 1 (eq. 8):

    ||W||_{0,inf} = max_{i,j} max_{u,v} |DFT_{H,W}(w_ij)[u, v]|

the complex modulus of the 2-D DFT of each kernel zero-padded to the layer's *input* size, maximised
over all kernels and frequencies (a kernel larger than the grid, e.g. a 3x3 conv on the 2x2 grid deep in
a critic, is wrapped around it, as the circular-padded conv itself does: ``kernel_dft.check_input_grid``).
The normalized weight is ``W / (g * ||W||_{0,inf})`` (g: eq. 9 gain when only a fraction r of the kernels
is sampled). See docs/algorithms.md §1 for the
derivation, the strided variant and the bug of the official torch.fft port (a.6), which
``legacy_fft_norm=True`` reproduces for A/B comparisons only.

Two algorithms compute the same constant (``algorithm`` option; ``options.resolve_san_algorithm``: "auto"
is certified on CPU, dense elsewhere). Both work in float32 with autocast disabled and share the
transform: a kh x kw kernel has only kh*kw taps, so its DFT on the grid is one small matrix product,
``kernels (K, kh*kw) @ basis (kh*kw, 2F)`` with the cos / -sin basis of the F = H*(W//2+1) one-sided
frequencies (the one-sided half has the same maximum for real kernels), built in float64 and rounded
once (``kernel_dft``).

* Certified (CPU). ``|DFT(w)[u,v]| <= ||w||_1`` and ``| |DFT(w')| - |DFT(w)| | <= ||w' - w||_1`` at
  every frequency (triangle inequality). Each kernel therefore has an upper bound
  ``peak_ref + ||w - w_ref||_1`` and a lower bound ``peak_ref - ||w - w_ref||_1`` from any earlier
  exact value ``peak_ref`` at weights ``w_ref`` (``peak_ref = 0``, ``w_ref = 0`` when none). Kernels are
  transformed in decreasing order of their upper bound, and the scan stops once the next upper bound
  is below the best exact peak found. How it stays exact: every kernel skipped is *proven* not to hold
  the maximum, so the result equals the full computation up to float32 rounding (covered by a 1e-4
  relative slack on the bounds), and the leading kernels are recomputed one at a time so the value is
  a function of the weights alone. A SAN layer keeps ``w_ref`` and the per-kernel peaks between
  refreshes (a cache, not state), so after an optimizer step only the few kernels whose bound still
  reaches the maximum are transformed again (:func:`gan_core.norm.certified.certified_max`). The
  selection is data-dependent and read by the host (``.item()``-like reads, ``nonzero``): cheap on a
  CPU, a stall on an accelerator.
* Dense (CUDA and other accelerators; ``san_dense``). Every (sampled) kernel is transformed, in chunks
  of bounded memory (plain PyTorch) or fused with the magnitude and the maximum so the spectrum is never
  written (Triton, CUDA). How it stays exact: it evaluates the definition itself, with nothing skipped,
  bounded or approximated; it differs from the certified value only by float32 summation order, and its
  shapes are static and nothing is read back, so a refresh makes no host synchronization and can be
  captured in a CUDA graph.

Both run the product in float64 instead when the float32 matmul precision allows TF32 / bf16
(``kernel_dft.exact_matmul_dtype``). With r < 1, :func:`san_constant` draws its block with
``generator`` (:func:`sample_kernel_block`) whatever the algorithm; SAN layers draw on the device for the
dense path (``san_draws``).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from .certified import certified_max
from .kernel_dft import (
    DEFAULT_CHUNK_BYTES,
    check_conv_weight,
    check_input_grid,
    check_kernel_fits,
    chunk_rows,
    dft_basis,
    exact_matmul_dtype,
    pair,
    uses_exact_strided,
)
from .options import SAN_STRIDED_MODES, check_ratio, resolve_san_algorithm
from .san_dense import dense_san_constant
from .san_draws import block_shape

__all__ = [
    "SAN_STRIDED_MODES",
    "harmonic_number",
    "kernel_peaks",
    "legacy_san_constant",
    "sample_kernel_block",
    "san_constant",
    "san_gain",
    "uses_exact_strided",
]

_EULER_GAMMA = 0.5772156649015329


def harmonic_number(k: int) -> float:
    """H_k = 1 + 1/2 + ... + 1/k (exact sum for small k, asymptotic series beyond, error < 1e-15)."""
    if k <= 2000:
        return math.fsum(1.0 / j for j in range(1, k + 1))
    k2 = float(k) * k
    return math.log(k) + _EULER_GAMMA + 1 / (2 * k) - 1 / (12 * k2) + 1 / (120 * k2 * k2)


def san_gain(ratio: float, num_filters: int) -> float:
    """Compensation gain of paper eq. 9 for sampling a fraction ``ratio`` of ``num_filters`` kernels.

    ``g = H_{m*n} / H_{floor(m*n*r)}`` with ``H_k`` the k-th harmonic number: the ratio of the expected
    maxima of m*n and of floor(m*n*r) i.i.d. exponential draws.

    >>> round(san_gain(0.25, 4096), 4)
    1.1846
    >>> san_gain(1.0, 192)
    1.0
    """
    ratio = check_ratio(ratio)
    num_filters = int(num_filters)
    if num_filters < 1:
        raise ValueError(f"num_filters must be >= 1, got {num_filters}")
    k = math.floor(num_filters * ratio + 1e-9)  # the epsilon keeps exact products (e.g. 0.25 * 4096) exact
    if k < 1:
        raise ValueError(f"ratio {ratio} of {num_filters} kernels samples no kernel (floor(m*n*r) = 0)")
    if k >= num_filters:
        return 1.0
    return harmonic_number(num_filters) / harmonic_number(k)


def sample_kernel_block(
    num_out: int, num_in: int, ratio: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random block of kernels covering a fraction ``ratio`` of the (out, in) pairs.

    As in the official ``ApproxSparse`` class: ``round(sqrt(r) * m)`` out channels and
    ``round(sqrt(r) * n)`` in channels (rounded half up, at least 1 each), drawn without replacement by
    ``torch.randperm`` with ``generator`` (out channels first). Returns sorted CPU index tensors.
    """
    k_out, k_in = block_shape(num_out, num_in, ratio)
    rows = torch.randperm(num_out, generator=generator)[:k_out].sort().values
    cols = torch.randperm(num_in, generator=generator)[:k_in].sort().values
    return rows, cols


def kernel_peaks(
    kernels: torch.Tensor,
    input_size: tuple[int, int],
    *,
    stride: int | tuple[int, int] = 1,
    dilation: int | tuple[int, int] = 1,
    strided: str = "bound",
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> torch.Tensor:
    """Per-kernel SAN value: max over frequencies of |DFT_{H,W}(w)| (or the exact strided value).

    Args:
        kernels: (K, kh, kw) real kernels (any float dtype; computed in float32).
        input_size: (H, W) input grid of the layer (before its own padding).
        stride: conv stride; only used by ``strided="exact"``.
        dilation: conv dilation (taps at multiples of it).
        strided: ``"bound"``: Lemma 1 on the input grid, an upper bound for strided convs (the official
            choice). ``"exact"``: for stride s with H, W divisible by s, the exact value
            ``max_{u,v} sqrt(mean_t |DFT(w)[(u,v) + t (H/s, W/s)]|^2)`` over the s^2 aliased frequencies
            (docs/algorithms.md §1.2); grids not divisible by s use the bound.
        chunk_bytes: bound on the transform buffer (kernels are processed in chunks).

    Returns:
        (K,) float32 tensor on the kernels' device.
    """
    if kernels.dim() != 3:
        raise ValueError(f"kernels must be (K, kh, kw), got {tuple(kernels.shape)}")
    K, kh, kw = kernels.shape
    H, W = pair(input_size)
    dh, dw = pair(dilation)
    sh, sw = pair(stride)
    exact = uses_exact_strided((H, W), (sh, sw), strided)
    with torch.autocast(kernels.device.type, enabled=False), torch.no_grad():
        dtype = exact_matmul_dtype(kernels.device)
        flat = kernels.detach().reshape(K, kh * kw).to(dtype)
        basis = dft_basis(kh, kw, dh, dw, H, W, exact, str(kernels.device)).to(dtype)
        nf = basis.shape[1] // 2
        rows = max(1, int(chunk_bytes) // (basis.shape[1] * flat.element_size()))
        out = torch.empty(K, dtype=torch.float32, device=kernels.device)
        for start in range(0, K, rows):
            spec = flat[start : start + rows] @ basis  # (c, 2F): [Re | Im]
            spec.square_()
            power = spec[:, :nf] + spec[:, nf:]  # |DFT|^2, (c, F)
            if exact:
                c = power.shape[0]
                power = power.view(c, sh, H // sh, sw, W // sw).mean(dim=(1, 3))
            out[start : start + rows] = power.flatten(1).amax(dim=1).float()
        return out.sqrt_()


def san_constant(
    weight: torch.Tensor,
    input_size: tuple[int, int],
    ratio: float = 1.0,
    generator: torch.Generator | None = None,
    *,
    stride: int | tuple[int, int] = 1,
    dilation: int | tuple[int, int] = 1,
    strided: str = "bound",
    chunk_bytes: int | None = None,
    algorithm: str = "auto",
) -> torch.Tensor:
    """The paper's ||W||_{0,inf} of a conv weight on an input grid (Lemma 1, eq. 8); no gain applied.

    Args:
        weight: (m, n, kh, kw) conv weight (out, in, kh, kw); any float dtype, computed in float32 even
            under autocast.
        input_size: (H, W) spatial size of the layer's input, before its own (circular) padding.
        ratio: fraction r of the m*n kernel pairs to use (paper semantics, in (0, 1]). r < 1 draws a
            random block of round(sqrt(r) m) out x round(sqrt(r) n) in channels with ``generator``.
        generator: torch.Generator for the draw (CPU); None uses the global RNG.
        stride, dilation, strided: see :func:`kernel_peaks` (default: the official stride-1 bound).
        chunk_bytes: bound on the transform buffer (default: 4 MiB; dense off the CPU: 64 MiB).
        algorithm: ``"auto"`` (certified on CPU, dense elsewhere), ``"certified"`` or ``"dense"``
            (module docstring). With r < 1 the block comes from ``generator`` either way (a host draw:
            this function is not the sync-free refresh, ``SparsityAwareNorm`` is).

    Returns:
        0-dim float32 tensor on ``weight``'s device: max_{i,j,u,v} |DFT_{H,W}(w_ij)[u, v]| over the
        (sampled) kernels. Exact either way (module docstring), to float32 rounding.

    Example:
        >>> w = torch.zeros(1, 1, 3, 3); w[0, 0, 1, 1] = 2.0  # a scaled delta: |DFT| = 2 everywhere
        >>> float(san_constant(w, (8, 8))), float(san_constant(w, (8, 8), algorithm="dense"))
        (2.0, 2.0)
    """
    check_conv_weight(weight)
    dil = pair(dilation)
    H, W = check_input_grid(weight, input_size, dil)
    ratio = check_ratio(ratio)
    w = weight.detach()
    rows = cols = None
    if ratio < 1.0:
        rows, cols = sample_kernel_block(w.shape[0], w.shape[1], ratio, generator)
        rows, cols = rows.to(w.device), cols.to(w.device)
    if resolve_san_algorithm(algorithm, w.device.type) == "dense":
        return dense_san_constant(
            w, (H, W), rows, cols, stride=stride, dilation=dil, strided=strided, chunk_bytes=chunk_bytes
        )
    if rows is not None:
        w = w.index_select(0, rows).index_select(1, cols)
    chunk_bytes = DEFAULT_CHUNK_BYTES if chunk_bytes is None else chunk_bytes
    m, n, kh, kw = w.shape
    with torch.autocast(w.device.type, enabled=False), torch.no_grad():
        kernels = w.reshape(m * n, kh, kw).float()
        peaks_of = functools.partial(
            kernel_peaks, input_size=(H, W), stride=stride, dilation=dil, strided=strided, chunk_bytes=chunk_bytes
        )
        value, _, _ = certified_max(kernels, peaks_of, chunk_rows=chunk_rows((H, W), chunk_bytes))
    return value


def legacy_san_constant(
    weight: torch.Tensor, input_size: tuple[int, int], *, chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> torch.Tensor:
    """What the official SANGAN torch.fft port computes (docs/algorithms.md §1.6); for A/B comparisons only.

    The official ``W_`` pads the kernel with ``F.pad(w, (0, H - kh, 0, W - kw))`` (a transposed
    W x H grid for square kernels), takes ``torch.fft.fft2`` and then ``torch.norm(p=2, dim=-1)``,
    an L2 norm over a whole row of frequencies instead of the complex modulus, and returns the max.
    Here the same operations run chunked over output channels, which leaves every value bit-identical.

    Returns:
        0-dim float32 tensor.
    """
    check_conv_weight(weight)
    H, W = check_kernel_fits(weight, input_size)
    m, n, kh, kw = weight.shape
    rows = max(1, int(chunk_bytes) // max(1, n * (kh + W - kw) * (kw + H - kh) * 8))
    best = None
    with torch.autocast(weight.device.type, enabled=False), torch.no_grad():
        w = weight.detach().float()
        for start in range(0, m, rows):
            w_fft = F.pad(w[start : start + rows], (0, H - kh, 0, W - kw))
            w_fft = torch.fft.fft2(w_fft)
            r = torch.norm(w_fft, p=2, dim=-1).max()
            best = r if best is None else torch.maximum(best, r)
    return best
