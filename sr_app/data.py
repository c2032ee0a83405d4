"""SR data: HR image folders -> aligned (LR, HR) crops; validation sets; MATLAB-compatible bicubic.

Training samples (docs/algorithms.md §3.4): the HR image is cropped to a multiple of the scale, its LR is the
MATLAB ``imresize(hr, 1/scale, 'bicubic')`` of the whole image (quantized to 8 bits, as a saved LR file
would be), and a sample is an aligned random crop (LR ``lr_patch``, HR ``lr_patch * scale``), flipped
horizontally with p = 0.5, optionally with de-quantization noise ``(255 x + U[0, 1)) / 256`` on both.
Each sample's randomness is a function of (seed, epoch, index) only, so batches do not depend on the
number of loader workers and a resumed run sees exactly the samples it would have seen.

Tensors are float32 (C, H, W) RGB in [0, 1]. Grayscale inputs become RGB.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from gan_core.image_io import IMAGE_EXTENSIONS, list_images
from gan_core.matlab_resize import resize_axis
from gan_core.sampling import TrainSampler

__all__ = [
    "IMAGE_EXTENSIONS",
    "SRTrainDataset",
    "SRValDataset",
    "TrainSampler",
    "bicubic_downscale",
    "list_images",
    "load_rgb",
    "min_val_size",
]

log = logging.getLogger(__name__)


def bicubic_downscale(hr: torch.Tensor, scale: int, uint8_intermediate: bool = True) -> torch.Tensor:
    """MATLAB-compatible ``imresize(hr, 1/scale, 'bicubic')`` (antialiased cubic kernel, a = -0.5).

    The two 1-D passes are ``gan_core.matlab_resize`` (MATLAB's algorithm; equal bit for bit to pyiqa's
    port): height first, then width, symmetric borders. MATLAB resizing a
    uint8 image keeps its intermediate in uint8, so with ``uint8_intermediate`` (default) the result of
    the height pass is rounded to 8 bits; this matches the MATLAB-made Set5 / Set14 LR files on ~98.7% of
    pixels (without it: ~89%). PIL / torch bicubic differ more: they do not antialias the same way.

    Args:
        hr: (B, C, H, W) or (C, H, W) float tensor in [0, 1] (8-bit data); H, W multiples of ``scale``.
        scale: integer downscaling factor.
        uint8_intermediate: round the intermediate to 8 bits as MATLAB does for uint8 images.

    Returns:
        Float tensor (same rank) of size ceil(H / scale) x ceil(W / scale) in [0, 1] (not quantized).
    """
    if hr.dim() not in (3, 4):
        raise ValueError(f"expected (C, H, W) or (B, C, H, W), got {tuple(hr.shape)}")
    if int(scale) != scale or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    if scale == 1:
        return hr.clone()
    squeeze = hr.dim() == 3
    x = hr.unsqueeze(0) if squeeze else hr
    B, C, H, W = x.shape
    y = x.float().reshape(B * C, 1, H, W) * 255.0
    y = resize_axis(y, -2, size=math.ceil(H / scale), scale=1.0 / scale)
    if uint8_intermediate:
        y = y.round().clamp_(0, 255)
    y = resize_axis(y, -1, size=math.ceil(W / scale), scale=1.0 / scale)
    y = (y / 255.0).reshape(B, C, y.shape[-2], y.shape[-1])
    return y[0] if squeeze else y


def load_rgb(path: str | Path) -> np.ndarray:
    """Decode an image as (H, W, 3) uint8 RGB: EXIF orientation applied; gray, palette, alpha (dropped),
    CMYK and 16-bit modes converted."""
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(im, dtype=np.float64)
            arr = np.clip(arr / (65535.0 if arr.max() > 255 else 255.0) * 255.0 + 0.5, 0, 255).astype(np.uint8)
            return np.repeat(arr[..., None], 3, axis=2)
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def _to_tensor(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def _mod_crop(arr: np.ndarray, scale: int) -> np.ndarray:
    h, w = arr.shape[:2]
    return arr[: h - h % scale, : w - w % scale]


def _make_lr_u8(hr_u8: torch.Tensor, scale: int) -> torch.Tensor:
    lr = bicubic_downscale(hr_u8.float().div(255.0), scale)
    return lr.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)


class _Unusable(ValueError):
    """A readable file that cannot be used (its message is the reason)."""


class SRTrainDataset(Dataset):
    """Aligned random (LR, HR) crops from HR image folders (see module docstring).

    Indexing: ``dataset[(epoch, index)]`` (what :class:`TrainSampler` yields) or ``dataset[index]``
    (epoch 0). Returns ``{"lr": (3, p, p), "hr": (3, p*s, p*s), "index": int}``.

    Raises:
        ValueError: no usable image (the message counts files found, too small and unreadable).
    """

    def __init__(
        self,
        roots: Sequence[str | Path],
        scale: int = 4,
        lr_patch: int = 40,
        hflip: bool = True,
        dequantize: bool = True,
        seed: int = 0,
        cache: bool = True,
        exclude: Sequence[str] = (),
    ) -> None:
        self.scale, self.lr_patch, self.hr_patch = scale, lr_patch, lr_patch * scale
        self.hflip, self.dequantize, self.seed, self.cache = hflip, dequantize, int(seed), cache
        files: list[Path] = []
        for r in roots:
            if not Path(r).exists():
                raise ValueError(f"training folder not found: {r}")
            files += list_images(r)
        excluded = set(exclude)
        files = [f for f in files if f.stem not in excluded]
        self.files: list[Path] = []
        self._hr: list[torch.Tensor] = []
        self._lr: list[torch.Tensor] = []
        too_small, self.unreadable = [], []
        for f in files:
            try:  # decoded once even without the cache: a file that fails later would stop training
                arr = _mod_crop(load_rgb(f), scale)
                h, w = arr.shape[:2]
            except Exception as e:
                log.warning("skipping unreadable image %s (%s: %s)", f, type(e).__name__, e)
                self.unreadable.append(f)
                continue
            if min(h, w) < self.hr_patch:
                too_small.append(f)
                continue
            self.files.append(f)
            if cache:
                hr = _to_tensor(arr)
                self._hr.append(hr)
                self._lr.append(_make_lr_u8(hr, scale))
        self.too_small = too_small
        if too_small:
            log.warning(
                "skipping %d image(s) smaller than the %dx%d HR crop (e.g. %s)",
                len(too_small),
                self.hr_patch,
                self.hr_patch,
                too_small[0],
            )
        if not self.files:
            where = ", ".join(str(r) for r in roots) or "(no folder given)"
            raise ValueError(
                f"no usable training image in {where}: {len(files)} image file(s) found, {len(too_small)} smaller "
                f"than the {self.hr_patch}px HR crop, {len(self.unreadable)} unreadable"
            )

    def __len__(self) -> int:
        return len(self.files)

    def _pair(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cache:
            return self._lr[i], self._hr[i]
        hr = _to_tensor(_mod_crop(load_rgb(self.files[i]), self.scale))
        return _make_lr_u8(hr, self.scale), hr

    def __getitem__(self, key) -> dict:
        epoch, i = key if isinstance(key, tuple) else (0, key)
        lr, hr = self._pair(int(i))
        rng = np.random.default_rng([self.seed, int(epoch), int(i)])
        p, s = self.lr_patch, self.scale
        top = int(rng.integers(0, lr.shape[1] - p + 1))
        left = int(rng.integers(0, lr.shape[2] - p + 1))
        lr = lr[:, top : top + p, left : left + p].float()
        hr = hr[:, top * s : (top + p) * s, left * s : (left + p) * s].float()
        if self.hflip and rng.random() < 0.5:
            lr, hr = lr.flip(-1), hr.flip(-1)
        if self.dequantize:
            lr = (lr + torch.from_numpy(rng.random(lr.shape, dtype=np.float32))) / 256.0
            hr = (hr + torch.from_numpy(rng.random(hr.shape, dtype=np.float32))) / 256.0
        else:
            lr, hr = lr / 255.0, hr / 255.0
        return {"lr": lr.contiguous(), "hr": hr.contiguous(), "index": int(i)}


SSIM_WINDOW = 11  # the Y-SSIM window of gan_core.metrics: the metrics need this much after the border crop


def min_val_size(scale: int) -> int:
    """Smallest HR side (pixels, after cropping to a multiple of ``scale``) whose Y-PSNR / Y-SSIM are defined:
    the metrics shave ``scale`` pixels per border and SSIM needs an 11x11 window in what is left."""
    return 2 * scale + SSIM_WINDOW


class SRValDataset(Dataset):
    """Validation / benchmark folder: EDSR layout ``HR/`` + ``LR_bicubic/X{scale}/<stem>x{scale}.png``, or
    HR-only (LR made by :func:`bicubic_downscale`). HR is cropped to a multiple of the scale.

    Items: ``{"name": stem, "file": HR path, "lr": (3, h, w), "hr": (3, h*s, w*s)}``, tensors float32 in [0, 1].

    A file that cannot be used (unreadable or empty, smaller than :func:`min_val_size` after the crop, an
    EDSR LR file of the wrong size) is skipped with a warning naming it and listed in ``failed`` as
    ``(path, reason)``; the other files are kept.

    Raises:
        ValueError: ``root`` is not a folder, or no file is usable (unless ``allow_empty``).
    """

    def __init__(self, root: str | Path, scale: int = 4, max_size: int = 0, allow_empty: bool = False) -> None:
        root = Path(root)
        if not root.is_dir():
            raise ValueError(f"validation folder not found: {root}")
        self.root, self.scale, self.name = root, scale, root.name
        self.edsr = (root / "HR").is_dir()
        self.lr_dir = root / "LR_bicubic" / f"X{scale}"
        self.files = self.hr_files(root)
        self.max_size = max_size
        self._items: list[dict] = []
        self.failed: list[tuple[Path, str]] = []
        for f in self.files:
            try:
                self._items.append(self._load(f))
            except Exception as e:  # any decoder error is this file's problem, not the folder's
                reason = str(e) if isinstance(e, _Unusable) else f"unreadable ({type(e).__name__}: {e})"
                log.warning("skipping validation image %s: %s", f, reason)
                self.failed.append((f, reason))
        if not self._items and not allow_empty:
            if not self.files:
                raise ValueError(f"no images in validation folder {root}")
            f, reason = self.failed[0]
            raise ValueError(
                f"no usable image in validation folder {root}: all {len(self.files)} failed (e.g. {f.name}: {reason})"
            )

    @staticmethod
    def hr_files(root: str | Path) -> list[Path]:
        """The HR image files of a validation folder (``HR/`` in the EDSR layout, else the folder itself)."""
        root = Path(root)
        hr_dir = root / "HR" if (root / "HR").is_dir() else root
        return [f for f in list_images(hr_dir) if "LR_bicubic" not in f.relative_to(root).parts]

    def _load(self, f: Path) -> dict:
        scale = self.scale
        full = load_rgb(f)
        arr = _mod_crop(full, scale)
        least = min_val_size(scale)
        if min(arr.shape[:2]) < least:
            raise _Unusable(
                f"too small: {full.shape[1]}x{full.shape[0]} px, the x{scale} metrics need at least {least}x{least}"
            )
        hr = _to_tensor(arr)
        lr_file = self.lr_dir / f"{f.stem}x{scale}.png"
        if self.edsr and lr_file.is_file():
            lr = _to_tensor(load_rgb(lr_file))
            if tuple(lr.shape[1:]) != (hr.shape[1] // scale, hr.shape[2] // scale):
                raise _Unusable(
                    f"{lr_file} is {lr.shape[2]}x{lr.shape[1]} but its HR {f.name} (cropped to a multiple of "
                    f"{scale}) needs {hr.shape[2] // scale}x{hr.shape[1] // scale}"
                )
        else:
            lr = _make_lr_u8(hr, scale)
        if self.max_size and max(hr.shape[1:]) > self.max_size:
            lr, hr = self._centre_crop(lr, hr)
        return {"name": f.stem, "file": f, "lr": lr.float() / 255.0, "hr": hr.float() / 255.0}

    def _centre_crop(self, lr: torch.Tensor, hr: torch.Tensor):
        s = self.scale
        m = self.max_size // s
        h, w = lr.shape[1:]
        top, left = max(0, (h - m) // 2), max(0, (w - m) // 2)
        lr = lr[:, top : top + m, left : left + m]
        return lr, hr[:, top * s : (top + lr.shape[1]) * s, left * s : (left + lr.shape[2]) * s]

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i: int) -> dict:
        return self._items[i]
