"""Cityscapes loading: channels, one-hot, instance edges against a brute-force oracle, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from translate_app.data import LABEL_NC, CityscapesDataset, colorize_labels, instance_edges, label_tensor

from .conftest import write_frame


def brute_force_edges(inst: np.ndarray) -> np.ndarray:
    H, W = inst.shape
    out = np.zeros((H, W), np.float32)
    for y in range(H):
        for x in range(W):
            for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
                yy, xx = y + dy, x + dx
                if 0 <= yy < H and 0 <= xx < W and inst[yy, xx] != inst[y, x]:
                    out[y, x] = 1
    return out


def test_instance_edges_oracle():
    rng = np.random.default_rng(0)
    inst = rng.integers(0, 3, (17, 23)) * 1000 + rng.integers(0, 2, (17, 23))
    np.testing.assert_array_equal(instance_edges(inst), brute_force_edges(inst))
    assert instance_edges(np.zeros((5, 5))).sum() == 0


def test_items_on_generated_tree(city_root):
    ds = CityscapesDataset(city_root, "train", size=(64, 128))
    assert len(ds) == 3
    item = ds[0]
    assert item["label"].shape == (36, 64, 128) and item["image"].shape == (3, 64, 128)
    assert torch.equal(item["label"][:LABEL_NC].sum(0), torch.ones(64, 128))  # one-hot
    assert -1 <= float(item["image"].min()) and float(item["image"].max()) <= 1
    inst = np.asarray(Image.open(city_root / "gtFine/train/aachen/aachen_000000_000019_gtFine_instanceIds.png")
                      .resize((128, 64), Image.NEAREST)).astype(np.int64)  # fmt: skip
    np.testing.assert_array_equal(item["label"][LABEL_NC].numpy(), brute_force_edges(inst))
    val = CityscapesDataset(city_root, "val", size=(64, 128))
    assert len(val) == 3 and "image" not in val[2]  # a label map without its photo is fine
    flip = CityscapesDataset(city_root, "train", size=(64, 128), flip=True, seed=1)
    flips = [not torch.equal(flip[(e, 0)]["label"], item["label"]) for e in range(12)]
    assert 0 < sum(flips) < 12
    for e in range(4):
        f = flip[(e, 0)]
        if not torch.equal(f["label"], item["label"]):
            assert torch.equal(f["label"], item["label"].flip(-1)) and torch.equal(f["image"], item["image"].flip(-1))


def test_errors_name_the_file(city_root, tmp_path):
    with pytest.raises(ValueError, match="label map without its photo"):
        CityscapesDataset(city_root, "val", require_images=True)
    lone = city_root / "leftImg8bit" / "train" / "aachen" / "aachen_000009_000019_leftImg8bit.png"
    Image.fromarray(np.zeros((8, 16, 3), np.uint8)).save(lone)
    with pytest.raises(ValueError, match=r"aachen_000009_000019_leftImg8bit\.png: photo without its label map"):
        CityscapesDataset(city_root, "train")
    lone.unlink()
    write_frame(tmp_path / "bad", "train", "x", "x_000000_000001", 0)
    lab = tmp_path / "bad/gtFine/train/x/x_000000_000001_gtFine_labelIds.png"
    Image.fromarray(np.full((16, 32), 40, np.uint8), "L").save(lab)
    with pytest.raises(ValueError, match=r"x_000000_000001_gtFine_labelIds\.png: unexpected label value\(s\) \[40\]"):
        CityscapesDataset(tmp_path / "bad", "train")[0]
    Image.fromarray(np.zeros((16, 32, 3), np.uint8)).save(lab)
    with pytest.raises(ValueError, match="label map must be a single-channel id image, got mode RGB"):
        CityscapesDataset(tmp_path / "bad", "train")[0]
    with pytest.raises(ValueError, match="no Cityscapes frames"):
        CityscapesDataset(tmp_path / "nothing", "train")


def test_shared_cityscapes_mini(shared_data):
    root = shared_data / "cityscapes_mini"
    train = CityscapesDataset(root, "train", require_images=True)
    assert len(train) == 4
    item = train[0]
    assert item["label"].shape == (36, 256, 512) and item["image"].shape == (3, 256, 512)
    assert 0.001 < float(item["label"][LABEL_NC].mean()) < 0.2  # instance edges are present and thin
    val = CityscapesDataset(root, "val")
    assert len(val) == 7 and all("image" not in val[i] for i in range(2))
    colors = colorize_labels(item["label"][:LABEL_NC].argmax(0).numpy())
    assert colors.shape == (256, 512, 3) and (colors == (128, 64, 128)).all(axis=2).any()  # road


def test_label_tensor_without_instances():
    t = label_tensor(np.array([[0, 34], [7, 7]]))
    assert t.shape == (36, 2, 2) and float(t[LABEL_NC].sum()) == 0 and float(t[34, 0, 1]) == 1
