"""Critic normalizations usable on any critic: SAN, spectral norm (SN) and BSSN.

Public API::

    san_constant(weight, input_size, ratio=1.0, generator=None) -> Tensor   # ||W||_{0,inf}, Lemma 1
    san_constant(..., algorithm="dense") -> Tensor                          # same value, no pruning
    san_gain(ratio, num_filters) -> float                                    # eq. 9
    conv_spectral_norm(weight, input_size, stride=1) -> Tensor               # exact operator norm
    apply_critic_norm(module, kind, **options) -> module                     # "none" | "sn" | "bssn" | "san"
    apply_critic_norm(module, SANOptions(ratio=0.25)) -> module              # or a validated options object
    load_plain_state_dict(module, state) -> module                           # a state_dict saved before converting
    plain_state_dict(module) -> dict                                         # and the way back
    refresh_norm_constants(module)                                           # once per critic step
    norm_constants(module) -> dict                                           # for logging

Options are validated once, by ``SANOptions`` / ``SNOptions`` / ``BSSNOptions`` / ``NoNormOptions``
(:mod:`gan_core.norm.options`). SAN's two algorithms (certified on CPU, dense on accelerators) are described
in ``sparsity_aware``, the dense refresh in ``san_dense`` (Triton kernels: ``san_triton``; device draws:
``san_draws``). See docs/algorithms.md §1, §2 for the maths and the choices made.

Errors raised while converting, in a normalization's hook or in a refresh are ``CriticNormError``s naming the
layer; ``CriticNormWarning`` is the category of the warnings (skipped layer types, replaced padding modes, a
constant kept on another grid in eval mode).
"""

from .apply import apply_critic_norm, norm_constants, refresh_norm_constants
from .bidirectional import BidirectionalSpectralNorm
from .exact import conv_spectral_norm
from .layer_errors import CriticNormError, CriticNormWarning
from .options import (
    NORM_KINDS,
    BSSNOptions,
    NoNormOptions,
    NormOptionError,
    NormOptions,
    SANOptions,
    SNOptions,
    norm_options,
)
from .padding import circular_pad2d, is_circular, set_conv_padding
from .plain_state import load_plain_state_dict, plain_state_dict
from .san_layer import SparsityAwareNorm
from .sparsity_aware import kernel_peaks, legacy_san_constant, sample_kernel_block, san_constant, san_gain
from .spectral import SpectralNorm, power_iteration, spectral_sigma

__all__ = [
    "NORM_KINDS",
    "BSSNOptions",
    "BidirectionalSpectralNorm",
    "CriticNormError",
    "CriticNormWarning",
    "NoNormOptions",
    "NormOptionError",
    "NormOptions",
    "SANOptions",
    "SNOptions",
    "SparsityAwareNorm",
    "SpectralNorm",
    "apply_critic_norm",
    "circular_pad2d",
    "conv_spectral_norm",
    "is_circular",
    "kernel_peaks",
    "legacy_san_constant",
    "load_plain_state_dict",
    "norm_constants",
    "norm_options",
    "plain_state_dict",
    "power_iteration",
    "refresh_norm_constants",
    "sample_kernel_block",
    "san_constant",
    "san_gain",
    "set_conv_padding",
    "spectral_sigma",
]
