"""LPIPS (Zhang et al. 2018) through the ``lpips`` package: AlexNet trunk, linear layers v0.1.

The linear calibration layers ship inside the lpips package; the AlexNet trunk (torchvision's ImageNet
``alexnet-owt-7be5be79.pth``) is resolved by ``gan_core.weights`` (logical name ``alexnet``) instead of
letting torchvision download it: offline and missing, the error says which file and where. Inputs are RGB
in [0, 1] (mapped to [-1, 1] inside); the spatial average is returned; lower is better.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from ..checkpoint import safe_torch_load
from ..extras import has_module, import_extra
from ..weights import WeightsError, resolve_weights
from .psnr_ssim import _batch

__all__ = ["LPIPS", "lpips_available", "lpips_unavailable_reason"]


def lpips_unavailable_reason() -> str | None:
    """Why LPIPS cannot run here (one phrase: the package or the AlexNet trunk is missing), or None."""
    if not has_module("lpips"):
        return "pip install 'san-gan[metrics]'"
    try:
        resolve_weights("alexnet", download=False)
    except WeightsError:
        return (
            "its AlexNet trunk (alexnet-owt-7be5be79.pth) is not in weights/ or the torch hub cache "
            "(get it with: san-weights fetch alexnet)"
        )
    return None


def lpips_available() -> bool:
    """True when the lpips package and the AlexNet trunk are present locally (no download attempted)."""
    return lpips_unavailable_reason() is None


class LPIPS:
    """Callable LPIPS distance; the network is built once."""

    def __init__(self, trunk: str | Path = "alexnet", device: str | torch.device = "cpu") -> None:
        lpips = import_extra("lpips", "LPIPS")
        path = resolve_weights(trunk)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchvision's deprecated `pretrained=` inside lpips
            net = lpips.LPIPS(net="alex", version="0.1", pnet_rand=True, verbose=False)
        state = safe_torch_load(path)  # one-line refusal of unsafe or unreadable files
        feats = {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
        loaded = 0
        for name, module in net.net.named_modules():  # slices hold torchvision's features[i] as "sliceK.i"
            idx = name.rsplit(".", 1)[-1]
            if isinstance(module, torch.nn.Conv2d):
                module.weight.data.copy_(feats[f"{idx}.weight"])
                module.bias.data.copy_(feats[f"{idx}.bias"])
                loaded += 1
        if loaded != 5:
            raise ValueError(f"{path}: expected the 5 AlexNet convs, loaded {loaded}")
        self.net = net.eval().to(device)
        self.device = torch.device(device)

    @torch.no_grad()
    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB in [0, 1] (gray is repeated to RGB) -> (B,) float64 LPIPS distances."""
        a, b = _batch(a).float(), _batch(b).float()
        if a.shape != b.shape:
            raise ValueError(f"image sizes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
        if a.shape[1] == 1:
            a, b = a.repeat(1, 3, 1, 1), b.repeat(1, 3, 1, 1)
        d = self.net(a.to(self.device), b.to(self.device), normalize=True)
        return d.reshape(-1).double().cpu()
