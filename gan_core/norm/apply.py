"""Attach a critic normalization to every Conv2d / Linear of a module, and refresh it once per step.

``apply_critic_norm(D, "san")`` converts D in place (ALGORITHMS.md b.4):

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
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils import parametrize

from .bidirectional import BidirectionalSpectralNorm
from .options import NORM_KINDS, BSSNOptions, NormOptions, SANOptions, SNOptions, norm_options
from .padding import set_conv_padding
from .san_layer import SparsityAwareNorm, mix_seed
from .spectral import SpectralNorm

__all__ = ["NORM_KINDS", "apply_critic_norm", "norm_constants", "refresh_norm_constants"]

_NORM_CLASSES = (SparsityAwareNorm, SpectralNorm, BidirectionalSpectralNorm)


def _check_free(name: str, layer: nn.Module) -> None:
    if parametrize.is_parametrized(layer, "weight") or hasattr(layer, "weight_orig"):
        raise ValueError(
            f"layer {name or '<root>'} ({type(layer).__name__}) already has a weight normalization; "
            "apply_critic_norm needs plain layers"
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
    """
    if isinstance(kind, NormOptions):
        if options:
            raise ValueError(f"pass either an options object or keyword options, not both (got {', '.join(options)})")
        opts = kind
    else:
        opts = norm_options(kind, **options)
    kind = opts.kind
    seed = getattr(opts, "seed", 0)
    layers = [(n, m) for n, m in module.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for name, layer in layers:
        _check_free(name, layer)
    for name, layer in layers:
        # every random draw (power-iteration vectors, SAN subsets) comes from a per-layer seed, never from
        # the global RNG: ranks that seed their RNGs differently still hold identical constants
        layer_seed = mix_seed(seed, zlib.crc32(name.encode()))
        gen = torch.Generator().manual_seed(layer_seed)
        layer_kind = kind if include is None or include(name, layer) else "none"
        if isinstance(layer, nn.Conv2d):
            set_conv_padding(layer, opts.padding)
            if layer_kind == "none":
                continue
            if isinstance(opts, SNOptions):
                norm = SpectralNorm(layer.weight, eps=opts.eps, generator=gen)
            elif isinstance(opts, BSSNOptions):
                norm = BidirectionalSpectralNorm(layer.weight, scale=opts.scale, eps=opts.eps, generator=gen)
            else:
                norm = SparsityAwareNorm(layer, opts, seed=layer_seed)
            # unsafe: skip the trial forward at registration (it would run the first-use initialisation
            # before DDP synchronises the weights); shapes and dtypes are preserved by construction
            parametrize.register_parametrization(layer, "weight", norm, unsafe=True)
            if isinstance(opts, SANOptions):
                layer.register_forward_pre_hook(norm.observe_input)
        elif layer_kind != "none":
            # linear layers: SN (SAN: as the paper, with SN's own eps), times the scale for BSSN
            if isinstance(opts, BSSNOptions):
                norm = SpectralNorm(layer.weight, scale=opts.scale, eps=opts.eps, generator=gen)
            elif isinstance(opts, SNOptions):
                norm = SpectralNorm(layer.weight, eps=opts.eps, generator=gen)
            else:
                norm = SpectralNorm(layer.weight, generator=gen)
            parametrize.register_parametrization(layer, "weight", norm, unsafe=True)
    return module


def _norm_layers(module: nn.Module):
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
    for _, layer, norm in _norm_layers(module):
        count += bool(norm.refresh(layer.parametrizations.weight.original))
    return count


@torch.no_grad()
def norm_constants(module: nn.Module) -> dict[str, float]:
    """Current normalization constant of every normalized layer, for logging (forces a device sync).

    SAN: ``s`` (gain and EMA included); SN: sigma; BSSN: mean of the two sigmas (the scale is separate).
    """
    out = {}
    for name, layer, norm in _norm_layers(module):
        w = layer.parametrizations.weight.original
        if isinstance(norm, SparsityAwareNorm):
            out[name] = float(norm.s)
        elif isinstance(norm, BidirectionalSpectralNorm):
            s_out, s_in = norm.sigmas(w)
            out[name] = float(0.5 * (s_out + s_in))
        else:
            out[name] = float(norm.u @ (w.flatten(1).float() @ norm.v))
    return out
