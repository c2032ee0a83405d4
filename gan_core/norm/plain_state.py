"""A critic's plain ``state_dict`` (saved before ``apply_critic_norm``) in and out of its converted copy.

Converting a critic moves each normalized layer's weight to ``<layer>.parametrizations.weight.original``
and adds the normalization's buffers under ``<layer>.parametrizations.weight.0.`` (SAN: ``s``,
``initialized``, ``input_size``, ``seed``, ``draws``, ``refreshes``; SN: ``u``, ``v``, ``initialized``;
BSSN: ``u_out``, ``v_out``, ``u_in``, ``v_in``, ``initialized``). ``D.load_state_dict`` therefore refuses
the state of the plain critic (a pretrained critic, a checkpoint of another code base):

    D = apply_critic_norm(MyCritic(), "san")
    load_plain_state_dict(D, torch.load("pretrained_critic.pth", weights_only=True))

:func:`load_plain_state_dict` maps ``<layer>.weight`` to ``<layer>.parametrizations.weight.original`` for
the normalized layers, loads every other entry under its own key, and resets the normalizations to the
state of a fresh conversion (their constants and power-iteration vectors are computed from the loaded
weights on first use), so the result equals converting a critic that loaded the state before conversion.
It is strict about everything else: a missing or unexpected key or a shape mismatch raises, naming the
keys. :func:`plain_state_dict` is the way back (the raw weights under the plain keys, no norm buffers).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .apply import normalized_layers

__all__ = ["load_plain_state_dict", "plain_state_dict"]

_ORIGINAL = "parametrizations.weight.original"
_MAX_KEYS = 8


def _layouts(module: nn.Module) -> tuple[dict[str, str], set[str]]:
    """(plain key -> converted key for the normalized weights, converted keys of the norm buffers)."""
    renamed, norm_keys = {}, set()
    converted = module.state_dict().keys()
    for name, _, _ in normalized_layers(module):
        prefix = f"{name}." if name else ""
        renamed[prefix + "weight"] = prefix + _ORIGINAL
        norm_keys |= {k for k in converted if k.startswith(prefix + "parametrizations.weight.0.")}
    return renamed, norm_keys


def _keys(keys) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:_MAX_KEYS])
    return shown + (f" and {len(keys) - _MAX_KEYS} more" if len(keys) > _MAX_KEYS else "")


def plain_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """``module.state_dict()`` in the layout of the critic before conversion: each normalized layer's raw
    weight under ``<layer>.weight``, no normalization buffers (detached tensors, as ``state_dict`` gives)."""
    renamed, norm_keys = _layouts(module)
    back = {v: k for k, v in renamed.items()}
    return {back.get(k, k): v for k, v in module.state_dict().items() if k not in norm_keys}


@torch.no_grad()
def load_plain_state_dict(module: nn.Module, state: Mapping[str, torch.Tensor]) -> nn.Module:
    """Load a plain critic's ``state_dict`` into ``module``, a copy converted by ``apply_critic_norm``.

    Args:
        module: the converted critic (any kind; layers excluded by ``include`` keep their plain keys).
        state: the ``state_dict`` of the same architecture before conversion.

    Returns:
        ``module``, with the loaded weights and every normalization reset as by a fresh conversion.

    Raises:
        ValueError: ``state`` is already in the converted layout (use ``module.load_state_dict``), or it
            misses keys or holds unexpected ones (both listed).
        RuntimeError: a shape mismatch (``load_state_dict``'s message, naming the key).
    """
    renamed, norm_keys = _layouts(module)
    converted_layout = set(state) & (set(renamed.values()) | norm_keys)
    if converted_layout:
        raise ValueError(
            f"this state_dict is already in the converted layout ({_keys(converted_layout)}); "
            "load it with module.load_state_dict(state) instead"
        )
    back = {v: k for k, v in renamed.items()}
    expected = {back.get(k, k) for k in module.state_dict() if k not in norm_keys}
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        parts = [f"missing keys: {_keys(missing)}"] if missing else []
        parts += [f"unexpected keys: {_keys(unexpected)}"] if unexpected else []
        raise ValueError(
            f"the plain state_dict does not match the converted critic ({'; '.join(parts)}); it must be the "
            "state_dict of the same architecture, saved before apply_critic_norm"
        )
    result = module.load_state_dict({renamed.get(k, k): v for k, v in state.items()}, strict=False)
    assert not result.unexpected_keys and set(result.missing_keys) <= norm_keys, result
    for _, _, norm in normalized_layers(module):
        norm.reset()
    return module
