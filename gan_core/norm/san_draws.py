"""SAN's sampling draws for r < 1 made on the weights' device: (seed, draw number) -> block of kernels.

Paper eq. 9 samples a fraction r of the m*n kernels; as the official ``ApproxSparse``, a block of
``k_out = round(sqrt(r) m)`` out x ``k_in = round(sqrt(r) n)`` in channels (:func:`block_shape`, rounded
half up, at least 1 each). The certified path draws it with ``torch.randperm`` on a CPU generator seeded
by ``mix_seed(seed, draw)`` (``sparsity_aware.sample_kernel_block``): host work and a host-to-device copy
of the indices, i.e. a synchronization on an accelerator. The dense path draws on the device instead,
with a counter-based hash of (seed, draw number, axis, channel) in exact integer arithmetic:

    k_axis = h(h(h(h(h(seed_lo ^ C) ^ seed_hi) ^ draw_lo) ^ draw_hi) ^ C_axis)
    key(i) = h(h((i + k_axis) mod 2^32) ^ k_axis)                     for channel i of that axis

with ``h`` the lowbias32 integer hash (a bijection of [0, 2^32)), and keeps on each axis the ``k``
channels of smallest key. Keys of one axis are distinct (a composition of bijections of i), so the block
is unique: no tie, no dependence on the sort algorithm. Every value stays below 2^49 in int64 (32-bit
products are split in 16-bit halves), so torch on any device, inductor and the Triton kernel of
``san_triton`` compute the same bits. Consequences:

* the block is a function of the ``seed`` and ``draws`` buffers alone: identical on every DDP rank (the
  seed is shared, the counter advances in step) and reproduced exactly after a resume (both are in the
  state dict), on CPU and CUDA alike;
* the shapes are static (``k_out``, ``k_in`` depend on m, n, r only), the seed and draw number are read
  on the device, so a CUDA graph that captured a refresh draws a fresh block at every replay;
* it is another stream of blocks than the certified path's ``randperm`` draws: switching algorithm on a
  run with r < 1 changes which blocks are drawn (each stream is reproducible on its own).
"""

from __future__ import annotations

import math

import torch

from .options import check_ratio

__all__ = ["block_shape", "device_block", "draw_keys", "hash32", "stream_keys"]

MASK32 = 0xFFFFFFFF
SEED_SALT = 0x9E3779B9  # golden-ratio constant: keeps seed 0 / draw 0 away from the hash's fixed point 0
AXIS_SALTS = (0x85EBCA6B, 0xC2B2AE35)  # out channels, in channels (murmur3 finalizer constants)


def block_shape(num_out: int, num_in: int, ratio: float) -> tuple[int, int]:
    """(k_out, k_in) = (round(sqrt(r) m), round(sqrt(r) n)), rounded half up, each in [1, m] / [1, n].

    >>> block_shape(64, 39, 0.25)
    (32, 20)
    """
    root = math.sqrt(check_ratio(ratio))
    k_out = max(1, min(num_out, math.floor(root * num_out + 0.5)))
    k_in = max(1, min(num_in, math.floor(root * num_in + 0.5)))
    return k_out, k_in


def mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2^32 for int64 x in [0, 2^32) and a 32-bit constant c, without leaving [0, 2^49)."""
    lo, hi = c & 0xFFFF, c >> 16
    return (x * lo + ((x * hi) & 0xFFFF) * 65536) & MASK32


def hash32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 (C. Wellons): a bijection of [0, 2^32) with good avalanche; int64 in, int64 out.

    >>> int(hash32(torch.tensor(1)))
    1753845952
    """
    x = x ^ (x >> 16)
    x = mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def stream_keys(seed: torch.Tensor, draw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """0-dim int64 ``k_axis`` in [0, 2^32) of the module docstring, for the out and the in axis of one draw.

    ``seed``, ``draw``: 0-dim int64 tensors (any values; their two 32-bit words are hashed in turn).
    """
    h = hash32((seed & MASK32) ^ SEED_SALT)
    h = hash32(h ^ ((seed >> 32) & MASK32))
    h = hash32(h ^ (draw & MASK32))
    h = hash32(h ^ ((draw >> 32) & MASK32))
    return hash32(h ^ AXIS_SALTS[0]), hash32(h ^ AXIS_SALTS[1])


def draw_keys(num_out: int, num_in: int, seed: torch.Tensor, draw: torch.Tensor) -> torch.Tensor:
    """(num_out + num_in,) int64 keys: out channels 0..m-1, then in channels 0..n-1 (torch, any device).

    ``san_triton.triton_draw_keys`` computes the same keys in one kernel launch.
    """
    k_out, k_in = stream_keys(seed.to(torch.int64), draw.to(torch.int64))
    idx = torch.arange(num_out + num_in, dtype=torch.int64, device=seed.device)
    is_in = idx >= num_out
    i = idx - is_in.long() * num_out
    k_axis = torch.where(is_in, k_in, k_out)
    return hash32(hash32((i + k_axis) & MASK32) ^ k_axis)


def device_block(num_out: int, num_in: int, ratio: float, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The drawn block from ``keys`` (:func:`draw_keys`): sorted (k_out,) out and (k_in,) in channel indices.

    Static shapes (:func:`block_shape`) and device-only work (two sorts per axis), no host read.
    """
    k_out, k_in = block_shape(num_out, num_in, ratio)
    rows = torch.argsort(keys[:num_out])[:k_out].sort().values
    cols = torch.argsort(keys[num_out:])[:k_in].sort().values
    return rows, cols
