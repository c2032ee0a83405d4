"""Community SR models (spandrel): every entry point runs them, with spandrel's own call API as the oracle.

The models are the ``community_models`` fixture's: spandrel's architecture classes in tiny configurations with
random weights, saved by the test as .pth and .safetensors the way their authors release them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import spandrel
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from gan_core.checkpoint import safe_torch_load
from gan_core.image_io import read_image, write_png16
from sr_app.cli import eval_main, infer_main
from sr_app.infer import Upscaler, load_generator
from sr_app.models import luma

from .conftest import smooth_image, write_images

EXPECTED = {  # name: (spandrel architecture, scale, input channels, output channels)
    "rrdb_x4": ("ESRGAN", 4, 3, 3),
    "rrdb_x2": ("ESRGAN", 2, 3, 3),
    "compact_x4": ("RealESRGAN Compact", 4, 3, 3),
    "swinir_x2": ("SwinIR", 2, 3, 3),
    "gray_x2": ("RealESRGAN Compact", 2, 1, 1),
    "rgba_x2": ("RealESRGAN Compact", 2, 4, 4),
    "restore_x1": ("RealESRGAN Compact", 1, 3, 3),
}
COLOUR_MODELS = ["rrdb_x4", "rrdb_x2", "compact_x4", "swinir_x2"]


def spandrel_model(path: Path):
    """The oracle: spandrel's descriptor of the same file (read safely here too), fp32 on the CPU."""
    state = load_file(str(path)) if path.suffix == ".safetensors" else safe_torch_load(path)
    return spandrel.ModelLoader().load_from_state_dict(state).eval()


def spandrel_output(desc, pixels: np.ndarray) -> np.ndarray:
    """(H, W, C) float32 in [0, 1] -> spandrel's (sH, sW, C') output, float32."""
    x = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)[None]
    return desc(x)[0].permute(1, 2, 0).numpy()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("name", list(EXPECTED))
def test_every_model_loads_with_its_card(community_models, name):
    path = community_models[name]
    arch, scale, cin, cout = EXPECTED[name]
    desc = spandrel_model(path)
    params = sum(p.numel() for p in desc.model.parameters())
    up = Upscaler.from_pretrained(path, device="cpu", precision="fp32")
    assert up.scale == scale and up.architecture == arch and up.name == name
    assert up.source == str(path.resolve()) and up.sha256 == _sha(path)
    assert up.card == {"architecture": arch, "tags": desc.tags, "scale": scale, "parameters": params,
                       "input_channels": cin, "output_channels": cout, "sha256": _sha(path)[:12],
                       "loader": f"spandrel {spandrel.__version__}"}  # fmt: skip
    assert up.model_card == (f"{arch} [{' '.join(desc.tags)}] x{scale}, {params:,} parameters, "
                             f"sha256 {_sha(path)[:12]} (spandrel {spandrel.__version__})")  # fmt: skip
    assert repr(up) == (f"Upscaler(model={name!r}, architecture={arch!r}, scale={scale}, device='cpu', "
                        "precision='fp32', tile='auto', tile_pad=24)")  # fmt: skip


@pytest.mark.parametrize("name", [*COLOUR_MODELS, "restore_x1"])
@pytest.mark.parametrize("size", [(23, 29), (9, 10)])  # odd sides: rrdb_x2 pads to multiples of 4, SwinIR to 16
def test_whole_image_equals_spandrels_call_api(community_models, name, size):
    desc = spandrel_model(community_models[name])
    up = Upscaler.from_pretrained(community_models[name], device="cpu", precision="fp32", tile=0)
    px = (smooth_image(*size, 3)[..., :3] / 255).astype(np.float32)
    got = up.upscale_array(px, np.float32)
    ref = spandrel_output(desc, px)
    assert got.shape == ref.shape == (size[0] * up.scale, size[1] * up.scale, 3)
    assert np.abs(got - ref).max() <= 1e-5
    assert ref.std() > 0.02  # the oracle is not a constant image


@pytest.mark.parametrize("name", COLOUR_MODELS)
def test_tiles_equal_the_whole_image(community_models, name):
    """Tiles of 32 px (24 px of context) blend into the untiled result: for the pixel-unshuffle ESRGAN and the
    window-attention SwinIR too, because their tiles start at multiples of the model's phase (``align``)."""
    whole = Upscaler.from_pretrained(community_models[name], device="cpu", precision="fp32", tile=0)
    tiled = Upscaler.from_pretrained(community_models[name], device="cpu", precision="fp32", tile=32)
    px = (smooth_image(70, 75, 4) / 255).astype(np.float32)  # sides not multiples of 4 or 8
    tiles = []
    a = whole.upscale_array(px, np.float32)
    b = tiled.upscale_array(px, np.float32, on_tile=lambda: tiles.append(1))
    assert len(tiles) >= 6 and a.shape == b.shape == (70 * whole.scale, 75 * whole.scale, 3)
    assert np.abs(a - b).max() <= 1e-4


