"""Circular (cyclic) padding for critic convolutions, with one implementation per place it runs.

SAN's constant (Lemma 1 of Kligvasser & Michaeli, "Sparsity Aware Normalization for GANs", AAAI 2021)
is exact only for convolutions with cyclic boundary handling, so every SAN conv pads its input
circularly. ``nn.Conv2d(padding_mode="circular")`` already computes the right thing, but its
``F.pad(mode="circular")`` is slow (several copies, and on CPU it drops the channels_last layout, which
the conv then converts back): on an H200 a bf16 channels_last SR critic update took 19.9 ms with it, 17.7
ms with the ``slices`` function below, 9.0 ms with zero padding (issue 9). :func:`circular_pad2d` picks, per call:

| where                          | implementation                                 | kernels (fwd / bwd) |
|--------------------------------|------------------------------------------------|---------------------|
| inside ``torch.compile``       | ``concat``: two ``torch.cat`` of slices        | fused by Inductor   |
| CUDA tensor, eager             | ``triton``: :mod:`.circular_pad_triton`        | 1 / 1               |
| anything else (CPU), eager     | ``slices``: the autograd function below        | 5 / <= 9 copies     |
| a pad wider than its dimension | ``index``: two ``index_select`` (any backend)  | 2 / 2 index_add     |

``slices`` writes the padded tensor once with strip copies, keeps the input's memory format and folds the
gradient back with strip additions: the fastest on this project's 2-core CPU (one pad of a (4, 64, 128, 128)
bf16 channels_last activation, forward + backward: 31 ms, vs 138 ms ``concat`` and 335 ms ``F.pad``;
``benchmarks/circular_pad.py``, a loaded machine). It is the CPU path as it was, unchanged. ``triton`` does
the same in one kernel each way (a gather backward, no atomics: deterministic).
``concat`` is plain differentiable ATen ops that Inductor fuses into the neighbouring pointwise kernels (and
whose backward is slices and adds). All three give ``F.pad(x, pad, mode="circular")``'s values bit for bit
(a copy); their gradients are the same sums of at most 9 terms, equal to PyTorch's whenever those sums are
exact (tests use integer-valued gradients and float64 ``gradcheck``). ``circular_pad_backend(name)`` forces
one of them (benchmarks, tests). ``index`` serves only the pads that wrap around the grid more than once,
which ``F.pad`` refuses: a 5x5 conv with padding 2 on the 1x1 grid at the end of a deep critic (MobileNet at
32x32) still computes the cyclic convolution (its kernel folded onto the grid), as SAN's constant assumes.

``set_conv_padding(conv, "circular")`` turns an ``nn.Conv2d`` (or subclass) into a circular one in place:
``conv.padding_mode`` becomes ``"circular"`` (so introspection and ``repr`` tell the truth) and its class
becomes a subclass whose ``_conv_forward`` uses :func:`circular_pad2d`. This is the same class-swap
technique ``torch.nn.utils.parametrize`` uses; parameters, buffers and state_dict keys are unchanged.
"""

from __future__ import annotations

import contextlib
import functools

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from .options import check_padding

__all__ = ["PAD_BACKENDS", "circular_pad2d", "circular_pad_backend", "is_circular", "set_conv_padding"]

PAD_BACKENDS = ("auto", "slices", "triton", "concat")
_backend = "auto"


def _layout(x: torch.Tensor) -> torch.memory_format:
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


class _CircularPad2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, pad: tuple[int, int, int, int]) -> torch.Tensor:
        left, right, top, bottom = pad
        B, C, H, W = x.shape
        ctx.pad, ctx.size = pad, (H, W)
        out = torch.empty(
            (B, C, H + top + bottom, W + left + right), dtype=x.dtype, device=x.device, memory_format=_layout(x)
        )
        out[:, :, top : top + H, left : left + W] = x
        if top:
            out[:, :, :top, left : left + W] = x[:, :, H - top :, :]
        if bottom:
            out[:, :, top + H :, left : left + W] = x[:, :, :bottom, :]
        # columns are copied from the already row-padded output, which fills the corners too
        if left:
            out[:, :, :, :left] = out[:, :, :, W : W + left]
        if right:
            out[:, :, :, left + W :] = out[:, :, :, left : left + right]
        return out

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        left, right, top, bottom = ctx.pad
        H, W = ctx.size
        rows, cols = slice(top, top + H), slice(left, left + W)
        gx = g[:, :, rows, cols].clone(memory_format=_layout(g))  # the one full copy
        # fold the wrapped strips back onto the rows / columns they were copied from
        if left:
            gx[:, :, :, W - left :] += g[:, :, rows, :left]
        if right:
            gx[:, :, :, :right] += g[:, :, rows, left + W :]
        if top:
            gx[:, :, H - top :, :] += g[:, :, :top, cols]
            if left:
                gx[:, :, H - top :, W - left :] += g[:, :, :top, :left]
            if right:
                gx[:, :, H - top :, :right] += g[:, :, :top, left + W :]
        if bottom:
            gx[:, :, :bottom, :] += g[:, :, top + H :, cols]
            if left:
                gx[:, :, :bottom, W - left :] += g[:, :, top + H :, :left]
            if right:
                gx[:, :, :bottom, :right] += g[:, :, top + H :, left + W :]
        return gx, None


def _pad_by_indexing(x: torch.Tensor, pad: tuple[int, int, int, int]) -> torch.Tensor:
    """Circular padding of any width (wrapping several times): padded index j reads (j - pad) mod size."""
    left, right, top, bottom = pad
    H, W = x.shape[-2:]
    rows = torch.arange(-top, H + bottom, device=x.device) % H
    cols = torch.arange(-left, W + right, device=x.device) % W
    return x.index_select(2, rows).index_select(3, cols)


