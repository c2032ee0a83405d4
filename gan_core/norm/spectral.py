"""Spectral normalization SN_w (Miyato et al., ICLR 2018) with an explicit, once-per-step refresh.

The weight is viewed as the matrix ``W.flatten(1)`` of shape (out, in * kh * kw) and divided by its
top singular value estimated by power iteration: ``u <- normalize(W v)``, ``v <- normalize(W^T u)``,
``sigma = u^T W v`` (the same order, eps and 15 initial iterations as
``torch.nn.utils.parametrizations.spectral_norm``; ours run on first use). The gradient flows through
``sigma`` into W; u and v are constants for autograd. Unlike PyTorch's parametrization, the power
iteration does not run on every training forward but once per ``refresh_norm_constants`` call (one
per critic step, as in Miyato's and the BSSN authors' TF code), so a critic called several times per
step is normalized consistently.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .options import check_eps, check_scale

__all__ = ["SpectralNorm", "power_iteration", "spectral_sigma", "standard_normal"]

INIT_ITERATIONS = 15


def standard_normal(n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """(n,) standard normal vector (the start of a power iteration): drawn on the CPU from ``generator``
    when given (so every device and DDP rank draws the same numbers), else from ``device``'s global RNG."""
    if generator is None:
        return torch.empty(n, device=device).normal_(0, 1)
    return torch.randn(n, generator=generator).to(device)


@torch.no_grad()
def power_iteration(mat: torch.Tensor, u: torch.Tensor, v: torch.Tensor, n_iter: int = 1, eps: float = 1e-12):
    """Update ``u`` (rows) and ``v`` (cols) in place by ``n_iter`` power-iteration steps on ``mat``.

    Args:
        mat: (h, w) matrix; computed in float32 without autocast.
        u: (h,) unit vector, updated in place.
        v: (w,) unit vector, updated in place.
    """
    with torch.autocast(mat.device.type, enabled=False):
        m = mat.detach().float()
        for _ in range(n_iter):
            u.copy_(F.normalize(torch.mv(m, v), dim=0, eps=eps))
            v.copy_(F.normalize(torch.mv(m.t(), u), dim=0, eps=eps))


def spectral_sigma(mat: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``u^T mat v``: the top singular value estimate, differentiable in ``mat`` (u, v constant).

    >>> m = torch.diag(torch.tensor([3.0, -5.0, 1.0]))
    >>> u, v = torch.tensor([0.0, 1.0, 0.0]), torch.tensor([0.0, -1.0, 0.0])
    >>> float(spectral_sigma(m, u, v))
    5.0
    """
    with torch.autocast(mat.device.type, enabled=False):
        return torch.dot(u, torch.mv(mat.float(), v))


class SpectralNorm(nn.Module):
    """Parametrization ``W -> W * scale / sigma(W)``; ``scale`` is 1 for SN (BSSN uses it for Linears)."""

    def __init__(
        self, weight: torch.Tensor, *, scale: float = 1.0, eps: float = 1e-12, generator: torch.Generator | None = None
    ) -> None:
        super().__init__()
        if weight.dim() < 2:
            raise ValueError(f"spectral norm needs a weight with >= 2 dims, got shape {tuple(weight.shape)}")
        self.eps = check_eps(eps)
        self.scale = check_scale(scale)
        mat = weight.detach().flatten(1)
        h, w = mat.shape
        self.register_buffer("u", F.normalize(standard_normal(h, generator, mat.device), dim=0, eps=eps))
        self.register_buffer("v", F.normalize(standard_normal(w, generator, mat.device), dim=0, eps=eps))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self._initialized = False

    def _ensure_init(self, weight: torch.Tensor) -> None:
        # The 15 initial iterations run on first use, not at creation: under DDP that is after the
        # weights were synchronised, so every rank starts from the same vectors and weights.
        if not self._initialized:
            power_iteration(weight.flatten(1), self.u, self.v, INIT_ITERATIONS, self.eps)
            self._initialized = True
            self.initialized.fill_(True)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._initialized = bool(self.initialized)

    def extra_repr(self) -> str:
        return f"scale={self.scale}" if self.scale != 1.0 else ""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        self._ensure_init(weight)
        sigma = spectral_sigma(weight.flatten(1), self.u.clone(), self.v.clone())
        if self.scale != 1.0:
            return weight * (self.scale / sigma)
        return weight / sigma

    def refresh(self, weight: torch.Tensor) -> bool:
        self._ensure_init(weight)
        power_iteration(weight.flatten(1), self.u, self.v, 1, self.eps)
        return True
