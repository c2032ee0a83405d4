"""SR data: MATLAB-bicubic LR parity, aligned crops, modes, skipped files, empty datasets, determinism."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sr_app.data import SRTrainDataset, SRValDataset, TrainSampler, bicubic_downscale, list_images, load_rgb

from .conftest import write_images


@pytest.mark.parametrize("dataset", ["Set5", "Set14"])
def test_lr_matches_matlab_files(shared_data, dataset):
    root = shared_data / "sr" / dataset
    agree, total, worst = 0, 0, 0
    for hr_path in sorted((root / "HR").glob("*.png")):
        hr = torch.from_numpy(load_rgb(hr_path).transpose(2, 0, 1)).float() / 255
        lr = bicubic_downscale(hr, 4).mul(255).round().clamp(0, 255)
        ref = torch.from_numpy(load_rgb(root / "LR_bicubic" / "X4" / f"{hr_path.stem}x4.png").transpose(2, 0, 1))
        assert lr.shape == ref.shape, hr_path.name
        diff = (lr - ref.float()).abs()
        agree += int((diff == 0).sum())
        total += diff.numel()
        worst = max(worst, float(diff.max()))
    assert agree / total >= 0.97, f"{dataset}: {100 * agree / total:.2f}% of pixels equal (worst diff {worst})"


def test_bicubic_downscale_shapes_and_known_values():
    x = torch.rand(2, 3, 16, 24)
    assert bicubic_downscale(x, 4).shape == (2, 3, 4, 6)
    assert bicubic_downscale(x[0], 2).shape == (3, 8, 12)
    flat = torch.full((1, 3, 12, 12), 77 / 255)  # an 8-bit value: constants are preserved
    torch.testing.assert_close(bicubic_downscale(flat, 4), torch.full((1, 3, 3, 3), 77 / 255))
    torch.testing.assert_close(
        bicubic_downscale(flat * 0 + 0.3, 4, uint8_intermediate=False), flat[..., :3, :3] * 0 + 0.3
    )
    with pytest.raises(ValueError, match="positive integer"):
        bicubic_downscale(x, 1.5)


def test_aligned_crops_flip_and_noise(hr_folder):
    ds = SRTrainDataset([hr_folder], scale=4, lr_patch=8, hflip=False, dequantize=False, seed=3)
    assert len(ds) == 6
    item = ds[(0, 2)]
    lr, hr = item["lr"], item["hr"]
    assert lr.shape == (3, 8, 8) and hr.shape == (3, 32, 32)
    # aligned: the LR crop is (up to the 8-bit rounding of LR files) the bicubic LR of the HR crop's region
    assert (bicubic_downscale(hr, 4) - lr).abs()[:, 2:-2, 2:-2].max() < 2.5 / 255
    same = ds[(0, 2)]
    assert torch.equal(same["lr"], lr)  # a function of (seed, epoch, index)
    assert not torch.equal(ds[(1, 2)]["lr"], lr)
    noisy = SRTrainDataset([hr_folder], scale=4, lr_patch=8, hflip=False, dequantize=True, seed=3)[(0, 2)]
    delta = noisy["hr"] * 256 - hr * 255  # (255 x + u) / 256 with u in [0, 1)
    assert delta.min() >= 0 and delta.max() < 1 and delta.std() > 0.2
    flipped = 0
    for seed in range(16):  # same crop with and without the flip: identical or mirrored, about half mirrored
        a = SRTrainDataset([hr_folder], 4, 8, hflip=True, dequantize=False, seed=seed)[(0, 0)]["hr"]
        b = SRTrainDataset([hr_folder], 4, 8, hflip=False, dequantize=False, seed=seed)[(0, 0)]["hr"]
        assert torch.equal(a, b) or torch.equal(a, b.flip(-1))
        flipped += not torch.equal(a, b)
    assert 3 <= flipped <= 13


def test_modes_small_corrupt_and_empty(tmp_path, caplog):
    root = tmp_path / "mixed"
    root.mkdir()
    Image.fromarray(np.full((48, 48), 128, np.uint8), "L").save(root / "gray.png")
    Image.fromarray(np.zeros((48, 48, 4), np.uint8), "RGBA").save(root / "rgba.png")
    Image.fromarray(np.zeros((48, 48, 3), np.uint8)).convert("P").save(root / "pal.png")
    Image.fromarray(np.zeros((20, 200, 3), np.uint8)).save(root / "thin.png")  # smaller than the crop
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "notes.txt").write_text("not an image")
    good = tmp_path / "g.png"
    Image.fromarray(np.zeros((48, 48, 3), np.uint8)).save(good)
    (root / "truncated.png").write_bytes(good.read_bytes()[:60])
    with caplog.at_level(logging.WARNING):
        ds = SRTrainDataset([root], scale=4, lr_patch=8)
    assert len(ds) == 3 and len(ds.too_small) == 1 and len(ds.unreadable) == 2
    assert "broken.png" in caplog.text and "truncated.png" in caplog.text
    assert sum("smaller than the 32x32" in r.message for r in caplog.records) == 1
    assert ds[0]["hr"].shape == (3, 32, 32)  # gray became RGB
    with pytest.raises(ValueError, match=r"no usable training image .* 2 image file\(s\) found, 1 smaller"):
        SRTrainDataset([root], scale=4, lr_patch=8, exclude=["gray", "rgba", "pal", "broken"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="0 image file"):
        SRTrainDataset([tmp_path / "empty"])
    with pytest.raises(ValueError, match="not found"):
        SRTrainDataset([tmp_path / "nope"])


def test_validation_layouts(shared_data, val_folder):
    edsr = SRValDataset(shared_data / "sr" / "Set5", scale=4)
    assert len(edsr) == 5 and edsr[0]["hr"].shape[1] == 4 * edsr[0]["lr"].shape[1]
    hr_only = SRValDataset(val_folder, scale=4)
    assert len(hr_only) == 2 and hr_only[1]["lr"].shape == (3, 12, 14)
    small = SRValDataset(shared_data / "sr" / "Set14", scale=4, max_size=64)
    assert max(small[0]["hr"].shape[1:]) <= 64


def test_sampler_is_resumable_and_sharded():
    full = TrainSampler(10, seed=4)
    it = iter(full)
    stream = [next(it) for _ in range(25)]
    assert sorted(i for e, i in stream[:10]) == list(range(10)) and {e for e, _ in stream[10:20]} == {1}
    resumed = TrainSampler(10, seed=4, start=13)
    it2 = iter(resumed)
    assert [next(it2) for _ in range(12)] == stream[13:25]
    r0, r1 = iter(TrainSampler(10, 0, 2, seed=4)), iter(TrainSampler(10, 1, 2, seed=4))
    a, b = {next(r0)[1] for _ in range(5)}, {next(r1)[1] for _ in range(5)}
    assert a.isdisjoint(b) and a | b == set(range(10))


def test_list_images_filters_extensions(hr_folder):
    (hr_folder / "readme.txt").write_text("x")
    (hr_folder / "UPPER.PNG").write_bytes((hr_folder / "img000.png").read_bytes())
    files = list_images(hr_folder)
    assert len(files) == 7 and all(f.suffix.lower() in (".png", ".jpg", ".bmp") for f in files)
    assert len(list_images(hr_folder, recursive=False)) == 4


def _val_folder_with_bad_files(root: Path) -> dict[str, str]:
    """Two usable HR images and four that cannot be used; returns bad file name -> expected reason text."""
    write_images(root, [(40, 44), (48, 48)], seed=7)
    (root / "empty.png").write_bytes(b"")
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(root / "one.png")
    Image.fromarray(np.zeros((12, 60, 3), np.uint8)).save(root / "thin.png")  # 12 px < 2*4 + 11 after the crop
    good = (root / "img000.png").read_bytes()
    (root / "cut.png").write_bytes(good[: len(good) // 2])
    return {"empty.png": "unreadable", "one.png": "too small: 1x1 px", "thin.png": "too small: 60x12 px",
            "cut.png": "unreadable"}  # fmt: skip


def test_validation_folder_skips_unusable_files_with_a_warning(tmp_path, caplog):
    root = tmp_path / "val"
    bad = _val_folder_with_bad_files(root)
    with caplog.at_level(logging.WARNING):
        ds = SRValDataset(root, scale=4)
    assert [it["name"] for it in ds] == ["img000", "img001"] and ds[0]["hr"].shape == (3, 40, 44)
    assert {f.name: reason for f, reason in ds.failed}.keys() == bad.keys()
    for f, reason in ds.failed:
        assert bad[f.name] in reason and str(f) in caplog.text
    for name in ("img000.png", "img001.png"):
        (root / name).unlink()
    with pytest.raises(ValueError, match=r"no usable image in validation folder .*: all 4 failed"):
        SRValDataset(root, scale=4)
    assert len(SRValDataset(root, scale=4, allow_empty=True)) == 0


@pytest.mark.slow
def test_sr_train_warns_about_bad_validation_images_and_trains(tmp_path, hr_folder, caplog):
    from gan_core.config import load_config
    from sr_app.config import SRTrainConfig
    from sr_app.train import train

    val = tmp_path / "val"
    bad = _val_folder_with_bad_files(val)
    repo = Path(__file__).resolve().parents[2]
    sets = [f"data.train_dirs=[{hr_folder}]", f"data.val_dirs=[{val}]", "train.device=cpu", "loss.vgg_loss_weight=0",
            "train.steps=2", "log.eval_every=2"]  # fmt: skip
    with caplog.at_level(logging.WARNING):
        train(load_config(SRTrainConfig, repo / "configs" / "sr_tiny.yaml", sets), tmp_path / "run")
    assert (tmp_path / "run" / "ckpt" / "step_00000002.pt").is_file()
    for name in bad:
        assert f"skipping validation image {val / name}" in caplog.text
