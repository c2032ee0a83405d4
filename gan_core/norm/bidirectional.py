"""Bidirectional scaled spectral normalization (BSSN; Lin, Sekar & Fanti, NeurIPS 2021) for conv layers.

Two matrix views of a conv weight W of shape (m, n, kh, kw) (docs/algorithms.md §2.3):

    sigma_1 = || W reshaped to (m, n*kh*kw) ||_2      (out-channel view, the usual SN_w)
    sigma_2 = || W reshaped to (n, m*kh*kw) ||_2      (in-channel view)
    W_BSSN  = scale * W / ((sigma_1 + sigma_2) / 2)

each sigma estimated by its own power iteration (one step per refresh, 15 on first use). ``scale = 1`` is
BSN; the paper tunes it per dataset. Linear layers use plain SN times the same scale
(:class:`~gan_core.norm.spectral.SpectralNorm` with ``scale``).

Grouped convs (``groups=g``) use the two views of the equivalent dense conv: both are block-diagonal,
with blocks (m/g, n/g*kh*kw) and (n/g, m/g*kh*kw) per group, so each sigma is the largest of its blocks'
(one batched power iteration per group, as in ``spectral``).
"""

from __future__ import annotations

import torch
from torch import nn

from .layer_errors import named_errors
from .options import check_eps, check_scale
from .spectral import INIT_ITERATIONS, power_iteration, spectral_sigma, start_vectors

__all__ = ["BidirectionalSpectralNorm", "bssn_views"]


def bssn_views(weight: torch.Tensor, groups: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """The (m, n*kh*kw) and (n, m*kh*kw) matrix views of a (m, n, kh, kw) weight; for a grouped conv's
    (m, n/g, kh, kw) weight, the (g, m/g, n/g*kh*kw) and (g, n/g, m/g*kh*kw) batches of per-group blocks."""
    if weight.dim() != 4:
        raise ValueError(f"BSSN views need a 4-D conv weight, got shape {tuple(weight.shape)}")
    if groups == 1:
        return weight.flatten(1), weight.transpose(0, 1).flatten(1)
    m, n_g, kh, kw = weight.shape
    blocks = weight.reshape(groups, m // groups, n_g, kh, kw)
    return blocks.flatten(2), blocks.transpose(1, 2).flatten(2)


class BidirectionalSpectralNorm(nn.Module):
    """Parametrization ``W -> scale * W / mean(sigma_out_view, sigma_in_view)`` for Conv2d weights.

    ``groups``: the conv's groups (module docstring).
    """

    def __init__(
        self,
        weight: torch.Tensor,
        *,
        scale: float = 1.0,
        eps: float = 1e-12,
        generator: torch.Generator | None = None,
        groups: int = 1,
    ) -> None:
        super().__init__()
        self.scale = check_scale(scale)
        self.eps = check_eps(eps)
        if groups < 1 or weight.shape[0] % groups:
            raise ValueError(f"groups={groups} does not divide the {weight.shape[0]} output channels")
        self.groups = int(groups)
        self.layer_name, self.layer_desc = "<unnamed>", ""  # set by apply_critic_norm, for messages
        self._start = None if generator is None else generator.get_state()  # for reset()
        self._shape = tuple(weight.shape)
        for name, (u, v) in zip(("out", "in"), self._start_vectors(weight.detach(), generator), strict=True):
            self.register_buffer(f"u_{name}", u)
            self.register_buffer(f"v_{name}", v)
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self._initialized = False

    def _ensure_init(self, weight: torch.Tensor) -> None:
        # initial iterations on first use (after DDP synchronised the weights), as in SpectralNorm
        if not self._initialized:
            with named_errors(self.layer_name, self.layer_desc, "BSSN's first power iterations"):
                out_view, in_view = bssn_views(weight.detach(), self.groups)
                power_iteration(out_view, self.u_out, self.v_out, INIT_ITERATIONS, self.eps)
                power_iteration(in_view, self.u_in, self.v_in, INIT_ITERATIONS, self.eps)
            self._initialized = True
            self.initialized.fill_(True)

    def _start_vectors(self, weight: torch.Tensor, generator: torch.Generator | None):
        out_view, in_view = bssn_views(weight, self.groups)
        return start_vectors(out_view, generator, self.eps), start_vectors(in_view, generator, self.eps)

    @torch.no_grad()
    def reset(self) -> None:
        """Back to the state of a fresh conversion: the starting vectors drawn again from the generator's
        seed (kept when it was built from the global RNG), the initial iterations due on next use."""
        if self._start is not None:
            generator = torch.Generator()
            generator.set_state(self._start)
            vectors = self._start_vectors(self.u_out.new_empty(self._shape), generator)
            for (u, v), dst_u, dst_v in zip(vectors, (self.u_out, self.u_in), (self.v_out, self.v_in), strict=True):
                dst_u.copy_(u), dst_v.copy_(v)
        self._initialized = False
        self.initialized.fill_(False)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._initialized = bool(self.initialized)

    def extra_repr(self) -> str:
        return f"scale={self.scale}" + (f", groups={self.groups}" if self.groups != 1 else "")

    def sigmas(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._ensure_init(weight)
        out_view, in_view = bssn_views(weight, self.groups)
        return (
            spectral_sigma(out_view, self.u_out.clone(), self.v_out.clone()),
            spectral_sigma(in_view, self.u_in.clone(), self.v_in.clone()),
        )

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        s_out, s_in = self.sigmas(weight)
        return weight * (self.scale / (0.5 * (s_out + s_in)))

    def refresh(self, weight: torch.Tensor) -> bool:
        self._ensure_init(weight)
        with named_errors(self.layer_name, self.layer_desc, "BSSN's refresh"):
            out_view, in_view = bssn_views(weight.detach(), self.groups)
            power_iteration(out_view, self.u_out, self.v_out, 1, self.eps)
            power_iteration(in_view, self.u_in, self.v_in, 1, self.eps)
        return True
