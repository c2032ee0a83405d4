"""gan_core.compilation and train.compile: modes, first-use state, whole-graph critics, config keys."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.nn.utils import parametrize

from gan_core import distributed as gdist
from gan_core.compilation import compile_in_place, compile_mode, eager_calls, initialize_first_use_state
from gan_core.config import ConfigError, load_config
from gan_core.norm import SparsityAwareNorm, SpectralNorm
from gan_core.runtime import Runtime
from sr_app.config import SRTrainConfig
from sr_app.models import SRCritic
from translate_app.config import SpadeTrainConfig
from translate_app.discriminator import MultiscaleDiscriminator

CPU = Runtime(torch.device("cpu"), None, False, gdist.DistInfo())


def norms(module, kind):
    return [m for m in module.modules() if isinstance(m, kind)]


def test_mode_follows_the_device():
    assert compile_mode(torch.device("cuda", 0)) == "reduce-overhead"  # CUDA graphs
    assert compile_mode(torch.device("cpu")) == "default"


def test_first_use_state_is_what_the_first_training_forward_creates():
    D = SRCritic("san", num_blocks=2, width=8, crop_seed=3, ratio=0.5).train()
    ref = copy.deepcopy(D)
    crop_state = D.crop_generator.get_state()
    bn = {k: v.clone() for k, v in D.state_dict().items() if "running" in k or "num_batches" in k}
    initialize_first_use_state(D, torch.rand(1, 3, 20, 20), CPU)
    assert D.training and torch.equal(D.crop_generator.get_state(), crop_state)  # no crop drawn
    assert all(torch.equal(D.state_dict()[k], v) for k, v in bn.items())  # no BatchNorm update
    ref(torch.rand(4, 3, 20, 20))  # what a training step would have done first
    for a, b in zip(norms(D, SparsityAwareNorm), norms(ref, SparsityAwareNorm), strict=True):
        assert a._initialized and a._size == b._size
        assert torch.equal(a.s, b.s) and int(a.draws) == int(b.draws) == 1
    for a, b in zip(norms(D, SpectralNorm), norms(ref, SpectralNorm), strict=True):  # the head's SN
        assert a._initialized and torch.equal(a.u, b.u) and torch.equal(a.v, b.v)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["san", "sn", "bssn"])
def test_critic_bodies_are_single_graphs_forward_and_backward(kind):
    """The compiled regions hold no graph break (fullgraph=True raises on one): no .item(), .tolist(),
    nonzero or data-dependent branch in the normalized, circularly padded critic's forward or backward."""
    options = {"ratio": 0.25} if kind == "san" else {}
    sr = SRCritic(kind, padding="circular", num_blocks=2, width=8, **options).train()
    spade = MultiscaleDiscriminator(6, 8, 3, 2, critic_norm=kind, padding="circular", **options).train()
    cases = [(sr, sr.features, torch.rand(2, 3, 16, 16)), (spade, spade, torch.rand(2, 6, 24, 32))]
    for owner, body, x in cases:
        initialize_first_use_state(owner, x[:1] if owner is spade else torch.rand(1, 3, 16, 16), CPU)
        ref = copy.deepcopy(body)
        out = torch.compile(body, backend="aot_eager", fullgraph=True)(x)
        want = ref(x)
        flat = lambda o: torch.cat([t.flatten() for s in o for t in s]) if isinstance(o, list) else o  # noqa: E731
        torch.testing.assert_close(flat(out), flat(want), rtol=1e-5, atol=1e-6)
        flat(out).square().sum().backward()
        flat(want).square().sum().backward()
        # all gradients as one vector: a conv bias before BatchNorm has a gradient of pure rounding noise
        got = torch.cat([p.grad.flatten() for p in body.parameters()])
        exp = torch.cat([p.grad.flatten() for p in ref.parameters()])
        assert float((got - exp).norm()) <= 1e-5 * float(exp.norm())


def test_in_place_compilation_keeps_state_dict_keys():
    D = SRCritic("sn", num_blocks=2, width=8)
    keys = list(D.state_dict())
    line = compile_in_place({"D.features": D.features, "D.head": D.head, "VGG-19": None}, torch.device("cpu"))
    assert line == "D.features, D.head (torch.compile, mode=default)"
    assert list(D.state_dict()) == keys and not any("_orig_mod" in k for k in keys)
    with eager_calls():  # runs the original code: nothing is compiled here
        D.eval()(torch.rand(1, 3, 16, 16))


def test_cached_weights_only_when_eager():
    eager, compiled = CPU, Runtime(torch.device("cpu"), None, False, gdist.DistInfo(), compiled=True)
    with eager.cached_weights():
        assert parametrize._cache_enabled
    with compiled.cached_weights():
        assert not parametrize._cache_enabled
    compiled.begin_step()  # CPU: nothing to mark


@pytest.mark.parametrize("config", [SRTrainConfig, SpadeTrainConfig])
def test_train_compile_key(config):
    assert load_config(config, None, []).train.compile is False
    assert load_config(config, None, ["train.compile=true"]).train.compile is True
    with pytest.raises(ConfigError, match=r"train\.compile"):
        load_config(config, None, ["train.compile=sometimes"])
