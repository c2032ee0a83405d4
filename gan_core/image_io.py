"""Reading and writing the images people have, without losing what they hold.

``read_image`` returns float32 pixels (H, W, C) in [0, 1] with C = 1 (gray), 2 (gray + alpha), 3 (RGB)
or 4 (RGBA), plus what must survive a round trip: bit depth (8 or 16), ICC profile, EXIF (orientation
applied to the pixels and removed from the tag). Palette images become RGB(A), CMYK becomes RGB (its
CMYK ICC profile no longer applies and is dropped), 1-bit images become gray. 16-bit PNGs keep their 16
bits (decoded with ``torchvision.io.decode_png``: Pillow reads 16-bit RGB as 8-bit).

``write_image`` writes atomically (temporary file in the target folder + rename): a failure never
leaves a partial output. 8-bit images go through Pillow (values rounded, not truncated); 16-bit PNGs
through a small streaming PNG writer (Pillow cannot write 16-bit RGB). Alpha is never written into
formats without it (JPEG, BMP): the caller gets an error instead.

Only still images are read: an animated GIF / PNG / WebP or a multi-page TIFF is an ``ImageError`` naming
its frame count (never silently its first frame). A camera's multi-picture JPEG (MPO) and a layered PSD
are read as their primary image.

Every failure is an ``ImageError`` naming the file and the reason.
"""

from __future__ import annotations

import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .atomic import atomic_write
from .buffers import large_empty

__all__ = [
    "ALPHA_FORMATS",
    "IMAGE_EXTENSIONS",
    "INPUT_EXTENSIONS",
    "ImageError",
    "LoadedImage",
    "format_for",
    "list_images",
    "pil_to_pixels",
    "pixels_to_pil",
    "probe_size",
    "read_image",
    "write_image",
    "write_png16",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")  # what training / translate search folders for
INPUT_EXTENSIONS = (*IMAGE_EXTENSIONS, ".gif", ".tif", ".tiff")  # what sr-infer searches folders for
ALPHA_FORMATS = {"PNG", "WEBP", "TIFF"}
_EXT_FORMAT = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP",
               ".tif": "TIFF", ".tiff": "TIFF"}  # fmt: skip
_MULTI_FRAME = {"GIF": ("animated GIF", "frames"), "PNG": ("animated PNG", "frames"),
                "WEBP": ("animated WebP", "frames"), "TIFF": ("multi-page TIFF", "pages")}  # fmt: skip


class ImageError(ValueError):
    """An image that cannot be read or written; the message names the file and the reason."""


@dataclass
class LoadedImage:
    pixels: np.ndarray  # (H, W, C) float32 in [0, 1]
    bit_depth: int = 8
    icc_profile: bytes | None = None
    exif: bytes | None = None
    format: str = "PNG"
    converted_from: str = ""  # e.g. "CMYK", "P" when the stored mode was converted

    @property
    def channels(self) -> int:
        return self.pixels.shape[2]

    @property
    def has_alpha(self) -> bool:
        return self.channels in (2, 4)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return self.pixels.shape[1], self.pixels.shape[0]


def _png_header(path: Path) -> tuple[int, int] | None:
    """(bit depth, colour type) from a PNG's IHDR, or None if not a PNG."""
    with open(path, "rb") as f:
        head = f.read(29)
    if len(head) < 29 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return head[24], head[25]


_ORIENT = {  # EXIF orientation -> numpy ops on (H, W, C)
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: a.transpose(1, 0, 2)[:, ::-1],
    7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],
    8: lambda a: a.transpose(1, 0, 2)[::-1],
}


def _read_png16(path: Path, im: Image.Image) -> LoadedImage:
    import warnings

    import torch

    data = torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's image codecs announce a future move to TorchCodec
        from torchvision.io import ImageReadMode, decode_png

        t = decode_png(data, ImageReadMode.UNCHANGED)
    arr = t.permute(1, 2, 0).numpy().astype(np.float32) / 65535.0
    exif = im.getexif()
    orient = exif.get(0x0112, 1)
    if orient in _ORIENT:
        arr = np.ascontiguousarray(_ORIENT[orient](arr))
        del exif[0x0112]
    return LoadedImage(arr, 16, im.info.get("icc_profile"), exif.tobytes() if len(exif) else None, "PNG")


_OPEN_LOCK = threading.Lock()


