"""Exponential moving average of a model's parameters *and buffers*, with a warm-up.

``ema_model(G, decay)`` wraps ``torch.optim.swa_utils.AveragedModel(use_buffers=True)`` (normalisation
statistics follow the average too, which BasicSR's parameter-only EMA misses). The effective decay after
n updates is ``min(decay, (1 + n) / (10 + n))`` (TensorFlow's ``ExponentialMovingAverage`` with
``num_updates``): without it a 0.999 average still weighs the random initial weights by 37% after 1000
steps, and early validation of the EMA model says nothing about training.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

__all__ = ["ema_decay_at", "ema_model"]


def ema_decay_at(decay: float, num_updates: int) -> float:
    """Decay used for the update after ``num_updates`` earlier ones."""
    return min(decay, (1.0 + num_updates) / (10.0 + num_updates))


def ema_model(model: nn.Module, decay: float) -> AveragedModel:
    """AveragedModel of ``model`` (parameters and buffers) with the warm-up decay of the module docstring."""

    @torch.no_grad()
    def multi_avg(ema_params, params, num_averaged):
        d = ema_decay_at(decay, int(num_averaged))
        torch._foreach_lerp_(ema_params, params, 1.0 - d)

    return AveragedModel(model, multi_avg_fn=multi_avg, use_buffers=True)
