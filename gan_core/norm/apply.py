"""Attach a critic normalization to every Conv2d / Linear of a module, and refresh it once per step.

``apply_critic_norm(D, "san")`` converts D in place (docs/algorithms.md §2.4):

| kind   | Conv2d                                              | Linear             |
|--------|-----------------------------------------------------|--------------------|
| none   | unchanged (padding option only)                     | unchanged          |
| sn     | SN_w (power iteration on the (out, in*kh*kw) view)  | SN                 |
| bssn   | scale * W / mean of the two reshaped spectral norms | SN times scale     |
| san    | circular padding + SAN (``W / s``)                  | SN (as the paper)  |

Every normalization is a ``torch.nn.utils.parametrize`` parametrization of ``weight``: the raw weight
is the only parameter (``parametrizations.weight.original``), all constants and power-iteration vectors
are buffers in ``state_dict``. ``refresh_norm_constants(D)`` runs one power-iteration step (SN, BSSN)
and one SAN refresh per call; training loops call it once per critic step, before the critic's forward
passes. A SAN layer that never computed its constant computes it on first use, in any mode.

Supported layers: ``nn.Conv2d`` (and subclasses that compute through ``_conv_forward``) with any kernel
size, stride, dilation, padding amount and groups (grouped and depthwise convs: SAN's maximum runs over
the kernels that exist; SN and BSSN use the equivalent dense conv's views, one power iteration per group),
with or without bias; ``nn.Linear``. Every other layer with weights (``Conv1d``, ``Conv3d``,
``ConvTranspose*``, ``Bilinear``, ``Embedding``, ``MultiheadAttention``'s input projection, recurrent
layers, lazy layers not materialized yet) is left as it is, and one ``CriticNormWarning`` per call names
them; another names the convs whose ``padding_mode`` changed (reflect / replicate become the ``padding``
option's mode). Normalization layers (BatchNorm, ...) are left as they are: one after a normalized conv
rescales its output, so the layer-wise bound then no longer bounds the critic. Errors name the layer
(``CriticNormError``, :mod:`gan_core.norm.layer_errors`). A critic's plain ``state_dict`` (saved before
conversion) loads into the converted critic with :func:`gan_core.norm.plain_state.load_plain_state_dict`.
"""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize

from .bidirectional import BidirectionalSpectralNorm
from .layer_errors import CriticNormError, CriticNormWarning, describe_layer, named_errors
from .options import NORM_KINDS, BSSNOptions, NormOptions, SNOptions, norm_options
from .padding import set_conv_padding
from .san_layer import SparsityAwareNorm, mix_seed
from .spectral import SpectralNorm, grouped_matrix, spectral_sigma

__all__ = ["NORM_KINDS", "apply_critic_norm", "norm_constants", "normalized_layers", "refresh_norm_constants"]

_NORM_CLASSES = (SparsityAwareNorm, SpectralNorm, BidirectionalSpectralNorm)


_MAX_NAMED = 8  # layers named in one warning


def _is_normalized(layer: nn.Module) -> bool:
    return parametrize.is_parametrized(layer, "weight") or hasattr(layer, "weight_orig")


def _check_free(name: str, layer: nn.Module) -> None:
    if _is_normalized(layer):
        raise CriticNormError(
            name,
            f"layer {name or '<root>'!r} ({describe_layer(layer)}) already has a weight normalization; "
            "apply_critic_norm needs plain layers: convert the critic once, before any other normalization "
            "(torch.nn.utils.parametrize.remove_parametrizations undoes one)",
        )


def _is_lazy(layer: nn.Module) -> bool:
    return isinstance(layer, nn.modules.lazy.LazyModuleMixin) and layer.has_uninitialized_params()


def _handled(layer: nn.Module) -> bool:
    return isinstance(layer, (nn.Conv2d, nn.Linear)) and not _is_lazy(layer)


def _unhandled(layer: nn.Module) -> bool:
    """A layer with a weight that a critic normalization would normally cover, but apply_critic_norm does not."""
    weighted = (
        nn.modules.conv._ConvNd,
        nn.Linear,
        nn.Bilinear,
        nn.Embedding,
        nn.EmbeddingBag,
        nn.MultiheadAttention,  # its out_proj (a Linear) is converted, its input projection is not
        nn.RNNBase,
    )
    return isinstance(layer, weighted) and not _handled(layer) and not _is_normalized(layer)


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_NAMED])
    return shown + (f" and {len(items) - _MAX_NAMED} more" if len(items) > _MAX_NAMED else "")


