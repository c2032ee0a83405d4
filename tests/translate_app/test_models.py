"""SPADE networks: parameter counts of docs/algorithms.md §4.2 / §4.3, shapes, critic normalizations."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gan_core.norm import BidirectionalSpectralNorm, SparsityAwareNorm, SpectralNorm, is_circular
from translate_app.discriminator import MultiscaleDiscriminator
from translate_app.generator import SPADEGenerator


def count(m):
    return sum(p.numel() for p in m.parameters())


def test_generator_count_and_forward():
    assert count(SPADEGenerator()) == 93_048_003
    G = SPADEGenerator(ngf=8, upsampling="normal", size=(64, 128))
    out = G(torch.rand(2, 36, 64, 128))
    assert out.shape == (2, 3, 64, 128) and float(out.abs().max()) <= 1
    with pytest.raises(ValueError, match="divisible"):
        SPADEGenerator(size=(100, 200))


def convs_of(D):
    return [[m for m in scale.modules() if isinstance(m, nn.Conv2d)] for scale in D.scales]


def test_san_critic_layout_and_constants():
    D = MultiscaleDiscriminator(critic_norm="san", ratio=0.25, gain=1.3, momentum=0.9)
    assert count(D) == 5_601_410
    for scale in convs_of(D):
        assert len(scale) == 5
        for conv in scale:
            assert is_circular(conv)
            san = conv.parametrizations.weight[0]
            assert isinstance(san, SparsityAwareNorm) and san.ratio == 0.25 and san.gain == 1.3 and san.momentum == 0.9
    seeds = {int(c.parametrizations.weight[0].seed) for s in convs_of(D) for c in s}
    assert len(seeds) == 10  # every conv draws its own subsets
    outs = D(torch.rand(1, 39, 64, 128))
    assert len(outs) == 2 and all(len(o) == 5 for o in outs)
    assert outs[0][-1].shape == (1, 1, 11, 19) and outs[1][-1].shape == (1, 1, 7, 11)
    sizes = [tuple(c.parametrizations.weight[0].input_size.tolist()) for c in convs_of(D)[0]]
    assert sizes == [(64, 128), (33, 65), (17, 33), (9, 17), (10, 18)]  # the grids each conv sees


@pytest.mark.parametrize(("norm", "cls"), [("sn", SpectralNorm), ("bssn", BidirectionalSpectralNorm)])
def test_sn_and_bssn_on_the_in_followed_convs_only(norm, cls):
    D = MultiscaleDiscriminator(critic_norm=norm, padding="zeros")
    for scale in convs_of(D):
        assert not any(is_circular(c) for c in scale)
        assert [hasattr(c, "parametrizations") for c in scale] == [False, True, True, True, False]
        assert all(isinstance(c.parametrizations.weight[0], cls) for c in scale[1:4])
    assert count(D) == 5_601_410


def test_san_sn_layers_only_and_errors():
    D = MultiscaleDiscriminator(critic_norm="san", san_layers="sn_layers_only")
    scale = convs_of(D)[0]
    assert all(is_circular(c) for c in scale) and not hasattr(scale[0], "parametrizations")
    with pytest.raises(ValueError, match="circular padding"):
        MultiscaleDiscriminator(critic_norm="san", padding="zeros")
    with pytest.raises(ValueError, match="san_layers"):
        MultiscaleDiscriminator(san_layers="some")