def _pad_by_concatenation(x: torch.Tensor, pad: tuple[int, int, int, int]) -> torch.Tensor:
    """Circular padding by two concatenations of slices: traceable, fused by Inductor in compiled code."""
    left, right, top, bottom = pad
    H, W = x.shape[-2:]
    if top or bottom:
        x = torch.cat([x[:, :, H - top :], x, x[:, :, :bottom]], dim=2)
    if left or right:
        x = torch.cat([x[:, :, :, W - left :], x, x[:, :, :, :right]], dim=3)
    return x


@functools.cache
def _triton_pad():
    """The Triton implementation, or None when Triton cannot be imported (a CPU-only install)."""
    try:
        from .circular_pad_triton import triton_circular_pad2d
    except ImportError:
        return None
    return triton_circular_pad2d


def _implementation(x: torch.Tensor) -> str:
    if _backend != "auto":
        return _backend
    if torch.compiler.is_compiling():
        return "concat"
    if x.device.type == "cuda" and _triton_pad() is not None:
        return "triton"
    return "slices"


@contextlib.contextmanager
def circular_pad_backend(name: str):
    """Force one implementation of :func:`circular_pad2d` inside the block (``PAD_BACKENDS``; ``"auto"``:
    by device and compilation as in the module docstring). For benchmarks and tests; not thread-local."""
    global _backend
    if name not in PAD_BACKENDS:
        raise ValueError(f"circular pad backend must be one of {PAD_BACKENDS}, got {name!r}")
    if name == "triton" and _triton_pad() is None:
        raise RuntimeError("the triton circular pad needs the triton package")
    previous, _backend = _backend, name
    try:
        yield
    finally:
        _backend = previous


def circular_pad2d(x: torch.Tensor, pad: int | tuple[int, int, int, int]) -> torch.Tensor:
    """Pad the last two dims of ``x`` cyclically; same values as ``F.pad(x, pad, mode="circular")``.

    Args:
        x: (B, C, H, W) tensor, any dtype, contiguous or channels_last (the layout is kept).
        pad: ``p`` for all sides, or ``(left, right, top, bottom)`` as in ``F.pad``. A side wider than
            the dimension it wraps wraps several times (``F.pad`` refuses that; the values are those of
            ``numpy.pad(mode="wrap")``).

    Returns:
        (B, C, H + top + bottom, W + left + right) tensor, by the implementation the module docstring
        gives for ``x``'s device (or inside ``torch.compile``).
    """
    if isinstance(pad, int):
        pad = (pad, pad, pad, pad)
    pad = tuple(int(p) for p in pad)
    if len(pad) != 4 or min(pad) < 0:
        raise ValueError(f"pad must be an int or (left, right, top, bottom) of non-negative ints, got {pad}")
    if x.dim() != 4:
        raise ValueError(f"circular_pad2d expects a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
    H, W = x.shape[-2:]
    if not any(pad):
        return x
    if H < 1 or W < 1:
        raise ValueError(f"circular padding {pad} of an empty {H}x{W} grid")
    if max(pad[0], pad[1]) > W or max(pad[2], pad[3]) > H:
        return _pad_by_indexing(x, pad)
    impl = _implementation(x)
    if impl == "concat":
        return _pad_by_concatenation(x, pad)
    if impl == "triton":
        return _triton_pad()(x, pad)
    return _CircularPad2d.apply(x, pad)


def _circular_conv_forward(self: nn.Conv2d, input: torch.Tensor, weight: torch.Tensor, bias):
    x = circular_pad2d(input, tuple(self._reversed_padding_repeated_twice))
    return F.conv2d(x, weight, bias, self.stride, 0, self.dilation, self.groups)


class CircularConv2d(nn.Conv2d):
    """``nn.Conv2d`` with cyclic padding through :func:`circular_pad2d` (made by ``set_conv_padding``)."""

    _gan_core_circular = True
    _conv_forward = _circular_conv_forward


_CIRCULAR_CLASSES: dict[type, type] = {nn.Conv2d: CircularConv2d}


def _circular_class(cls: type) -> type:
    if getattr(cls, "_gan_core_circular", False):
        return cls
    if cls not in _CIRCULAR_CLASSES:
        _CIRCULAR_CLASSES[cls] = type(
            f"Circular{cls.__name__}",
            (cls,),
            {"_conv_forward": _circular_conv_forward, "_gan_core_circular": True, "__module__": __name__},
        )
    return _CIRCULAR_CLASSES[cls]


def is_circular(conv: nn.Module) -> bool:
    """True when ``conv`` pads circularly (our fast class or PyTorch's own ``padding_mode``)."""
    return isinstance(conv, nn.Conv2d) and conv.padding_mode == "circular"


def set_conv_padding(conv: nn.Conv2d, mode: str) -> nn.Conv2d:
    """Switch a Conv2d's padding between ``"zeros"`` and ``"circular"`` in place (same padding amounts).

    Must be called before any parametrization is registered on the conv (``apply_critic_norm`` does).
    """
    check_padding(mode)
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"set_conv_padding expects an nn.Conv2d, got {type(conv).__name__}")
    if parametrize.is_parametrized(conv):
        raise ValueError("set_conv_padding must be called before a weight parametrization is registered")
    if mode == "circular":
        conv.__class__ = _circular_class(type(conv))
        conv.padding_mode = "circular"
    else:
        if getattr(type(conv), "_gan_core_circular", False):
            conv.__class__ = type(conv).__bases__[0]
        conv.padding_mode = "zeros"
    return conv
