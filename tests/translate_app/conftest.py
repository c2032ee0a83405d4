"""Fixtures for the translation app: a tiny Cityscapes tree and test-made network weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_frame(root: Path, split: str, city: str, frame: str, seed: int, photo: bool = True, size=(128, 256)):
    """Label ids 0..33 in blocky regions, instance ids (class * 1000 + k for cars), optional photo."""
    rng = np.random.default_rng(seed)
    H, W = size
    labels = np.full((H, W), 7, np.uint8)  # road
    labels[: H // 3] = 23  # sky
    labels[H // 3 : H // 2, : W // 2] = 11  # building
    inst = labels.astype(np.uint16).copy()
    for k in range(3):  # three cars
        y, x = rng.integers(H // 2, H - 12), rng.integers(0, W - 24)
        labels[y : y + 10, x : x + 20] = 26
        inst[y : y + 10, x : x + 20] = 26000 + k
    gt = root / "gtFine" / split / city
    gt.mkdir(parents=True, exist_ok=True)
    Image.fromarray(labels, "L").save(gt / f"{frame}_gtFine_labelIds.png")
    Image.fromarray(inst.astype(np.uint16)).save(gt / f"{frame}_gtFine_instanceIds.png")
    if photo:
        img = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        img[labels == 23] = (120, 160, 220)
        img[labels == 7] = (90, 90, 90)
        d = root / "leftImg8bit" / split / city
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"{frame}_leftImg8bit.png")


@pytest.fixture
def city_root(tmp_path) -> Path:
    root = tmp_path / "cityscapes"
    for k in range(3):
        write_frame(root, "train", "aachen", f"aachen_00000{k}_000019", k)
    for k in range(2):
        write_frame(root, "val", "frankfurt", f"frankfurt_00000{k}_000019", 10 + k)
    write_frame(root, "val", "lindau", "lindau_000000_000019", 20, photo=False)
    return root
