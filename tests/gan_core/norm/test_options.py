"""One validated options object per critic norm: the same rule, and the same words, at every entry point."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from torch import nn

import gan_core.norm
from gan_core.config import ConfigError, load_config
from gan_core.norm import apply_critic_norm, norm_constants, refresh_norm_constants, san_constant
from sr_app.config import SRTrainConfig
from translate_app.config import SpadeTrainConfig

NORM_DIR = Path(gan_core.norm.__file__).resolve().parent  # the code under test

# (config key, apply_critic_norm kind, option, bad value as --set writes it, as Python passes it)
BAD = [
    ("san_ratio", "san", "ratio", "1.5", 1.5),
    ("san_ratio", "san", "ratio", "0", 0.0),
    ("san_gain", "san", "gain", "-1.0", -1.0),
    ("san_gain", "san", "gain", ".inf", float("inf")),
    ("san_update_every", "san", "update_every", "0", 0),
    ("san_momentum", "san", "momentum", "1.0", 1.0),
    ("bssn_scale", "bssn", "scale", "0", 0.0),
    ("bssn_scale", "bssn", "scale", "-2.0", -2.0),
]


def critic() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.LeakyReLU(0.1), nn.Flatten(), nn.Linear(4 * 8 * 8, 1))


def reason(message: str, option: str) -> str:
    """What the rule says, without the option name it starts with."""
    return message[len(option) + 1 :] if message.startswith(option + " ") else message


@pytest.mark.parametrize(("key", "kind", "option", "text", "value"), BAD)
def test_config_and_apply_critic_norm_give_the_same_error(key, kind, option, text, value):
    with pytest.raises(ValueError) as applied:
        apply_critic_norm(critic(), kind, **{option: value})
    said = reason(str(applied.value), option)
    assert str(applied.value).startswith(option + " ")  # the error names the option
    for cls in (SRTrainConfig, SpadeTrainConfig):  # both apps, whatever critic_norm they use
        with pytest.raises(ConfigError) as configured:
            load_config(cls, None, [f"model.{key}={text}"])
        assert str(configured.value) == f"model.{key}: {said}"
    if option == "ratio":  # the plain function applies the same rule
        with pytest.raises(ValueError) as plain:
            san_constant(torch.randn(2, 2, 3, 3), (8, 8), ratio=value)
        assert str(plain.value) == str(applied.value)


def test_options_objects_are_the_one_place_of_each_rule():
    from gan_core.norm import NORM_KINDS, BSSNOptions, NormOptionError, SANOptions, SNOptions, norm_options

    for _, kind, option, _, value in BAD:
        cls = {"san": SANOptions, "bssn": BSSNOptions}[kind]
        with pytest.raises(NormOptionError) as direct:
            cls(**{option: value})
        assert direct.value.option == option
        with pytest.raises(ValueError) as applied:
            apply_critic_norm(critic(), kind, **{option: value})
        assert str(applied.value) == str(direct.value)
    with pytest.raises(NormOptionError, match="SAN needs circular padding") as padding:
        SANOptions(padding="zeros")
    assert padding.value.option == "padding"
    with pytest.raises(ConfigError, match=r"^model\.critic_padding: SAN needs circular padding"):
        load_config(SRTrainConfig, None, ["model.critic_padding=zeros"])
    with pytest.raises(NormOptionError, match=r"eps must be >= 0"):
        SNOptions(eps=-1.0)
    with pytest.raises(NormOptionError, match="seed must be an integer"):
        SANOptions(seed=1.5)
    with pytest.raises(NormOptionError, match="strided must be one of"):
        SANOptions(strided="exactly")
    with pytest.raises(ValueError, match=r"unknown option\(s\) rate for kind 'san'; accepted: ratio, gain"):
        norm_options("san", rate=0.5)
    assert NORM_KINDS["san"][:2] == ("ratio", "gain") and NORM_KINDS["none"] == ("padding",)
    # values are normalized once: ints become floats, and the object is immutable
    opts = SANOptions(ratio=1, gain=2, update_every=3.0)
    assert (opts.ratio, opts.gain, opts.update_every) == (1.0, 2.0, 3) and isinstance(opts.update_every, int)
    with pytest.raises(AttributeError):
        opts.ratio = 0.5  # type: ignore[misc]


def test_an_options_object_converts_like_the_keywords():
    from gan_core.norm import BSSNOptions, SANOptions, SparsityAwareNorm

    x = torch.randn(2, 3, 8, 8)
    torch.manual_seed(3)
    by_keywords = apply_critic_norm(critic(), "san", ratio=0.5, gain="auto", momentum=0.5, seed=7)
    torch.manual_seed(3)
    by_object = apply_critic_norm(critic(), SANOptions(ratio=0.5, gain="auto", momentum=0.5, seed=7))
    for D in (by_keywords, by_object):
        D.train()(x)
        refresh_norm_constants(D)
    assert norm_constants(by_keywords) == norm_constants(by_object)
    san = by_object[0].parametrizations.weight[0]
    assert isinstance(san, SparsityAwareNorm) and san.options == SANOptions(0.5, "auto", momentum=0.5, seed=7)
    with pytest.raises(ValueError, match="not both"):
        apply_critic_norm(critic(), BSSNOptions(scale=2.0), eps=1e-6)
    # the config hands the critics the validated options of the chosen kind
    cfg = load_config(SpadeTrainConfig, None, ["model.critic_norm=bssn", "model.critic_padding=zeros"])
    assert cfg.model.norm_options() == BSSNOptions(scale=1.0, padding="zeros")
    assert cfg.model.critic_norm_options() == {"scale": 1.0}


def test_no_private_helper_is_imported_across_norm_files():
    crossing = []
    for path in sorted(NORM_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module != "__future__":
                crossing += [f"{path.name}: {a.name}" for a in node.names if a.name.startswith("_")]
    assert crossing == []


def test_san_algorithm_option_and_config_key():
    from gan_core.norm import NormOptionError, SANOptions, SparsityAwareNorm
    from gan_core.norm.options import resolve_san_algorithm

    assert SANOptions().algorithm == "auto" and SANOptions(algorithm="dense").algorithm == "dense"
    with pytest.raises(NormOptionError, match=r"algorithm must be one of \('auto', 'certified', 'dense'\)") as bad:
        SANOptions(algorithm="fast")
    assert bad.value.option == "algorithm"
    with pytest.raises(ValueError) as applied:
        apply_critic_norm(critic(), "san", algorithm="fast")
    assert str(applied.value) == str(bad.value)
    assert [resolve_san_algorithm("auto", d) for d in ("cpu", "cuda", "xpu")] == ["certified", "dense", "dense"]
    assert (
        resolve_san_algorithm("dense", "cpu") == "dense" and resolve_san_algorithm("certified", "cuda") == "certified"
    )
    for cls in (SRTrainConfig, SpadeTrainConfig):  # model.san_algorithm reaches every SAN layer of the critics
        cfg = load_config(cls, None, ["model.san_algorithm=dense"])
        assert cfg.model.critic_norm_options()["algorithm"] == "dense"
        assert load_config(cls, None, []).model.san_algorithm == "auto"
        with pytest.raises(ConfigError, match=r"^model\.san_algorithm: 'fast' is not allowed"):
            load_config(cls, None, ["model.san_algorithm=fast"])
    D = apply_critic_norm(
        critic(), "san", **load_config(SRTrainConfig, None, ["model.san_algorithm=dense"]).model.critic_norm_options()
    )
    assert D[0].parametrizations.weight[0].algorithm == "dense" and isinstance(
        D[0].parametrizations.weight[0], SparsityAwareNorm
    )
