"""MATLAB-compatible bicubic resizing (``imresize(x, scale, 'bicubic')``), in PyTorch.

SR benchmarks make their LR images with MATLAB's ``imresize`` and compare against its bicubic upscaling
(docs/protocols.md, "LR images and the bicubic baseline"); PIL, OpenCV and ``torch.nn.functional.interpolate``
give visibly different pixels. MATLAB's algorithm, separable and one axis at a time (height first):

- output sample ``o`` (0-based) sits at input coordinate ``u = (o + 0.5) / scale - 0.5``;
- the kernel is Keys' cubic with ``a = -0.5``; when shrinking (``scale < 1``) it is stretched by
  ``1 / scale`` (antialiasing), so ``ceil(4 / scale) + 2`` taps are used, else ``4 + 2``;
- the taps of each output are normalized to sum to 1;
- borders are extended symmetrically with the edge sample repeated (``[b a | a b c d | d c]``).

The arithmetic is done in the input's floating dtype in the same order as pyiqa's port of this
algorithm, so the results are equal bit for bit (``tests/gan_core/test_matlab_resize.py`` checks it
against pyiqa when installed, and against MATLAB-made LR files of Set5 / Set14 when present). This
module needs nothing but torch: it keeps training, ``sr-eval`` and ``make demo`` off the metrics extra.
"""

from __future__ import annotations

import math

import torch

__all__ = ["imresize", "resize_axis"]

_A = -0.5  # Keys' cubic parameter used by MATLAB


def _cubic(t: torch.Tensor) -> torch.Tensor:
    """Keys' cubic convolution kernel (a = -0.5), elementwise; zero outside |t| <= 2."""
    a = _A
    at = t.abs()
    at2 = at * at
    at3 = at * at2
    near = ((a + 2) * at3 - (a + 3) * at2 + 1) * at.le(1).to(t.dtype)
    far = (a * at3 - 5 * a * at2 + 8 * a * at - 4 * a) * (at.gt(1) & at.le(2)).to(t.dtype)
    return near + far


def _taps(n_in: int, n_out: int, scale: float, dtype: torch.dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices, weights), both (K, n_out): input index and weight of tap k for output o (indices mirrored)."""
    shrink = scale < 1
    k = math.ceil(4 / scale) + 2 if shrink else 4 + 2
    pos = (torch.arange(n_out, dtype=dtype, device=device) + 0.5) / scale - 0.5
    first = pos.floor() - (k // 2) + 1
    offset = pos - first
    dist = torch.stack([offset - i for i in range(k)])  # (K, n_out): distance from tap k to the sample
    if shrink:
        dist = dist * scale
    w = _cubic(dist)
    w = w / w.sum(dim=0, keepdim=True)
    idx = first.long()[None, :] + torch.arange(k, device=device)[:, None]
    period = 2 * n_in  # symmetric extension with the edge repeated: period 2n, mirrored in the second half
    idx = idx.remainder(period)
    idx = torch.where(idx >= n_in, period - 1 - idx, idx)
    return idx, w


def resize_axis(x: torch.Tensor, dim: int, size: int, scale: float) -> torch.Tensor:
    """Resize a (N, 1, H, W) floating tensor along ``dim`` (-2: height, -1: width) to ``size`` samples.

    ``scale`` is the factor MATLAB uses to place the samples (``size / length`` for a size request,
    the requested factor otherwise); 1 returns ``x`` unchanged.
    """
    if dim not in (-2, -1):
        raise ValueError(f"dim must be -2 or -1, got {dim}")
    if scale == 1:
        return x
    n, c, h, w_len = x.shape
    if c != 1:
        raise ValueError(f"expected (N, 1, H, W), got {tuple(x.shape)}")
    idx, weight = _taps(x.shape[dim], size, scale, x.dtype, x.device)
    k = idx.shape[0]
    sample = x.index_select(dim, idx.reshape(-1))
    if dim == -2:  # (N, 1, K*size, W) -> (N, K, size, W)
        sample = sample.view(n, k, size, w_len)
        weight = weight.view(1, k, size, 1)
    else:  # (N, 1, H, K*size) -> (N, K, H, size)
        sample = sample.view(n, h, k, size).permute(0, 2, 1, 3).contiguous()
        weight = weight.view(1, k, 1, size)
    return (sample * weight).sum(dim=1, keepdim=True)


def imresize(
    x: torch.Tensor, scale: float | None = None, size: tuple[int, int] | None = None, round_between: bool = False
) -> torch.Tensor:
    """MATLAB ``imresize(x, scale, 'bicubic')`` (or to ``size = (H, W)``) of a float tensor.

    Args:
        x: (H, W), (C, H, W) or (B, C, H, W) floating tensor, any range (no clamping; 8-bit data as
            [0, 1] or [0, 255] alike). Channels are independent; colour order does not matter.
        scale: factor for both axes (> 0); the output is ceil(H * scale) x ceil(W * scale).
        size: output (H, W) instead of ``scale``.
        round_between: round the result of the height pass to integers (pass data in [0, 255]): what
            MATLAB does for a uint8 image, whose intermediate stays uint8.

    Returns:
        Tensor of the input's rank and dtype (float32 maths for non-float64 input), unclamped.
    """
    if (scale is None) == (size is None):
        raise ValueError("give exactly one of scale and size")
    if x.dim() not in (2, 3, 4):
        raise ValueError(f"expected (H, W), (C, H, W) or (B, C, H, W), got {tuple(x.shape)}")
    lead, (h, w) = x.shape[:-2], x.shape[-2:]
    if scale is not None:
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a finite number > 0, got {scale}")
        size, scales = (math.ceil(h * scale), math.ceil(w * scale)), (scale, scale)
    else:
        if min(size) < 1:
            raise ValueError(f"size must be positive, got {size}")
        scales = (size[0] / h, size[1] / w)
    dtype = x.dtype
    y = x.reshape(-1, 1, h, w)
    if y.dtype != torch.float64:
        y = y.float()
    y = resize_axis(y, -2, size[0], scales[0])
    if round_between:
        y = y.round().clamp_(0, 255)
    y = resize_axis(y, -1, size[1], scales[1])
    return y.reshape(*lead, size[0], size[1]).to(dtype)
