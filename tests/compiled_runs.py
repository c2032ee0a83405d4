"""Checks shared by the train.compile tests of both apps (imported by path; not a test module).

Why these tolerances (fp32 runs, so that rounding is the only difference between eager and compiled code):

- Step 1's losses are computed from the same initial state by the same functions with other kernels:
  relative differences are summation-order rounding, ~1e-7 measured; checked to 1e-5.
- Adam's first update of an element is ``lr * g / (|g| + eps)``, of magnitude < lr whatever g is. For the
  few elements whose gradient is zero up to rounding (a conv bias before BatchNorm, weights at a sign
  change) the two runs may move in opposite directions: after step 1 every element is within 2 * lr,
  and fewer than 1% of each network's elements differ by more than lr / 10 (measured: <= 0.2%).
- Later steps compound those flips through the GAN's feedback (the usual divergence of two runs that differ
  in rounding); what still holds for any two runs of the same Adam is |update_t| <= lr * A_t with
  A_t = (1 - b1) sqrt(S_t (1 - b2^t)) / ((1 - b1^t) sqrt(1 - b2)), S_t = sum_{k<t} (b1^2 / b2)^k
  (Cauchy-Schwarz on Adam's moment sums), so |theta - theta'| <= 2 lr sum_t A_t. Checked too, as a
  guard against a compiled step that is not the same optimizer step.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from gan_core.checkpoint import load_checkpoint


def checkpoint(run: Path, step: int) -> dict:
    return load_checkpoint(run / "ckpt" / f"step_{step:08d}.pt")


def train_rows(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["kind"] == "train"]


def adam_step_bound(beta1: float, beta2: float, t: int) -> float:
    """A_t above: the largest |m_hat / sqrt(v_hat)| Adam's step t can take (eps ignored, it only lowers it)."""
    s = sum((beta1**2 / beta2) ** k for k in range(t))
    return (1 - beta1) * math.sqrt(s * (1 - beta2**t)) / ((1 - beta1**t) * math.sqrt(1 - beta2))


def assert_first_losses_match(eager: Path, compiled: Path, keys: tuple[str, ...]) -> None:
    a, b = train_rows(eager)[0], train_rows(compiled)[0]
    for k in keys:
        assert math.isclose(a[k], b[k], rel_tol=1e-5), (k, a[k], b[k])


def assert_first_update_matches(eager: dict, compiled: dict, params: dict[str, tuple[list[str], float]]) -> None:
    """``params``: checkpoint part -> (parameter names, learning rate)."""
    for part, (names, lr) in params.items():
        total = moved_apart = 0
        for k in names:
            d = (eager[part][k] - compiled[part][k]).abs()
            assert float(d.max()) <= 2 * lr * (1 + 1e-4), (part, k, float(d.max()))
            total += d.numel()
            moved_apart += int((d > lr / 10).sum())
        assert moved_apart < 0.01 * total, (part, moved_apart, total)


def assert_within_adam_bound(eager: dict, compiled: dict, params: dict[str, tuple[list[str], float]],
                             betas: dict[str, tuple[float, float]], steps: int) -> None:  # fmt: skip
    for part, (names, lr) in params.items():
        bound = 2 * lr * sum(adam_step_bound(*betas[part], t) for t in range(1, steps + 1))
        for k in names:
            assert torch.isfinite(compiled[part][k]).all(), (part, k)
            assert float((eager[part][k] - compiled[part][k]).abs().max()) <= bound, (part, k)


def assert_same_state(a: dict, b: dict, parts: tuple[str, ...]) -> int:
    """Every tensor of ``parts`` equal bit for bit (optimizer states included); returns how many."""

    def tensors(state, prefix=""):
        if isinstance(state, torch.Tensor):
            yield prefix, state
        elif isinstance(state, dict):
            for k, v in state.items():
                yield from tensors(v, f"{prefix}.{k}")
        elif isinstance(state, list | tuple):
            for i, v in enumerate(state):
                yield from tensors(v, f"{prefix}[{i}]")

    ta, tb = dict(tensors({p: a[p] for p in parts})), dict(tensors({p: b[p] for p in parts}))
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k
    return len(ta)


def assert_no_compiled_prefixes(ckpt: dict, parts: tuple[str, ...]) -> None:
    for p in parts:
        assert not [k for k in ckpt[p] if "_orig_mod" in k], p
