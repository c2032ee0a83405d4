"""Image-sized NumPy buffers kept out of the malloc heap."""

from __future__ import annotations

import math
import mmap

import numpy as np

__all__ = ["large_empty"]


def large_empty(shape: tuple[int, ...], dtype=np.float32, threshold: int = 64 << 20) -> np.ndarray:
    """``np.empty`` that puts big arrays (>= ``threshold`` bytes) in their own anonymous memory map.

    Long-lived image-sized buffers then never share the malloc heap with the network's per-tile
    activations: with the heap tuned to keep freed blocks (``gan_core.runtime.tune_cpu_allocator``) that
    sharing fragments it and the process grows well past what it uses. The map is returned to the system
    when the array is collected. Pages are zero until written.
    """
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < threshold:
        return np.empty(shape, dtype)
    return np.frombuffer(mmap.mmap(-1, nbytes), dtype=dtype).reshape(shape)
