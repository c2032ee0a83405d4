"""The options of each critic normalization, validated once: one frozen dataclass per kind.

===========  ==================  =========================================================================
kind         class               options (defaults)
===========  ==================  =========================================================================
``none``     ``NoNormOptions``   padding ("zeros")
``sn``       ``SNOptions``       padding ("zeros"), eps (1e-12), seed (0)
``bssn``     ``BSSNOptions``     scale (1.0), padding ("zeros"), eps (1e-12), seed (0)
``san``      ``SANOptions``      ratio (1.0), gain (1.0 or "auto"), update_every (1), momentum (0.0),
                                 legacy_fft_norm (False), strided ("bound"), eps (1e-8), seed (0),
                                 padding ("circular", the only one SAN accepts), algorithm ("auto")
===========  ==================  =========================================================================

Every rule is a ``check_*`` function of this module, called by the dataclasses' ``__post_init__`` and by
the plain functions that take the same argument (``san_constant(ratio=...)``, ``kernel_peaks(strided=...)``,
``set_conv_padding(mode)``, ``SpectralNorm(eps=...)``), so ``apply_critic_norm``, the norm modules and the
apps' ``CriticNormConfig`` report a bad value with the same words. A failed rule raises
:class:`NormOptionError`, a ``ValueError`` that names the option (``.option``) and says what it must be.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any, ClassVar

__all__ = [
    "NORM_KINDS",
    "NORM_OPTIONS",
    "PADDING_MODES",
    "SAN_ALGORITHMS",
    "SAN_STRIDED_MODES",
    "BSSNOptions",
    "NoNormOptions",
    "NormOptionError",
    "NormOptions",
    "SANOptions",
    "SNOptions",
    "check_eps",
    "check_padding",
    "check_ratio",
    "check_san_algorithm",
    "check_scale",
    "check_strided",
    "norm_options",
    "resolve_san_algorithm",
]

PADDING_MODES = ("zeros", "circular")
SAN_STRIDED_MODES = ("bound", "exact")
SAN_ALGORITHMS = ("auto", "certified", "dense")


class NormOptionError(ValueError):
    """A normalization option that cannot be used; ``option`` is its name, the message starts with it."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message)
        self.option = option


def _real(option: str, value: Any, requirement: str) -> float:
    """``value`` as a float, or NormOptionError("<option> must be <requirement>, got ...")."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise NormOptionError(option, f"{option} must be {requirement}, got {value!r}")
    return float(value)


def check_ratio(ratio: Any) -> float:
    """SAN's fraction r of kernel pairs: a number in (0, 1]. Returns it as a float."""
    r = _real("ratio", ratio, "in (0, 1] (fraction of kernel pairs)")
    if not (0.0 < r <= 1.0):
        raise NormOptionError("ratio", f"ratio must be in (0, 1] (fraction of kernel pairs), got {r}")
    return r


def check_strided(strided: Any) -> str:
    """How SAN treats strided convs: one of ``SAN_STRIDED_MODES``."""
    if strided not in SAN_STRIDED_MODES:
        raise NormOptionError("strided", f"strided must be one of {SAN_STRIDED_MODES}, got {strided!r}")
    return strided


def check_san_algorithm(algorithm: Any) -> str:
    """How SAN computes its constant: one of ``SAN_ALGORITHMS`` (see :func:`resolve_san_algorithm`)."""
    if algorithm not in SAN_ALGORITHMS:
        raise NormOptionError("algorithm", f"algorithm must be one of {SAN_ALGORITHMS}, got {algorithm!r}")
    return algorithm


def resolve_san_algorithm(algorithm: str, device_type: str) -> str:
    """The algorithm that computes SAN's constant for weights on a ``device_type`` device.

    ``"certified"``: the certified incremental maximum (``sparsity_aware``): fewest transforms, but a
    data-dependent selection with host reads, right for a CPU. ``"dense"``: every (sampled) kernel on the
    device with static shapes and no host synchronization (``san_dense``), right for an accelerator.
    ``"auto"`` picks certified on ``"cpu"`` (measured faster there: ``benchmarks/san_refresh.py``) and
    dense on every other device type. Both give the same constant up to float32 rounding.

    >>> resolve_san_algorithm("auto", "cpu"), resolve_san_algorithm("auto", "cuda")
    ('certified', 'dense')
    """
    check_san_algorithm(algorithm)
    if algorithm != "auto":
        return algorithm
    return "certified" if device_type == "cpu" else "dense"


def check_padding(padding: Any) -> str:
    """A critic conv padding: one of ``PADDING_MODES``."""
    if padding not in PADDING_MODES:
        raise NormOptionError("padding", f"padding must be one of {PADDING_MODES}, got {padding!r}")
    return padding


def check_eps(eps: Any) -> float:
    """The constant added to a norm (SAN) or used by ``F.normalize`` (SN, BSSN): a number >= 0."""
    e = _real("eps", eps, ">= 0")
    if not (e >= 0):
        raise NormOptionError("eps", f"eps must be >= 0, got {e}")
    return e


def check_scale(scale: Any) -> float:
    """BSSN's output scale: a finite number > 0."""
    s = _real("scale", scale, "> 0")
    if not (s > 0) or math.isinf(s):
        raise NormOptionError("scale", f"scale must be > 0, got {s}")
    return s


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise NormOptionError("seed", f"seed must be an integer, got {seed!r}")
    return int(seed)