def test_gray_colour_and_alpha_with_1_3_and_4_channel_models(community_models):
    rgb = (smooth_image(20, 24, 5) / 255).astype(np.float32)
    gray = rgb[..., :1]
    # a 3-channel model on a gray image: the luma of its output for the gray image as RGB
    up3, desc3 = (
        Upscaler.from_pretrained(community_models["compact_x4"], "cpu", "fp32"),
        spandrel_model(community_models["compact_x4"]),
    )
    got = up3.upscale_array(gray, np.float32)
    ref = luma(torch.from_numpy(spandrel_output(desc3, np.repeat(gray, 3, axis=2))).permute(2, 0, 1)[None])
    assert got.shape == (80, 96, 1) and np.abs(got[..., 0] - ref[0, 0].numpy()).max() <= 1e-5
    # a 1-channel model on a colour image: each channel on its own
    up1, desc1 = (
        Upscaler.from_pretrained(community_models["gray_x2"], "cpu", "fp32"),
        spandrel_model(community_models["gray_x2"]),
    )
    got = up1.upscale_array(rgb, np.float32)
    assert got.shape == (40, 48, 3)
    for c in range(3):
        assert np.abs(got[..., c] - spandrel_output(desc1, rgb[..., c : c + 1])[..., 0]).max() <= 1e-5
    assert up1.upscale_array(gray, np.float32).shape == (40, 48, 1)
    # a 4-channel (RGBA) model on an RGBA image: the colour through the model with an opaque alpha, the
    # image's alpha resized as for every model
    up4, desc4 = (
        Upscaler.from_pretrained(community_models["rgba_x2"], "cpu", "fp32"),
        spandrel_model(community_models["rgba_x2"]),
    )
    rgba = np.concatenate([smooth_image(20, 24, 5), np.full((20, 24, 1), 255, np.uint8)], axis=2)
    out = up4.upscale(rgba)
    assert out.dtype == np.uint8 and out.shape == (40, 48, 4) and (out[..., 3] == 255).all()
    ref = spandrel_output(desc4, np.concatenate([rgb, np.ones_like(gray)], axis=2))[..., :3]
    assert np.abs(out[..., :3].astype(float) - ref * 255).max() <= 0.5 + 1e-3


def test_a_precision_the_model_does_not_support_falls_back_to_fp32(community_models, caplog):
    model, config = load_generator(community_models["rrdb_x4"])
    assert model.supports_bfloat16 and not spandrel_model(community_models["swinir_x2"]).supports_half
    reference = Upscaler(model, config, "cpu", "fp32").upscale_array(smooth_image(12, 14, 6) / 255.0, np.float32)
    model.supports_bfloat16 = False  # what spandrel says of AuraSR, the one architecture without bf16
    up = Upscaler(model, config, "cpu", "bf16")
    assert up.precision_name == "fp32" and up.precision_note == "bf16 is not supported by ESRGAN: fp32"
    assert "bf16 is not supported by ESRGAN" in caplog.text
    assert np.array_equal(up.upscale_array(smooth_image(12, 14, 6) / 255.0, np.float32), reference)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 needs CUDA")
def test_fp16_on_cuda_falls_back_for_swinir(community_models):
    up = Upscaler.from_pretrained(community_models["swinir_x2"], "cuda", "fp16")
    assert up.precision_name == "fp32" and "fp16 is not supported by SwinIR" in up.precision_note
    assert Upscaler.from_pretrained(community_models["compact_x4"], "cuda", "fp16").precision_name == "fp16"


def _inputs(folder: Path) -> Path:
    """A JPEG, a gray PNG, an RGBA PNG with a transparent corner and a 16-bit PNG, each larger than a 32 px tile."""
    folder.mkdir(parents=True)
    Image.fromarray(smooth_image(40, 44, 1)).save(folder / "photo.jpg", quality=95)
    Image.fromarray(smooth_image(36, 40, 2)[..., 0]).save(folder / "gray.png")
    rgba = np.concatenate([smooth_image(40, 40, 3), np.full((40, 40, 1), 255, np.uint8)], axis=2)
    rgba[:10, :10, 3] = 0
    Image.fromarray(rgba, "RGBA").save(folder / "logo.png")
    with open(folder / "deep.png", "wb") as f:
        write_png16(f, smooth_image(36, 36, 4).astype(np.uint16) * 257)
    return folder


@pytest.mark.parametrize("name", COLOUR_MODELS)
def test_sr_infer_runs_community_models_on_every_kind_of_file(tmp_path, community_models, capsys, name):
    src = _inputs(tmp_path / "in")
    out, report = tmp_path / "out", tmp_path / "r.json"
    path = community_models[name]
    arch, scale, _, _ = EXPECTED[name]
    args = ["-i", str(src), "-o", str(out), "--weights", str(path), "-t", "32", "--no-niqe", "--report", str(report)]
    assert infer_main([*args, "--precision", "fp32"]) == 0
    err = capsys.readouterr().err
    assert f"sr-infer: model card: {arch} [" in err and f"x{scale}, " in err and f"sha256 {_sha(path)[:12]}" in err
    assert "4 written, 0 skipped, 0 failed" in err
    photo, gray = read_image(out / "photo_out.jpg"), read_image(out / "gray_out.png")
    logo, deep = read_image(out / "logo_out.png"), read_image(out / "deep_out.png")
    assert photo.size == (44 * scale, 40 * scale) and photo.channels == 3
    assert gray.size == (40 * scale, 36 * scale) and gray.channels == 1
    assert logo.size == (40 * scale, 40 * scale) and logo.channels == 4 and logo.pixels[0, 0, 3] == 0
    assert deep.size == (36 * scale, 36 * scale) and deep.bit_depth == 16
    meta = json.loads(report.read_text())
    assert meta["model_card"]["architecture"] == arch and meta["model_card"]["scale"] == scale
    assert meta["model_sha256"] == _sha(path)[:12] and len(meta["images"]) == 4


