"""Conv kernels on an input grid: argument checks and the DFT basis shared by SAN and the exact norm.

A kh x kw kernel has only kh*kw taps, so its 2-D DFT on an H x W grid is one small matrix product,
``kernels (K, kh*kw) @ dft_basis(...) (kh*kw, 2F)``, with F the number of frequencies kept (the
one-sided half, H * (W // 2 + 1), is enough for real kernels). Used by ``sparsity_aware`` (the SAN
constant), ``san_layer`` (its incremental refresh), ``san_dense`` (the dense refresh, through
:func:`peak_basis`) and ``exact`` (the operator norm).
"""

from __future__ import annotations

import functools
import math

import torch

from .options import check_strided

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "check_conv_weight",
    "check_input_grid",
    "check_kernel_fits",
    "chunk_rows",
    "dft_basis",
    "exact_matmul_dtype",
    "pair",
    "peak_basis",
    "uses_exact_strided",
]

DEFAULT_CHUNK_BYTES = 4 << 20  # transform buffer per chunk of kernels: small enough to stay in cache


def pair(x: int | tuple[int, int] | list[int] | torch.Size) -> tuple[int, int]:
    """``(x, x)`` for an int, else the two ints of a pair; ValueError for anything else.

    >>> pair(3), pair((2, 5))
    ((3, 3), (2, 5))
    """
    if isinstance(x, int):
        return (x, x)
    t = tuple(int(v) for v in x)
    if len(t) != 2:
        raise ValueError(f"expected an int or a pair, got {x!r}")
    return t  # type: ignore[return-value]


def check_conv_weight(weight: torch.Tensor) -> None:
    """ValueError unless ``weight`` is a 4-D (out, in, kh, kw) tensor."""
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4:
        shape = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise ValueError(f"SAN needs a 4-D conv weight (out, in, kh, kw), got {shape}")


def check_input_grid(weight: torch.Tensor, input_size, dilation=(1, 1)) -> tuple[int, int]:
    """The (H, W) input grid as ints; ValueError unless both are >= 1.

    The grid may be smaller than the (dilated) kernel of ``weight`` (a 3x3 conv on the 2x2 grid at the
    bottom of a deep critic): a circular-padded conv then computes the cyclic convolution with the kernel
    wrapped around the grid (taps folded modulo H, W), whose DFT is the kernel's DFT with phases reduced
    modulo the grid, which is what :func:`dft_basis` computes. Lemma 1 and the strided values hold
    unchanged (checked against the layer's operator in ``tests/gan_core/norm/test_layer_errors.py``).
    ``weight`` and ``dilation`` are accepted for the callers' convenience and not constrained.
    """
    H, W = pair(input_size)
    if H < 1 or W < 1:
        raise ValueError(f"input size {H}x{W} is empty; the SAN constant is defined on the layer's input grid")
    return H, W


def check_kernel_fits(weight: torch.Tensor, input_size, dilation=(1, 1)) -> tuple[int, int]:
    """The (H, W) grid as ints; ValueError when it is smaller than the dilated kernel of ``weight``.

    Only the official port's quantity (``legacy_fft_norm``) needs this: it zero-pads the kernel to the
    grid with ``F.pad``, which cannot pad to a smaller size.
    """
    H, W = check_input_grid(weight, input_size)
    kh = (weight.shape[2] - 1) * dilation[0] + 1
    kw = (weight.shape[3] - 1) * dilation[1] + 1
    if H < kh or W < kw:
        raise ValueError(
            f"input size {H}x{W} is smaller than the (dilated) {kh}x{kw} kernel; legacy_fft_norm (the official "
            "port's quantity) zero-pads the kernel to the grid and cannot wrap it: use legacy_fft_norm=False "
            "(the exact constant, defined on any grid) or larger inputs"
        )
    return H, W


def uses_exact_strided(input_size: tuple[int, int], stride: int | tuple[int, int], strided: str) -> bool:
    """Whether the exact strided value (aliased RMS) applies: ``strided="exact"``, a stride other than 1
    and an (H, W) grid divisible by it. Otherwise the stride-1 bound (Lemma 1) is used."""
    sh, sw = pair(stride)
    check_strided(strided)
    H, W = pair(input_size)
    return strided == "exact" and (sh, sw) != (1, 1) and H % sh == 0 and W % sw == 0


