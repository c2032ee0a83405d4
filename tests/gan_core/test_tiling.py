"""Tiling: spans cover the image, blend weights sum to 1, tiled output equals untiled output."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
import torch
from torch import nn

from gan_core.tiling import _axis_weights, quantize, quantize_into, tile_spans, upscale_tiled


@pytest.mark.parametrize(("length", "tile", "overlap"), [(100, 40, 8), (505, 256, 8), (64, 64, 8), (33, 20, 4)])
def test_spans_and_weights(length, tile, overlap):
    spans = tile_spans(length, tile, overlap)
    assert spans[0][0] == 0 and spans[-1][1] == length
    for (a0, a1), (b0, _) in pairwise(spans):
        assert a1 - b0 >= overlap and b0 > a0
    for scale in (1, 4):
        total = np.zeros(length * scale)
        for (s, e), w in zip(spans, _axis_weights(spans, scale), strict=True):
            total[s * scale : e * scale] += w
        np.testing.assert_allclose(total, 1.0, atol=1e-6)  # (505, 256, 8) has three spans meeting


def nearest_x2(x: torch.Tensor) -> torch.Tensor:
    return x.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)


def test_pointwise_fn_is_reproduced_exactly():
    img = torch.rand(3, 37, 53)
    out = np.zeros((74, 106, 3), np.float32)
    upscale_tiled(nearest_x2, img, 2, out, tile=16, pad=0, overlap=4)
    np.testing.assert_allclose(out, nearest_x2(img).permute(1, 2, 0).numpy(), atol=1e-6)


def test_conv_net_tiled_matches_untiled_within_one_level():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(8, 12, 3, padding=1), nn.PixelShuffle(2)).eval()  # fmt: skip

    def fn(x):
        with torch.no_grad():
            return torch.sigmoid(net(x))

    img = torch.rand(3, 70, 90)
    whole = np.zeros((140, 180, 3), np.uint8)
    tiled = np.zeros_like(whole)
    upscale_tiled(fn, img, 2, whole, tile=0)
    calls = []
    upscale_tiled(fn, img, 2, tiled, tile=32, pad=4, overlap=8, on_tile=lambda: calls.append(1))
    assert len(calls) == 12
    assert np.abs(whole.astype(int) - tiled.astype(int)).max() <= 1
    # with less context than the receptive field the blend still hides seams: small, smooth differences
    rough = np.zeros_like(whole)
    upscale_tiled(fn, img, 2, rough, tile=32, pad=1, overlap=8)
    assert np.abs(whole.astype(int) - rough.astype(int)).max() <= 4
    # several tiles per call of fn: the same result (a row of tiles: 4 windows of one size)
    batched = np.zeros_like(whole)
    sizes = []
    upscale_tiled(lambda x: sizes.append(x.shape[0]) or fn(x), img, 2, batched, tile=32, pad=4, overlap=8, batch=2)
    assert sizes == [2, 2] * 3 and np.abs(batched.astype(int) - tiled.astype(int)).max() <= 1


def test_uint16_and_float_outputs():
    img = torch.rand(1, 20, 20)
    for dtype, top in ((np.uint16, 65535), (np.float32, 1)):
        out = np.zeros((40, 40, 1), dtype)
        upscale_tiled(nearest_x2, img, 2, out, tile=8, pad=0, overlap=2)
        ref = nearest_x2(img).permute(1, 2, 0).numpy() * top
        np.testing.assert_allclose(out.astype(np.float64), np.rint(ref) if top > 1 else ref, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_quantize_on_the_device_equals_quantize_into(dtype):
    x = torch.rand(7, 9, 3) * 1.2 - 0.1  # values outside [0, 1] too
    x[0, 0, 0] = 0.5 / 255  # an exact half: both round half to even
    ref = np.empty(x.shape, dtype)
    quantize_into(ref, x.numpy().copy())
    got = quantize(x.clone(), dtype)
    assert got.numpy().dtype == ref.dtype and np.array_equal(got.numpy(), ref)
