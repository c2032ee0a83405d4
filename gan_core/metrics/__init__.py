"""Image quality metrics with pinned protocols (see each module's docstring)."""

from .psnr_ssim import psnr, quantize, rgb_to_y, ssim

__all__ = ["psnr", "quantize", "rgb_to_y", "ssim"]
