"""Image quality metrics with pinned protocols (see each module's docstring).

``psnr`` / ``ssim``: SR benchmark protocol (8-bit, BT.601 Y, crop = scale). ``niqe``: pyiqa with the LIVE
parameters on the same Y channel. ``LPIPS``: lpips package, AlexNet trunk via ``gan_core.weights``.
"""

from .psnr_ssim import psnr, quantize, rgb_to_y, ssim

__all__ = ["psnr", "quantize", "rgb_to_y", "ssim"]
