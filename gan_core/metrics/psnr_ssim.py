"""PSNR and SSIM with the SR benchmark protocol (MATLAB / BasicSR tradition, docs/protocols.md §1).

1. Inputs are quantized to 8 bits first (clamp to [0, 1], x255, round): the numbers describe the images
   a user would save.
2. ``y_channel=True``: luma of ITU-R BT.601 studio-range YCbCr (MATLAB ``rgb2ycbcr``),
   ``Y = 16 + (65.481 R + 128.553 G + 24.966 B)`` with R, G, B in [0, 1], kept in float (BasicSR's
   choice; SANGAN rounds it, which moves results by ~0.01 dB). Single-channel images are used as they are.
3. ``crop_border`` pixels (the scale, 4 for x4) are removed from every side.
4. PSNR = 10 log10(255^2 / MSE) per image, in float64.
5. SSIM (Wang et al. 2004): 11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03, L = 255,
   "valid" filtering, mean of the map; per channel, then averaged over channels.

All functions take (B, C, H, W) or (C, H, W) float tensors in [0, 1] (RGB, or 1 channel) and return a
(B,) float64 tensor (one value per image).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["psnr", "quantize", "rgb_to_y", "ssim"]

_Y_WEIGHTS = (65.481, 128.553, 24.966)


def _batch(x: torch.Tensor) -> torch.Tensor:
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected (B, C, H, W) or (C, H, W) with C in (1, 3), got {tuple(x.shape)}")
    return x


def quantize(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] float -> the 8-bit values as float64 in [0, 255] (round half to even, as numpy/torch)."""
    return (x.detach().double().clamp(0, 1) * 255.0).round()


def rgb_to_y(x255: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 255] -> (B, 1, H, W) BT.601 studio-range Y in [16, 235]."""
    w = torch.tensor(_Y_WEIGHTS, dtype=x255.dtype, device=x255.device).view(1, 3, 1, 1)
    return (x255 / 255.0 * w).sum(dim=1, keepdim=True) + 16.0


def _prepare(a: torch.Tensor, b: torch.Tensor, crop_border: int, y_channel: bool):
    a, b = _batch(a), _batch(b)
    if a.shape != b.shape:
        raise ValueError(f"image sizes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    a, b = quantize(a), quantize(b)
    if y_channel and a.shape[1] == 3:
        a, b = rgb_to_y(a), rgb_to_y(b)
    if crop_border:
        c = int(crop_border)
        if a.shape[-2] <= 2 * c or a.shape[-1] <= 2 * c:
            raise ValueError(f"image {tuple(a.shape[-2:])} too small for crop_border={c}")
        a, b = a[..., c:-c, c:-c], b[..., c:-c, c:-c]
    return a, b


def psnr(pred: torch.Tensor, target: torch.Tensor, crop_border: int = 4, y_channel: bool = True) -> torch.Tensor:
    """Per-image PSNR in dB (inf for identical images) under the protocol of the module docstring.

    >>> a = torch.zeros(1, 1, 16, 16); b = torch.full((1, 1, 16, 16), 10 / 255)
    >>> round(float(psnr(a, b, crop_border=0)), 4)  # MSE 100 -> 10 log10(255^2 / 100)
    28.1308
    """
    a, b = _prepare(pred, target, crop_border, y_channel)
    mse = (a - b).square().flatten(1).mean(dim=1)
    return 10.0 * torch.log10(255.0**2 / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5, dtype=torch.float64, device=None) -> torch.Tensor:
    g = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(g**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)


def ssim(pred: torch.Tensor, target: torch.Tensor, crop_border: int = 4, y_channel: bool = True) -> torch.Tensor:
    """Per-image SSIM under the protocol of the module docstring (1.0 for identical images)."""
    a, b = _prepare(pred, target, crop_border, y_channel)
    C = a.shape[1]
    win = _gaussian_window(device=a.device).expand(C, 1, 11, 11)
    if a.shape[-2] < 11 or a.shape[-1] < 11:
        raise ValueError(f"SSIM needs at least 11x11 pixels after cropping, got {tuple(a.shape[-2:])}")
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def filt(x):
        return F.conv2d(x, win, groups=C)

    mu_a, mu_b = filt(a), filt(b)
    var_a = filt(a * a) - mu_a**2
    var_b = filt(b * b) - mu_b**2
    cov = filt(a * b) - mu_a * mu_b
    smap = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return smap.flatten(2).mean(dim=2).mean(dim=1)
