"""Exact spectral norm of a circular convolution (Sedghi, Gupta & Long, ICLR 2019): diagnostics only.

For a stride-1 circular conv on an H x W grid, the operator is block-diagonalised by the 2-D DFT: at
each frequency (u, v) it acts as the m x n complex matrix ``P[u, v] = [DFT_{H,W}(w_ij)[u, v]]_ij``, so

    ||W||_2 = max_{u,v} sigma_max(P[u, v])                                   (docs/algorithms.md §2.2)

(the one-sided half of the frequencies suffices: conjugate frequencies give conjugate matrices).
A stride-s conv equals a stride-1 conv on the (H/s) x (W/s) grid of the s^2 polyphase components of
the input, with kernels ``w[s q + r]``; the polyphase split is a permutation, so singular values are
preserved. This is the quantity SN_w underestimates and SAN's constant lower-bounds (SAN paper Fig. 3).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .kernel_dft import check_conv_weight, check_input_grid, dft_basis, pair

__all__ = ["conv_spectral_norm", "polyphase_weight"]


def polyphase_weight(weight: torch.Tensor, stride: int | tuple[int, int]) -> torch.Tensor:
    """(m, n, kh, kw) stride-s kernel -> (m, n*sh*sw, ceil(kh/sh), ceil(kw/sw)) stride-1 kernel."""
    sh, sw = pair(stride)
    m, n, kh, kw = weight.shape
    A, B = math.ceil(kh / sh), math.ceil(kw / sw)
    w = F.pad(weight, (0, B * sw - kw, 0, A * sh - kh))  # zero taps at the end
    w = w.reshape(m, n, A, sh, B, sw).permute(0, 1, 3, 5, 2, 4)  # [.., r_h, r_w, q_h, q_w]
    return w.reshape(m, n * sh * sw, A, B)


@torch.no_grad()
def conv_spectral_norm(
    weight: torch.Tensor,
    input_size: tuple[int, int],
    stride: int | tuple[int, int] = 1,
    *,
    chunk_bytes: int = 64 << 20,
) -> torch.Tensor:
    """Exact top singular value of the circular convolution with ``weight`` on an ``input_size`` grid.

    Args:
        weight: (m, n, kh, kw) conv weight (cross-correlation or convolution: same singular values).
        input_size: (H, W) input grid; with stride s both must be divisible by s.
        stride: conv stride (handled through the polyphase form).
        chunk_bytes: bound on the per-chunk buffer of frequency matrices.

    Returns:
        0-dim float32 tensor on ``weight``'s device.
    """
    check_conv_weight(weight)
    H, W = pair(input_size)
    sh, sw = pair(stride)
    if H % sh or W % sw:
        raise ValueError(f"exact strided spectral norm needs the {H}x{W} grid divisible by the stride {(sh, sw)}")
    check_input_grid(weight, (H, W))
    with torch.autocast(weight.device.type, enabled=False):
        w = weight.detach().float()
        if (sh, sw) != (1, 1):
            w, H, W = polyphase_weight(w, (sh, sw)), H // sh, W // sw
        m, n, kh, kw = w.shape
        basis = dft_basis(kh, kw, 1, 1, H, W, False, str(w.device))  # (kh*kw, 2F), [Re | Im]
        nf = basis.shape[1] // 2
        kernels = w.reshape(m * n, kh * kw)
        step = max(1, int(chunk_bytes) // (m * n * 16))
        best = torch.zeros((), device=w.device)
        for start in range(0, nf, step):
            cols = torch.arange(start, min(nf, start + step), device=w.device)
            re = kernels @ basis[:, cols]
            im = kernels @ basis[:, cols + nf]
            P = torch.complex(re, im).T.reshape(-1, m, n)  # one m x n matrix per frequency
            best = torch.maximum(best, torch.linalg.matrix_norm(P, ord=2).max())
        return best
