"""Grids smaller than a kernel, errors that name the layer, and the warnings of apply_critic_norm.

Every test builds its own tiny layers with random weights.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as torch_spectral_norm

from gan_core.norm import (
    CriticNormError,
    CriticNormWarning,
    apply_critic_norm,
    circular_pad2d,
    is_circular,
    refresh_norm_constants,
    san_constant,
)


def raw(conv):
    return conv.parametrizations.weight.original


def operator_norm(conv: nn.Conv2d, H: int, W: int) -> float:
    """Top singular value of the linear map the layer applies to one channel on an H x W grid (oracle)."""
    w = raw(conv).detach().double()

    def apply(x):
        x = circular_pad2d(x.view(1, 1, H, W), tuple(conv._reversed_padding_repeated_twice))
        return F.conv2d(x, w, None, conv.stride, 0, conv.dilation).flatten()

    J = torch.autograd.functional.jacobian(apply, torch.zeros(H * W, dtype=torch.float64))
    return float(torch.linalg.matrix_norm(J, ord=2))


# (kernel, padding, dilation, stride, strided, H, W): kernels larger than the grid they run on
WRAP_CASES = [
    (3, 1, 1, 1, "bound", 2, 2),  # ResNet-18's last 3x3 convs at 64x64
    (3, 1, 1, 1, "bound", 1, 3),
    (5, 2, 1, 1, "bound", 3, 2),
    (3, 2, 2, 1, "bound", 2, 3),  # dilated
    (7, 3, 1, 1, "bound", 4, 3),
    (7, 3, 1, 1, "bound", 2, 2),  # the padding wraps around the grid more than once
    (5, 2, 1, 1, "bound", 1, 1),  # MobileNet's 5x5 depthwise convs at 32x32
    (4, 1, 1, 2, "exact", 2, 2),  # strided, the exact aliased value
    (3, 1, 1, 2, "exact", 2, 2),
    (4, 1, 1, 2, "exact", 4, 2),
]


@pytest.mark.parametrize(("k", "p", "d", "s", "strided", "H", "W"), WRAP_CASES)
def test_kernel_larger_than_grid_gives_the_layers_operator_norm(k, p, d, s, strided, H, W):
    # one in and one out channel: SAN's constant is exactly the operator norm of the layer's circular conv
    torch.manual_seed(k * 100 + H * 10 + W)
    conv = apply_critic_norm(nn.Conv2d(1, 1, k, s, p, dilation=d, bias=False), "san", strided=strided, eps=0.0)
    conv.train()(torch.randn(1, 1, H, W))
    expected = operator_norm(conv, H, W)
    assert float(conv.parametrizations.weight[0].s) == pytest.approx(expected, rel=1e-5)
    dense = san_constant(raw(conv), (H, W), stride=s, dilation=d, strided=strided, algorithm="dense")
    assert float(dense) == pytest.approx(expected, rel=1e-5)


def test_stride_bound_on_a_small_grid_is_an_upper_bound():
    conv = apply_critic_norm(nn.Conv2d(1, 1, 4, 2, 1, bias=False), "san", eps=0.0)
    conv.train()(torch.randn(1, 1, 2, 2))
    assert float(conv.parametrizations.weight[0].s) >= operator_norm(conv, 2, 2) * (1 - 1e-6)


def test_conversion_errors_name_the_layer():
    D = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Sequential(nn.Conv2d(4, 4, 3, stride=2, groups=2), nn.Linear(4, 1)))
    torch_spectral_norm(D[1][0])
    with pytest.raises(CriticNormError, match=r"layer '1.0' \(Conv2d 4->4, 3x3, stride 2, groups 2\) already has") as e:
        apply_critic_norm(D, "san")
    assert e.value.layer == "1.0" and isinstance(e.value, ValueError) and isinstance(e.value, RuntimeError)
    assert not is_circular(D[0])  # checked before anything is converted


def test_hook_errors_name_the_layer_and_say_what_to_do():
    # a 5x5 conv without padding on the 2x2 grid of a deeper layer has no output
    D = apply_critic_norm(nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1), nn.ReLU(), nn.Conv2d(4, 4, 5)), "san")
    with pytest.raises(CriticNormError, match=r"layer '2' \(Conv2d 4->4, 5x5\) gets a 2x2 input; .*") as e:
        D(torch.randn(1, 3, 4, 4))
    assert e.value.layer == "2" and "needs at least 5x5" in str(e) and "Feed larger inputs" in str(e)
    assert D(torch.randn(1, 3, 10, 10)).shape == (1, 4, 1, 1)

    # the official port's quantity cannot wrap a kernel: the first-use error names the layer and the fix
    D = nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1), nn.Conv2d(4, 4, 3, padding=1))
    apply_critic_norm(D, "san", legacy_fft_norm=True)
    legacy = r"the SAN constant on the 2x2 grid of critic layer '1' .*legacy_fft_norm=False"
    with pytest.raises(CriticNormError, match=legacy):
        D(torch.randn(1, 3, 4, 4))

    conv = apply_critic_norm(nn.Conv2d(2, 2, 3, padding=1), "san")
    with pytest.raises(CriticNormError, match=r"layer '<root>' \(Conv2d 2->2, 3x3, padding 1\) has no input grid yet"):
        conv.parametrizations.weight[0].recompute(raw(conv))


def test_refresh_and_first_use_errors_name_the_layer():
    D = apply_critic_norm(nn.Sequential(nn.Conv2d(2, 3, 3, padding=1)), "san", algorithm="dense")
    D(torch.randn(1, 2, 8, 8))
    D[0].parametrizations.weight[0].dense_backend = "cuda"  # not a backend name
    with pytest.raises(CriticNormError, match=r"the SAN refresh on the 8x8 grid of critic layer '0' .*backend must be"):
        refresh_norm_constants(D)

    fc = apply_critic_norm(nn.Sequential(nn.Linear(5, 4)), "sn")
    fc[0].parametrizations.weight[0].u = torch.ones(3)  # a vector of the wrong size
    with pytest.raises(CriticNormError, match=r"first power iterations of critic layer '0' \(Linear 5->4\) failed"):
        fc(torch.randn(2, 5))


class MixedCritic(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(2, 3, 3)
        self.c3 = nn.Conv3d(2, 3, 3)
        self.up = nn.ConvTranspose2d(3, 3, 4, 2, 1)
        self.lazy = nn.LazyConv2d(4, 3)
        self.emb = nn.Embedding(10, 4)
        self.attn = nn.MultiheadAttention(4, 2)
        self.proj = torch_spectral_norm(nn.Embedding(10, 4))  # normalized by the user: not reported
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 1)


def test_unhandled_layer_types_are_named_in_one_warning():
    D = MixedCritic()
    with pytest.warns(CriticNormWarning) as record:
        apply_critic_norm(D, "sn")
    messages = [str(w.message) for w in record if issubclass(w.category, CriticNormWarning)]
    assert len(messages) == 1
    msg = messages[0]
    assert msg.startswith("apply_critic_norm('sn') left 6 layer(s) of types it does not handle unnormalized: ")
    for part in (
        "'c1' (Conv1d 2->3, 3)",
        "'c3' (Conv3d 2->3, 3x3x3)",
        "'up' (ConvTranspose2d 3->3, 4x4, stride 2, padding 1)",
        "'lazy' (LazyConv2d, not materialized yet)",
        "'emb' (Embedding)",
        "'attn' (MultiheadAttention)",
        "It handles Conv2d (any kernel, stride, dilation, padding, groups) and Linear",
        "run one forward pass first",
    ):
        assert part in msg
    assert "proj" not in msg
    assert hasattr(D.conv, "parametrizations") and hasattr(D.fc, "parametrizations")
    # a critic of supported layers converts without a warning, and so does kind "none"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        apply_critic_norm(nn.Sequential(nn.Conv2d(3, 4, 3, groups=1), nn.Linear(4, 1)), "san")
        apply_critic_norm(MixedCritic(), "none")


def test_replaced_padding_modes_are_warned():
    D = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), nn.Conv2d(4, 4, 1, padding_mode="reflect"))
    with pytest.warns(CriticNormWarning, match=r"padding_mode of 1 conv\(s\) to 'zeros' .*: '0' \(reflect\)$"):
        apply_critic_norm(D, "sn")
    assert D[0].padding_mode == "zeros"
    D = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, padding_mode="replicate"))
    with pytest.warns(CriticNormWarning, match=r"to 'circular' .*'0' \(replicate\)"):
        apply_critic_norm(D, "san")


def test_eval_mode_on_another_grid_keeps_the_constant_and_warns_once_per_layer():
    D = apply_critic_norm(nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, 2, 1)), "san")
    D.train()(torch.randn(1, 2, 8, 8))
    s = [float(D[i].parametrizations.weight[0].s) for i in (0, 2)]
    D.eval()
    with pytest.warns(CriticNormWarning) as record:
        D(torch.randn(1, 2, 12, 12))
    messages = [str(w.message) for w in record if issubclass(w.category, CriticNormWarning)]
    assert messages == [
        "SAN layer '0' (Conv2d 2->4, 3x3, padding 1) in eval mode got a 12x12 input; it keeps the constant of "
        "its 8x8 training grid (the constant is defined on the grid it was computed on; a forward in training "
        "mode on the new grid recomputes it). Warned once per layer.",
        "SAN layer '2' (Conv2d 4->4, 3x3, stride 2, padding 1) in eval mode got a 12x12 input; it keeps the "
        "constant of its 8x8 training grid (the constant is defined on the grid it was computed on; a forward "
        "in training mode on the new grid recomputes it). Warned once per layer.",
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        D(torch.randn(1, 2, 10, 10))  # once per layer
        D(torch.randn(1, 2, 8, 8))  # the training grid itself never warns
    assert [float(D[i].parametrizations.weight[0].s) for i in (0, 2)] == s
