"""Cityscapes for SAN-SPADE (SPADE's ``cityscapes`` dataset mode, docs/algorithms.md §4.1).

Standard tree: ``leftImg8bit/<split>/<city>/<frame>_leftImg8bit.png`` and
``gtFine/<split>/<city>/<frame>_gtFine_labelIds.png`` / ``_gtFine_instanceIds.png``. Everything is resized
to 512x256 (width 512, aspect 2): photos bicubic, label and instance maps nearest; a horizontal flip
(p = 0.5) in training only. Items are dicts:

* ``label``: (36, 256, 512) float32, one-hot of the 35 Cityscapes label ids (0..34) plus the instance-edge
  channel (1 where a 4-neighbour has another instance id; 0 everywhere without an instance map);
* ``image``: (3, 256, 512) float32 RGB in [-1, 1], when the photo exists;
* ``path``: the label file.

A label map without its photo is fine (inference); a photo without labels, a label value >= 35, a
label / instance map of the wrong mode, or an instance map whose size differs from its label map's is a
``ValueError`` naming the file.
"""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

__all__ = [
    "LABEL_NC",
    "CityscapesDataset",
    "colorize_labels",
    "instance_edges",
    "label_tensor",
    "load_instance_map",
    "load_label_map",
    "load_label_pair",
    "pair_instance_file",
    "resize_ids",
]

LABEL_NC = 35  # Cityscapes label ids 0..33 (+34 unused), SPADE's label_nc
SEMANTIC_NC = LABEL_NC + 1  # + instance edges
DEFAULT_SIZE = (256, 512)  # (H, W)

# Cityscapes palette by label id (cityscapesScripts labels.py); ids without a colour are black
_PALETTE = {
    7: (128, 64, 128), 8: (244, 35, 232), 9: (250, 170, 160), 10: (230, 150, 140), 11: (70, 70, 70),
    12: (102, 102, 156), 13: (190, 153, 153), 14: (180, 165, 180), 15: (150, 100, 100), 16: (150, 120, 90),
    17: (153, 153, 153), 18: (153, 153, 153), 19: (250, 170, 30), 20: (220, 220, 0), 21: (107, 142, 35),
    22: (152, 251, 152), 23: (70, 130, 180), 24: (220, 20, 60), 25: (255, 0, 0), 26: (0, 0, 142),
    27: (0, 0, 70), 28: (0, 60, 100), 29: (0, 0, 90), 30: (0, 0, 110), 31: (0, 80, 100), 32: (0, 0, 230),
    33: (119, 11, 32), 5: (111, 74, 0), 6: (81, 0, 81), 4: (20, 0, 0),
}  # fmt: skip


def instance_edges(inst: np.ndarray) -> np.ndarray:
    """(H, W) instance ids -> (H, W) float32, 1 where a 4-neighbour differs (both sides of each boundary)."""
    e = np.zeros(inst.shape, dtype=bool)
    dx = inst[:, 1:] != inst[:, :-1]
    dy = inst[1:, :] != inst[:-1, :]
    e[:, 1:] |= dx
    e[:, :-1] |= dx
    e[1:, :] |= dy
    e[:-1, :] |= dy
    return e.astype(np.float32)


def _read_id_map(path: Path, kind: str, modes: tuple[str, ...], size: tuple[int, int]) -> tuple[np.ndarray, str]:
    """(ids at ``size`` (H, W) as int64, nearest; the file's own size as "WxH") of a single-channel id PNG."""
    try:
        with Image.open(path) as im:
            if im.mode not in modes:
                raise ValueError(f"{path}: {kind} must be a single-channel id image, got mode {im.mode}")
            own = f"{im.size[0]}x{im.size[1]}"
            ids = np.asarray(im.resize((size[1], size[0]), Image.NEAREST)).astype(np.int64)
    except ValueError:
        raise
    except Exception as e:
        raise ValueError(f"{path}: cannot read the {kind} ({e})") from None
    return ids, own


def _check_label_values(path: Path | str, arr: np.ndarray) -> None:
    bad = (arr >= LABEL_NC) | (arr < 0)
    if bad.any():
        vals = sorted(set(np.unique(arr[bad]).tolist()))[:5]
        raise ValueError(f"{path}: unexpected label value(s) {vals}; Cityscapes label ids are 0..{LABEL_NC - 1}")


def load_label_map(path: str | Path, size: tuple[int, int] = DEFAULT_SIZE) -> np.ndarray:
    """Label-id PNG -> (H, W) int64 at ``size`` (nearest); validates mode and values."""
    path = Path(path)
    arr, _ = _read_id_map(path, "label map", ("L", "P", "I", "I;16"), size)
    _check_label_values(path, arr)
    return arr


def load_instance_map(path: Path, size: tuple[int, int]) -> np.ndarray:
    """Instance-id PNG -> (H, W) int64 at ``size`` (nearest); validates the mode."""
    return _read_id_map(Path(path), "instance map", ("I", "I;16", "L"), size)[0]


