"""The critic-normalization settings the apps share: one dataclass their ``model`` config sections extend.

The keys stay flat in the app configs (``model.critic_norm``, ``model.san_ratio``, ...); an app changes a
default by redeclaring the field (SAN-SPADE: r = 0.25, g = 1.3, EMA 0.9). ``critic_norm_options()`` gives
the keyword arguments of ``apply_critic_norm`` for the chosen normalization.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..config import require

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
    bssn_scale: float = 1.0

    def __post_init__(self) -> None:
        require(0 < self.san_ratio <= 1, "model.san_ratio", f"must be in (0, 1], got {self.san_ratio}")
        require(self.san_update_every >= 1, "model.san_update_every", "must be >= 1")
        require(0 <= self.san_momentum < 1, "model.san_momentum", "must be in [0, 1)")
        require(
            self.critic_norm != "san" or self.critic_padding == "circular",
            "model.critic_padding",
            "SAN needs 'circular' padding (Lemma 1 holds for cyclic convolution)",
        )

    def critic_norm_options(self) -> dict:
        """Keyword arguments of ``apply_critic_norm`` for ``critic_norm``."""
        if self.critic_norm == "san":
            return dict(
                ratio=self.san_ratio,
                gain=self.san_gain,
                update_every=self.san_update_every,
                momentum=self.san_momentum,
                strided=self.san_strided,
                legacy_fft_norm=self.san_legacy_fft_norm,
            )
        if self.critic_norm == "bssn":
            return dict(scale=self.bssn_scale)
        return {}
