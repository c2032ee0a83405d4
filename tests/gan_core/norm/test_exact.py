"""Exact spectral norm of circular convs against power iteration on the operator itself."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gan_core.norm import conv_spectral_norm, san_constant
from gan_core.norm.exact import polyphase_weight


def operator(weight: torch.Tensor, stride: int):
    kh, kw = weight.shape[-2:]

    def apply(x):  # cyclic cross-correlation, output on the (H/stride) x (W/stride) grid
        return F.conv2d(F.pad(x, (0, kw - 1, 0, kh - 1), mode="circular"), weight, stride=stride)

    return apply


def power_iteration_norm(weight, H, W, stride=1, iters=3000):
    """sigma_max(A) by power iteration on A^T A, with A^T from autograd (vector-Jacobian product)."""
    A = operator(weight.double(), stride)
    x = torch.randn(1, weight.shape[1], H, W, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for _ in range(iters):
        x = x / x.norm()
        x.requires_grad_(True)
        y = A(x)
        (ata,) = torch.autograd.grad(y, x, grad_outputs=y)
        x = ata.detach()
    x = x / x.norm()
    return float(A(x).norm())


@pytest.mark.parametrize(("shape", "H", "W", "stride"), [((4, 3, 3, 3), 8, 6, 1), ((3, 2, 4, 4), 8, 8, 2)])
def test_matches_power_iteration_on_operator(shape, H, W, stride):
    w = torch.randn(*shape, dtype=torch.float64)
    exact = float(conv_spectral_norm(w, (H, W), stride=stride))
    assert exact == pytest.approx(power_iteration_norm(w, H, W, stride), rel=1e-4)


def test_dense_matrix_and_san_ordering():
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    H, W = 5, 6
    cols = [operator(w, 1)(e.reshape(1, 2, H, W)).flatten() for e in torch.eye(2 * H * W, dtype=torch.float64)]
    dense = torch.stack(cols, dim=1)
    assert float(conv_spectral_norm(w, (H, W))) == pytest.approx(float(torch.linalg.matrix_norm(dense, ord=2)), 1e-6)
    # SAN's constant (one output channel, one input channel) never exceeds the operator norm
    assert float(san_constant(w, (H, W))) <= float(conv_spectral_norm(w, (H, W))) * (1 + 1e-6)


def test_polyphase_and_errors():
    w = torch.arange(16.0).reshape(1, 1, 4, 4)
    p = polyphase_weight(w, 2)
    assert p.shape == (1, 4, 2, 2)
    torch.testing.assert_close(p[0, 1], w[0, 0, 0::2, 1::2])  # phase (r_h, r_w) = (0, 1)
    with pytest.raises(ValueError, match="divisible by the stride"):
        conv_spectral_norm(torch.randn(2, 2, 4, 4), (9, 8), stride=2)
    with pytest.raises(ValueError, match="4-D conv weight"):
        conv_spectral_norm(torch.randn(2, 4), (8, 8))
