"""Errors and warnings of the critic normalizations that name the layer they concern.

A critic normalization runs code far from the user's call: at conversion (``apply_critic_norm``), in a
forward pre-hook (a SAN layer's first constant, its grid check) and in ``refresh_norm_constants``. A
failure there is reported as a :class:`CriticNormError` whose message starts with the layer's dotted name
(as ``module.named_modules()`` spells it, relative to the module ``apply_critic_norm`` converted) and a
short description of the layer, then says what failed and what to do. ``CriticNormWarning`` is the
category of the normalizations' warnings (filter it with ``warnings.filterwarnings``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize

__all__ = ["CriticNormError", "CriticNormWarning", "describe_layer", "layer_label", "named_errors"]


class CriticNormError(ValueError, RuntimeError):
    """A critic normalization failed on one layer; ``layer`` is its dotted name (``""``: unnamed).

    Both a ``ValueError`` and a ``RuntimeError``, so handlers written for the error it wraps (its
    ``__cause__``) still catch it.
    """

    def __init__(self, layer: str, message: str) -> None:
        super().__init__(message)
        self.layer = layer


class CriticNormWarning(UserWarning):
    """A critic normalization did something the user may not expect (skipped layers, a kept constant)."""


def _user_class(cls: type) -> type:
    """The layer's own class, under the ones that ``torch.nn.utils.parametrize`` and ``set_conv_padding``
    swap in (``ParametrizedConv2d``, ``CircularConv2d``)."""
    for c in cls.__mro__:
        if c.__module__ != parametrize.__name__ and not c.__dict__.get("_gan_core_circular", False):
            return c
    return cls


def describe_layer(layer: nn.Module) -> str:
    """A short description of a layer for messages, e.g. ``"Conv2d 64->128, 3x3, stride 2, padding 1"``.

    Convolutions list the stride, padding, dilation and groups that differ from their defaults; layers
    whose weight is not materialized yet (``nn.LazyConv2d``, ...) say so.
    """
    name = _user_class(type(layer)).__name__
    weight = getattr(layer, "weight", None)
    if isinstance(weight, nn.parameter.UninitializedParameter):
        return f"{name}, not materialized yet"
    if isinstance(layer, nn.modules.conv._ConvNd):
        parts = [f"{name} {layer.in_channels}->{layer.out_channels}", "x".join(str(k) for k in layer.kernel_size)]
        for attr, default in (("stride", 1), ("padding", 0), ("dilation", 1)):
            value = getattr(layer, attr)
            if isinstance(value, str):
                parts.append(f"{attr} {value!r}")
            elif any(v != default for v in value):
                parts.append(f"{attr} {value[0] if len(set(value)) == 1 else 'x'.join(str(v) for v in value)}")
        if layer.groups != 1:
            parts.append(f"groups {layer.groups}")
        return ", ".join(parts)
    if isinstance(layer, nn.Linear):
        return f"{name} {layer.in_features}->{layer.out_features}"
    return name


def layer_label(name: str, description: str) -> str:
    """``"layer 'features.3' (Conv2d 64->64, 3x3, padding 1)"`` (``apply_critic_norm`` names the module it
    converted ``"<root>"``; a normalization built by hand is ``"<unnamed>"``)."""
    return f"layer {name!r} ({description})" if description else f"layer {name!r}"


@contextlib.contextmanager
def named_errors(name: str, description: str, action: str) -> Iterator[None]:
    """Re-raise a ``ValueError`` / ``RuntimeError`` / ``TypeError`` / ``IndexError`` from the block as a
    :class:`CriticNormError` ``"<action> of critic layer 'name' (description) failed: <message>"``.

    Errors that already name their layer and out-of-memory errors pass through unchanged.
    """
    try:
        yield
    except CriticNormError:
        raise
    except torch.OutOfMemoryError:
        raise
    except (ValueError, RuntimeError, TypeError, IndexError) as error:
        raise CriticNormError(name, f"{action} of critic {layer_label(name, description)} failed: {error}") from error
