"""Run-directory logging shared by the training apps: ``train.log``, ``metrics.jsonl``, TensorBoard.

Rank 0 writes; other ranks get a logger that only reports errors. Console output goes through
``tqdm.write`` so that log lines and the progress bar do not garble each other; the progress bar is off
when stdout is not a terminal (``disable=None``), and ``train.log`` lines carry it/s and ETA instead.

Speed and ETA count only the steps this process ran: a run resumed at step 5000 reports the speed of its
own steps (``start_loop(5000, total)``), not 5000 steps in its first seconds.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from tqdm import tqdm

__all__ = ["RunLogger", "format_eta"]


class _TqdmHandler(logging.StreamHandler):
    def emit(self, record):
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


def format_eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class RunLogger:
    """Logger + metrics.jsonl + optional TensorBoard + progress bar for one training run.

    Args:
        total_steps, start_step: the run's last step and the step this process starts from (a resumed
            run's checkpoint step); :meth:`start_loop` sets both again when the loop starts.
        clock: seconds (``time.perf_counter``; tests pass their own).
    """

    def __init__(
        self,
        run_dir: Path,
        name: str,
        is_main: bool = True,
        tensorboard: bool = False,
        total_steps: int = 0,
        start_step: int = 0,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.is_main = is_main
        self.log = logging.getLogger(f"san_gan.{name}")
        self.log.propagate = False
        for h in list(self.log.handlers):
            self.log.removeHandler(h)
            h.close()
        self.log.setLevel(logging.INFO if is_main else logging.ERROR)
        fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
        console = _TqdmHandler()
        console.setFormatter(fmt)
        self.log.addHandler(console)
        self._jsonl = None
        self.tb = None
        if is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fh = logging.FileHandler(self.run_dir / "train.log", encoding="utf-8")
            fh.setFormatter(fmt)
            self.log.addHandler(fh)
            self._jsonl = open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8")
            if tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter
                except ImportError as e:
                    raise RuntimeError("log.tensorboard=true needs tensorboard: pip install 'san-gan[tb]'") from e
                self.tb = SummaryWriter(str(self.run_dir / "tb"))
        self.total, self.start = total_steps, start_step
        self.bar = tqdm(
            total=total_steps, initial=start_step, disable=None if is_main else True, unit="it", dynamic_ncols=True
        )
        self._clock = clock
        self._t0, self._s0 = clock(), start_step
        self._sums: dict[str, float] = {}
        self._n = 0

    def start_loop(self, step: int, total: int) -> None:
        """The loop starts at ``step`` of ``total``: the progress bar and the speed clock start here (the
        time spent building the run and the steps of earlier processes do not count)."""
        self.total, self.start = total, step
        self.bar.reset(total=total)
        self.bar.n = self.bar.last_print_n = self.bar.initial = step  # tqdm's own rate: from here
        self.bar.refresh()
        self._t0, self._s0 = self._clock(), step

    def rate(self, step: int) -> tuple[float, float]:
        """(iterations per second of this process's steps up to ``step``, ETA in seconds); NaN before a step."""
        dt = self._clock() - self._t0
        done = step - self._s0
        ips = done / dt if dt > 0 and done > 0 else float("nan")
        return ips, (self.total - step) / ips if ips and math.isfinite(ips) else float("nan")

    def record(self, step: int, losses: Mapping[str, float], show: Iterable[str] = ()) -> None:
        """One step done: add ``losses`` to the means of the next :meth:`log_means` row; move the progress
        bar, showing the ``show`` losses beside it."""
        for k, v in losses.items():
            self._sums[k] = self._sums.get(k, 0.0) + v
        self._n += 1
        self.progress(step, {k: losses[k] for k in show if k in losses})

    def log_means(self, step: int, extra: Mapping[str, float] | None = None) -> dict:
        """Write one ``train`` row (the mean of each loss since the last row, ``extra``, ``it_per_s``) and the
        log line ``step N/TOTAL <means> | X it/s, ETA h:mm:ss``; returns the row's values."""
        ips, eta = self.rate(step)
        means = {k: v / max(1, self._n) for k, v in self._sums.items()}
        row = {**means, **(extra or {}), "it_per_s": ips}
        self.metrics(step, "train", row)
        losses = " ".join(f"{k} {v:.4g}" for k, v in means.items())
        self.log.info("step %d/%d %s | %.2f it/s, ETA %s", step, self.total, losses, ips, format_eta(eta))
        self._sums, self._n = {}, 0
        return row

    def metrics(self, step: int, kind: str, values: dict, tb_prefix: str | None = None) -> None:
        """Append one JSON line ``{"step", "kind", "time", **values}`` (and mirror scalars to TensorBoard)."""
        if not self.is_main:
            return
        row = {"step": step, "kind": kind, "time": round(time.time(), 3), **values}
        self._jsonl.write(json.dumps(row) + "\n")
        self._jsonl.flush()
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, int | float) and math.isfinite(v):
                    self.tb.add_scalar(f"{tb_prefix or kind}/{k}", v, step)

    def progress(self, step: int, postfix: dict | None = None) -> None:
        self.bar.update(step - self.bar.n)
        if postfix:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)

    def close(self) -> None:
        self.bar.close()
        if self._jsonl:
            self._jsonl.close()
            self._jsonl = None
        if self.tb is not None:
            self.tb.close()
        for h in list(self.log.handlers):
            self.log.removeHandler(h)
            h.close()
