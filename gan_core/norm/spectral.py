"""Spectral normalization SN_w (Miyato et al., ICLR 2018) with an explicit, once-per-step refresh.

The weight is viewed as the matrix ``W.flatten(1)`` of shape (out, in * kh * kw) and divided by its
top singular value estimated by power iteration: ``u <- normalize(W v)``, ``v <- normalize(W^T u)``,
``sigma = u^T W v`` (the same order, eps and 15 initial iterations as
``torch.nn.utils.parametrizations.spectral_norm``; ours run on first use). The gradient flows through
``sigma`` into W; u and v are constants for autograd. Unlike PyTorch's parametrization, the power
iteration does not run on every training forward but once per ``refresh_norm_constants`` call (one
per critic step, as in Miyato's and the BSSN authors' TF code), so a critic called several times per
step is normalized consistently.

Grouped convs (``groups=g``, weight (m, n/g, kh, kw)) get the SN_w of the equivalent dense conv, whose
(m, n*kh*kw) matrix is block-diagonal with one (m/g, n/g*kh*kw) block per group: its top singular value
is the largest of the blocks', so each group runs its own power iteration (batched; ``u`` (g, m/g),
``v`` (g, n/g*kh*kw)) and sigma is their maximum. (Reshaping the grouped weight to (m, n/g*kh*kw), as
``torch.nn.utils.parametrizations.spectral_norm`` does, stacks the blocks instead and over-normalizes by
up to sqrt(g): for a depthwise conv, the norm of all kernels stacked instead of the largest kernel norm.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layer_errors import named_errors
from .options import check_eps, check_scale

__all__ = ["SpectralNorm", "grouped_matrix", "power_iteration", "spectral_sigma", "standard_normal", "start_vectors"]

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
        mat: (h, w) matrix, or a (g, h, w) batch of g matrices iterated independently; computed in float32
            without autocast.
        u: (h,) unit vector, or (g, h) one per matrix; updated in place.
        v: (w,) unit vector, or (g, w); updated in place.
    """
    with torch.autocast(mat.device.type, enabled=False):
        m = mat.detach().float()
        for _ in range(n_iter):
            if m.dim() == 2:
                u.copy_(F.normalize(torch.mv(m, v), dim=0, eps=eps))
                v.copy_(F.normalize(torch.mv(m.t(), u), dim=0, eps=eps))
            else:
                u.copy_(F.normalize(torch.bmm(m, v.unsqueeze(2)).squeeze(2), dim=1, eps=eps))
                v.copy_(F.normalize(torch.bmm(m.transpose(1, 2), u.unsqueeze(2)).squeeze(2), dim=1, eps=eps))


