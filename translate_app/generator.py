"""SPADE generator without the VAE (docs/algorithms.md §4.2): 93,048,003 parameters at ngf 64, 'more' upsampling.

Semantic map (B, 36, H, W) (one-hot labels + instance edges) -> image (B, 3, H, W) in [-1, 1] (tanh).
The map, resized (nearest) to the latent grid H/2^k x W/2^k (k = 5, 6 or 7 upsamplings for 'normal',
'more', 'most'), goes through conv3x3 -> 16 ngf channels, then SPADE residual blocks with nearest x2
upsampling between them, then LeakyReLU(0.2) -> conv3x3 -> 3 channels -> tanh.
Init (SPADE code): Xavier normal with gain 0.02 on conv weights, zero biases.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import SPADEResBlock

__all__ = ["UPSAMPLING", "SPADEGenerator"]

UPSAMPLING = {"normal": 5, "more": 6, "most": 7}


class SPADEGenerator(nn.Module):
    """Args:
    label_nc: semantic channels (36 for Cityscapes with instance edges).
    ngf: base width (64).
    upsampling: 'normal' | 'more' (Cityscapes default) | 'most'.
    size: (H, W) output size; must be divisible by 2^upsamplings.
    spade_hidden: width of each SPADE's shared conv (128 in SPADE; smaller only for tiny test models).
    """

    def __init__(
        self,
        label_nc: int = 36,
        ngf: int = 64,
        upsampling: str = "more",
        size: tuple[int, int] = (256, 512),
        spade_hidden: int = 128,
    ) -> None:
        super().__init__()
        if upsampling not in UPSAMPLING:
            raise ValueError(f"upsampling must be one of {', '.join(UPSAMPLING)}, got {upsampling!r}")
        n_up = UPSAMPLING[upsampling]
        H, W = size
        if H % 2**n_up or W % 2**n_up:
            raise ValueError(f"size {H}x{W} must be divisible by 2^{n_up} for upsampling {upsampling!r}")
        self.upsampling, self.size = upsampling, (H, W)
        self.latent = (H // 2**n_up, W // 2**n_up)
        nf = ngf
        self.fc = nn.Conv2d(label_nc, 16 * nf, 3, padding=1)
        self.head_0 = SPADEResBlock(16 * nf, 16 * nf, label_nc, hidden=spade_hidden)
        self.G_middle_0 = SPADEResBlock(16 * nf, 16 * nf, label_nc, hidden=spade_hidden)
        self.G_middle_1 = SPADEResBlock(16 * nf, 16 * nf, label_nc, hidden=spade_hidden)
        self.up_0 = SPADEResBlock(16 * nf, 8 * nf, label_nc, hidden=spade_hidden)
        self.up_1 = SPADEResBlock(8 * nf, 4 * nf, label_nc, hidden=spade_hidden)
        self.up_2 = SPADEResBlock(4 * nf, 2 * nf, label_nc, hidden=spade_hidden)
        self.up_3 = SPADEResBlock(2 * nf, nf, label_nc, hidden=spade_hidden)
        out_nc = nf
        if upsampling == "most":
            self.up_4 = SPADEResBlock(nf, nf // 2, label_nc, hidden=spade_hidden)
            out_nc = nf // 2
        self.conv_img = nn.Conv2d(out_nc, 3, 3, padding=1)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                w = m.parametrizations.weight.original if hasattr(m, "parametrizations") else m.weight
                nn.init.xavier_normal_(w, gain=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @staticmethod
    def up(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="nearest")

    def forward(self, seg: torch.Tensor) -> torch.Tensor:
        x = self.fc(F.interpolate(seg, size=self.latent, mode="nearest"))
        x = self.head_0(x, seg)
        x = self.G_middle_0(self.up(x), seg)
        if self.upsampling in ("more", "most"):
            x = self.up(x)
        x = self.G_middle_1(x, seg)
        x = self.up_0(self.up(x), seg)
        x = self.up_1(self.up(x), seg)
        x = self.up_2(self.up(x), seg)
        x = self.up_3(self.up(x), seg)
        if self.upsampling == "most":
            x = self.up_4(self.up(x), seg)
        return torch.tanh(self.conv_img(F.leaky_relu(x, 0.2)))
