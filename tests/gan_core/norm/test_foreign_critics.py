"""Critics written elsewhere: torchvision's ResNet-18 trains under every normalization at 64x64, and
grouped / depthwise convs get the normalization of their equivalent dense conv.

The networks are built here with random weights (torchvision's constructors, no download).
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from gan_core.norm import CriticNormWarning, apply_critic_norm, norm_constants, refresh_norm_constants, san_constant


def raw(conv):
    return conv.parametrizations.weight.original


def wrapped_fft_peak(weight: torch.Tensor, H: int, W: int) -> float:
    """Oracle: max |fft2| of every kernel folded onto the H x W grid (taps summed modulo the grid)."""
    m, n, kh, kw = weight.shape
    folded = torch.zeros(m, n, H, W, dtype=torch.float64)
    for a in range(kh):
        for b in range(kw):
            folded[:, :, a % H, b % W] += weight[:, :, a, b].double()
    return float(torch.fft.fft2(folded).abs().amax())


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["san", "sn", "bssn"])
def test_torchvision_resnet18_critic_trains_at_64x64(kind):
    torch.manual_seed(0)
    D = torchvision.models.resnet18(num_classes=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CriticNormWarning)  # every layer with weights is handled
        apply_critic_norm(D, kind)
    opt = torch.optim.Adam(D.parameters(), 2e-4, betas=(0.0, 0.9))
    batch = torch.rand(4, 3, 64, 64) * 2 - 1  # two "real" then two "fake" images, one critic call per step
    first = raw(D.layer4[1].conv2).detach().clone()
    for _ in range(3):
        refresh_norm_constants(D)
        out = D(batch)
        loss = F.relu(1 - out[:2]).mean() + F.relu(1 + out[2:]).mean()  # hinge
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert not torch.equal(raw(D.layer4[1].conv2), first)
    constants = norm_constants(D)
    assert len(constants) == 21 and all(0 < v < float("inf") for v in constants.values())  # 20 convs + fc
    if kind == "san":
        # the last block runs its 3x3 kernels on a 2x2 grid: the constant of the wrapped kernels
        refresh_norm_constants(D)
        for conv in (D.layer4[0].conv2, D.layer4[1].conv1, D.layer4[1].conv2):
            san = conv.parametrizations.weight[0]
            assert san.input_size.tolist() == [2, 2]
            assert float(san.s) == pytest.approx(wrapped_fft_peak(raw(conv).detach(), 2, 2) + 1e-8, rel=1e-5)
        assert D.conv1.parametrizations.weight[0].input_size.tolist() == [64, 64]


def dense_equivalent(conv: nn.Conv2d) -> torch.Tensor:
    """The (out, in, kh, kw) weight of the ungrouped conv that computes the same map (zeros off-group)."""
    w, g = raw(conv).detach(), conv.groups
    m, n_g = w.shape[:2]
    dense = torch.zeros(m, n_g * g, *w.shape[2:])
    for i in range(g):
        rows = slice(i * m // g, (i + 1) * m // g)
        dense[rows, i * n_g : (i + 1) * n_g] = w[rows]
    return dense


@pytest.mark.parametrize("groups", [2, 8])  # 8: depthwise
def test_grouped_convs_are_normalized_as_their_dense_equivalent(groups):
    torch.manual_seed(groups)
    layer = nn.Conv2d(8, 16, 3, padding=1, groups=groups)
    x = torch.randn(2, 8, 10, 10)
    sn, bssn, san = (apply_critic_norm(copy.deepcopy(layer), kind) for kind in ("sn", "bssn", "san"))
    for _ in range(300):
        refresh_norm_constants(sn), refresh_norm_constants(bssn)
    dense = dense_equivalent(sn)
    top = float(torch.linalg.matrix_norm(dense.flatten(1), ord=2))
    top_in = float(torch.linalg.matrix_norm(dense.transpose(0, 1).flatten(1), ord=2))
    assert norm_constants(sn)[""] == pytest.approx(top, rel=1e-5)
    assert norm_constants(bssn)[""] == pytest.approx(0.5 * (top + top_in), rel=1e-5)
    # stacking the groups' blocks (torch's spectral_norm view) would divide by more
    assert float(torch.linalg.matrix_norm(raw(sn).detach().flatten(1), ord=2)) > top * 1.05
    torch.testing.assert_close(sn(x), F.conv2d(x, dense / top, sn.bias, padding=1), rtol=1e-4, atol=1e-5)
    san.train()(x)
    expected = float(san_constant(dense_equivalent(san), (10, 10))) + 1e-8
    assert float(san.parametrizations.weight[0].s) == pytest.approx(expected, rel=1e-6)