def spectral_sigma(mat: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``u^T mat v``: the top singular value estimate, differentiable in ``mat`` (u, v constant).

    A (g, h, w) batch with (g, h) / (g, w) vectors gives the largest of the g estimates (the top singular
    value of the block-diagonal matrix they form).

    >>> m = torch.diag(torch.tensor([3.0, -5.0, 1.0]))
    >>> u, v = torch.tensor([0.0, 1.0, 0.0]), torch.tensor([0.0, -1.0, 0.0])
    >>> float(spectral_sigma(m, u, v))
    5.0
    """
    with torch.autocast(mat.device.type, enabled=False):
        if mat.dim() == 2:
            return torch.dot(u, torch.mv(mat.float(), v))
        return (u * torch.bmm(mat.float(), v.unsqueeze(2)).squeeze(2)).sum(dim=1).amax()


def start_vectors(
    mat: torch.Tensor, generator: torch.Generator | None, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit starting vectors (u, v) of a power iteration on ``mat`` ((h, w) or a (g, h, w) batch): u drawn
    first, then v, by :func:`standard_normal`."""
    *batch, h, w = mat.shape
    g = batch[0] if batch else 1
    u = F.normalize(standard_normal(g * h, generator, mat.device).view(*batch, h), dim=-1, eps=eps)
    v = F.normalize(standard_normal(g * w, generator, mat.device).view(*batch, w), dim=-1, eps=eps)
    return u, v


def grouped_matrix(weight: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """SN's matrix view of a weight: (out, in*kh*kw) for ``groups=1`` (or a Linear), else the (g, out/g,
    in/g*kh*kw) batch of the per-group blocks of a grouped conv's (out, in/g, kh, kw) weight."""
    if groups == 1:
        return weight.flatten(1)
    return weight.reshape(groups, weight.shape[0] // groups, -1)


def _replay(state: torch.Tensor) -> torch.Generator:
    generator = torch.Generator()
    generator.set_state(state)
    return generator


class SpectralNorm(nn.Module):
    """Parametrization ``W -> W * scale / sigma(W)``; ``scale`` is 1 for SN (BSSN uses it for Linears).

    ``groups``: the conv's groups (module docstring: one power iteration per group, sigma their maximum).
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
        if weight.dim() < 2:
            raise ValueError(f"spectral norm needs a weight with >= 2 dims, got shape {tuple(weight.shape)}")
        if groups < 1 or weight.shape[0] % groups:
            raise ValueError(f"groups={groups} does not divide the {weight.shape[0]} output channels")
        self.eps = check_eps(eps)
        self.scale = check_scale(scale)
        self.groups = int(groups)
        self.layer_name, self.layer_desc = "<unnamed>", ""  # set by apply_critic_norm, for messages
        # the generator's state before the draw: reset() draws the same starting vectors again
        self._start = None if generator is None else generator.get_state()
        self._shape = tuple(weight.shape)
        u, v = start_vectors(grouped_matrix(weight.detach(), self.groups), generator, eps)
        self.register_buffer("u", u)
        self.register_buffer("v", v)
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self._initialized = False

    def _ensure_init(self, weight: torch.Tensor) -> None:
        # The 15 initial iterations run on first use, not at creation: under DDP that is after the
        # weights were synchronised, so every rank starts from the same vectors and weights.
        if not self._initialized:
            with named_errors(self.layer_name, self.layer_desc, "spectral norm's first power iterations"):
                power_iteration(grouped_matrix(weight, self.groups), self.u, self.v, INIT_ITERATIONS, self.eps)
            self._initialized = True
            self.initialized.fill_(True)

    @torch.no_grad()
    def reset(self) -> None:
        """Back to the state of a fresh conversion: the starting vectors drawn again from the generator's
        seed (kept when it was built from the global RNG), the initial iterations due on next use."""
        if self._start is not None:
            mat = grouped_matrix(self.u.new_empty(self._shape), self.groups)
            u, v = start_vectors(mat, _replay(self._start), self.eps)
            self.u.copy_(u), self.v.copy_(v)
        self._initialized = False
        self.initialized.fill_(False)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._initialized = bool(self.initialized)

    def extra_repr(self) -> str:
        parts = [f"scale={self.scale}"] if self.scale != 1.0 else []
        if self.groups != 1:
            parts.append(f"groups={self.groups}")
        return ", ".join(parts)

    def sigma(self, weight: torch.Tensor) -> torch.Tensor:
        """The current estimate of ``weight``'s top singular value (differentiable in ``weight``)."""
        self._ensure_init(weight)
        return spectral_sigma(grouped_matrix(weight, self.groups), self.u.clone(), self.v.clone())

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        sigma = self.sigma(weight)
        if self.scale != 1.0:
            return weight * (self.scale / sigma)
        return weight / sigma

    def refresh(self, weight: torch.Tensor) -> bool:
        self._ensure_init(weight)
        with named_errors(self.layer_name, self.layer_desc, "spectral norm's refresh"):
            power_iteration(grouped_matrix(weight, self.groups), self.u, self.v, 1, self.eps)
        return True
