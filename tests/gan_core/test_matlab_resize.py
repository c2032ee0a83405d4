"""gan_core.matlab_resize: MATLAB's bicubic imresize without pyiqa.

Oracles: a float64 transcription of MATLAB's ``contributions`` (1-based, written out below, loop by loop),
pyiqa's port (bit-equal; skipped without the metrics extra) and the MATLAB-made Set5 / Set14 LR files
(skipped without ../shared). Inputs are random tensors the tests make.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gan_core.matlab_resize import imresize, resize_axis


def _matlab_1d(v: np.ndarray, n_out: int, scale: float) -> np.ndarray:
    """MATLAB imresize along one axis, float64, as its ``contributions`` function defines it (1-based)."""

    def cubic(x):
        ax = np.abs(x)
        return (1.5 * ax**3 - 2.5 * ax**2 + 1) * (ax <= 1) + (-0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2) * (
            (ax > 1) & (ax <= 2)
        )

    n_in = len(v)
    width = 4.0 / scale if scale < 1 else 4.0
    out = np.zeros(n_out)
    for x in range(1, n_out + 1):
        u = x / scale + 0.5 * (1 - 1 / scale)
        left = math.floor(u - width / 2)
        taps = np.arange(left, left + math.ceil(width) + 2)
        w = scale * cubic(scale * (u - taps)) if scale < 1 else cubic(u - taps)
        w = w / w.sum()
        idx = taps - 1  # 0-based, mirrored with the edge repeated
        idx = np.where(idx < 0, -idx - 1, idx)
        idx = np.where(idx >= n_in, 2 * n_in - 1 - idx, idx)
        out[x - 1] = (w * v[idx]).sum()
    return out


def _matlab_2d(img: np.ndarray, scale: float) -> np.ndarray:
    h, w = img.shape
    y = np.stack([_matlab_1d(img[:, j], math.ceil(h * scale), scale) for j in range(w)], axis=1)
    return np.stack([_matlab_1d(y[i], math.ceil(w * scale), scale) for i in range(y.shape[0])], axis=0)


@pytest.mark.parametrize("scale", [0.25, 0.5, 1 / 3, 0.7, 2, 3, 4])
def test_matches_matlab_contributions_in_float64(scale):
    img = torch.rand(13, 17, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ours = imresize(img, scale=scale)
    ref = _matlab_2d(img.numpy(), scale)
    assert ours.shape == ref.shape == (math.ceil(13 * scale), math.ceil(17 * scale))
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-12)


def test_shapes_dtypes_and_constant_images():
    x = torch.full((2, 3, 16, 24), 0.3)
    y = imresize(x, scale=0.25)
    assert y.shape == (2, 3, 4, 6) and y.dtype == torch.float32
    torch.testing.assert_close(y, torch.full_like(y, 0.3))  # taps sum to 1
    assert imresize(x[0, 0], size=(5, 7)).shape == (5, 7)
    assert imresize(x[0], scale=4).shape == (3, 64, 96)
    assert imresize(torch.zeros(1, 1, 3, 2), scale=4).shape == (1, 1, 12, 8)  # smaller than the kernel: mirrored
    one = x[:, :1]
    assert resize_axis(one, -1, 24, 1.0) is one  # scale 1: unchanged


def test_round_between_is_matlab_uint8_behaviour():
    x = torch.randint(0, 256, (1, 1, 32, 32), generator=torch.Generator().manual_seed(2)).float()
    a = imresize(x, scale=0.25, round_between=True)
    b = resize_axis(resize_axis(x, -2, 8, 0.25).round().clamp(0, 255), -1, 8, 0.25)
    assert torch.equal(a, b)


@pytest.mark.parametrize("bad", [{"scale": 0}, {"scale": float("nan")}, {}, {"scale": 2, "size": (4, 4)}])
def test_bad_arguments(bad):
    with pytest.raises(ValueError):
        imresize(torch.zeros(1, 1, 8, 8), **bad)


def test_equal_bit_for_bit_to_pyiqa():
    pytest.importorskip("pyiqa", reason="pyiqa (metrics extra) not installed")
    from pyiqa.matlab_utils.resize import imresize as pyiqa_imresize

    g = torch.Generator().manual_seed(0)
    for shape in [(1, 3, 64, 48), (2, 1, 37, 53), (1, 3, 160, 160)]:
        x = torch.rand(shape, generator=g)
        for scale in (0.25, 0.5, 1 / 3, 0.7, 2, 3, 4):
            assert torch.equal(imresize(x, scale=scale), pyiqa_imresize(x, scale=scale)), (shape, scale)


def test_close_to_the_matlab_made_lr_files(shared_data):
    from sr_app.data import load_rgb

    agree = total = 0
    for name in ("baby", "bird", "butterfly", "head", "woman"):
        hr = torch.from_numpy(load_rgb(shared_data / "sr/Set5/HR" / f"{name}.png")).permute(2, 0, 1).float()
        lr = torch.from_numpy(load_rgb(shared_data / "sr/Set5/LR_bicubic/X4" / f"{name}x4.png")).permute(2, 0, 1)
        ours = imresize(hr, scale=0.25, round_between=True).round().clamp(0, 255)
        agree += int((ours == lr.float()).sum())
        total += lr.numel()
    assert agree / total > 0.98  # the MATLAB files agree with a correct re-implementation on ~99% of pixels
