"""SR networks: parameter counts of docs/algorithms.md §3.1 / §3.2, shapes, critic crop and norms."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gan_core.norm import BidirectionalSpectralNorm, SparsityAwareNorm, SpectralNorm, is_circular
from sr_app.models import SRCritic, SRGenerator


def count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_generator_parameter_count_and_shapes():
    G = SRGenerator()
    assert count(G) == 1_521_667
    assert G(torch.rand(2, 3, 9, 11)).shape == (2, 3, 36, 44)
    assert SRGenerator(scale=2)(torch.rand(1, 3, 8, 8)).shape == (1, 3, 16, 16)


def test_generator_is_the_bilinear_residual_at_zero_output_conv():
    G = SRGenerator(channels=8, num_blocks=1)
    nn.init.zeros_(G.features_to_image.weight)
    nn.init.zeros_(G.features_to_image.bias)
    x = torch.rand(1, 3, 6, 7)
    up = nn.functional.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False)
    torch.testing.assert_close(G(x), up)


@pytest.mark.parametrize(("norm", "cls"), [("san", SparsityAwareNorm), ("sn", SpectralNorm),
                                           ("bssn", BidirectionalSpectralNorm), ("none", None)])  # fmt: skip
def test_critic_counts_norms_and_padding(norm, cls):
    D = SRCritic(norm, padding="circular" if norm == "san" else "zeros")
    assert count(D) == 14_204_609
    convs = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 10 and len([m for m in D.modules() if isinstance(m, nn.Linear)]) == 2
    assert all(is_circular(c) == (norm == "san") for c in convs)
    if cls is not None:
        assert all(isinstance(c.parametrizations.weight[0], cls) for c in convs)
    assert D(torch.rand(2, 3, 128, 128)).shape == (2, 1)


def test_critic_crop_range_bn_switch_and_errors():
    D = SRCritic("none", padding="zeros", num_blocks=2, width=8, crop_seed=0)  # crop 16
    x = torch.arange(20 * 20, dtype=torch.float32).reshape(1, 1, 20, 20).expand(1, 3, 20, 20)
    offsets = {int(D.random_crop(x)[0, 0, 0, 0]) for _ in range(300)}
    assert offsets == {r * 20 + c for r in range(5) for c in range(5)}  # inclusive range: 0..4 both ways
    D.eval()
    assert int(D.random_crop(x)[0, 0, 0, 0]) == 2 * 20 + 2  # centre crop in eval mode
    no_bn = SRCritic("none", padding="zeros", batch_norm=False, num_blocks=2, width=8)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in no_bn.modules())
    assert all(c.bias is not None for c in no_bn.modules() if isinstance(c, nn.Conv2d))
    with pytest.raises(ValueError, match="smaller than its 16x16 crop"):
        D(torch.rand(1, 3, 15, 40))
    with pytest.raises(ValueError, match="circular padding"):
        SRCritic("san", padding="zeros")