def load_label_pair(
    label_path: str | Path, instance_path: str | Path | None, size: tuple[int, int] = DEFAULT_SIZE
) -> tuple[np.ndarray, np.ndarray | None]:
    """(labels, instances or None), both (H, W) int64 at ``size``. The two files must have the same size
    (they describe the same pixels): otherwise a ValueError naming both files and both sizes."""
    label_path = Path(label_path)
    labels, label_size = _read_id_map(label_path, "label map", ("L", "P", "I", "I;16"), size)
    _check_label_values(label_path, labels)
    if instance_path is None:
        return labels, None
    instances, inst_size = _read_id_map(Path(instance_path), "instance map", ("I", "I;16", "L"), size)
    if inst_size != label_size:
        raise ValueError(
            f"{label_path}: the label map is {label_size} but its instance map {instance_path} is {inst_size}; "
            "they must describe the same pixels"
        )
    return labels, instances


def resize_ids(ids: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) integer ids -> (H, W) int64 at ``size`` (nearest, as the file loaders above)."""
    if ids.shape == tuple(size):
        return ids.astype(np.int64, copy=False)
    if ids.min(initial=0) < -(2**31) or ids.max(initial=0) >= 2**31:
        raise ValueError("ids must fit in 32 bits")
    im = Image.fromarray(np.ascontiguousarray(ids, dtype=np.int32))  # mode I
    return np.asarray(im.resize((size[1], size[0]), Image.NEAREST)).astype(np.int64)


def label_tensor(labels: np.ndarray, instances: np.ndarray | None = None) -> torch.Tensor:
    """(H, W) label ids (+ instance ids) -> (36, H, W) float32 one-hot + instance-edge channel."""
    H, W = labels.shape
    out = torch.zeros(SEMANTIC_NC, H, W)
    out[:LABEL_NC].scatter_(0, torch.from_numpy(labels)[None], 1.0)
    if instances is not None:
        if instances.shape != labels.shape:
            raise ValueError(f"instance map {instances.shape} and label map {labels.shape} sizes differ")
        out[LABEL_NC] = torch.from_numpy(instance_edges(instances))
    return out


def pair_instance_file(label_path: Path) -> Path | None:
    """``..._gtFine_labelIds.png`` -> ``..._gtFine_instanceIds.png`` beside it, if present."""
    name = label_path.name
    for a, b in (("_labelIds", "_instanceIds"), ("labelIds", "instanceIds")):
        if a in name:
            cand = label_path.with_name(name.replace(a, b))
            if cand.is_file():
                return cand
    return None


def colorize_labels(labels: np.ndarray) -> np.ndarray:
    """(H, W) label ids -> (H, W, 3) uint8 Cityscapes colours."""
    lut = np.zeros((256, 3), np.uint8)
    for k, c in _PALETTE.items():
        lut[k] = c
    return lut[np.clip(labels, 0, 255)]


class CityscapesDataset(Dataset):
    """Cityscapes ``split`` under ``root`` (see module docstring).

    Args:
        root: folder holding ``gtFine/`` (and ``leftImg8bit/`` when photos are available).
        split: ``train``, ``val`` or ``test``.
        size: (H, W) output size (256, 512).
        flip: random horizontal flip (use for training only).
        require_images: error when a label map has no photo (training).
        seed: flip randomness is a function of (seed, epoch, index) (exact resume).
        max_items: keep only the first N frames (0 = all).
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        size: tuple[int, int] = DEFAULT_SIZE,
        flip: bool = False,
        require_images: bool = False,
        seed: int = 0,
        max_items: int = 0,
    ) -> None:
        root = Path(root)
        self.root, self.split, self.size, self.flip, self.seed = root, split, tuple(size), flip, int(seed)
        label_dir = root / "gtFine" / split
        image_dir = root / "leftImg8bit" / split
        labels = sorted(Path(p) for p in glob.glob(str(label_dir / "*" / "*_gtFine_labelIds.png")))
        photos = sorted(Path(p) for p in glob.glob(str(image_dir / "*" / "*_leftImg8bit.png")))
        if not labels and not photos:
            raise ValueError(f"no Cityscapes frames under {root} for split {split!r} (expected {label_dir})")
        by_frame = {p.name.replace("_gtFine_labelIds.png", ""): p for p in labels}
        for ph in photos:
            frame = ph.name.replace("_leftImg8bit.png", "")
            if frame not in by_frame:
                raise ValueError(f"{ph}: photo without its label map (expected {frame}_gtFine_labelIds.png)")
        self.items = []
        for frame, lab in by_frame.items():
            photo = image_dir / lab.parent.name / f"{frame}_leftImg8bit.png"
            if require_images and not photo.is_file():
                raise ValueError(f"{lab}: label map without its photo {photo} (training needs both)")
            self.items.append((lab, pair_instance_file(lab), photo if photo.is_file() else None))
        if max_items:
            self.items = self.items[:max_items]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key) -> dict:
        epoch, i = key if isinstance(key, tuple) else (0, key)
        lab_path, inst_path, photo = self.items[int(i)]
        labels, inst = load_label_pair(lab_path, inst_path, self.size)
        item = {"label": label_tensor(labels, inst), "path": str(lab_path)}
        if photo is not None:
            try:
                with Image.open(photo) as im:
                    im = im.convert("RGB").resize((self.size[1], self.size[0]), Image.BICUBIC)
                    arr = np.asarray(im, dtype=np.float32)
            except Exception as e:
                raise ValueError(f"{photo}: cannot read the photo ({e})") from None
            item["image"] = torch.from_numpy(arr.transpose(2, 0, 1) / 127.5 - 1.0)
        if self.flip and np.random.default_rng([self.seed, int(epoch), int(i)]).random() < 0.5:
            item["label"] = item["label"].flip(-1)
            if "image" in item:
                item["image"] = item["image"].flip(-1)
        return item