def _warn_unhandled(module: nn.Module, kind: str) -> None:
    skipped = [f"{n or '<root>'!r} ({describe_layer(m)})" for n, m in module.named_modules() if _unhandled(m)]
    if not skipped:
        return
    lazy = any(_is_lazy(m) for m in module.modules())
    warnings.warn(
        f"apply_critic_norm({kind!r}) left {len(skipped)} layer(s) of types it does not handle unnormalized: "
        f"{_listing(skipped)}. It handles Conv2d (any kernel, stride, dilation, padding, groups) and Linear; "
        "normalize the others yourself (e.g. torch.nn.utils.parametrizations.spectral_norm) or replace them"
        + ("; run one forward pass first so that lazy layers become plain ones" if lazy else ""),
        CriticNormWarning,
        stacklevel=3,
    )


def _warn_padding_changes(changed: list[tuple[str, nn.Conv2d, str]], padding: str) -> None:
    if changed:
        listed = [f"{n or '<root>'!r} ({mode})" for n, _, mode in changed]
        warnings.warn(
            f"apply_critic_norm changed the padding_mode of {len(changed)} conv(s) to {padding!r} (the padding "
            f"option; apply_critic_norm pads with zeros or circularly): {_listing(listed)}",
            CriticNormWarning,
            stacklevel=3,
        )


def apply_critic_norm(
    module: nn.Module,
    kind: str | NormOptions,
    include: Callable[[str, nn.Module], bool] | None = None,
    **options,
) -> nn.Module:
    """Convert every ``nn.Conv2d`` and ``nn.Linear`` inside ``module`` (itself included) in place.

    Args:
        module: the critic (or any sub-module / single layer).
        kind: ``"none" | "sn" | "bssn" | "san"`` with its ``**options``, or an options object
            (``SANOptions(ratio=0.25)``, ...; see :mod:`gan_core.norm.options`) and no ``**options``.
        include: ``(name, layer) -> bool`` choosing the layers that get the normalization (default: all);
            the others only get the padding (e.g. SPADE's SN on the InstanceNorm-followed convs only).
        **options: per kind (unknown ones raise ``ValueError`` listing the accepted ones; bad values a
            ``NormOptionError`` naming the option):
            none / sn / bssn: ``padding`` = ``"zeros"`` (default) or ``"circular"``; sn, bssn: ``eps``;
            bssn: ``scale`` (default 1.0, multiplies conv and linear weights).
            san: ``ratio`` (fraction r of kernel pairs, default 1), ``gain`` (float, default 1, or
            ``"auto"`` = eq. 9 per layer), ``update_every`` (critic steps, default 1), ``momentum``
            (EMA, default 0, bias-free first value), ``legacy_fft_norm`` (official port's quantity,
            default False), ``strided`` (``"bound"`` default or ``"exact"``), ``eps`` (1e-8),
            ``algorithm`` (``"auto"`` default: the certified incremental maximum on CPU, the dense
            sync-free refresh on other devices; or ``"certified"`` / ``"dense"``).
            sn, bssn, san: ``seed`` (default 0): power-iteration vectors and SAN draws come from a
            per-layer generator seeded by it and the layer's name, never from the global RNG, so DDP
            ranks agree without broadcasting buffers.

    Returns:
        ``module`` (converted in place).

    Raises:
        ValueError: a bad kind or option (before anything is converted).
        CriticNormError: a layer that cannot be converted (already normalized, ...), naming it.

    Warns:
        CriticNormWarning: once per call, naming the layers of types it does not handle (module docstring),
            and once naming the convs whose reflect / replicate padding it replaced.
    """
    if isinstance(kind, NormOptions):
        if options:
            raise ValueError(f"pass either an options object or keyword options, not both (got {', '.join(options)})")
        opts = kind
    else:
        opts = norm_options(kind, **options)
    kind = opts.kind
    seed = getattr(opts, "seed", 0)
    layers = [(n, m) for n, m in module.named_modules() if _handled(m)]
    for name, layer in layers:
        _check_free(name, layer)
    if kind != "none":
        _warn_unhandled(module, kind)
    changed = []
    for name, layer in layers:
        label = name or "<root>"
        with named_errors(label, describe_layer(layer), f"apply_critic_norm({kind!r})"):
            if isinstance(layer, nn.Conv2d) and layer.padding_mode not in ("zeros", "circular", opts.padding):
                if any(layer._reversed_padding_repeated_twice):
                    changed.append((name, layer, layer.padding_mode))
            _convert(name, layer, opts, seed, include)
    _warn_padding_changes(changed, opts.padding)
    return module


