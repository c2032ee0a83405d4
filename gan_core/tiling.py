"""Tiled inference for fully convolutional upscalers, with the image kept on the CPU.

The input (C, H, W) stays in CPU memory; only tiles (plus ``pad`` pixels of context on each side;
border windows are shifted inwards so all have one size) go to ``fn``'s device, several per call when
``batch`` > 1. Neighbouring tiles overlap by at least ``overlap`` input pixels and are blended with raised-cosine
ramps whose weights sum to 1 everywhere, so there is no seam even when the context is shorter than the
network's receptive field.
Output rows are accumulated one band of tiles at a time and written into the caller's array as soon as
they are final: the full-size float result never exists, which keeps memory near the size of the (8-bit)
output itself. Blending and rounding run on ``fn``'s device: on a GPU only final 8-bit (or 16-bit) rows
cross the bus, through a pinned buffer.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from .buffers import large_empty

__all__ = ["HostCopier", "quantize", "quantize_into", "tile_spans", "upscale_tiled"]


def tile_spans(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """Evenly spaced [start, end) spans of one size (at most ``tile``) covering ``length``, adjacent ones
    overlapping by at least ``overlap``. One span when ``tile >= length``.

    The fewest spans of size ``tile`` are used, then shrunk to the smallest size that still covers the
    axis with those spans: 512 px with tile 208 gives three spans of 176 (not 208 with 56 px overlaps),
    which saves network work (and memory) for the same number of tiles."""
    if tile >= length:
        return [(0, length)]
    if tile <= 2 * overlap:
        raise ValueError(f"tile {tile} must be larger than twice the overlap {overlap}")
    n = math.ceil((length - overlap) / (tile - overlap))
    tile = min(tile, math.ceil((length + (n - 1) * overlap) / n))
    starts = [round(i * (length - tile) / (n - 1)) for i in range(n)] if n > 1 else [0]
    return [(s, s + tile) for s in starts]


def _ramp(n: int) -> np.ndarray:
    i = np.arange(n, dtype=np.float32)
    return (0.5 - 0.5 * np.cos(np.pi * (i + 0.5) / n)).astype(np.float32)


def _axis_weights(spans: list[tuple[int, int]], scale: int) -> list[np.ndarray]:
    """Per-span output weights along one axis: raised-cosine ramps across each overlap with a neighbour,
    normalised so that they sum to exactly 1 at every output position (even where three spans meet)."""
    length = spans[-1][1] * scale
    raw = []
    for k, (s, e) in enumerate(spans):
        w = np.ones((e - s) * scale, dtype=np.float32)
        if k > 0 and (ov := (spans[k - 1][1] - s) * scale) > 0:
            w[: min(ov, w.size)] *= _ramp(ov)[: w.size]
        if k < len(spans) - 1 and (ov := (e - spans[k + 1][0]) * scale) > 0:
            w[-min(ov, w.size) :] *= (1.0 - _ramp(ov))[-w.size :]
        raw.append(w)
    total = np.zeros(length, dtype=np.float32)
    for (s, e), w in zip(spans, raw, strict=True):
        total[s * scale : e * scale] += w
    return [w / total[s * scale : e * scale] for (s, e), w in zip(spans, raw, strict=True)]


def _window(start: int, end: int, pad: int, length: int) -> tuple[int, int]:
    """Input window of a span: ``pad`` pixels of context on both sides, shifted inwards (not clipped) at the
    image border, so every window of an axis has the same size: the same shapes reach the network for
    every tile, which keeps allocator reuse perfect and kernel caches warm (memory stays flat)."""
    size = min(length, end - start + 2 * pad)
    lo = min(max(0, start - pad), length - size)
    return lo, lo + size


def quantize_into(dst: np.ndarray, src: np.ndarray) -> None:
    """Write float [0, 1] ``src`` into ``dst`` (uint8 / uint16: rounded; float: clipped). ``src`` is used as
    scratch (all steps in place: no temporary of its size)."""
    np.clip(src, 0.0, 1.0, out=src)
    if dst.dtype in (np.uint8, np.uint16):
        src *= 255.0 if dst.dtype == np.uint8 else 65535.0
        np.rint(src, out=src)
    dst[...] = src


_TORCH_DTYPES = {
    np.dtype(np.uint8): torch.uint8,
    np.dtype(np.uint16): torch.uint16,
    np.dtype(np.float32): torch.float32,
}


def quantize(x: torch.Tensor, dtype) -> torch.Tensor:
    """Float [0, 1] tensor -> tensor of numpy ``dtype`` on the same device: uint8 / uint16 as ``x * 255`` /
    ``x * 65535`` rounded half to even (``np.rint``'s rule, so equal to :func:`quantize_into`), float32
    clipped. ``x`` is used as scratch when it is float32 already."""
    dtype = np.dtype(dtype)
    if dtype not in _TORCH_DTYPES:
        raise ValueError(f"output dtype must be uint8, uint16 or float32, got {dtype}")
    x = x.float().clamp_(0.0, 1.0)
    if dtype == np.float32:
        return x
    return x.mul_(255.0 if dtype == np.uint8 else 65535.0).round_().to(_TORCH_DTYPES[dtype])


class HostCopier:
    """Copies device tensors into NumPy arrays; on CUDA through one reused pinned (page-locked) buffer, so
    the transfer runs at full speed and the pageable destination is filled by a plain memcpy."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self._pinned: torch.Tensor | None = None

    def __call__(self, dst: np.ndarray, src: torch.Tensor) -> None:
        """``dst[...] = src`` for a contiguous ``dst`` of ``src``'s shape and dtype (after ``quantize``)."""
        if not self.cuda:
            torch.from_numpy(dst).copy_(src)
            return
        n = src.numel() * src.element_size()
        if self._pinned is None or self._pinned.numel() < n:
            self._pinned = torch.empty(max(n, 1 << 20), dtype=torch.uint8, pin_memory=True)
        staging = self._pinned[:n].view(src.dtype).view(src.shape)
        staging.copy_(src, non_blocking=True)
        torch.cuda.current_stream(src.device).synchronize()
        np.copyto(dst, staging.numpy())


def upscale_tiled(
    fn: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    scale: int,
    out: np.ndarray,
    tile: int = 256,
    pad: int = 24,
    overlap: int = 8,
    on_tile: Callable[[], None] | None = None,
    batch: int = 1,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Run ``fn`` tile by tile over ``image`` and blend the results into ``out``.

    Args:
        fn: (N, C, h, w) float32 tensor on ``device`` -> (N, C, h*scale, w*scale) float32 in [0, 1] on
            ``device``.
        image: (C, H, W) float32 CPU tensor (it stays on the CPU; only the tiles go to ``device``).
        scale: integer upscaling factor of ``fn``.
        out: (H*scale, W*scale, C) C-contiguous array (uint8, uint16 or float32) that receives the result.
        tile: tile size in input pixels (0 = the whole image at once).
        pad: context pixels around each tile (at the border the window shifts inwards: more context inside).
        overlap: input pixels shared by neighbouring tiles, blended with raised-cosine ramps.
        on_tile: called after every tile (progress bars).
        batch: tiles per call of ``fn`` (the windows of a row of tiles all have one size).
        device: where ``fn`` runs; the blending and the rounding to ``out``'s dtype run there too, so only
            final rows of ``out``'s dtype come back (through a pinned buffer on CUDA).

    Returns:
        ``out``.
    """
    device = torch.device(device)
    C, H, W = image.shape
    if tile <= 0:
        tile = max(H, W)
    batch = max(1, int(batch))
    ys, xs = tile_spans(H, tile, overlap), tile_spans(W, tile, overlap)
    wys = [torch.from_numpy(w).to(device) for w in _axis_weights(ys, scale)]
    wxs = [torch.from_numpy(w).to(device) for w in _axis_weights(xs, scale)]
    x_windows = [_window(x0, x1, pad, W) for x0, x1 in xs]
    hwc = image.permute(1, 2, 0)
    copy_to_host = HostCopier(device)
    carry: torch.Tensor | None = None  # rows of the previous band still open (blended with this band)
    band_rows = (ys[0][1] - ys[0][0]) * scale  # all spans of an axis have one size
    if device.type == "cpu":  # one buffer, reused for every band, outside the malloc heap when large
        band = torch.from_numpy(large_empty((band_rows, W * scale, C), np.float32))
    else:
        band = torch.empty((band_rows, W * scale, C), dtype=torch.float32, device=device)
    for r, (y0, y1) in enumerate(ys):
        band.zero_()
        iy0, iy1 = _window(y0, y1, pad, H)
        for first in range(0, len(xs), batch):
            group = range(first, min(first + batch, len(xs)))
            # stacked from the (H, W, C) layout: the (N, C, h, w) batch is channels_last without another copy
            tiles = torch.stack([hwc[iy0:iy1, x_windows[j][0] : x_windows[j][1]] for j in group]).permute(0, 3, 1, 2)
            res = fn(tiles.to(device, non_blocking=True) if device.type != "cpu" else tiles)
            for i, j in enumerate(group):
                (x0, x1), (ix0, _) = xs[j], x_windows[j]
                part = res[i, :, (y0 - iy0) * scale : (y1 - iy0) * scale, (x0 - ix0) * scale : (x1 - ix0) * scale]
                band[:, x0 * scale : x1 * scale] += part.permute(1, 2, 0) * (
                    wys[r][:, None, None] * wxs[j][None, :, None]
                )
                if on_tile is not None:
                    on_tile()
            del res
        if carry is not None:
            band[: carry.shape[0]] += carry
        next_start = ys[r + 1][0] if r + 1 < len(ys) else y1
        final_rows = (next_start - y0) * scale
        copy_to_host(out[y0 * scale : next_start * scale], quantize(band[:final_rows], out.dtype))
        carry = band[final_rows:].clone() if r + 1 < len(ys) else None  # usually just the overlap rows
    return out
