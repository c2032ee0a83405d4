"""Bidirectional scaled spectral normalization (BSSN; Lin, Sekar & Fanti, NeurIPS 2021) for conv layers.

Two matrix views of a conv weight W of shape (m, n, kh, kw) (ALGORITHMS.md b.3):

    sigma_1 = || W reshaped to (m, n*kh*kw) ||_2      (out-channel view, the usual SN_w)
    sigma_2 = || W reshaped to (n, m*kh*kw) ||_2      (in-channel view)
    W_BSSN  = scale * W / ((sigma_1 + sigma_2) / 2)

each sigma estimated by its own power iteration (one step per refresh, 15 on first use). ``scale = 1`` is
BSN; the paper tunes it per dataset. Linear layers use plain SN times the same scale
(:class:`~gan_core.norm.spectral.SpectralNorm` with ``scale``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .options import check_eps, check_scale
from .spectral import INIT_ITERATIONS, power_iteration, spectral_sigma, standard_normal

__all__ = ["BidirectionalSpectralNorm", "bssn_views"]


def bssn_views(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The (m, n*kh*kw) and (n, m*kh*kw) matrix views of a (m, n, kh, kw) weight."""
    if weight.dim() != 4:
        raise ValueError(f"BSSN views need a 4-D conv weight, got shape {tuple(weight.shape)}")
    return weight.flatten(1), weight.transpose(0, 1).flatten(1)


class BidirectionalSpectralNorm(nn.Module):
    """Parametrization ``W -> scale * W / mean(sigma_out_view, sigma_in_view)`` for Conv2d weights."""

    def __init__(
        self, weight: torch.Tensor, *, scale: float = 1.0, eps: float = 1e-12, generator: torch.Generator | None = None
    ) -> None:
        super().__init__()
        self.scale = check_scale(scale)
        self.eps = check_eps(eps)
        out_view, in_view = bssn_views(weight.detach())
        for name, mat in (("out", out_view), ("in", in_view)):
            h, w = mat.shape
            u = F.normalize(standard_normal(h, generator, mat.device), dim=0, eps=eps)
            v = F.normalize(standard_normal(w, generator, mat.device), dim=0, eps=eps)
            self.register_buffer(f"u_{name}", u)
            self.register_buffer(f"v_{name}", v)
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self._initialized = False

    def _ensure_init(self, weight: torch.Tensor) -> None:
        # initial iterations on first use (after DDP synchronised the weights), as in SpectralNorm
        if not self._initialized:
            out_view, in_view = bssn_views(weight.detach())
            power_iteration(out_view, self.u_out, self.v_out, INIT_ITERATIONS, self.eps)
            power_iteration(in_view, self.u_in, self.v_in, INIT_ITERATIONS, self.eps)
            self._initialized = True
            self.initialized.fill_(True)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._initialized = bool(self.initialized)

    def extra_repr(self) -> str:
        return f"scale={self.scale}"

    def sigmas(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._ensure_init(weight)
        out_view, in_view = bssn_views(weight)
        return (
            spectral_sigma(out_view, self.u_out.clone(), self.v_out.clone()),
            spectral_sigma(in_view, self.u_in.clone(), self.v_in.clone()),
        )

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        s_out, s_in = self.sigmas(weight)
        return weight * (self.scale / (0.5 * (s_out + s_in)))

    def refresh(self, weight: torch.Tensor) -> bool:
        self._ensure_init(weight)
        out_view, in_view = bssn_views(weight.detach())
        power_iteration(out_view, self.u_out, self.v_out, 1, self.eps)
        power_iteration(in_view, self.u_in, self.v_in, 1, self.eps)
        return True
