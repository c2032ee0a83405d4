"""The committed default model (weights/manifest.json ``default_sr_model``) on real benchmark images.

Oracles: MATLAB-made bicubic LR of Set14 (../shared/data), the published bicubic Y-PSNR, and the fp32 /
untiled runs of the same network as the reference for bf16 and for tiling.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from gan_core.image_io import read_image
from sr_app.cli import eval_main
from sr_app.infer import Upscaler, load_manifest_default


def test_default_model_is_named_and_loads():
    name = load_manifest_default()
    up = Upscaler.from_pretrained(None, device="cpu", precision="fp32")
    assert up.scale == 4 and up.name == name
    assert "l1" in name and "san" not in name  # a pixel-loss model is not called SAN-SRGAN


@pytest.mark.slow
def test_default_model_beats_bicubic_and_bf16_matches_fp32_on_set14(tmp_path, shared_data):
    means = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        args = ["--data", str(shared_data / "sr" / "Set14"), "--out", str(out), "--precision", precision, "--no-niqe"]
        assert eval_main(args) == 0
        means[precision] = json.loads((out / "results.json").read_text())["datasets"]["Set14"]
    fp32, bf16 = means["fp32"], means["bf16"]
    assert fp32["bicubic"]["psnr_y"] == pytest.approx(26.09, abs=0.02)  # MATLAB bicubic x4, Y, crop 4
    assert fp32["model"]["psnr_y"] >= fp32["bicubic"]["psnr_y"] + 1.0  # issue 4's quality bar
    assert abs(bf16["model"]["psnr_y"] - fp32["model"]["psnr_y"]) <= 0.05


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_default_model_tiled_equals_untiled(shared_data, precision):
    lr = read_image(shared_data / "sr" / "Set14" / "LR_bicubic" / "X4" / "monarchx4.png").pixels  # 192x128
    whole = Upscaler.from_pretrained(None, device="cpu", precision=precision, tile=0)
    tiled = Upscaler.from_pretrained(None, device="cpu", precision=precision, tile=64)  # 6 tiles, default pad
    a = whole.upscale_array(lr, np.uint8).astype(int)
    b = tiled.upscale_array(lr, np.uint8).astype(int)
    assert a.shape == b.shape == (512, 768, 3)
    assert np.abs(a - b).max() <= 1