def _convert(name: str, layer: nn.Module, opts: NormOptions, seed: int, include) -> None:
    """Attach ``opts``' normalization (or only the padding) to one Conv2d / Linear, in place."""
    # every random draw (power-iteration vectors, SAN subsets) comes from a per-layer seed, never from
    # the global RNG: ranks that seed their RNGs differently still hold identical constants
    layer_seed = mix_seed(seed, zlib.crc32(name.encode()))
    gen = torch.Generator().manual_seed(layer_seed)
    layer_kind = opts.kind if include is None or include(name, layer) else "none"
    groups = getattr(layer, "groups", 1)
    if isinstance(layer, nn.Conv2d):
        set_conv_padding(layer, opts.padding)
        if layer_kind == "none":
            return
        if isinstance(opts, SNOptions):
            norm = SpectralNorm(layer.weight, eps=opts.eps, generator=gen, groups=groups)
        elif isinstance(opts, BSSNOptions):
            norm = BidirectionalSpectralNorm(layer.weight, scale=opts.scale, eps=opts.eps, generator=gen, groups=groups)
        else:
            norm = SparsityAwareNorm(layer, opts, seed=layer_seed)
    elif layer_kind == "none":
        return
    # linear layers: SN (SAN: as the paper, with SN's own eps), times the scale for BSSN
    elif isinstance(opts, BSSNOptions):
        norm = SpectralNorm(layer.weight, scale=opts.scale, eps=opts.eps, generator=gen)
    elif isinstance(opts, SNOptions):
        norm = SpectralNorm(layer.weight, eps=opts.eps, generator=gen)
    else:
        norm = SpectralNorm(layer.weight, generator=gen)
    norm.layer_name, norm.layer_desc = name or "<root>", describe_layer(layer)
    # unsafe: skip the trial forward at registration (it would run the first-use initialisation
    # before DDP synchronises the weights); shapes and dtypes are preserved by construction
    parametrize.register_parametrization(layer, "weight", norm, unsafe=True)
    if isinstance(norm, SparsityAwareNorm):
        layer.register_forward_pre_hook(norm.observe_input)


def normalized_layers(module: nn.Module) -> Iterator[tuple[str, nn.Module, nn.Module]]:
    """``(dotted name, layer, normalization)`` of every layer ``apply_critic_norm`` normalized in ``module``."""
    for name, layer in module.named_modules():
        if parametrize.is_parametrized(layer, "weight"):
            for p in layer.parametrizations.weight:
                if isinstance(p, _NORM_CLASSES):
                    yield name, layer, p


@torch.no_grad()
def refresh_norm_constants(module: nn.Module) -> int:
    """One refresh of every normalized layer in ``module``: call once per critic step.

    SN / BSSN: one power-iteration step. SAN: recompute ``s`` (on every ``update_every``-th call) for
    the current weights on the layer's recorded input grid; with the dense algorithm (default off the
    CPU) this queues device work only, with no host synchronization. Works on DDP-wrapped modules; every
    rank computes the same values from the same weights and the same (seeded) sampling draw.

    Returns:
        The number of layers whose constants were recomputed.
    """
    count = 0
    for _, layer, norm in normalized_layers(module):
        count += bool(norm.refresh(layer.parametrizations.weight.original))
    return count


@torch.no_grad()
def norm_constants(module: nn.Module) -> dict[str, float]:
    """Current normalization constant of every normalized layer, for logging (forces a device sync).

    SAN: ``s`` (gain and EMA included); SN: sigma; BSSN: mean of the two sigmas (the scale is separate).
    """
    out = {}
    for name, layer, norm in normalized_layers(module):
        w = layer.parametrizations.weight.original
        if isinstance(norm, SparsityAwareNorm):
            out[name] = float(norm.s)
        elif isinstance(norm, BidirectionalSpectralNorm):
            s_out, s_in = norm.sigmas(w)
            out[name] = float(0.5 * (s_out + s_in))
        else:
            out[name] = float(spectral_sigma(grouped_matrix(w, norm.groups), norm.u, norm.v))
    return out
