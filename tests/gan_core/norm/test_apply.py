"""apply_critic_norm / refresh_norm_constants on whole critics: layout, maths, gradients, state."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gan_core.norm import (
    BidirectionalSpectralNorm,
    CriticNormError,
    CriticNormWarning,
    SparsityAwareNorm,
    SpectralNorm,
    apply_critic_norm,
    circular_pad2d,
    is_circular,
    legacy_san_constant,
    norm_constants,
    refresh_norm_constants,
    san_constant,
    san_gain,
)


def small_critic() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, 1, 1, bias=True),
        nn.LeakyReLU(0.1),
        nn.Conv2d(8, 16, 4, 2, 1, bias=False),
        nn.BatchNorm2d(16),
        nn.LeakyReLU(0.1),
        nn.Conv2d(16, 16, 4, 2, 2, bias=False),
        nn.LeakyReLU(0.1),
        nn.Flatten(),
        nn.Linear(16 * 6 * 6, 1),  # for 20x20 inputs
    )


def san_layers(module):
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


def raw(conv):
    return conv.parametrizations.weight.original


def test_layout_per_kind():
    for kind, conv_cls in [("san", SparsityAwareNorm), ("sn", SpectralNorm), ("bssn", BidirectionalSpectralNorm)]:
        D = apply_critic_norm(small_critic(), kind)
        for conv in san_layers(D):
            assert isinstance(conv.parametrizations.weight[0], conv_cls)
            assert is_circular(conv) == (kind == "san")
        assert isinstance(D[-1].parametrizations.weight[0], SpectralNorm)
        names = [n for n, _ in D.named_parameters()]
        assert len(names) == len(list(small_critic().parameters()))  # no parameter added
        assert all("weight" not in n or n.endswith("original") for n in names if not n.startswith("3."))
    D = apply_critic_norm(small_critic(), "none", padding="circular")
    assert all(is_circular(c) for c in san_layers(D)) and not any(hasattr(c, "parametrizations") for c in D)


def test_san_forward_is_circular_conv_with_normalized_weight():
    D = apply_critic_norm(small_critic(), "san")
    x = torch.randn(2, 3, 20, 20)
    D.train()
    out = D(x)
    # independent re-computation, layer by layer: circular pad with F.pad, weight / (max |fft2| + eps)
    h = x
    for layer in D:
        if isinstance(layer, nn.Conv2d):
            w = raw(layer).detach()
            s = torch.fft.fft2(w, s=h.shape[-2:]).abs().amax() + 1e-8
            assert float(layer.parametrizations.weight[0].s) == pytest.approx(float(s), rel=1e-5)
            p = layer.padding[0]
            h = F.conv2d(F.pad(h, (p, p, p, p), mode="circular"), w / s, layer.bias, layer.stride)
        elif isinstance(layer, nn.Linear):
            h = layer(h)
        else:
            h = layer(h)
    torch.testing.assert_close(out, h, rtol=1e-4, atol=1e-5)


def test_gradients_reach_raw_weights_only():
    conv = apply_critic_norm(nn.Conv2d(3, 4, 3, padding=1), "san")
    x = torch.randn(2, 3, 9, 7)
    conv(x).sin().sum().backward()
    san = conv.parametrizations.weight[0]
    assert all(not b.requires_grad for b in san.buffers())
    assert {n for n, _ in conv.named_parameters()} == {"bias", "parametrizations.weight.original"}
    w = raw(conv).detach().clone().requires_grad_(True)
    s = float(san.s)  # a constant for autograd: gradient = normal gradient / s
    F.conv2d(F.pad(x, (1, 1, 1, 1), mode="circular"), w / s, conv.bias.detach()).sin().sum().backward()
    torch.testing.assert_close(raw(conv).grad, w.grad, rtol=1e-5, atol=1e-6)
    # SN: sigma is differentiable (as in torch), u and v are not
    fc = apply_critic_norm(nn.Linear(5, 3), "sn")
    fc(torch.randn(4, 5)).sum().backward()
    assert raw(fc).grad is not None and not fc.parametrizations.weight[0].u.requires_grad


def test_first_use_in_eval_and_stored_constant():
    conv = apply_critic_norm(nn.Conv2d(2, 3, 3, padding=1), "san").eval()
    san = conv.parametrizations.weight[0]
    assert not bool(san.initialized)
    conv(torch.randn(1, 2, 8, 12))
    assert bool(san.initialized) and san.input_size.tolist() == [8, 12]
    expected = san_constant(raw(conv), (8, 12)) + 1e-8
    assert float(san.s) == pytest.approx(float(expected), rel=1e-6)
    with torch.no_grad():
        raw(conv).mul_(3.0)
    with pytest.warns(CriticNormWarning, match="got a 10x10 input; it keeps the constant of its 8x12 training grid"):
        conv(torch.randn(1, 2, 10, 10))  # eval mode: stored constant, even on another grid
    assert float(san.s) == pytest.approx(float(expected), rel=1e-6)
    conv.train()(torch.randn(1, 2, 10, 10))  # training mode on a new grid: recomputed for that grid
    assert float(san.s) == pytest.approx(float(san_constant(raw(conv), (10, 10))), rel=1e-6)
    assert refresh_norm_constants(conv) == 1


def test_update_every_momentum_and_sampling_draws():
    conv = nn.Conv2d(16, 24, 3, padding=1)
    apply_critic_norm(conv, "san", ratio=0.25, momentum=0.9, gain="auto", update_every=2, seed=5)
    san = conv.parametrizations.weight[0]
    g = san_gain(12 * 8 / (24 * 16), 24 * 16)
    assert san.gain == pytest.approx(g)
    x = torch.randn(1, 16, 12, 12)
    gen = san.generator_for_next_draw()
    conv.train()(x)  # first use: bias-free first value
    first = g * float(san_constant(raw(conv), (12, 12), 0.25, gen)) + 1e-8
    assert float(san.s) == pytest.approx(first, rel=1e-6)
    values = []
    for step in range(4):
        with torch.no_grad():
            raw(conv).add_(0.05 * torch.randn_like(raw(conv)))
        gen = san.generator_for_next_draw()
        before = float(san.s)
        did = refresh_norm_constants(conv)
        assert did == (step % 2 == 0)
        if did:
            c = g * float(san_constant(raw(conv), (12, 12), 0.25, gen)) + 1e-8
            assert float(san.s) == pytest.approx(0.9 * before + 0.1 * c, rel=1e-6)
        else:
            assert float(san.s) == before
        values.append(float(san.s))
    assert int(san.draws) == 3 and int(san.refreshes) == 4


def test_legacy_switch_in_layer():
    conv = apply_critic_norm(nn.Conv2d(4, 6, 4, 2, 1), "san", legacy_fft_norm=True)
    conv.train()(torch.randn(1, 4, 16, 16))
    s = conv.parametrizations.weight[0].s
    assert float(s) == pytest.approx(float(legacy_san_constant(raw(conv), (16, 16))) + 1e-8, rel=1e-7)


def test_strided_exact_layer_and_odd_grid_warning():
    conv = apply_critic_norm(nn.Conv2d(3, 3, 4, 2, 1), "san", strided="exact")
    conv.train()(torch.randn(1, 3, 16, 16))
    exact = san_constant(raw(conv), (16, 16), stride=2, strided="exact")
    assert float(conv.parametrizations.weight[0].s) == pytest.approx(float(exact) + 1e-8, rel=1e-6)
    with pytest.warns(UserWarning, match="divisible by the stride"):
        conv(torch.randn(1, 3, 15, 15))


def test_state_dict_round_trip_and_identical_continuation():
    def make(seed):
        torch.manual_seed(seed)
        return apply_critic_norm(small_critic(), "san", ratio=0.25, momentum=0.8)

    A = make(0).train()
    opt = torch.optim.Adam(A.parameters(), 1e-2)
    x = torch.randn(4, 3, 20, 20)
    for _ in range(3):
        refresh_norm_constants(A)
        A(x).mean().backward()
        opt.step(), opt.zero_grad()
    B = make(1)
    B.load_state_dict(A.state_dict())
    for (ka, va), (kb, vb) in zip(A.state_dict().items(), B.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    A.eval(), B.eval()
    torch.testing.assert_close(A(x), B(x), rtol=0, atol=0)
    A.train(), B.train()
    for _ in range(2):  # the sampling draws and EMA continue identically after reload
        refresh_norm_constants(A), refresh_norm_constants(B)
        assert norm_constants(A) == norm_constants(B)
    keys = A.state_dict().keys()
    assert "0.parametrizations.weight.0.s" in keys and "8.parametrizations.weight.0.u" in keys


def test_deepcopy_keeps_its_own_hooks():
    A = apply_critic_norm(nn.Conv2d(2, 3, 3, padding=1), "san")
    A(torch.randn(1, 2, 8, 8))
    B = copy.deepcopy(A)
    with torch.no_grad():
        raw(B).mul_(2.0)
    B.train()(torch.randn(1, 2, 6, 6))  # new grid in training mode: B recomputes, A untouched
    assert float(B.parametrizations.weight[0].s) == pytest.approx(float(san_constant(raw(B), (6, 6))), rel=1e-6)
    assert float(A.parametrizations.weight[0].s) == pytest.approx(float(san_constant(raw(A), (8, 8))), rel=1e-6)


@pytest.mark.parametrize("pad", [1, 2, (0, 2, 1, 0), (3, 1, 2, 2)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_circular_pad_matches_torch(pad, channels_last):
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    p4 = (pad,) * 4 if isinstance(pad, int) else pad
    torch.testing.assert_close(circular_pad2d(x, pad), F.pad(x, p4, mode="circular"), rtol=0, atol=0)
    assert circular_pad2d(x, pad).is_contiguous(memory_format=torch.channels_last) == channels_last
    assert torch.autograd.gradcheck(lambda t: circular_pad2d(t, pad), (x.requires_grad_(),))
    # pads wider than the grid wrap several times (F.pad refuses them): numpy's "wrap" padding as the oracle
    for wide in [7, (0, 13, 6, 1)]:
        w4 = (wide,) * 4 if isinstance(wide, int) else wide
        expected = np.pad(x.detach().numpy(), ((0, 0), (0, 0), (w4[2], w4[3]), (w4[0], w4[1])), mode="wrap")
        assert np.array_equal(circular_pad2d(x, wide).detach().numpy(), expected)
        assert torch.autograd.gradcheck(lambda t, p=wide: circular_pad2d(t, p), (x,), fast_mode=True)
    with pytest.raises(ValueError, match="empty 0x6 grid"):
        circular_pad2d(torch.zeros(1, 1, 0, 6), 1)


def test_error_paths():
    with pytest.raises(ValueError, match="accepted: none, sn, bssn, san"):
        apply_critic_norm(small_critic(), "spectral")
    with pytest.raises(ValueError, match=r"unknown option\(s\) rate .*accepted: ratio, gain"):
        apply_critic_norm(small_critic(), "san", rate=0.5)
    with pytest.raises(ValueError, match="unknown option"):
        apply_critic_norm(small_critic(), "sn", scale=2.0)
    with pytest.raises(ValueError, match="circular padding"):
        apply_critic_norm(small_critic(), "san", padding="zeros")
    with pytest.raises(ValueError, match=r"ratio must be in \(0, 1\]"):
        apply_critic_norm(small_critic(), "san", ratio=0.0)
    with pytest.raises(ValueError, match="gain must be"):
        apply_critic_norm(small_critic(), "san", gain="big")
    with pytest.raises(ValueError, match="update_every"):
        apply_critic_norm(small_critic(), "san", update_every=0)
    with pytest.raises(ValueError, match="momentum"):
        apply_critic_norm(small_critic(), "san", momentum=1.0)
    with pytest.raises(ValueError, match="padding must be one of"):
        apply_critic_norm(small_critic(), "sn", padding="reflect")
    D = apply_critic_norm(small_critic(), "sn")
    with pytest.raises(ValueError, match="already has a weight normalization"):
        apply_critic_norm(D, "san")
    small_grid = r"layer '<root>' \(Conv2d 1->1, 5x5\) gets a 3x8 input; .* needs at least 5x5"
    with pytest.raises(CriticNormError, match=small_grid):
        apply_critic_norm(nn.Conv2d(1, 1, 5), "san")(torch.randn(1, 1, 3, 8))
