"""SPADE's multi-scale PatchGAN critic and its SAN version (docs/algorithms.md §4.3).

Each scale: conv4x4/s2 (39 -> 64, bias) -> LReLU(0.2); conv4x4/s2 (64 -> 128) -> IN -> LReLU;
conv4x4/s2 (128 -> 256) -> IN -> LReLU; conv4x4/s1 (256 -> 512) -> IN -> LReLU; conv4x4/s1 (512 -> 1, bias).
Padding 2, InstanceNorm without affine parameters, convs 1-3 without bias. Scale 2 sees the input
average-pooled (3x3, stride 2, pad 1, padding excluded). The input is concat(semantic map, image).
Forward returns, per scale, the 5 layer outputs (4 feature maps for feature matching + patch logits).
2,800,705 parameters per scale.

Critic normalizations through ``gan_core.norm.apply_critic_norm``:
``san`` (SAN-SPADE: circular padding and SAN on all five convs of both scales, default r = 0.25, g = 1.3,
EMA 0.9; InstanceNorm kept; ``san_layers="sn_layers_only"`` restricts SAN to convs 1-3),
``sn`` (SPADE's own: SN on convs 1-3), ``bssn`` (BSSN on convs 1-3), ``none``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gan_core.norm import apply_critic_norm

__all__ = ["MultiscaleDiscriminator", "NLayerDiscriminator"]


class NLayerDiscriminator(nn.Module):
    def __init__(self, input_nc: int = 39, ndf: int = 64, n_layers: int = 4) -> None:
        super().__init__()
        nf = ndf
        layers: list[nn.Module] = [nn.Sequential(nn.Conv2d(input_nc, nf, 4, 2, 2), nn.LeakyReLU(0.2))]
        for n in range(1, n_layers):
            prev, nf = nf, min(nf * 2, 512)
            stride = 1 if n == n_layers - 1 else 2
            conv = nn.Conv2d(prev, nf, 4, stride, 2, bias=False)
            layers.append(nn.Sequential(conv, nn.InstanceNorm2d(nf, affine=False), nn.LeakyReLU(0.2)))
        layers.append(nn.Sequential(nn.Conv2d(nf, 1, 4, 1, 2)))
        self.model = nn.ModuleList(layers)

    def convs(self) -> list[nn.Conv2d]:
        return [seq[0] for seq in self.model]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for layer in self.model:
            x = layer(x)
            outs.append(x)
        return outs


class MultiscaleDiscriminator(nn.Module):
    """``num_D`` scales of :class:`NLayerDiscriminator`; forward -> list (per scale) of 5 outputs.

    Args:
        input_nc: semantic channels + 3 (39).
        critic_norm: ``"san" | "sn" | "bssn" | "none"``.
        padding: ``"circular"`` (SAN-SPADE, required for SAN) or ``"zeros"`` (SPADE).
        san_layers: ``"all"`` or ``"sn_layers_only"`` (convs 1-3).
        norm_seed: seed of the normalization's random draws (power-iteration vectors, SAN subsets), the
            ``seed`` option of ``apply_critic_norm``; the same on every DDP rank. Unused by ``"none"``.
        **norm_options: for ``apply_critic_norm`` (ratio, gain, momentum, update_every, scale...).
    """

    def __init__(
        self,
        input_nc: int = 39,
        ndf: int = 64,
        n_layers: int = 4,
        num_D: int = 2,
        critic_norm: str = "san",
        padding: str = "circular",
        san_layers: str = "all",
        norm_seed: int = 0,
        **norm_options,
    ) -> None:
        super().__init__()
        if san_layers not in ("all", "sn_layers_only"):
            raise ValueError(f"san_layers must be 'all' or 'sn_layers_only', got {san_layers!r}")
        self.scales = nn.ModuleList([NLayerDiscriminator(input_nc, ndf, n_layers) for _ in range(num_D)])
        # SAN-SPADE normalizes every conv; SPADE's SN (and BSSN) sit on the IN-followed convs only
        every = critic_norm == "san" and san_layers == "all"
        normed = {id(c) for D in self.scales for c in (D.convs() if every else D.convs()[1:-1])}
        seeded = {} if critic_norm == "none" else {"seed": norm_seed}  # "none" has no random state
        apply_critic_norm(
            self, critic_norm, include=lambda _, m: id(m) in normed, padding=padding, **seeded, **norm_options
        )

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        outs = []
        for k, D in enumerate(self.scales):
            if k > 0:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            outs.append(D(x))
        return outs