def _open_unchecked(path: Path) -> Image.Image:
    """``Image.open`` without Pillow's decompression-bomb limit: the callers apply their own, with a clear
    message. The global limit is lifted only under a lock, for the header read, so threads can decode."""
    with _OPEN_LOCK:
        limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            return Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = limit


def read_image(path: str | Path, max_pixels: int | None = None) -> LoadedImage:
    """Decode an image file (see module docstring). Raises ImageError for every unusable file."""
    path = Path(path)
    try:
        if not path.is_file():
            raise ImageError(f"{path}: not a file")
        if path.stat().st_size == 0:
            raise ImageError(f"{path}: empty file (0 bytes)")
        with _open_unchecked(path) as im:
            w, h = im.size
            if max_pixels and w * h > max_pixels:
                raise ImageError(
                    f"{path}: {w}x{h} = {w * h / 1e6:.1f} MP exceeds the limit of {max_pixels / 1e6:.1f} MP "
                    "(--max-pixels; a decompression bomb or simply too large)"
                )
            fmt = im.format or "PNG"
            if fmt in _MULTI_FRAME and getattr(im, "is_animated", False):
                kind, unit = _MULTI_FRAME[fmt]
                raise ImageError(
                    f"{path}: {kind} with {im.n_frames} {unit}: only still images are read; "
                    f"save the {unit[:-1]} you want as its own image first"
                )
            header = _png_header(path) if fmt == "PNG" else None
            if header and header[0] == 16:
                return _read_png16(path, im)
            im.load()
            im = ImageOps.exif_transpose(im)
            icc = im.info.get("icc_profile")
            exif = im.getexif()
            exif.pop(0x0112, None)
            exif_bytes = exif.tobytes() if len(exif) else None
            if im.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
                arr = np.asarray(im, dtype=np.float32)[..., None] / 65535.0
                return LoadedImage(arr, 16, icc, exif_bytes, fmt)
            if im.mode in ("I", "F"):
                a = np.asarray(im, dtype=np.float64)
                top = 65535.0 if a.max() > 255 else 255.0
                arr = np.clip(a / top, 0, 1)[..., None].astype(np.float32)
                return LoadedImage(arr, 16, icc, exif_bytes, fmt)
            if im.mode == "CMYK":
                icc = None  # a CMYK profile does not describe the RGB pixels we return
            arr, converted = pil_to_pixels(im)
            return LoadedImage(arr, 8, icc, exif_bytes, fmt, converted)
    except ImageError:
        raise
    except Exception as e:
        reason = str(e) or type(e).__name__
        if isinstance(e, Image.UnidentifiedImageError):
            reason = "not an image (or an unsupported format)"
        elif isinstance(e, OSError) and "truncated" in str(e).lower():
            reason = f"truncated or corrupt image data ({e})"
        raise ImageError(f"{path}: {reason}") from None


def probe_size(path: str | Path) -> int:
    """Width x height from the file's header without decoding it (0 when it cannot be read): for planning
    memory before ``read_image``, which does the real checks."""
    try:
        with _open_unchecked(path) as im:
            return int(im.size[0]) * int(im.size[1])
    except Exception:
        return 0


