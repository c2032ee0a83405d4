"""SN: against the top singular value of the reshaped matrix and PyTorch's own parametrization."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as torch_spectral_norm

from gan_core.norm import SpectralNorm, apply_critic_norm, norm_constants, refresh_norm_constants, spectral_sigma


def test_sigma_converges_to_top_singular_value():
    conv = nn.Conv2d(6, 10, 3)
    apply_critic_norm(conv, "sn")
    for _ in range(200):
        refresh_norm_constants(conv)
    w = conv.parametrizations.weight.original
    top = torch.linalg.matrix_norm(w.detach().flatten(1), ord=2)
    assert norm_constants(conv)[""] == pytest.approx(float(top), rel=1e-5)
    assert float(torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)) == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("layer", [lambda: nn.Conv2d(4, 8, 3, padding=1), lambda: nn.Linear(12, 5)])
def test_matches_torch_parametrization_step_by_step(layer):
    torch.manual_seed(7)
    ours = layer()
    theirs = layer()
    theirs.load_state_dict(ours.state_dict())
    apply_critic_norm(ours, "sn")
    torch_spectral_norm(theirs)
    sn, tsn = ours.parametrizations.weight[0], theirs.parametrizations.weight[0]
    sn.u.copy_(tsn._u), sn.v.copy_(tsn._v)  # same starting vectors (ours come from a seeded generator)
    sn._initialized = True  # and skip our first-use iterations: torch ran its own at registration
    x = torch.randn(3, 4, 6, 6) if isinstance(ours, nn.Conv2d) else torch.randn(3, 12)
    opt_a = torch.optim.SGD(ours.parameters(), lr=0.1)
    opt_b = torch.optim.SGD(theirs.parameters(), lr=0.1)
    for _ in range(5):
        refresh_norm_constants(ours)  # one power iteration, as torch does in each training forward
        ya, yb = ours(x), theirs(x)
        torch.testing.assert_close(ya, yb, rtol=1e-5, atol=1e-6)
        ya.square().mean().backward()
        yb.square().mean().backward()
        ga = ours.parametrizations.weight.original.grad
        gb = theirs.parametrizations.weight.original.grad
        torch.testing.assert_close(ga, gb, rtol=1e-4, atol=1e-6)
        opt_a.step(), opt_b.step(), opt_a.zero_grad(), opt_b.zero_grad()


def test_vectors_come_from_the_seed_not_the_global_rng():
    torch.manual_seed(1)
    a = apply_critic_norm(nn.Linear(8, 4), "sn", seed=3)
    torch.manual_seed(2)
    b = nn.Linear(8, 4)
    b.load_state_dict(a.state_dict(), strict=False)
    b.weight.data.copy_(a.parametrizations.weight.original)
    b = apply_critic_norm(b, "sn", seed=3)
    assert torch.equal(a.parametrizations.weight[0].u, b.parametrizations.weight[0].u)
    c = apply_critic_norm(nn.Linear(8, 4), "sn", seed=4)
    assert not torch.equal(a.parametrizations.weight[0].v, c.parametrizations.weight[0].v)


def test_forward_power_iteration_only_on_refresh():
    conv = apply_critic_norm(nn.Conv2d(3, 5, 3), "sn")
    sn = conv.parametrizations.weight[0]
    conv.train()
    conv(torch.randn(1, 3, 8, 8))  # first use: the 15 initial iterations
    u = sn.u.clone()
    conv(torch.randn(1, 3, 8, 8))
    assert torch.equal(sn.u, u)  # later forwards do not iterate
    refresh_norm_constants(conv)
    assert not torch.equal(sn.u, u)


def test_spectral_sigma_known_value_and_module_agree():
    m = torch.diag(torch.tensor([3.0, -5.0, 1.0]))
    sn = SpectralNorm(m)
    torch.testing.assert_close(sn(m), m / 5.0)  # first use converges on this well-separated spectrum
    assert float(spectral_sigma(m, sn.u, sn.v)) == pytest.approx(5.0, rel=1e-6)
    with pytest.raises(ValueError, match=">= 2 dims"):
        SpectralNorm(torch.randn(5))


def test_gradcheck_through_sigma():
    sn = SpectralNorm(torch.randn(4, 6, dtype=torch.float64))
    w = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    sn.u, sn.v = sn.u.double(), sn.v.double()
    assert torch.autograd.gradcheck(lambda t: t / (sn.u @ t @ sn.v), (w,))