class NormOptions:
    """Base of the per-kind option classes: ``kind`` names the normalization (``"none"``, ``"sn"``, ...)."""

    kind: ClassVar[str]

    def as_kwargs(self) -> dict[str, Any]:
        """The options as keyword arguments of ``apply_critic_norm`` (every field, defaults included)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]


def _set(obj: NormOptions, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)  # frozen dataclasses: store the normalized value


@dataclass(frozen=True)
class NoNormOptions(NormOptions):
    """``kind="none"``: the convs keep their weights; only their padding can change."""

    kind: ClassVar[str] = "none"
    padding: str = "zeros"

    def __post_init__(self) -> None:
        check_padding(self.padding)


@dataclass(frozen=True)
class SNOptions(NormOptions):
    """``kind="sn"``: spectral norm SN_w. ``seed`` seeds the per-layer power-iteration vectors."""

    kind: ClassVar[str] = "sn"
    padding: str = "zeros"
    eps: float = 1e-12
    seed: int = 0

    def __post_init__(self) -> None:
        check_padding(self.padding)
        _set(self, "eps", check_eps(self.eps))
        _set(self, "seed", _check_seed(self.seed))


@dataclass(frozen=True)
class BSSNOptions(NormOptions):
    """``kind="bssn"``: ``scale * W / mean(sigma_out, sigma_in)`` on convs, ``scale`` x SN on linears."""

    kind: ClassVar[str] = "bssn"
    scale: float = 1.0
    padding: str = "zeros"
    eps: float = 1e-12
    seed: int = 0

    def __post_init__(self) -> None:
        _set(self, "scale", check_scale(self.scale))
        check_padding(self.padding)
        _set(self, "eps", check_eps(self.eps))
        _set(self, "seed", _check_seed(self.seed))


@dataclass(frozen=True)
class SANOptions(NormOptions):
    """``kind="san"``: Sparsity Aware Normalization on convs (circular padding), SN on linears.

    Attributes:
        ratio: fraction r of the kernel pairs sampled per refresh, in (0, 1] (1 = exact constant).
        gain: compensation g > 0 (finite), or ``"auto"`` for eq. 9 per layer.
        update_every: recompute the constant on every k-th refresh (critic step), k >= 1.
        momentum: EMA factor in [0, 1) (0 = none; the first value is bias-free).
        legacy_fft_norm: the official torch.fft port's quantity (docs/algorithms.md §1.6), A/B comparisons only.
        strided: ``"bound"`` (Lemma 1 on the input grid) or ``"exact"`` (aliased RMS on divisible grids).
        eps: added to the constant, >= 0.
        seed: seed of the sampling draws (each layer mixes it with its name).
        padding: ``"circular"``: Lemma 1 holds for cyclic convolution only.
        algorithm: ``"auto"`` (certified on CPU, dense elsewhere), ``"certified"`` or ``"dense"``
            (:func:`resolve_san_algorithm`); the same constant up to float32 rounding, a different sampling
            draw for r < 1 (``san_layer``). ``legacy_fft_norm`` ignores it.
    """

    kind: ClassVar[str] = "san"
    ratio: float = 1.0
    gain: float | str = 1.0
    update_every: int = 1
    momentum: float = 0.0
    legacy_fft_norm: bool = False
    strided: str = "bound"
    eps: float = 1e-8
    seed: int = 0
    padding: str = "circular"
    algorithm: str = "auto"

    def __post_init__(self) -> None:
        _set(self, "ratio", check_ratio(self.ratio))
        gain = self.gain
        if gain != "auto":
            g = _real("gain", gain, "a positive number or 'auto'")
            if not (g > 0) or math.isinf(g):
                raise NormOptionError("gain", f"gain must be a positive number or 'auto', got {gain!r}")
            _set(self, "gain", g)
        every = self.update_every
        whole = isinstance(every, numbers.Real) and not isinstance(every, bool) and math.isfinite(every)
        if not (whole and int(every) == every and every >= 1):
            raise NormOptionError("update_every", f"update_every must be an integer >= 1 (critic steps), got {every!r}")
        _set(self, "update_every", int(every))
        mu = _real("momentum", self.momentum, "in [0, 1)")
        if not (0.0 <= mu < 1.0):
            raise NormOptionError("momentum", f"momentum must be in [0, 1), got {mu}")
        _set(self, "momentum", mu)
        if not isinstance(self.legacy_fft_norm, bool):
            raise NormOptionError("legacy_fft_norm", f"legacy_fft_norm must be a bool, got {self.legacy_fft_norm!r}")
        check_strided(self.strided)
        _set(self, "eps", check_eps(self.eps))
        _set(self, "seed", _check_seed(self.seed))
        check_padding(self.padding)
        if self.padding != "circular":
            raise NormOptionError(
                "padding",
                f"SAN needs circular padding (Lemma 1 holds for cyclic convolution), got padding={self.padding!r}",
            )
        check_san_algorithm(self.algorithm)


NORM_OPTIONS: dict[str, type[NormOptions]] = {
    cls.kind: cls for cls in (NoNormOptions, SNOptions, BSSNOptions, SANOptions)
}
# the options each kind accepts, in the order of its class's fields
NORM_KINDS: dict[str, tuple[str, ...]] = {
    kind: tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
    for kind, cls in NORM_OPTIONS.items()
}


def norm_options(kind: str, **options: Any) -> NormOptions:
    """The validated options object of normalization ``kind`` (defaults for the options not given).

    Raises:
        ValueError: unknown kind, or unknown options (both listing the accepted ones);
            NormOptionError naming the option for a bad value.

    >>> norm_options("san", ratio=0.25, gain="auto").ratio
    0.25
    """
    if kind not in NORM_OPTIONS:
        raise ValueError(f"unknown critic norm kind {kind!r}; accepted: {', '.join(NORM_OPTIONS)}")
    unknown = sorted(set(options) - set(NORM_KINDS[kind]))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for kind {kind!r}; accepted: {', '.join(NORM_KINDS[kind])}"
        )
    return NORM_OPTIONS[kind](**options)
