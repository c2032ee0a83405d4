"""The Python API without traps: values read by dtype, floats checked, BGR for OpenCV, dtype and device kept.

The model is the ``tiny_model`` fixture (a random-weight SRGenerator the tests release themselves); the
oracle of every input kind is the PIL / uint8 path the command line uses.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sr_app.infer import Upscaler
from sr_app.models import SRGenerator

from .conftest import smooth_image


@pytest.fixture
def up(tiny_model) -> Upscaler:
    return Upscaler.from_pretrained(tiny_model, device="cpu", precision="fp32")


@pytest.fixture
def rgb() -> np.ndarray:
    return smooth_image(12, 14, 3)


def test_uint8_tensor_as_torchvision_reads_it(up, rgb):
    """A (C, H, W) uint8 tensor (torchvision.io.read_image) is 0-255: same pixels as the PIL path, not white."""
    reference = np.asarray(up.upscale(Image.fromarray(rgb)))
    t = torch.from_numpy(rgb).permute(2, 0, 1).contiguous()
    out = up.upscale(t)
    assert out.dtype == torch.uint8 and out.shape == (3, 48, 56)
    assert np.array_equal(out.permute(1, 2, 0).numpy(), reference)
    assert reference.mean() < 250  # the old trap: a uint8 tensor read as floats came back white
    batch = up(torch.stack([t, t.flip(-1)]))
    assert batch.dtype == torch.uint8 and batch.shape == (2, 3, 48, 56) and torch.equal(batch[0], out)


def test_dtypes_are_read_by_range_and_kept(up, rgb):
    u8 = up.upscale(rgb)
    f32 = up.upscale(rgb.astype(np.float32) / 255)
    assert u8.dtype == np.uint8 and f32.dtype == np.float32
    assert np.abs(np.rint(f32 * 255) - u8).max() == 0  # uint8 out is the float result rounded
    f64 = up.upscale(rgb.astype(np.float64) / 255)
    assert f64.dtype == np.float64 and np.array_equal(f64, f32.astype(np.float64))
    f16 = up.upscale((rgb / 255).astype(np.float16))
    assert f16.dtype == np.float16 and np.abs(f16.astype(np.float32) - f32).max() < 2e-3
    u16 = up.upscale(rgb.astype(np.uint16) * 257)
    assert u16.dtype == np.uint16 and np.abs(u16 / 65535.0 - f32).max() < 1e-4
    gray = up.upscale(rgb[..., 0])  # (H, W) in, (sH, sW) out
    assert gray.shape == (48, 56) and gray.dtype == np.uint8
    t64 = up.upscale(torch.from_numpy(rgb.astype(np.float64) / 255).permute(2, 0, 1))
    assert t64.dtype == torch.float64 and torch.equal(t64, torch.from_numpy(f64).permute(2, 0, 1))
    bf = up.upscale(torch.from_numpy(rgb / 255).permute(2, 0, 1).to(torch.bfloat16))
    assert bf.dtype == torch.bfloat16 and bf.shape == (3, 48, 56)
    t16 = up.upscale(torch.from_numpy(rgb.astype(np.int32) * 257).to(torch.uint16).permute(2, 0, 1))
    assert t16.dtype == torch.uint16 and np.array_equal(t16.permute(1, 2, 0).numpy(), u16)
    assert up.upscale(torch.rand(1, 9, 10)).shape == (1, 36, 40)
    assert up.upscale(torch.rand(9, 10)).shape == (36, 40)


@pytest.mark.parametrize(
    ("values", "advice"),
    [
        (lambda a: a.astype(np.float32), "8-bit values? divide by 255"),
        (lambda a: a.astype(np.float64) * 257, "16-bit values? divide by 65535"),
        (lambda a: a / 127.5 - 1, "use (x + 1) / 2"),
        (lambda a: a / 255 * 1.2 - 0.1, "np.clip(x, 0, 1)"),
    ],
)
def test_floats_outside_0_1_are_an_error_that_says_how_to_scale(up, rgb, values, advice):
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\], this one spans") as info:
        up.upscale(values(rgb))
    assert advice in str(info.value)
    with pytest.raises(ValueError, match="divide by 255"):
        up.upscale(torch.from_numpy(rgb).float().permute(2, 0, 1))


def test_what_has_no_single_meaning_is_refused(up, rgb):
    with pytest.raises(TypeError, match=r"^an array of dtype int32 has no single meaning.*astype\(np.uint16\)"):
        up.upscale(rgb.astype(np.int32))
    with pytest.raises(TypeError, match=r"^a tensor of dtype torch\.int64 .*x\.to\(torch\.uint16\)"):
        up.upscale(torch.from_numpy(rgb).long().permute(2, 0, 1))
    with pytest.raises(ValueError, match="holds NaN or Inf"):
        up.upscale(np.full((4, 4, 3), np.nan, np.float32))
    with pytest.raises(ValueError, match=r"\(C, H, W\)\? use arr.transpose\(1, 2, 0\)"):
        up.upscale(rgb.transpose(2, 0, 1).copy())
    with pytest.raises(ValueError, match=r"\(H, W, C\)\? use t.permute\(2, 0, 1\)"):
        up.upscale(torch.from_numpy(rgb))
    with pytest.raises(ValueError, match="channel_order must be 'rgb' or 'bgr'"):
        up.upscale(rgb, channel_order="BGR")
    with pytest.raises(ValueError, match="a PIL image is always RGB"):
        up.upscale(Image.fromarray(rgb), channel_order="bgr")
    with pytest.raises(ValueError, match="outscale must be a finite number > 0"):
        up.upscale(rgb, outscale=float("nan"))


def test_bgr_in_bgr_out(up, rgb):
    """OpenCV's BGR(A) arrays: channel_order="bgr" gives the RGB result in BGR order, alpha kept last."""
    ref = up.upscale(rgb)
    assert np.array_equal(up.upscale(rgb[..., ::-1], channel_order="bgr"), ref[..., ::-1])
    rgba = np.concatenate([rgb, np.full((12, 14, 1), 200, np.uint8)], axis=2)
    bgra = rgba[..., [2, 1, 0, 3]]
    assert np.array_equal(up.upscale(bgra, channel_order="bgr"), up.upscale(rgba)[..., [2, 1, 0, 3]])
    t = torch.from_numpy(rgb[..., ::-1].copy()).permute(2, 0, 1)
    assert np.array_equal(up(t, channel_order="bgr").permute(1, 2, 0).numpy(), ref[..., ::-1])
    gray = rgb[..., :1]
    assert np.array_equal(up.upscale(gray, channel_order="bgr"), up.upscale(gray))  # no order to swap


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_tensor_comes_back_on_its_device(up, rgb):
    t = torch.from_numpy(rgb).permute(2, 0, 1).cuda()
    out = up.upscale(t)
    assert out.device == t.device and out.dtype == torch.uint8


def test_call_and_repr(up, rgb):
    assert np.array_equal(up(rgb), up.upscale(rgb)) and np.array_equal(up(rgb, 2), up.upscale(rgb, outscale=2))
    assert repr(up) == (
        "Upscaler(model='tiny-test', architecture='SRGenerator', scale=4, device='cpu', precision='fp32', "
        "tile='auto', tile_pad=24)"
    )
    params = sum(p.numel() for p in SRGenerator(channels=8, num_blocks=1).parameters())
    assert up.model_card == f"SRGenerator [8ch 1blocks] x4, {params:,} parameters, sha256 {up.sha256[:12]} (san-gan)"


def test_an_unknown_model_name_lists_only_models(monkeypatch):
    monkeypatch.setenv("SAN_WEIGHTS_DIR", "")
    with pytest.raises(FileNotFoundError) as info:
        Upscaler.from_pretrained("no-such-model")
    msg = str(info.value)
    assert msg.startswith("unknown model 'no-such-model': not in a weights manifest, and no no-such-model.safetensors")
    assert msg.endswith("known models: srresnet-l1-x4")
    assert "vgg19" not in msg and "alexnet" not in msg
