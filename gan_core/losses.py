"""GAN losses shared by both apps: hinge and WGAN-GP for critic and generator, pixel losses, VGG-19 features.

Named after the player they train (``d_hinge_loss``, ``g_hinge_loss``, ``d_wgan_loss``). All reductions are
computed in float32 even when the inputs come from a bf16 autocast region.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import safe_torch_load
from .weights import resolve_weights

__all__ = [
    "VGG19_LAYERS",
    "VGG19Features",
    "all_finite",
    "d_hinge_loss",
    "d_wgan_loss",
    "feature_matching_loss",
    "g_hinge_loss",
    "gradient_penalty",
    "pixel_loss",
]

# index i = output of torchvision ``vgg19().features[i]``
VGG19_LAYERS = {"relu1_1": 1, "relu2_1": 6, "relu3_1": 11, "relu4_1": 20, "relu5_1": 29, "conv5_4": 34}
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def d_hinge_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Critic hinge loss ``mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))`` (docs/algorithms.md §3.3)."""
    return F.relu(1 - real_logits.float()).mean() + F.relu(1 + fake_logits.float()).mean()


def g_hinge_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator hinge loss ``-mean(D(fake))``."""
    return -fake_logits.float().mean()


def d_wgan_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """WGAN critic loss ``mean(D(fake)) - mean(D(real))`` (minus the critic's Wasserstein estimate); the
    generator's term is ``g_hinge_loss`` (``-mean(D(fake))``), the same for both objectives."""
    return fake_logits.float().mean() - real_logits.float().mean()


def gradient_penalty(
    critic: Callable[[torch.Tensor], torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """WGAN-GP two-sided penalty ``mean((||grad_x D(x)||_2 - 1)^2)`` at ``x = a * real + (1 - a) * fake``,
    one ``a ~ U[0, 1)`` per sample (Gulrajani et al. 2017, Algorithm 1).

    Args:
        critic: (B, C, H, W) -> (B, 1) logits; called once, on the interpolates.
        real, fake: (B, C, H, W) images of the same shape; ``fake`` is detached here.
        generator: source of ``a`` (on ``real``'s device); default the global RNG of that device.

    Returns:
        0-dim float32 tensor whose graph reaches the critic's parameters (``create_graph``): add it to the
        critic's loss before ``backward``.
    """
    if real.shape != fake.shape:
        raise ValueError(f"real {tuple(real.shape)} and fake {tuple(fake.shape)} must have the same shape")
    a = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device, generator=generator)
    mix = (a * real.detach() + (1 - a) * fake.detach()).to(real.dtype).requires_grad_(True)
    out = critic(mix)
    (grad,) = torch.autograd.grad(out.float().sum(), mix, create_graph=True)
    return (grad.float().flatten(1).norm(dim=1) - 1).square().mean()


def pixel_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """Mean absolute (``"l1"``) or squared (``"mse"``) error, in float32."""
    if kind == "l1":
        return F.l1_loss(pred.float(), target.float())
    if kind == "mse":
        return F.mse_loss(pred.float(), target.float())
    raise ValueError(f"pixel loss must be 'l1' or 'mse', got {kind!r}")


def feature_matching_loss(fake_feats: Sequence[torch.Tensor], real_feats: Sequence[torch.Tensor]) -> torch.Tensor:
    """Sum over layers of L1(fake feature, detached real feature) (pix2pixHD / SPADE)."""
    total = torch.zeros((), device=fake_feats[0].device)
    for f, r in zip(fake_feats, real_feats, strict=True):
        total = total + F.l1_loss(f.float(), r.detach().float())
    return total


class VGG19Features(nn.Module):
    """Frozen torchvision VGG-19 feature extractor returning activations at named layers.

    Args:
        layers: names from ``VGG19_LAYERS`` (``"conv5_4"`` is the pre-activation output of the last conv
            of block 5, the SR perceptual layer; ``"relu*_1"`` are SPADE's).
        weights: path or manifest name of torchvision's ImageNet weights (``vgg19-dcbb9e9d.pth``), resolved
            by ``gan_core.weights`` (never random weights: missing files raise a clear error).
        imagenet_normalize: map [0, 1] inputs with the ImageNet mean / std first (SR). SPADE feeds its
            [-1, 1] images unnormalized (its code's quirk, docs/algorithms.md §4.4): pass False.

    Input: (B, 3, H, W) RGB. Output: list of feature maps in ``layers`` order.
    """

    def __init__(
        self, layers: Sequence[str] = ("conv5_4",), weights: str | Path = "vgg19", imagenet_normalize: bool = True
    ) -> None:
        super().__init__()
        from torchvision.models import vgg19

        unknown = [n for n in layers if n not in VGG19_LAYERS]
        if unknown or not layers:
            raise ValueError(f"unknown VGG-19 layer(s) {unknown}; choose from {', '.join(VGG19_LAYERS)}")
        self.layer_names = tuple(layers)
        self.indices = [VGG19_LAYERS[n] for n in layers]
        last = max(self.indices)
        path = resolve_weights(weights)
        state = safe_torch_load(path)  # one-line refusal of unsafe or unreadable files
        feats = {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
        net = vgg19(weights=None).features[: last + 1]
        expected = set(net.state_dict())
        missing = expected - set(feats)
        if missing:
            raise ValueError(f"{path} is not a torchvision VGG-19 state dict (missing {sorted(missing)[:3]}...)")
        net.load_state_dict({k: feats[k] for k in expected})
        self.net = net.eval().requires_grad_(False)
        self.imagenet_normalize = imagenet_normalize
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> VGG19Features:
        super().train(mode)
        self.net.eval()  # always frozen and in eval mode
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.imagenet_normalize:
            x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        out, wanted = [], set(self.indices)
        for i, layer in enumerate(self.net):
            x = layer(x)
            if i in wanted:
                out.append(x)
        order = sorted(self.indices)
        return [out[order.index(i)] for i in self.indices]

    def loss(self, pred: torch.Tensor, target: torch.Tensor, weights: Sequence[float] | None = None) -> torch.Tensor:
        """Weighted sum over layers of L1(features(pred), features(target).detach()), in float32."""
        fp = self(pred)
        with torch.no_grad():
            ft = self(target)
        weights = weights or [1.0] * len(fp)
        total = torch.zeros((), device=pred.device)
        for w, a, b in zip(weights, fp, ft, strict=True):
            total = total + w * F.l1_loss(a.float(), b.float())
        return total


def all_finite(losses: dict[str, torch.Tensor]) -> bool:
    """True when every (0-dim) loss is finite; one device sync for the whole dict."""
    return bool(torch.isfinite(torch.stack([v.detach().float() for v in losses.values()])).all())
