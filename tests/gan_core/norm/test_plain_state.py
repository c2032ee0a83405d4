"""load_plain_state_dict / plain_state_dict: a critic's state saved before conversion, in and out.

Oracle: loading a plain state into a converted critic must equal converting a critic that loaded it
first (same outputs, same state_dict, bit for bit). The critics are built here with random weights.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import nn

from gan_core.norm import apply_critic_norm, load_plain_state_dict, plain_state_dict, refresh_norm_constants


def small_critic(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, 1, 1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(8, 16, 4, 2, 1, bias=False),
        nn.BatchNorm2d(16),
        nn.LeakyReLU(0.2),
        nn.Conv2d(16, 16, 3, 1, 1, groups=4),
        nn.Flatten(),
        nn.Linear(16 * 8 * 8, 1),  # for 16x16 inputs
    )


def train_a_little(D: nn.Module, x: torch.Tensor) -> None:
    opt = torch.optim.SGD(D.parameters(), lr=0.05)
    for _ in range(2):
        refresh_norm_constants(D)
        D(x).square().mean().backward()
        opt.step(), opt.zero_grad()


def same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("kind", ["san", "sn", "bssn"])
@pytest.mark.parametrize("used", [False, True])
def test_loading_equals_converting_after_loading(kind, used):
    pretrained = small_critic(0)
    pretrained.train()(torch.randn(4, 3, 16, 16))  # BatchNorm running statistics: part of the state too
    state = pretrained.state_dict()
    x = torch.randn(4, 3, 16, 16)

    options = {"ratio": 0.5} if kind == "san" else {}  # SAN: sampling draws too
    expected = apply_critic_norm(copy.deepcopy(pretrained), kind, **options)
    got = apply_critic_norm(small_critic(1), kind, **options)  # other random weights
    if used:  # constants, grids, draws and vectors of the other weights: all reset by the load
        train_a_little(got, torch.randn(4, 3, 16, 16))
    load_plain_state_dict(got, state)
    same_state(got, expected)
    for _ in range(2):  # and both continue identically (refreshes, sampling draws, power iterations)
        out_a, out_b = expected.train()(x), got.train()(x)
        assert torch.equal(out_a, out_b)
        train_a_little(expected, x), train_a_little(got, x)
    same_state(got, expected)


def test_plain_state_dict_round_trip_and_include():
    D = apply_critic_norm(small_critic(2), "sn", include=lambda name, layer: name != "5")
    train_a_little(D, torch.randn(2, 3, 16, 16))
    plain = plain_state_dict(D)
    assert set(plain) == set(small_critic(0).state_dict())  # the plain layout, no norm buffers
    assert torch.equal(plain["0.weight"], D[0].parametrizations.weight.original.detach())
    assert torch.equal(plain["5.weight"], D[5].weight)  # excluded layer: a plain conv
    restored = small_critic(3)
    restored.load_state_dict(plain)
    again = apply_critic_norm(small_critic(4), "sn", include=lambda name, layer: name != "5")
    load_plain_state_dict(again, plain)
    assert all(torch.equal(plain[k], v) for k, v in plain_state_dict(again).items())


def test_errors_list_the_keys_and_say_what_to_do():
    D = apply_critic_norm(small_critic(0), "san")
    state = small_critic(1).state_dict()
    with pytest.raises(ValueError, match=r"already in the converted layout .*load it with module.load_state_dict"):
        load_plain_state_dict(D, D.state_dict())
    missing = {k: v for k, v in state.items() if k != "3.running_mean"}
    with pytest.raises(ValueError, match=r"missing keys: 3.running_mean\); it must be the state_dict of the same"):
        load_plain_state_dict(D, missing)
    with pytest.raises(ValueError, match=r"unexpected keys: extra.weight"):
        load_plain_state_dict(D, {**state, "extra.weight": torch.zeros(1)})
    with pytest.raises(RuntimeError, match=r"size mismatch for 7.parametrizations.weight.original"):
        load_plain_state_dict(D, {**state, "7.weight": torch.zeros(1, 5)})


@pytest.mark.slow
def test_pretrained_torchvision_critic():
    torch.manual_seed(0)
    pretrained = torchvision.models.resnet18(num_classes=1).eval()
    state = pretrained.state_dict()
    expected = apply_critic_norm(copy.deepcopy(pretrained), "san")
    got = load_plain_state_dict(apply_critic_norm(torchvision.models.resnet18(num_classes=1), "san"), state).eval()
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(got(x), expected(x))
