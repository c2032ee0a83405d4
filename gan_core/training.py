"""What the two training loops (``sr_app.train``, ``translate_app.train``) share, as plain pieces.

- :func:`check_run_files`: every weight file and checkpoint a run needs, checked before any work, in one
  error listing all that are missing.
- :func:`all_ranks_max`: one all-reduce per step that makes every rank take the same branch (skip a
  non-finite update, stop on a signal); :func:`stopped_at`: the end of an agreed stop.
- :class:`NonFiniteStreak` / :class:`TrainingDiverged`: consecutive non-finite steps, and the error when
  there are too many.
- :func:`gather_rng_states` / :func:`restore_rng_state`: per-rank RNG streams in and out of a checkpoint.
- :func:`checkpoint_payload` / :func:`load_parts`: the plain dict of a training checkpoint, and back.

Each app keeps its own loop, step functions and checkpoint format; stop signals are in
:mod:`gan_core.stopping`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from .checkpoint import is_valid_checkpoint, rng_state, set_rng_state
from .distributed import DistInfo, barrier
from .stopping import TrainingStopped
from .weights import WeightsError, load_manifest, resolve_weights

__all__ = [
    "NonFiniteStreak",
    "TrainingDiverged",
    "all_ranks_max",
    "check_run_files",
    "checkpoint_payload",
    "gather_rng_states",
    "load_parts",
    "restore_rng_state",
    "stopped_at",
]


# -- files a run needs --------------------------------------------------------------------------------
def _downloadable(name: str) -> str:
    """The download URL of manifest entry ``name`` when downloads are allowed, else ''."""
    if os.environ.get("SAN_GAN_OFFLINE", "") not in ("", "0"):
        return ""
    spec = load_manifest().get(name)
    return spec.url if spec is not None else ""


def check_run_files(
    weights: Mapping[str, str], checkpoints: Mapping[str, str] | None = None, *, dry_run: bool = False
) -> list[str]:
    """Check every file a run needs; raise one error that lists all the missing ones.

    Args:
        weights: config key -> manifest name or path, resolved by :func:`gan_core.weights.resolve_weights`
            (found by name: size and SHA-256 checked; downloaded when allowed and not ``dry_run``).
        checkpoints: config key -> checkpoint path (must be a complete checkpoint archive).
        dry_run: download nothing; a file that would be downloaded at the start of the run is reported,
            not an error.

    Returns:
        One line per file: ``"key: path"`` (or ``"key: NAME not present, downloaded at start from URL"``).

    Raises:
        WeightsError: one message, one entry per missing or bad file, each saying where to put it.
    """
    lines, errors = [], []
    for key, name in weights.items():
        try:
            lines.append(f"{key}: {resolve_weights(name, download=False if dry_run else None)}")
        except WeightsError as e:
            url = _downloadable(name) if dry_run else ""
            if url:
                lines.append(f"{key}: {name} not present, downloaded at start from {url}")
            else:
                errors.append(f"{key}: {e}")
    for key, path in (checkpoints or {}).items():
        if not Path(path).is_file():
            errors.append(f"{key}: checkpoint not found: {path}")
        elif not is_valid_checkpoint(path):
            errors.append(f"{key}: checkpoint {path} is truncated or corrupt (zip/CRC check failed)")
        else:
            lines.append(f"{key}: {path}")
    if errors:
        entries = "\n".join("- " + e.strip().replace("\n", "\n  ") for e in errors)
        noun = "file this run needs is" if len(errors) == 1 else "files this run needs are"
        raise WeightsError(f"{len(errors)} {noun} missing or unusable:\n{entries}")
    return lines


# -- agreement between ranks ----------------------------------------------------------------------------
def all_ranks_max(*values: int, device: torch.device) -> tuple[int, ...]:
    """Each value's maximum over all ranks, in one all-reduce; the values themselves in a single process.

    The loops pass ``(non-finite flag, stop signal)`` in the step's last all-reduce, so that every rank
    skips the same updates and stops after the same step.
    """
    ints = tuple(int(v) for v in values)
    if not (dist.is_available() and dist.is_initialized()):
        return ints
    t = torch.tensor(ints, dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return tuple(int(v) for v in t.tolist())


def stopped_at(signum: int, step: int, checkpoint: Path | None, log: logging.Logger) -> TrainingStopped:
    """The end of a stop every rank agreed on, after its checkpoint: wait for every rank (none exits, and has
    its launcher end the others, before rank 0 has written the file), log the stop line, and return the
    :class:`~gan_core.stopping.TrainingStopped` to raise."""
    barrier()
    stopped = TrainingStopped(signum, step, checkpoint)
    log.warning("%s", stopped)
    return stopped


# -- non-finite losses ----------------------------------------------------------------------------------
class TrainingDiverged(RuntimeError):
    """Too many consecutive non-finite losses; a checkpoint was written before stopping."""


@dataclass
class NonFiniteStreak:
    """Consecutive steps whose losses were not all finite (their updates were skipped).

    ``limit`` in a row means the run diverged. ``count`` is part of the checkpoint, so a resumed run
    continues the streak.
    """

    limit: int
    count: int = 0

    def update(self, nonfinite: bool) -> bool:
        """Count one step (a finite one resets the streak); True when the run has diverged."""
        self.count = self.count + 1 if nonfinite else 0
        return self.count >= self.limit

    def warning(self, step: int, losses: Mapping[str, float]) -> str:
        """The log line of a skipped step."""
        values = ", ".join(f"{k}={v:.4g}" for k, v in losses.items())
        return f"step {step}: non-finite loss ({values}); step skipped ({self.count} in a row)"

    def error(self, step: int, folder: Path) -> TrainingDiverged:
        return TrainingDiverged(f"{self.count} consecutive non-finite losses at step {step}; checkpoint in {folder}")


# -- RNG states -----------------------------------------------------------------------------------------
def gather_rng_states(info: DistInfo, generator: torch.Generator | None = None) -> list[dict]:
    """Every rank's RNG states (``gan_core.checkpoint.rng_state``), in rank order, on every rank.

    A collective under torchrun: every rank must call it at the same step.
    """
    mine = rng_state(generator)
    if not info.enabled:
        return [mine]
    states: list = [None] * info.world_size
    dist.all_gather_object(states, mine)
    return states


def restore_rng_state(
    states: list[dict], info: DistInfo, generator: torch.Generator | None = None, log: logging.Logger | None = None
) -> None:
    """Set this rank's RNG states from a checkpoint's ``rng`` list (the last one for ranks beyond it).

    A different number of ranks than the checkpoint's resumes, with a warning: the random streams differ.
    """
    if len(states) != info.world_size and log is not None:
        log.warning("resuming with %d ranks from a %d-rank run: RNG streams differ", info.world_size, len(states))
    set_rng_state(states[min(info.rank, len(states) - 1)], generator)


# -- checkpoint contents --------------------------------------------------------------------------------
def _without_ddp(part: Any) -> Any:
    # only DDP: an EMA's AveragedModel also has a ``.module``, but its own state_dict (with n_averaged) is saved
    return part.module if isinstance(part, DistributedDataParallel) else part


def checkpoint_payload(
    fmt: str, config: dict, step: int, parts: Mapping[str, Any], rng: list[dict], world_size: int, **values: Any
) -> dict:
    """The plain dict of a training checkpoint.

    Keys: ``format``, ``config``, ``step``, each of ``parts`` (modules, optimizers, schedulers; DDP wrappers
    removed) as its ``state_dict()``, ``rng`` (every rank's, :func:`gather_rng_states`), ``world_size`` and
    ``values`` (numbers the loop keeps, e.g. the best score and the non-finite streak).
    """
    payload = {"format": fmt, "config": config, "step": int(step)}
    payload.update({name: _without_ddp(part).state_dict() for name, part in parts.items()})
    payload.update(rng=rng, world_size=int(world_size), **values)
    return payload


def load_parts(state: Mapping[str, Any], parts: Mapping[str, Any]) -> None:
    """Load each of ``parts`` from ``state[name]`` (the inverse of :func:`checkpoint_payload` for them)."""
    for name, part in parts.items():
        _without_ddp(part).load_state_dict(state[name])
