"""The critic-normalization settings the apps share: one dataclass their ``model`` config sections extend.

The keys stay flat in the app configs (``model.critic_norm``, ``model.san_ratio``, ...); an app changes a
default by redeclaring the field (SAN-SPADE: r = 0.25, g = 1.3, EMA 0.9). The values are checked by the
options classes of :mod:`gan_core.norm.options` (the rules ``apply_critic_norm`` applies), whose errors
become ``ConfigError`` naming the config key. ``critic_norm_options()`` gives the keyword arguments of
``apply_critic_norm`` for the chosen normalization.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from ..config import ConfigError
from .options import NORM_KINDS, NORM_OPTIONS, NormOptionError, NormOptions

__all__ = ["CriticNormConfig"]


@dataclass
class CriticNormConfig:
    critic_norm: Literal["san", "sn", "bssn", "none"] = "san"
    critic_padding: Literal["circular", "zeros"] = "circular"
    san_ratio: float = 1.0  # fraction r of kernel pairs sampled per refresh (1 = exact)
    san_gain: float | Literal["auto"] = 1.0  # g, or "auto" for eq. 9
    san_update_every: int = 1
    san_momentum: float = 0.0  # EMA of the constant (0 = none)
    san_strided: Literal["bound", "exact"] = "bound"
    san_legacy_fft_norm: bool = False  # the official torch.fft port's quantity: A/B comparisons only
    san_algorithm: Literal["auto", "certified", "dense"] = "auto"  # auto: certified on CPU, dense elsewhere
    bssn_scale: float = 1.0

    # the config key of each option of apply_critic_norm (seed and eps are not config keys)
    option_keys: ClassVar[dict[str, str]] = {
        "padding": "critic_padding",
        "ratio": "san_ratio",
        "gain": "san_gain",
        "update_every": "san_update_every",
        "momentum": "san_momentum",
        "strided": "san_strided",
        "legacy_fft_norm": "san_legacy_fft_norm",
        "algorithm": "san_algorithm",
        "scale": "bssn_scale",
    }
    section: ClassVar[str] = "model"

    def __post_init__(self) -> None:
        # every san_* / bssn_* value is checked, used by the chosen kind or not; the padding rule of the
        # chosen kind only (SAN needs circular padding, the others take either)
        for kind in NORM_OPTIONS:
            self.norm_options(kind)

    def norm_options(self, kind: str | None = None) -> NormOptions:
        """The validated options object of ``kind`` (default: ``critic_norm``) from these settings.

        Raises:
            ConfigError: ``"model.<key>: <what it must be>"`` for a value the options class refuses.
        """
        kind = self.critic_norm if kind is None else kind
        cls = NORM_OPTIONS[kind]
        accepted = NORM_KINDS[kind]
        values: dict[str, Any] = {opt: getattr(self, key) for opt, key in self.option_keys.items() if opt in accepted}
        if kind != self.critic_norm:
            del values["padding"]  # another kind's own default padding: only its other rules are checked
        try:
            return cls(**values)
        except NormOptionError as e:
            key = f"{self.section}.{self.option_keys.get(e.option, e.option)}"
            message = str(e)
            if message.startswith(f"{e.option} "):
                message = message[len(e.option) + 1 :]
            raise ConfigError(f"{key}: {message}") from None

    def critic_norm_options(self) -> dict:
        """Keyword arguments of ``apply_critic_norm`` for ``critic_norm`` (besides ``padding`` and ``seed``,
        which the critics take as their own arguments)."""
        opts = self.norm_options().as_kwargs()
        return {k: v for k, v in opts.items() if k in self.option_keys and k != "padding"}