@pytest.mark.parametrize("name", ["compact_x4", "swinir_x2"])
def test_sr_eval_evaluates_a_community_model(tmp_path, community_models, capsys, name):
    write_images(tmp_path / "val", [(48, 48), (40, 56)], seed=3)
    args = ["--weights", str(community_models[name]), "--data", str(tmp_path / "val"), "--out", str(tmp_path / "ev"),
            "--no-niqe", "--precision", "fp32"]  # fmt: skip
    assert eval_main(args) == 0
    res = json.loads((tmp_path / "ev" / "results.json").read_text())
    arch, scale, _, _ = EXPECTED[name]
    assert res["scale"] == scale and res["model_card"]["architecture"] == arch and res["model"] == name
    assert res["datasets"]["val"]["count"] == 2 and "psnr_y" in res["datasets"]["val"]["model"]
    assert f"sr-eval: model card: {arch}" in capsys.readouterr().err


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_refusals_are_one_line_exit_2(tmp_path, community_models, capsys):
    d = tmp_path / "bad"
    d.mkdir()
    torch.save({"params_ema": _RunsCode(tmp_path / "code-ran")}, d / "evil.pth")
    torch.save({"encoder.weight": torch.randn(4, 4)}, d / "unknown.pth")
    save_file({"encoder.weight": torch.randn(4, 4)}, str(d / "unknown.safetensors"))
    state = load_file(str(community_models["compact_x4"]))
    save_file({k: v for k, v in state.items() if k != "body.4.weight"}, str(d / "cut.safetensors"))
    state["body.0.weight"][0, 0, 0, 0] = float("inf")
    save_file(state, str(d / "inf.safetensors"))
    torch.save({"stuff": [1, 2, 3]}, d / "notensors.pth")
    expected = {
        "evil.pth": "is not a safe checkpoint: it names ",
        "unknown.pth": "unknown model: neither a san-gan SRGenerator nor one of the",
        "unknown.safetensors": f"architectures spandrel {spandrel.__version__} recognises (1 tensors, e.g. 'encoder",
        "cut.safetensors": "spandrel detects RealESRGAN Compact but cannot build it from these tensors",
        "inf.safetensors": "has non-finite weights (NaN/Inf) in body.0.weight",
        "notensors.pth": "holds no tensors at its top level (keys: stuff)",
    }
    Image.fromarray(smooth_image(8, 8, 0)).save(tmp_path / "in.png")
    write_images(tmp_path / "val", [(40, 40)], seed=3)
    for file, text in expected.items():
        code = infer_main(["-i", str(tmp_path / "in.png"), "-o", str(tmp_path / "o"), "--weights", str(d / file)])
        line = _one_line_error(capsys.readouterr().err)
        assert code == 2 and line.startswith("sr-infer: cannot load the model: ") and text in line, (file, line)
        code = eval_main(["--weights", str(d / file), "--data", str(tmp_path / "val"), "--out", str(tmp_path / "e")])
        line = _one_line_error(capsys.readouterr().err)
        assert code == 2 and text in line, (file, line)
    assert not (tmp_path / "code-ran").exists() and not (tmp_path / "o").exists()


def test_a_community_model_in_a_weights_folder_runs_by_name(tmp_path, community_models, monkeypatch, capsys):
    monkeypatch.setenv("SAN_WEIGHTS_DIR", "")  # restored after the test (--weights-dir sets it)
    wdir = tmp_path / "w"
    wdir.mkdir()
    shutil.copy(community_models["rrdb_x4"], wdir / "RealESRGAN_x4plus.pth")
    Image.fromarray(smooth_image(8, 8, 0)).save(tmp_path / "in.png")
    args = ["-i", str(tmp_path / "in.png"), "-o", str(tmp_path / "o"), "--no-niqe", "--weights-dir", str(wdir)]
    assert infer_main([*args, "--model_name", "RealESRGAN_x4plus"]) == 0  # Real-ESRGAN's spelling of -n
    err = capsys.readouterr().err
    assert f"model RealESRGAN_x4plus (x4) from {(wdir / 'RealESRGAN_x4plus.pth').resolve()}" in err
    assert Image.open(tmp_path / "o" / "in_out.png").size == (32, 32)
    assert infer_main(["--list-models", "--weights-dir", str(wdir)]) == 0
    listed = capsys.readouterr().out
    assert "RealESRGAN_x4plus" in listed and "unlisted" in listed and "srresnet-l1-x4" in listed
