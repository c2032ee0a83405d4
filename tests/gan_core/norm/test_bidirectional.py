"""BSSN: mean of the two reshaped spectral norms, times the scale; Linear layers plain SN times scale."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gan_core.norm import BidirectionalSpectralNorm, apply_critic_norm, norm_constants, refresh_norm_constants


def test_bssn_is_mean_of_two_views():
    conv = nn.Conv2d(5, 12, 4, stride=2)
    apply_critic_norm(conv, "bssn", scale=1.3)
    for _ in range(300):
        refresh_norm_constants(conv)
    w = conv.parametrizations.weight.original.detach()
    s_out = torch.linalg.matrix_norm(w.reshape(12, -1), ord=2)
    s_in = torch.linalg.matrix_norm(w.permute(1, 0, 2, 3).reshape(5, -1), ord=2)
    expected = 0.5 * (s_out + s_in)
    assert norm_constants(conv)[""] == pytest.approx(float(expected), rel=1e-5)
    torch.testing.assert_close(conv.weight, w * 1.3 / expected, rtol=1e-5, atol=1e-7)
    assert float(s_out) != pytest.approx(float(s_in), rel=1e-3)  # the two views genuinely differ


def test_linear_layers_get_scaled_sn():
    fc = nn.Linear(20, 7)
    apply_critic_norm(fc, "bssn", scale=0.8)
    for _ in range(300):
        refresh_norm_constants(fc)
    top = torch.linalg.matrix_norm(fc.parametrizations.weight.original.detach(), ord=2)
    assert float(torch.linalg.matrix_norm(fc.weight.detach(), ord=2)) == pytest.approx(0.8, rel=1e-5)
    assert norm_constants(fc)[""] == pytest.approx(float(top), rel=1e-5)


def test_scale_one_is_bsn_and_views_checked():
    w = torch.randn(6, 3, 3, 3)
    bssn = BidirectionalSpectralNorm(w)
    s_out, s_in = bssn.sigmas(w)
    torch.testing.assert_close(bssn(w), w / (0.5 * (s_out + s_in)))
    with pytest.raises(ValueError, match="4-D conv weight"):
        BidirectionalSpectralNorm(torch.randn(4, 4))