def exact_matmul_dtype(device: torch.device) -> torch.dtype:
    """The dtype in which ``kernels @ basis`` stays an IEEE float32-or-better product on ``device``.

    float32, unless the float32 matmul precision of the device's backend allows TF32 / bf16 passes
    (``torch.set_float32_matmul_precision("high" | "medium")`` or ``fp32_precision = "tf32"``): then
    float64, so the SAN constant never silently loses its exactness. Read through the ``fp32_precision``
    API (the legacy getters raise once both APIs were used). While torch.compile traces, the flags cannot
    be read: float32, i.e. a compiled refresh follows the global setting (keep "highest" for an exact
    torch-path product; the Triton path of ``san_triton`` uses no matmul).
    """
    if torch.compiler.is_compiling():
        return torch.float32
    backend = {"cuda": torch.backends.cuda.matmul, "cpu": torch.backends.mkldnn.matmul}.get(device.type)
    precision = getattr(backend, "fp32_precision", "none") if backend is not None else "none"
    if precision == "none":
        precision = getattr(torch.backends, "fp32_precision", "ieee")
    return torch.float32 if precision in ("ieee", "none") else torch.float64


@functools.lru_cache(maxsize=24)
def dft_basis(kh: int, kw: int, dh: int, dw: int, H: int, W: int, full: bool, device: str) -> torch.Tensor:
    """(kh*kw, 2F) float32: columns [Re | Im] of exp(-2 pi i (u a dh / H + v b dw / W)) per tap (a, b).

    F = H * Wf with Wf = W (``full`` grid) or W // 2 + 1 (one-sided). Frequencies are ordered (u, v)
    row-major; (dh, dw) is the dilation. Phases are reduced modulo the grid in integers before the
    float64 trigonometry. Cached (the result is shared: do not modify it in place).
    """
    Wf = W if full else W // 2 + 1
    a = torch.arange(kh, dtype=torch.int64) * dh
    b = torch.arange(kw, dtype=torch.int64) * dw
    u = torch.arange(H, dtype=torch.int64)
    v = torch.arange(Wf, dtype=torch.int64)
    pa = torch.outer(a, u) % H  # (kh, H)
    pb = torch.outer(b, v) % W  # (kw, Wf)
    theta = 2 * math.pi * (pa[:, None, :, None].double() / H + pb[None, :, None, :].double() / W)
    theta = theta.reshape(kh * kw, H * Wf)
    return torch.cat([torch.cos(theta), -torch.sin(theta)], dim=1).float().to(device)


@functools.lru_cache(maxsize=24)
def peak_basis(kh: int, kw: int, dh: int, dw: int, H: int, W: int, sh: int, sw: int, device: str) -> torch.Tensor:
    """(kh*kw, 2, A, F') float32 DFT basis grouped by alias class, for SAN's per-kernel peak.

    ``[t, 0, a, f]`` / ``[t, 1, a, f]``: Re / Im of tap t's phase factor at frequency f of alias plane a.
    With (sh, sw) = (1, 1): A = 1 and the F' = H * (W // 2 + 1) one-sided frequencies (a view of
    :func:`dft_basis`), so ``|DFT(w)|^2 = (w @ B[:, 0])^2 + (w @ B[:, 1])^2``. With a stride (sh, sw)
    dividing (H, W) (the exact strided value): the full grid split into A = sh*sw planes of
    F' = (H/sh) * (W/sw) frequencies, plane (p, q) holding (u' + p H/sh, v' + q W/sw), so the mean over
    ``a`` of ``|DFT|^2`` is the aliased mean power of docs/algorithms.md §1.2. Cached (shared: do not modify).
    """
    T = kh * kw
    if (sh, sw) == (1, 1):
        return dft_basis(kh, kw, dh, dw, H, W, False, device).view(T, 2, 1, H * (W // 2 + 1))
    if H % sh or W % sw:
        raise ValueError(f"the {H}x{W} grid is not divisible by the stride {(sh, sw)}")
    full = dft_basis(kh, kw, dh, dw, H, W, True, device).view(T, 2, sh, H // sh, sw, W // sw)
    return full.permute(0, 1, 2, 4, 3, 5).reshape(T, 2, sh * sw, (H // sh) * (W // sw)).contiguous()


def chunk_rows(input_size: tuple[int, int], chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Kernels per transform call so that their one-sided float32 spectra fit in ``chunk_bytes`` (>= 1)."""
    H, W = input_size
    return max(1, chunk_bytes // (2 * H * (W // 2 + 1) * 4))
