"""Metrics: known values, an independent NumPy/SciPy re-implementation of BasicSR's formulas, pyiqa
configured the same way, BasicSR's published numbers, NIQE against MATLAB, LPIPS plumbing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.signal import convolve2d

from gan_core.metrics import psnr, rgb_to_y, ssim
from sr_app.data import load_rgb


def numpy_psnr_ssim(a8: np.ndarray, b8: np.ndarray, crop: int) -> tuple[float, float]:
    """BasicSR's numpy protocol written out (uint8 HWC RGB in): MATLAB Y in float64, crop, PSNR, SSIM."""

    def y(img):
        img = img.astype(np.float64) / 255.0
        return img @ np.array([65.481, 128.553, 24.966]) + 16.0

    a, b = y(a8)[crop:-crop, crop:-crop], y(b8)[crop:-crop, crop:-crop]
    p = 10 * np.log10(255.0**2 / np.mean((a - b) ** 2))
    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))
    win = np.outer(g / g.sum(), g / g.sum())

    def f(x):
        return convolve2d(x, win[::-1, ::-1], mode="valid")

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu1, mu2 = f(a), f(b)
    s11, s22, s12 = f(a * a) - mu1**2, f(b * b) - mu2**2, f(a * b) - mu1 * mu2
    smap = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1**2 + mu2**2 + c1) * (s11 + s22 + c2))
    return float(p), float(smap.mean())


def test_known_values_and_identity():
    a = torch.zeros(1, 3, 20, 20)
    b = torch.full((1, 3, 20, 20), 10 / 255)
    assert float(psnr(a, b, crop_border=0, y_channel=False)) == pytest.approx(10 * np.log10(255**2 / 100))
    assert float(psnr(a, a)) == float("inf") and float(ssim(a, a)) == pytest.approx(1.0)
    y = rgb_to_y(torch.tensor([[[[255.0]], [[255.0]], [[255.0]]]]))
    assert float(y) == pytest.approx(235.0, abs=1e-3)  # white is 235 in studio range
    with pytest.raises(ValueError, match="sizes differ"):
        psnr(a, torch.zeros(1, 3, 20, 21))


def _pair(shared_data, name):
    hr = load_rgb(shared_data / "sr" / "Set14" / "HR" / f"{name}.png")
    lr = load_rgb(shared_data / "sr" / "Set14" / "LR_bicubic" / "X4" / f"{name}x4.png")
    up = torch.nn.functional.interpolate(torch.from_numpy(lr).permute(2, 0, 1)[None].float() / 255, scale_factor=4,
                                         mode="bicubic", align_corners=False).clamp(0, 1)  # fmt: skip
    return hr, (up[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


@pytest.mark.parametrize("name", ["baboon", "monarch", "zebra"])
def test_matches_independent_numpy_implementation(shared_data, name):
    hr, up = _pair(shared_data, name)
    ref_p, ref_s = numpy_psnr_ssim(up, hr, 4)
    t = lambda a: torch.from_numpy(a).permute(2, 0, 1).float() / 255  # noqa: E731
    assert float(psnr(t(up), t(hr), 4)) == pytest.approx(ref_p, abs=1e-9)
    assert float(ssim(t(up), t(hr), 4)) == pytest.approx(ref_s, abs=1e-9)


def test_matches_pyiqa_configured_the_same_way(shared_data):
    from pyiqa.archs.psnr_arch import PSNR
    from pyiqa.archs.ssim_arch import SSIM

    hr, up = _pair(shared_data, "comic")
    a = torch.from_numpy(up).permute(2, 0, 1)[None].double() / 255
    b = torch.from_numpy(hr).permute(2, 0, 1)[None].double() / 255
    p_iqa = float(PSNR(test_y_channel=True, crop_border=4, color_space="ycbcr")(a, b))
    s_iqa = float(SSIM(test_y_channel=True, crop_border=4, color_space="ycbcr")(a, b))
    assert float(psnr(a, b, 4)) == pytest.approx(p_iqa, abs=2e-3)  # pyiqa rounds Y to integers
    assert float(ssim(a, b, 4)) == pytest.approx(s_iqa, abs=2e-4)


def test_close_to_basicsr_published_baboon_values(shared_data):
    """BasicSR's metrics README: bicubic baboon vs GT, crop 4: RGB 20.419710 / 0.391853, Y 22.441898 / 0.453097.
    Their bicubic file is not available; we rebuild it as MATLAB's imresize(LR, 4) with the uint8
    intermediate (pyiqa's port), so agreement is expected to ~0.01 dB, not to the last digit."""
    from pyiqa.matlab_utils.resize import resize_1d

    hr = torch.from_numpy(load_rgb(shared_data / "sr/Set14/HR/baboon.png")).permute(2, 0, 1)[None].float() / 255
    lr = torch.from_numpy(load_rgb(shared_data / "sr/Set14/LR_bicubic/X4/baboonx4.png")).permute(2, 0, 1).float()
    y = resize_1d(lr[:, None], -2, size=lr.shape[1] * 4, scale=4).round().clamp(0, 255)
    y = resize_1d(y, -1, size=lr.shape[2] * 4, scale=4).round().clamp(0, 255)
    bic = y[:, 0][None] / 255
    assert float(psnr(bic, hr, 4, y_channel=False)) == pytest.approx(20.419710, abs=0.01)
    assert float(psnr(bic, hr, 4)) == pytest.approx(22.441898, abs=0.01)
    assert float(ssim(bic, hr, 4, y_channel=False)) == pytest.approx(0.391853, abs=0.0015)
    assert float(ssim(bic, hr, 4)) == pytest.approx(0.453097, abs=0.0015)


def test_niqe_matches_matlab_on_baboon(shared_data):
    from gan_core.metrics.niqe import niqe

    img = torch.from_numpy(load_rgb(shared_data / "niqe" / "baboon_basicsr_test.png")).permute(2, 0, 1).float() / 255
    value = float(niqe(img))
    assert value == pytest.approx(5.72957338, abs=0.01)  # MATLAB R2021a niqe (BasicSR's docstring)
    assert np.isnan(float(niqe(img[:, :100, :100])))  # too small for NIQE's 96x96 blocks at two scales


def test_lpips_plumbing_with_test_made_trunk(tmp_path):
    """The AlexNet trunk here is random (made by the test; the ImageNet file cannot be downloaded here):
    this checks loading and the lpips computation, not perceptual values."""
    import lpips as lpips_pkg
    from torchvision.models import alexnet

    from gan_core.metrics.lpips import LPIPS

    torch.manual_seed(0)
    net = alexnet(weights=None)
    path = tmp_path / "alexnet-test.pth"
    torch.save(net.state_dict(), path)
    metric = LPIPS(path)
    a, b = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    d = metric(a, b)
    assert d.shape == (2,) and (d > 0).all()
    torch.testing.assert_close(metric(a, a), torch.zeros(2, dtype=torch.float64), atol=1e-7, rtol=0)
    torch.testing.assert_close(metric(a, b), metric(b, a))
    ref = lpips_pkg.LPIPS(net="alex", pnet_rand=True, verbose=False)
    ref.net.slice1[0].load_state_dict(net.features[0].state_dict())
    for sl, idx in ((ref.net.slice2, 3), (ref.net.slice3, 6), (ref.net.slice4, 8), (ref.net.slice5, 10)):
        getattr(sl, str(idx)).load_state_dict(net.features[idx].state_dict())
    with torch.no_grad():
        expected = ref(a, b, normalize=True).reshape(-1).double()
    torch.testing.assert_close(d, expected)
