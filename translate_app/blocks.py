"""SPADE building blocks (Park et al., CVPR 2019), re-implemented from the paper and docs/algorithms.md §4.2.

SPADE(x, seg): parameter-free BatchNorm of x (SyncBatchNorm under DDP, via
``nn.SyncBatchNorm.convert_sync_batchnorm``), then ``x_norm * (1 + gamma(seg)) + beta(seg)`` where the
segmentation map, resized (nearest) to x's size, goes through conv3x3(label_nc -> hidden) -> ReLU and two
conv3x3(hidden -> C) heads.

SPADEResBlock(fin, fout): main path SPADE -> LeakyReLU(0.2) -> conv3x3(fin -> fmid) -> SPADE ->
LeakyReLU(0.2) -> conv3x3(fmid -> fout), fmid = min(fin, fout); shortcut identity if fin == fout, else
SPADE -> conv1x1(fin -> fout, no bias). The block convs carry spectral norm (SPADE's
``spectralspadesyncbatch3x3``), through ``torch.nn.utils.parametrizations.spectral_norm``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

__all__ = ["SPADE", "SPADEResBlock"]


class SPADE(nn.Module):
    """Spatially-adaptive denormalization. x: (B, C, H, W); seg: (B, label_nc, Hs, Ws) -> (B, C, H, W)."""

    def __init__(self, channels: int, label_nc: int, hidden: int = 128) -> None:
        super().__init__()
        self.param_free_norm = nn.BatchNorm2d(channels, affine=False)
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_nc, hidden, 3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, channels, 3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        normalized = self.param_free_norm(x)
        seg = F.interpolate(seg, size=x.shape[-2:], mode="nearest")
        actv = self.mlp_shared(seg)
        return normalized * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)


class SPADEResBlock(nn.Module):
    """Residual block with SPADE normalizations; (B, fin, H, W), seg -> (B, fout, H, W)."""

    def __init__(self, fin: int, fout: int, label_nc: int, use_spectral_norm: bool = True, hidden: int = 128) -> None:
        super().__init__()
        self.learned_shortcut = fin != fout
        fmid = min(fin, fout)
        sn = spectral_norm if use_spectral_norm else (lambda m: m)
        self.conv_0 = sn(nn.Conv2d(fin, fmid, 3, padding=1))
        self.conv_1 = sn(nn.Conv2d(fmid, fout, 3, padding=1))
        self.norm_0 = SPADE(fin, label_nc, hidden)
        self.norm_1 = SPADE(fmid, label_nc, hidden)
        if self.learned_shortcut:
            self.conv_s = sn(nn.Conv2d(fin, fout, 1, bias=False))
            self.norm_s = SPADE(fin, label_nc, hidden)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        x_s = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, seg), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, seg), 0.2))
        return x_s + dx
