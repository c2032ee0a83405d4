"""SPADE's released generator layout -> our SPADEGenerator: keys, shapes, outputs and errors, without SPADE's code.

SPADE-style state dicts are made from our generator by the inverse mapping below (written here, not imported),
and checked against the key list recorded from NVlabs/SPADE's own SPADEGenerator with Cityscapes options.
"""

from __future__ import annotations

import math

import pytest
import torch

from translate_app.generator import SPADEGenerator
from translate_app.spade_checkpoint import (
    convert_spade_generator,
    infer_generator_kwargs,
    is_spade_state_dict,
    load_spade_generator,
)

# Recorded from NVlabs/SPADE (models/networks/generator.py, PyTorch >= 1.1) with its Cityscapes test options:
# 234 keys = fc, 7 blocks, conv_img; blocks without a learned shortcut lack the conv_s / norm_s keys.
SPADE_BLOCKS = ["head_0", "G_middle_0", "G_middle_1", "up_0", "up_1", "up_2", "up_3"]
SPADE_BLOCK_KEYS = [
    "conv_0.bias", "conv_0.weight_orig", "conv_0.weight_u", "conv_0.weight_v",
    "conv_1.bias", "conv_1.weight_orig", "conv_1.weight_u", "conv_1.weight_v",
    "conv_s.weight_orig", "conv_s.weight_u", "conv_s.weight_v",
    *[f"norm_{n}.{leaf}" for n in "01s" for leaf in (
        "param_free_norm.running_mean", "param_free_norm.running_var", "param_free_norm.num_batches_tracked",
        "mlp_shared.0.weight", "mlp_shared.0.bias", "mlp_gamma.weight", "mlp_gamma.bias",
        "mlp_beta.weight", "mlp_beta.bias",
    )],
]  # fmt: skip
SHORTCUT_BLOCKS = {"up_0", "up_1", "up_2", "up_3", "up_4"}


def spade_keys(blocks: list[str]) -> set[str]:
    keys = {"fc.weight", "fc.bias", "conv_img.weight", "conv_img.bias"}
    for b in blocks:
        keys |= {f"{b}.{k}" for k in SPADE_BLOCK_KEYS if b in SHORTCUT_BLOCKS or "_s." not in k}
    return keys


