"""Tiled inference for fully convolutional upscalers, with the image kept on the CPU.

The input (C, H, W) stays in CPU memory; only one tile at a time (plus ``pad`` pixels of context on
each side; border windows are shifted inwards so all have one size) goes through ``fn``, typically to a
GPU. Neighbouring tiles overlap by at least ``overlap`` input pixels and are blended with raised-cosine
ramps whose weights sum to 1 everywhere, so there is no seam even when the context is shorter than the
network's receptive field.
Output rows are accumulated one band of tiles at a time and written into the caller's array as soon as
they are final: the full-size float result never exists, which keeps memory near the size of the (8-bit)
output itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from .buffers import large_empty

__all__ = ["quantize_into", "tile_spans", "upscale_tiled"]


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


def upscale_tiled(
    fn: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    scale: int,
    out: np.ndarray,
    tile: int = 256,
    pad: int = 24,
    overlap: int = 8,
    on_tile: Callable[[], None] | None = None,
) -> np.ndarray:
    """Run ``fn`` tile by tile over ``image`` and blend the results into ``out``.

    Args:
        fn: (C, h, w) float32 CPU tensor -> (C, h*scale, w*scale) float32 CPU tensor in [0, 1].
        image: (C, H, W) float32 CPU tensor.
        scale: integer upscaling factor of ``fn``.
        out: (H*scale, W*scale, C) array (uint8, uint16 or float32) that receives the result.
        tile: tile size in input pixels (0 = the whole image at once).
        pad: context pixels around each tile (at the border the window shifts inwards: more context inside).
        overlap: input pixels shared by neighbouring tiles, blended with raised-cosine ramps.
        on_tile: called after every tile (progress bars).

    Returns:
        ``out``.
    """
    C, H, W = image.shape
    if tile <= 0:
        tile = max(H, W)
    ys, xs = tile_spans(H, tile, overlap), tile_spans(W, tile, overlap)
    wys, wxs = _axis_weights(ys, scale), _axis_weights(xs, scale)
    carry: np.ndarray | None = None  # rows of the previous band still open (blended with this band)
    band_rows = (ys[0][1] - ys[0][0]) * scale  # all spans of an axis have one size
    band = large_empty((band_rows, W * scale, C), np.float32)  # one buffer, reused for every band
    for r, (y0, y1) in enumerate(ys):
        band.fill(0.0)
        for (x0, x1), wx in zip(xs, wxs, strict=True):
            iy0, iy1 = _window(y0, y1, pad, H)
            ix0, ix1 = _window(x0, x1, pad, W)
            res = fn(image[:, iy0:iy1, ix0:ix1])
            res = res[:, (y0 - iy0) * scale : (y1 - iy0) * scale, (x0 - ix0) * scale : (x1 - ix0) * scale]
            res = res.permute(1, 2, 0).numpy()  # (h, w, C)
            band[:, x0 * scale : x1 * scale] += res * wys[r][:, None, None] * wx[None, :, None]
            if on_tile is not None:
                on_tile()
        if carry is not None:
            band[: carry.shape[0]] += carry
        next_start = ys[r + 1][0] if r + 1 < len(ys) else y1
        final_rows = (next_start - y0) * scale
        quantize_into(out[y0 * scale : next_start * scale], band[:final_rows])
        carry = band[final_rows:].copy() if r + 1 < len(ys) else None  # usually just the overlap rows
    return out
