"""SAN-SRGAN networks: the SRGAN-style generator (docs/algorithms.md §3.1) and the 10-conv + 2-FC critic (§3.2).

Generator: LR image (B, 3, h, w) in [0, 1] -> SR image (B, 3, 4h, 4w), nominally in [0, 1] (not clamped
during training). 1,521,667 parameters in the default configuration.
Critic: HR-sized image (B, 3, H, W) in [0, 1], H, W >= crop -> (B, 1) logits. 14,204,609 parameters
with BatchNorm. Its normalization (none / sn / bssn / san) and padding are attached by
``gan_core.norm.apply_critic_norm``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gan_core.norm import apply_critic_norm

__all__ = ["SRCritic", "SRGenerator", "check_finite", "count_parameters", "generator_weights", "luma", "strip_prefixes"]


class _ResBlock(nn.Module):
    """conv3x3 -> ReLU -> conv3x3, plus identity; no BN, no bias, no activation after the sum."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class SRGenerator(nn.Module):
    """Official ``g_srgan`` (SRResNet-like, no BN, no long skip), x4 by two PixelShuffle(2) stages.

    Output = network(x) + bilinear x``scale`` upsampling of x (align_corners=False).

    Args:
        channels: feature width (64).
        num_blocks: residual blocks (16).
        scale: 2 or 4 (one PixelShuffle(2) stage per factor 2).
        init_scale: multiplies the Kaiming-normal (fan_in) initial conv weights, as the official
            ``initialize_model(model, scale)`` does (1.0 there). Without any down-scaling the 16 residual
            blocks double the signal variance each, and the untrained output is ~100x the image range.
        residual_init_scale: extra factor on the residual-branch convs and the output conv (ESRGAN-style
            0.1 makes the untrained network start as the bilinear upsampling plus a small correction).
    """

    def __init__(
        self,
        channels: int = 64,
        num_blocks: int = 16,
        scale: int = 4,
        init_scale: float = 1.0,
        residual_init_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if scale not in (2, 4):
            raise ValueError(f"scale must be 2 or 4, got {scale}")
        self.scale = scale
        self.image_to_features = nn.Conv2d(3, channels, 5, 1, 2)
        self.features = nn.Sequential(*[_ResBlock(channels) for _ in range(num_blocks)])
        ups = []
        for _ in range(int(math.log2(scale))):
            ups += [nn.Conv2d(channels, channels * 4, 3, 1, 1), nn.PixelShuffle(2), nn.LeakyReLU(0.1, inplace=True)]
        self.upsampler = nn.Sequential(*ups)
        self.hrconv = nn.Conv2d(channels, channels, 3, 1, 1)
        self.features_to_image = nn.Conv2d(channels, 3, 5, 1, 2)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
                with torch.no_grad():
                    m.weight.mul_(init_scale)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        with torch.no_grad():
            for m in [*self.features.modules(), self.features_to_image]:
                if isinstance(m, nn.Conv2d):
                    m.weight.mul_(residual_init_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # in-place activations on fresh conv / shuffle outputs: same values and gradients, one HR-sized
        # buffer less at inference (the HR stage dominates the memory of a tile)
        f = F.leaky_relu(self.image_to_features(x), 0.1, inplace=True)
        f = self.upsampler(self.features(f))
        f = F.leaky_relu(self.hrconv(f), 0.1, inplace=True)
        base = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return self.features_to_image(f) + base


class SRCritic(nn.Module):
    """Official ``d_sanvanilla``: random crop, 5 blocks of (conv3x3/s1 -> BN -> LReLU, conv4x4/s2 -> BN ->
    LReLU) with widths min(512, 64 * 2^i), then Linear(512*4*4, 64) -> LReLU -> Linear(64, 1).

    Args:
        critic_norm: ``"san" | "sn" | "bssn" | "none"`` (through ``gan_core.norm.apply_critic_norm``).
        padding: ``"circular"`` or ``"zeros"`` (SAN requires circular).
        batch_norm: BatchNorm after every conv (official: True). Without it every conv has a bias.
        num_blocks: 5 -> crop 4 * 2^5 = 128.
        width: channels of the first block (64); block i has min(8 * width, width * 2^i).
        crop_seed: seed of the random-crop generator (its state is part of the critic's RNG state; the
            training loop gives each DDP rank its own).
        norm_seed: seed of the normalization's random draws (power-iteration vectors, SAN subsets), the
            ``seed`` option of ``apply_critic_norm``; the same on every DDP rank. Unused by ``"none"``.
        **norm_options: passed to ``apply_critic_norm`` (e.g. ``ratio``, ``gain``, ``scale``).

    Crop: one offset per call shared by the batch, drawn uniformly over all valid positions in training
    mode (inclusive range, docs/algorithms.md §5.15); the centre crop in eval mode.
    """

    def __init__(
        self,
        critic_norm: str = "san",
        padding: str = "circular",
        batch_norm: bool = True,
        num_blocks: int = 5,
        width: int = 64,
        crop_seed: int = 0,
        norm_seed: int = 0,
        **norm_options,
    ) -> None:
        super().__init__()
        self.crop = 4 * 2**num_blocks
        layers: list[nn.Module] = []
        cin = 3
        for i in range(num_blocks):
            c = min(8 * width, width * 2**i)
            bias = i == 0 or not batch_norm
            for conv in (nn.Conv2d(cin, c, 3, 1, 1, bias=bias), nn.Conv2d(c, c, 4, 2, 1, bias=bias)):
                layers.append(conv)
                if batch_norm:
                    layers.append(nn.BatchNorm2d(c))
                layers.append(nn.LeakyReLU(0.1))
            cin = c
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(cin * 4 * 4, 64), nn.LeakyReLU(0.1), nn.Linear(64, 1))
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self.crop_generator = torch.Generator().manual_seed(int(crop_seed))
        seeded = {} if critic_norm == "none" else {"seed": norm_seed}  # "none" has no random state
        apply_critic_norm(self, critic_norm, padding=padding, **seeded, **norm_options)

    def random_crop(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        if H < self.crop or W < self.crop:
            raise ValueError(f"critic input {H}x{W} is smaller than its {self.crop}x{self.crop} crop")
        if self.training:
            top = int(torch.randint(0, H - self.crop + 1, (1,), generator=self.crop_generator))
            left = int(torch.randint(0, W - self.crop + 1, (1,), generator=self.crop_generator))
        else:
            top, left = (H - self.crop) // 2, (W - self.crop) // 2
        return x[..., top : top + self.crop, left : left + self.crop]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(self.random_crop(x))
        return self.head(f.flatten(1))


def strip_prefixes(state: dict) -> dict:
    """A generator state dict without wrapper prefixes (``module.`` of DDP / AveragedModel, ``netG.``) and
    without AveragedModel's ``n_averaged`` counter."""
    state = {k: v for k, v in state.items() if k != "n_averaged"}
    for prefix in ("module.", "netG."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def generator_weights(checkpoint: dict) -> tuple[dict, str]:
    """(SRGenerator state dict, its key) of an ``sr-train`` checkpoint: the EMA generator when present."""
    key = "G_ema" if "G_ema" in checkpoint else "G"
    return strip_prefixes(checkpoint[key]), key


def check_finite(state: dict, where: str) -> None:
    """ValueError naming the first tensor of ``state`` that holds NaN or Inf (the weights are unusable)."""
    bad = [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point() and not v.isfinite().all()]
    if bad:
        more = f" (and {len(bad) - 1} more tensors)" if len(bad) > 1 else ""
        raise ValueError(
            f"{where} has non-finite weights (NaN/Inf) in {bad[0]}{more}: the training diverged or the file is "
            "damaged; refused"
        )


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (weights and biases; buffers not counted)."""
    return sum(p.numel() for p in model.parameters())


def luma(rgb: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB -> (N, 1, H, W) luma with the BT.601 weights (0.299, 0.587, 0.114): how a network that
    works in colour gives the output of a gray image (its three outputs are nearly equal)."""
    return 0.299 * rgb[:, 0:1] + 0.587 * rgb[:, 1:2] + 0.114 * rgb[:, 2:3]
