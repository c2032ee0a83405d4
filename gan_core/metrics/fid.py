"""FID with the pytorch-fid protocol (docs/protocols.md §5), and cached real-set statistics.

Network: Inception-v3 with the TensorFlow FID weights ported to PyTorch
(``pt_inception-2015-12-05-6726825d.pth``, logical name ``fid_inception``, resolved by
``gan_core.weights``), built as pytorch-fid builds it: torchvision's Inception-v3 (1008 classes, no aux)
with the FID-patched blocks (pyiqa's ``FIDInceptionA/C/E_1/E_2``). Features: pool3, 2048-d. Input RGB in
[0, 1], bilinear resize to 299x299 (align_corners False), scaled to [-1, 1]. FID = ||mu1 - mu2||^2 +
Tr(S1 + S2 - 2 (S1 S2)^(1/2)), in float64 (trace of the square root through symmetric eigenvalues: see
``frechet_distance``).

Statistics files (``.npz``: ``mu``, ``sigma``, ``n``, ``protocol`` as JSON) carry the protocol they were
computed with; loading one for a different protocol is refused, so numbers from different pipelines are
never mixed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import safe_torch_load
from ..extras import import_extra
from ..weights import resolve_weights

__all__ = ["PROTOCOL", "FIDInception", "FIDStats", "fid_from_stats", "frechet_distance", "load_stats", "save_stats"]

PROTOCOL = {
    "metric": "fid",
    "network": "pt_inception-2015-12-05 (TF FID Inception, pytorch-fid)",
    "features": "pool3 2048",
    "resize": "bilinear 299x299, align_corners=False",
    "input": "RGB [0,1] -> [-1,1]",
    "version": 1,
}


class FIDInception(nn.Module):
    """(B, 3, H, W) RGB in [0, 1] -> (B, 2048) pool3 features (float32)."""

    def __init__(self, weights: str | Path = "fid_inception") -> None:
        super().__init__()
        import torchvision

        inception = import_extra("pyiqa.archs.inception", "FID")  # pytorch-fid's blocks, as pyiqa ships them
        FIDInceptionA, FIDInceptionC = inception.FIDInceptionA, inception.FIDInceptionC
        FIDInceptionE_1, FIDInceptionE_2 = inception.FIDInceptionE_1, inception.FIDInceptionE_2
        net = torchvision.models.inception_v3(weights=None, num_classes=1008, aux_logits=False, init_weights=False)
        net.Mixed_5b = FIDInceptionA(192, pool_features=32)
        net.Mixed_5c = FIDInceptionA(256, pool_features=64)
        net.Mixed_5d = FIDInceptionA(288, pool_features=64)
        net.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        net.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        net.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        net.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        net.Mixed_7b = FIDInceptionE_1(1280)
        net.Mixed_7c = FIDInceptionE_2(2048)
        path = resolve_weights(weights)
        state = safe_torch_load(path)  # one-line refusal of unsafe or unreadable files
        net.load_state_dict(state)
        self.blocks = nn.Sequential(
            net.Conv2d_1a_3x3, net.Conv2d_2a_3x3, net.Conv2d_2b_3x3, nn.MaxPool2d(3, 2),
            net.Conv2d_3b_1x1, net.Conv2d_4a_3x3, nn.MaxPool2d(3, 2),
            net.Mixed_5b, net.Mixed_5c, net.Mixed_5d, net.Mixed_6a, net.Mixed_6b, net.Mixed_6c, net.Mixed_6d,
            net.Mixed_6e, net.Mixed_7a, net.Mixed_7b, net.Mixed_7c, nn.AdaptiveAvgPool2d(1),
        )  # fmt: skip
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> FIDInception:
        return super().train(False)  # always in eval mode

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x.float(), size=(299, 299), mode="bilinear", align_corners=False)
        return self.blocks(2 * x - 1).flatten(1)


class FIDStats:
    """Mean and covariance of Inception features (float64), the feature protocol, and a free-text
    description of the image set (``source``, informative only: not compared)."""

    def __init__(
        self, mu: np.ndarray, sigma: np.ndarray, n: int, protocol: dict | None = None, source: str = ""
    ) -> None:
        self.mu, self.sigma, self.n = mu, sigma, int(n)
        self.protocol = dict(protocol or PROTOCOL)
        self.source = source

    @classmethod
    def from_features(cls, feats: np.ndarray, protocol: dict | None = None, source: str = "") -> FIDStats:
        feats = np.asarray(feats, dtype=np.float64)
        if feats.shape[0] < 2:
            raise ValueError(f"FID needs at least 2 images, got {feats.shape[0]}")
        return cls(feats.mean(axis=0), np.cov(feats, rowvar=False), feats.shape[0], protocol, source)

    @classmethod
    def from_images(
        cls,
        images: Iterable[torch.Tensor],
        net: FIDInception,
        batch_size: int = 16,
        device: str | torch.device = "cpu",
        protocol: dict | None = None,
        source: str = "",
    ) -> FIDStats:
        """Statistics of an iterable of (3, H, W) [0, 1] tensors (all of one size per batch)."""
        net = net.to(device)
        feats, batch = [], []
        for img in images:
            batch.append(img)
            if len(batch) == batch_size:
                feats.append(net(torch.stack(batch).to(device)).cpu().double().numpy())
                batch = []
        if batch:
            feats.append(net(torch.stack(batch).to(device)).cpu().double().numpy())
        if not feats:
            raise ValueError("FID needs images; got none")
        return cls.from_features(np.concatenate(feats), protocol, source)


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Frechet distance ||mu1 - mu2||^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^(1/2)) between two Gaussians.

    Tr((S1 S2)^(1/2)) is the sum of the square roots of the eigenvalues of S1 S2, which are those of the
    symmetric PSD matrix S1^(1/2) S2 S1^(1/2): two symmetric eigendecompositions in float64 (a few
    seconds at 2048-d) instead of a general matrix square root, which gets very slow and needs an ad-hoc
    diagonal offset when few images make the covariances singular. Same value as pytorch-fid's ``sqrtm``
    on well-conditioned statistics (tested against pyiqa).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape:
        raise ValueError(f"statistics of different dimensions: {mu1.shape} vs {mu2.shape}")
    w, v = np.linalg.eigh((s1 + s1.T) / 2)
    half = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = half @ s2 @ half
    lam = np.linalg.eigvalsh((m + m.T) / 2)
    tr_covmean = float(np.sqrt(np.clip(lam, 0, None)).sum())
    diff = mu1 - mu2
    return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


def fid_from_stats(a: FIDStats, b: FIDStats) -> float:
    if a.protocol != b.protocol:
        raise ValueError(f"FID statistics from different protocols:\n  {a.protocol}\n  {b.protocol}")
    return frechet_distance(a.mu, a.sigma, b.mu, b.sigma)


def save_stats(path: str | Path, stats: FIDStats, overwrite: bool = False) -> Path:
    """Write ``.npz`` statistics with their protocol (atomically; an existing file only with ``overwrite``)."""
    from ..atomic import atomic_write

    path = Path(path)
    with atomic_write(path, overwrite=overwrite) as f:
        np.savez(f, mu=stats.mu, sigma=stats.sigma, n=np.array(stats.n), protocol=json.dumps(stats.protocol),
                 source=stats.source)  # fmt: skip
    return path


def load_stats(path: str | Path, expect: dict | None = None) -> FIDStats:
    """Read statistics; refuse a file whose protocol differs from ``expect`` (default: this module's)."""
    path = Path(path)
    with np.load(path, allow_pickle=False) as z:
        if "protocol" not in z:
            raise ValueError(f"{path}: FID statistics without a protocol record; recompute them with translate-eval")
        protocol = json.loads(str(z["protocol"]))
        stats = FIDStats(z["mu"], z["sigma"], int(z["n"]), protocol, str(z["source"]) if "source" in z else "")
    expect = expect or PROTOCOL
    if protocol != expect:
        raise ValueError(
            f"{path}: computed with another FID protocol ({protocol}); this run uses {expect}. Recompute them."
        )
    return stats
