"""Process-level runtime settings shared by the command-line tools and benchmarks.

``tune_cpu_allocator()``: on Linux with glibc, large tensors (above glibc's mmap threshold, at most
32 MiB by default) are allocated with mmap and returned to the OS on free, so every training step pays
page faults and kernel zeroing for each of them again. Raising the mmap threshold and the trim threshold
keeps freed blocks in the heap for reuse. Measured on this project's 2-core AVX-512 CPU: the SR critic
update (batch 16, bf16) went from 0.60 to 0.58 s without SAN and 0.74 to 0.67 s with SAN, whose circular
padding allocates padded copies (benchmarks/norm_overhead.py). Resident memory no longer shrinks after
a peak. Set ``SAN_GAN_NO_MALLOC_TUNING=1`` to leave the allocator alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import dataclasses
import os
import sys
from pathlib import Path

import torch
from torch.nn.utils import parametrize

from .distributed import DistInfo, init_distributed

__all__ = ["Runtime", "autocast", "autocast_dtype", "cpu_has_fast_bf16", "training_runtime", "tune_cpu_allocator"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_tuned: bool | None = None


def tune_cpu_allocator(mmap_threshold: int = 1 << 30, trim_threshold: int = (1 << 31) - 1) -> bool:
    """Ask glibc's malloc to keep large freed blocks (see module docstring). Idempotent.

    Returns:
        True if the settings were applied, False when not on glibc or disabled by the environment.
    """
    global _tuned
    if _tuned is not None:
        return _tuned
    _tuned = False
    if os.environ.get("SAN_GAN_NO_MALLOC_TUNING") or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(mmap_threshold)) == 1
    ok = ok and mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(trim_threshold)) == 1
    _tuned = ok
    return ok


def cpu_has_fast_bf16() -> bool:
    """True when this CPU has native bf16 math (AVX512-BF16 or AMX), where bf16 autocast pays off."""
    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        fn = getattr(torch.cpu, probe, None)
        try:
            if fn is not None and fn():
                return True
        except Exception:
            pass
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast_dtype(precision: str, device: torch.device, allow_fp16: bool = True) -> torch.dtype | None:
    """Autocast dtype for ``precision`` in (auto, fp32, bf16, fp16) on ``device``; None means fp32.

    ``auto``: bf16 on CUDA GPUs that support it and on CPUs with native bf16 (AVX512-BF16 / AMX),
    fp16 on older CUDA GPUs when ``allow_fp16`` (inference) else fp32 (GAN losses overflow in fp16 without
    loss scaling), fp32 elsewhere (bf16 emulation on older CPUs is slower than fp32; no fp16 on CPU).
    """
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        if device.type != "cuda":
            raise ValueError("fp16 is only supported on CUDA; use bf16 or fp32 on this device")
        return torch.float16
    if precision != "auto":
        raise ValueError(f"precision must be auto, fp32, bf16 or fp16, got {precision!r}")
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float16 if allow_fp16 else None
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_fast_bf16() else None
    return None


@dataclasses.dataclass
class Runtime:
    """Where and how a training step runs: device, autocast dtype (None = fp32), memory format, ranks, and
    whether the step's networks are compiled (``train.compile``, :mod:`gan_core.compilation`)."""

    device: torch.device
    amp: torch.dtype | None
    channels_last: bool
    info: DistInfo
    compiled: bool = False

    def autocast(self):
        return autocast(self.device, self.amp)

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def cached_weights(self):
        """Context for several critic calls of one step. Eager: ``parametrize.cached()``, each normalized
        weight computed once for all the calls. Compiled: nothing; the normalization is a fused multiply in
        each compiled call, and tracing the parametrization cache (a global dict) would compile every
        critic graph twice (cache empty / filled)."""
        return contextlib.nullcontext() if self.compiled else parametrize.cached()

    def begin_step(self) -> None:
        """Mark a new training iteration: with compiled networks on CUDA (CUDA graphs), tells the
        cudagraph trees that the previous iteration's outputs are dead; nothing otherwise."""
        if self.compiled and self.device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()


def training_runtime(device: str, precision: str, channels_last: bool, compiled: bool = False) -> Runtime:
    """The Runtime of a training loop: torchrun's process group when launched by it (else one process),
    the autocast dtype for ``precision`` (bf16 or fp32; fp16 would need a loss scaler), channels_last,
    ``compiled`` (``train.compile``), and on CPU the allocator tuning of ``tune_cpu_allocator``."""
    info = init_distributed(device)
    rt = Runtime(info.device, autocast_dtype(precision, info.device, allow_fp16=False), channels_last, info, compiled)
    if info.device.type == "cpu":
        tune_cpu_allocator()
    return rt


def autocast(device: torch.device, amp: torch.dtype | None):
    """``torch.autocast`` to ``amp`` on ``device``'s type; a disabled context when ``amp`` is None (fp32)."""
    return torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None)