def to_spade_layout(ours: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state dict -> the layout torch.nn.utils.spectral_norm (old hook API) gives SPADE's blocks."""
    out = {}
    for key, value in ours.items():
        key = key.replace(".parametrizations.weight.original", ".weight_orig")
        key = key.replace(".parametrizations.weight.0._u", ".weight_u")
        key = key.replace(".parametrizations.weight.0._v", ".weight_v")
        out[key] = value.clone()
    return out


def trained_like(G: SPADEGenerator, seed: int = 0) -> SPADEGenerator:
    """Random weights of unit-ish gain, then train-mode forwards so u, v and the BN statistics move."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in G.parameters():
            p.normal_(0, 1 / math.sqrt(p[0].numel()) if p.ndim > 1 else 0.1)
        G.train()
        G(torch.rand(2, G.fc.in_channels, *G.size))
    return G.eval()


def labels(size=(64, 64), nc=36, seed=1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, nc - 1, (1, 1, size[0] // 8, size[1] // 8), generator=g)
    ids = torch.nn.functional.interpolate(ids.float(), size=size, mode="nearest").long()
    seg = torch.zeros(1, nc, *size).scatter_(1, ids, 1.0)
    seg[:, -1] = (torch.rand(size, generator=g) < 0.1).float()
    return seg


TINY = {"label_nc": 36, "ngf": 4, "size": (64, 64), "spade_hidden": 8}


@pytest.mark.parametrize("upsampling", ["more", "most"])
def test_our_generator_has_spade_keys_and_the_conversion_covers_them(upsampling):
    with torch.device("meta"):
        G = SPADEGenerator(upsampling=upsampling)  # full Cityscapes size, no memory
    spade = to_spade_layout(G.state_dict())
    blocks = SPADE_BLOCKS + (["up_4"] if upsampling == "most" else [])
    assert set(spade) == spade_keys(blocks)
    assert len(spade) == (234 if upsampling == "more" else 272)
    converted, kwargs = convert_spade_generator(spade)
    assert kwargs == {"label_nc": 36, "ngf": 64, "upsampling": upsampling, "size": (256, 512), "spade_hidden": 128}
    assert list(converted) == list(G.state_dict())
    assert all(converted[k].shape == v.shape for k, v in G.state_dict().items())


@pytest.mark.parametrize("upsampling", ["normal", "more", "most"])
def test_round_trip_gives_the_same_output(upsampling):
    tiny = {**TINY, "size": (128, 128)} if upsampling == "most" else TINY  # 'most': 2^7 divides the size
    G = trained_like(SPADEGenerator(upsampling=upsampling, **tiny))
    spade = to_spade_layout(G.state_dict())
    assert is_spade_state_dict(spade) and not is_spade_state_dict(G.state_dict())
    for key in [k for k in spade if k.endswith("num_batches_tracked")]:
        del spade[key]  # optional: unused in eval
    override = "normal" if upsampling == "normal" else None  # 'normal' / 'more' look alike in the weights
    converted, kwargs = convert_spade_generator(spade, upsampling=override, size=tiny["size"])
    assert kwargs == {**tiny, "upsampling": upsampling}
    G2 = SPADEGenerator(**kwargs)
    G2.load_state_dict(converted, strict=True)
    seg = labels(tiny["size"])
    with torch.no_grad():
        ref, out = G(seg), G2.eval()(seg)
    assert float(ref.std()) > 0.05  # a real image, not a constant
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("zip_format", [True, False])
def test_load_spade_generator_from_file(tmp_path, zip_format):
    G = trained_like(SPADEGenerator(upsampling="more", **TINY), seed=3)
    path = tmp_path / "latest_net_G.pth"
    torch.save(to_spade_layout(G.state_dict()), path, _use_new_zipfile_serialization=zip_format)
    loaded, kwargs = load_spade_generator(path, size=TINY["size"])
    assert not loaded.training and kwargs["upsampling"] == "more"
    seg = labels(seed=4)
    with torch.no_grad():
        torch.testing.assert_close(loaded(seg), G(seg), rtol=0, atol=1e-6)


def test_pytorch_1_0_layout_with_the_normalized_weight_instead_of_v():
    G = trained_like(SPADEGenerator(upsampling="more", **TINY), seed=5)
    spade = to_spade_layout(G.state_dict())
    for key in [k for k in spade if k.endswith(".weight_v")]:
        conv = key[: -len(".weight_v")]
        w, u, v = spade[f"{conv}.weight_orig"], spade[f"{conv}.weight_u"], spade.pop(key)
        spade[f"{conv}.weight"] = w / torch.dot(u, w.flatten(1) @ v)
    converted, kwargs = convert_spade_generator(spade, size=TINY["size"])
    G2 = SPADEGenerator(**kwargs)
    G2.load_state_dict(converted, strict=True)
    seg = labels(seed=6)
    with torch.no_grad():
        torch.testing.assert_close(G2.eval()(seg), G(seg), rtol=0, atol=1e-5)


@pytest.fixture
def tiny_spade() -> dict[str, torch.Tensor]:
    return to_spade_layout(SPADEGenerator(upsampling="more", **TINY).state_dict())


def test_truncated_and_extended_state_dicts_name_the_keys(tiny_spade):
    del tiny_spade["up_3.conv_s.weight_v"], tiny_spade["conv_img.bias"]
    tiny_spade["up_3.conv_0.weight"] = torch.zeros(1)
    with pytest.raises(ValueError) as e:
        convert_spade_generator(tiny_spade)
    msg = str(e.value)
    assert "missing 2 key(s): conv_img.bias, up_3.conv_s.weight_v" in msg
    assert "unexpected 1 key(s): up_3.conv_0.weight" in msg
    assert "ngf 4, label_nc 36, upsampling 'more'" in msg


def test_many_missing_keys_are_counted_not_all_listed(tiny_spade):
    spade = {k: v for k, v in tiny_spade.items() if not k.startswith("up_")}
    with pytest.raises(ValueError, match=r"missing 140 key\(s\): up_0.conv_0.bias, .* \(\+132 more\)"):
        convert_spade_generator(spade)


def test_wrong_shapes_are_named(tiny_spade):
    tiny_spade["up_1.norm_0.mlp_shared.0.weight"] = torch.zeros(8, 36, 5, 5)  # spadesyncbatch5x5
    with pytest.raises(
        ValueError, match=r"up_1.norm_0.mlp_shared.0.weight \(8, 36, 5, 5\) \(expected \(8, 36, 3, 3\)\)"
    ):
        convert_spade_generator(tiny_spade)


def test_unrelated_vae_and_non_tensor_state_dicts(tiny_spade):
    with pytest.raises(ValueError, match=r"missing key fc\.weight"):
        convert_spade_generator({"conv1.weight": torch.zeros(64, 3, 7, 7), "bn1.running_mean": torch.zeros(64)})
    with pytest.raises(ValueError, match="not a SPADE generator state dict: got a list"):
        convert_spade_generator([1, 2])
    vae = {**tiny_spade, "fc.weight": torch.zeros(16 * 4 * 4 * 8, 256)}
    with pytest.raises(ValueError, match="VAE-trained"):
        convert_spade_generator(vae)
    with pytest.raises(ValueError, match=r"has no up_4 block: its upsampling is normal or more, not 'most'"):
        infer_generator_kwargs(tiny_spade, upsampling="most")
    with pytest.raises(ValueError, match="upsampling must be one of"):
        infer_generator_kwargs(tiny_spade, upsampling="many")
    with pytest.raises(ValueError, match=r"up_3\.conv_0\.bias is a str"):
        convert_spade_generator({**tiny_spade, "up_3.conv_0.bias": "x"})
    assert not is_spade_state_dict({"fc.weight": torch.zeros(1)}) and not is_spade_state_dict(None)


class NotATensor:
    pass


def test_unreadable_files_are_refused_with_their_path(tmp_path, tiny_spade):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_spade_generator(tmp_path / "absent.pth")
    path = tmp_path / "latest_net_G.pth"
    torch.save(tiny_spade, path)
    path.write_bytes(path.read_bytes()[:2000])  # truncated download
    with pytest.raises(ValueError, match=rf"{path} cannot be read as a PyTorch file"):
        load_spade_generator(path)
    for zip_format in (True, False):  # would run arbitrary code with weights_only=False
        torch.save({"fc.weight": NotATensor()}, path, _use_new_zipfile_serialization=zip_format)
        with pytest.raises(ValueError, match=rf"{path} is not a safe checkpoint: it names .*NotATensor"):
            load_spade_generator(path)
    torch.save({"model": tiny_spade}, path)
    with pytest.raises(ValueError, match=rf"{path}: not a SPADE generator state dict: missing key fc.weight"):
        load_spade_generator(path)
