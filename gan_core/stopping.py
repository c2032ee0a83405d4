"""Stop signals for long runs: SIGINT (Ctrl-C) and SIGTERM (SLURM preemption, ``docker stop``, ``timeout``).

The first signal only sets a flag. A training loop reads it at a step boundary, where every rank agrees to
stop at the same step (the flag rides on the step's all-reduce), writes a checkpoint and raises
:class:`TrainingStopped`; a batch tool (sr-infer, translate-infer) reads it before each file, finishes the
files in progress and reports what was not processed. A second signal interrupts at once
(``TrainingStopped`` with ``step=None``, a KeyboardInterrupt), without waiting for the step or the file.

A repeat of the same signal within ``repeat_window`` seconds of the first counts as the same request: SLURM
signals every process of a job step and torchrun forwards what it got, so one rank can receive a single
stop twice within milliseconds.

The exit status of a stopped tool is ``128 + signal number`` (130 for SIGINT, 143 for SIGTERM), as a shell
reports a process killed by that signal.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import FrameType

__all__ = ["STOP_SIGNALS", "LoaderBatches", "StopSignals", "TrainingStopped", "ignore_stop_signals"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_TRAINING_ANNOUNCEMENT = "{name}: stopping after this step with a checkpoint ({name} again: at once)"


class TrainingStopped(KeyboardInterrupt):
    """A stop signal ended the run.

    A KeyboardInterrupt, so that code written for Ctrl-C (``except KeyboardInterrupt``) keeps working and
    ``except Exception`` does not swallow it.

    Attributes:
        signum: the signal (``signal.SIGINT`` or ``signal.SIGTERM``).
        step: the step every rank stopped after, with a checkpoint written; None when a second signal
            interrupted the run at once (no checkpoint of the step in progress).
        checkpoint: the checkpoint written at ``step`` (rank 0; None on other ranks and when interrupted).
    """

    def __init__(self, signum: int, step: int | None = None, checkpoint: Path | None = None) -> None:
        self.signum = signal.Signals(signum)
        self.step = step
        self.checkpoint = checkpoint
        super().__init__(str(self))

    @property
    def exit_code(self) -> int:
        """``128 + signum``: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + int(self.signum)

    def __str__(self) -> str:
        if self.step is None:
            return f"interrupted by a second {self.signum.name}: no checkpoint of the step in progress"
        where = f"checkpoint {self.checkpoint}" if self.checkpoint is not None else "checkpoint written by rank 0"
        return f"stopped by {self.signum.name} at step {self.step}; {where}; resume with --resume auto"


class StopSignals:
    """Context manager: while active, SIGINT / SIGTERM set :attr:`signum` instead of ending the process.

    Handlers can only be installed from the main thread; in any other thread the context does nothing (the
    signals keep their previous handlers and :attr:`signum` stays 0). The previous handlers are restored on
    exit.

    Args:
        announce: on the first signal, write one line to stderr saying what will happen: True for the training
            loops' line, a string (``{name}`` is replaced by the signal's name) for another, False for none
            (ranks other than 0).
        repeat_window: seconds after the first signal during which the same signal again is not a second
            request (see the module docstring); 0 makes every repeat interrupt.
        signals: the signals handled.
    """

    def __init__(
        self, announce: bool | str = True, repeat_window: float = 1.0, signals: tuple[int, ...] = STOP_SIGNALS
    ) -> None:
        self.announce = announce
        self.repeat_window = float(repeat_window)
        self.signals = tuple(signals)
        self.signum = 0  # the first stop signal received (0: none)
        self._first_at = 0.0
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        """True once a stop signal arrived."""
        return bool(self.signum)

    @property
    def exit_code(self) -> int:
        """``128 + signum`` of the first signal (130 SIGINT, 143 SIGTERM); 0 when none arrived."""
        return 128 + int(self.signum) if self.signum else 0

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        now = time.monotonic()
        if not self.signum:
            self.signum, self._first_at = signum, now
            if self.announce:  # os.write: no lock that the interrupted code might hold
                name = signal.Signals(signum).name
                line = self.announce if isinstance(self.announce, str) else _TRAINING_ANNOUNCEMENT
                os.write(2, (line.format(name=name) + "\n").encode())
            return
        if signum == self.signum and now - self._first_at < self.repeat_window:
            return  # the same request, delivered twice (launcher forwarding)
        raise TrainingStopped(signum)


def ignore_stop_signals(worker_id: int = 0) -> None:
    """``DataLoader(worker_init_fn=...)``: loader workers ignore SIGINT / SIGTERM.

    ``timeout`` and SLURM signal the whole process group; a worker killed by the signal would make the next
    batch fail before the main process could write its checkpoint. The main process decides when to stop;
    read the batches through :class:`LoaderBatches`, which ends the workers when the loop ends.
    """
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


class LoaderBatches:
    """``with LoaderBatches(loader) as batches: next(batches)``: the loader's batches, its worker processes
    ended when the ``with`` block ends, however it ends.

    Workers that ignore stop signals (:func:`ignore_stop_signals`) cannot be left to the interpreter's exit,
    which ends them with SIGTERM and waits for them: the iterator, and with it its workers, goes here (the
    loader must not keep it: ``persistent_workers=False``).
    """

    def __init__(self, loader: Iterable) -> None:
        self._it: Iterator | None = iter(loader)

    def __next__(self):
        return next(self._it)

    def __enter__(self) -> LoaderBatches:
        return self

    def __exit__(self, *exc) -> None:
        self._it = None  # the last reference: a multi-process iterator shuts its workers down
