"""NIQE (Mittal, Soundararajan & Bovik 2013) through pyiqa, with the LIVE pristine model, pinned.

Protocol (docs/protocols.md §3, PIRM-SR practice): the RGB image is quantized to 8 bits, converted to the Y
channel of MATLAB's ``rgb2ycbcr`` (pyiqa ``color_space="ycbcr"``; pyiqa's own default is YIQ), ``crop_border``
pixels are shaved, and NIQE is computed on 96x96 blocks with the LIVE ``modelparameters.mat`` resolved by
``gan_core.weights`` (logical name ``niqe_live``; shipped in ``weights/``). Lower is better. MATLAB's
``niqe`` with the same parameters gives 5.7296 on BasicSR's ``baboon.png``; this gives 5.73.
"""

from __future__ import annotations

import torch

from ..extras import import_extra
from ..weights import resolve_weights
from .psnr_ssim import _batch, quantize

__all__ = ["NIQE", "niqe"]

MIN_SIZE = 96 * 2  # NIQE needs a 96x96 block at both of its scales


class NIQE:
    """Callable NIQE metric; the parameter file is read once."""

    def __init__(self, params: str = "niqe_live") -> None:
        """Raises :class:`~gan_core.extras.MissingExtraError` without pyiqa (the ``metrics`` extra)."""
        niqe_arch = import_extra("pyiqa.archs.niqe_arch", "NIQE")
        path = resolve_weights(params)
        self._net = niqe_arch.NIQE(color_space="ycbcr", crop_border=0, pretrained_model_path=str(path))

    @torch.no_grad()
    def __call__(self, img: torch.Tensor, crop_border: int = 0) -> torch.Tensor:
        """(B, C, H, W) or (C, H, W) RGB / gray in [0, 1] -> (B,) float64 NIQE (NaN if too small)."""
        x = _batch(img)
        x = quantize(x) / 255.0
        if crop_border:
            x = x[..., crop_border:-crop_border, crop_border:-crop_border]
        if min(x.shape[-2:]) < MIN_SIZE:
            return torch.full((x.shape[0],), float("nan"), dtype=torch.float64)
        return self._net(x.double().cpu()).reshape(-1).double()


_default: NIQE | None = None


def niqe(img: torch.Tensor, crop_border: int = 0) -> torch.Tensor:
    """NIQE with a shared default metric instance (see :class:`NIQE`)."""
    global _default
    if _default is None:
        _default = NIQE()
    return _default(img, crop_border)
