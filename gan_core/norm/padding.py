"""Circular (cyclic) padding for critic convolutions.

SAN's constant (Lemma 1 of Kligvasser & Michaeli, "Sparsity Aware Normalization for GANs", AAAI 2021)
is exact only for convolutions with cyclic boundary handling, so every SAN conv pads its input
circularly. ``nn.Conv2d(padding_mode="circular")`` already computes the right thing, but on CPU its
``F.pad(mode="circular")`` is slow and drops the channels_last layout (the conv then converts its input
back), which measured ~2x the cost of the whole critic's zero-padded convolutions in bf16. The autograd
function below writes the padded tensor once, keeps the input's memory format, and folds the
gradient back with strip additions.

``set_conv_padding(conv, "circular")`` turns an ``nn.Conv2d`` (or subclass) into a circular one in place:
``conv.padding_mode`` becomes ``"circular"`` (so introspection and ``repr`` tell the truth) and its class
becomes a subclass whose ``_conv_forward`` uses :func:`circular_pad2d`. This is the same class-swap
technique ``torch.nn.utils.parametrize`` uses; parameters, buffers and state_dict keys are unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from .options import check_padding

__all__ = ["circular_pad2d", "is_circular", "set_conv_padding"]


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


def circular_pad2d(x: torch.Tensor, pad: int | tuple[int, int, int, int]) -> torch.Tensor:
    """Pad the last two dims of ``x`` cyclically; same values as ``F.pad(x, pad, mode="circular")``.

    Args:
        x: (B, C, H, W) tensor, any dtype, contiguous or channels_last (the layout is kept).
        pad: ``p`` for all sides, or ``(left, right, top, bottom)`` as in ``F.pad``. Each side must be
            at most the size of the dimension it wraps.

    Returns:
        (B, C, H + top + bottom, W + left + right) tensor.
    """
    if isinstance(pad, int):
        pad = (pad, pad, pad, pad)
    pad = tuple(int(p) for p in pad)
    if len(pad) != 4 or min(pad) < 0:
        raise ValueError(f"pad must be an int or (left, right, top, bottom) of non-negative ints, got {pad}")
    if x.dim() != 4:
        raise ValueError(f"circular_pad2d expects a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
    H, W = x.shape[-2:]
    if max(pad[0], pad[1]) > W or max(pad[2], pad[3]) > H:
        raise ValueError(f"circular padding {pad} is larger than the input's {H}x{W} grid")
    if not any(pad):
        return x
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