def pil_to_pixels(im: Image.Image) -> tuple[np.ndarray, str]:
    """8-bit PIL image -> ((H, W, C) float32 in [0, 1], the mode it was converted from or "").

    L -> 1 channel, LA -> 2, RGB -> 3, RGBA -> 4; palette -> RGB(A), 1-bit -> L, CMYK / YCbCr / others -> RGB.
    """
    mode, converted = im.mode, ""
    if mode == "P":
        converted, im = "P", im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode == "PA":
        converted, im = "PA", im.convert("RGBA")
    elif mode == "1":
        converted, im = "1", im.convert("L")
    elif mode in ("La", "RGBa"):
        converted, im = mode, im.convert(mode.upper())
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        converted, im = mode, im.convert("RGB")
    arr = np.asarray(im, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[..., None]
    out = large_empty(arr.shape, np.float32)  # big images: own memory map, no heap fragmentation
    return np.divide(arr, np.float32(255.0), out=out, dtype=np.float32), converted


def pixels_to_pil(pixels: np.ndarray) -> Image.Image:
    """(H, W, C) float [0, 1] or uint8 pixels -> PIL image (L, LA, RGB or RGBA)."""
    arr = _to_uint8(pixels)
    C = arr.shape[2]
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[C]
    return Image.fromarray(arr[..., 0] if C == 1 else arr, mode)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png16(f, pixels: np.ndarray, icc_profile: bytes | None = None, rows_per_block: int = 64) -> None:
    """Write a 16-bit PNG (gray, gray+alpha, RGB or RGBA from C = 1..4) to binary file ``f``.

    ``pixels``: (H, W, C) uint16, or float in [0, 1] (rounded to 16 bits). Filter type 0, streamed zlib.
    """
    if pixels.dtype != np.uint16:
        pixels = np.clip(np.rint(np.asarray(pixels, dtype=np.float64) * 65535.0), 0, 65535).astype(np.uint16)
    H, W, C = pixels.shape
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[C]
    f.write(b"\x89PNG\r\n\x1a\n")
    f.write(_chunk(b"IHDR", struct.pack(">IIBBBBB", W, H, 16, color_type, 0, 0, 0)))
    if icc_profile:
        f.write(_chunk(b"iCCP", b"icc\x00\x00" + zlib.compress(icc_profile)))
    comp = zlib.compressobj(6)
    for y in range(0, H, rows_per_block):
        block = pixels[y : y + rows_per_block].astype(">u2").view(np.uint8).reshape(-1, W * C * 2)
        rows = np.concatenate([np.zeros((block.shape[0], 1), np.uint8), block], axis=1)
        data = comp.compress(rows.tobytes())
        if data:
            f.write(_chunk(b"IDAT", data))
    f.write(_chunk(b"IDAT", comp.flush()))
    f.write(_chunk(b"IEND", b""))


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    if pixels.dtype == np.uint8:
        return pixels
    return np.clip(np.rint(np.asarray(pixels, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)


def list_images(root: str | Path, recursive: bool = True, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> list[Path]:
    """Files under ``root`` whose lower-case suffix is in ``extensions`` (default png/jpg/jpeg/bmp/webp),
    sorted."""
    root = Path(root)
    if root.is_file():
        return [root] if root.suffix.lower() in extensions else []
    it = root.rglob("*") if recursive else root.glob("*")
    return sorted(p for p in it if p.is_file() and p.suffix.lower() in extensions)


def format_for(path: str | Path) -> str:
    """PIL format name for a path's extension (ImageError when we cannot write it)."""
    fmt = _EXT_FORMAT.get(Path(path).suffix.lower())
    if fmt is None:
        raise ImageError(f"{path}: unsupported output extension (use .png, .jpg, .webp, .bmp or .tif)")
    return fmt


def write_image(
    path: str | Path,
    pixels: np.ndarray,
    bit_depth: int = 8,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
    quality: int = 95,
    overwrite: bool = False,
) -> Path:
    """Atomically write (H, W, C) pixels (float [0, 1], or uint8 / uint16 already quantized).

    16-bit output needs a .png path. Alpha (C = 2 or 4) needs PNG, WebP or TIFF. An existing ``path`` is
    replaced only with ``overwrite``; otherwise ``FileExistsError`` (not wrapped) is raised, also when
    another process created it while this one was encoding.
    """
    path = Path(path)
    fmt = format_for(path)
    C = pixels.shape[2]
    if C in (2, 4) and fmt not in ALPHA_FORMATS:
        raise ImageError(f"{path}: {fmt} cannot store an alpha channel; write PNG or WebP")
    if bit_depth == 16 and fmt != "PNG":
        raise ImageError(f"{path}: 16-bit output is written as PNG only")
    try:
        with atomic_write(path, overwrite=overwrite) as f:
            if bit_depth == 16:
                write_png16(f, pixels, icc_profile)
            else:
                im = pixels_to_pil(pixels)
                kw: dict = {}
                if icc_profile and fmt in ("PNG", "JPEG", "WEBP", "TIFF"):
                    kw["icc_profile"] = icc_profile
                if exif and fmt in ("JPEG", "WEBP", "PNG", "TIFF"):
                    kw["exif"] = exif
                if fmt in ("JPEG", "WEBP"):
                    kw["quality"] = quality
                if fmt == "JPEG":
                    kw["subsampling"] = 0  # 4:4:4: keep the colour detail the upscaler produced
                im.save(f, format=fmt, **kw)
    except BaseException as e:
        if isinstance(e, ImageError | FileExistsError | KeyboardInterrupt | SystemExit):
            raise
        raise ImageError(f"{path}: cannot write ({e})") from e
    return path
