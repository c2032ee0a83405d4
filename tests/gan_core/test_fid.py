"""FID: zero on identical sets, symmetric, equal to pyiqa's pipeline with the same Inception weights,
cached statistics that remember their protocol."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from gan_core.metrics import fid as F


def image_set(folder, n, seed, shift=0.0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for k in range(n):
        yy, xx = np.mgrid[0:96, 0:128] / 96.0
        img = np.stack(
            [np.sin(rng.uniform(2, 9) * xx + c + shift) * np.cos(rng.uniform(2, 9) * yy) for c in range(3)], 2
        )
        Image.fromarray(((img * 0.5 + 0.5) * 255).astype(np.uint8)).save(folder / f"{k:03d}.png")
    return folder


def load(folder):
    return [
        torch.from_numpy(np.asarray(Image.open(p), np.float32) / 255).permute(2, 0, 1) for p in sorted(folder.iterdir())
    ]


def test_frechet_distance_known_values():
    mu, sigma = np.zeros(3), np.eye(3)
    assert F.frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-9)
    # ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^1/2) with S1 = I, S2 = 4 I: 1 + 3 + 12 - 12
    assert F.frechet_distance(mu, sigma, np.array([1.0, 0, 0]), 4 * sigma) == pytest.approx(4.0)


def test_fid_identity_symmetry_and_pyiqa_parity(tmp_path, fid_weights, monkeypatch):
    a = image_set(tmp_path / "a", 8, 0)
    b = image_set(tmp_path / "b", 8, 1, shift=1.0)
    net = F.FIDInception(fid_weights)
    sa = F.FIDStats.from_images(load(a), net, batch_size=5)
    sb = F.FIDStats.from_images(load(b), net, batch_size=5)
    assert F.fid_from_stats(sa, sa) == pytest.approx(0.0, abs=1e-4)  # rounding on traces of ~1e2
    fab, fba = F.fid_from_stats(sa, sb), F.fid_from_stats(sb, sa)
    assert fab > 1e-3 and fab == pytest.approx(fba, rel=1e-6)
    # pyiqa's own pipeline (its InceptionV3, folder reader, legacy_pytorch resize), pointed at the same
    # test-made weights through its download cache, gives the same features ...
    import shutil

    import pyiqa.utils.download_util as dl
    from pyiqa.archs import fid_arch
    from pyiqa.archs.inception import InceptionV3

    shutil.copy(fid_weights, tmp_path / "pt_inception-2015-12-05-6726825d.pth")
    monkeypatch.setattr(dl, "DEFAULT_CACHE_DIR", str(tmp_path))
    model = InceptionV3(output_blocks=[3]).eval()
    kw = dict(
        model=model, num_workers=0, batch_size=5, device=torch.device("cpu"), mode="legacy_pytorch", verbose=False
    )
    fa, fb = fid_arch.get_folder_features(str(a), **kw), fid_arch.get_folder_features(str(b), **kw)
    ours = F.FIDStats.from_features(fa)
    np.testing.assert_allclose(ours.mu, sa.mu, atol=1e-4)
    assert F.fid_from_stats(F.FIDStats.from_features(fa), F.FIDStats.from_features(fb)) == pytest.approx(fab, abs=1e-3)
    # ... and its scipy-sqrtm Frechet distance agrees with ours (on well-conditioned 128-d statistics: its
    # general matrix square root takes minutes on the singular 2048-d covariances of a few images)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((400, 128)), rng.standard_normal((400, 128)) * 1.3 + 0.2
    m1, c1, m2, c2 = x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False)
    assert F.frechet_distance(m1, c1, m2, c2) == pytest.approx(
        float(fid_arch.frechet_distance(m1, c1, m2, c2)), rel=1e-9
    )


def test_stats_cache_round_trip_and_protocol_refusal(tmp_path, fid_weights):
    net = F.FIDInception(fid_weights)
    s = F.FIDStats.from_images(load(image_set(tmp_path / "a", 4, 0)), net, source="test set")
    F.save_stats(tmp_path / "s.npz", s)
    back = F.load_stats(tmp_path / "s.npz")
    assert back.n == 4 and back.source == "test set" and np.allclose(back.sigma, s.sigma)
    other = F.FIDStats(s.mu, s.sigma, 4, {**F.PROTOCOL, "resize": "bicubic"})
    F.save_stats(tmp_path / "o.npz", other)
    with pytest.raises(ValueError, match="another FID protocol"):
        F.load_stats(tmp_path / "o.npz")
    with pytest.raises(ValueError, match="different protocols"):
        F.fid_from_stats(s, other)
    np.savez(tmp_path / "bare.npz", mu=s.mu, sigma=s.sigma)
    with pytest.raises(ValueError, match="without a protocol record"):
        F.load_stats(tmp_path / "bare.npz")
