"""Run-directory logging shared by the training apps: ``train.log``, ``metrics.jsonl``, TensorBoard.

Rank 0 writes; other ranks get a logger that only reports errors. Console output goes through
``tqdm.write`` so that log lines and the progress bar do not garble each other; the progress bar is off
when stdout is not a terminal (``disable=None``), and ``train.log`` lines carry it/s and ETA instead.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
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
    """Logger + metrics.jsonl + optional TensorBoard + progress bar for one training run."""

    def __init__(
        self,
        run_dir: Path,
        name: str,
        is_main: bool = True,
        tensorboard: bool = False,
        total_steps: int = 0,
        start_step: int = 0,
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
        self._t0, self._s0 = time.perf_counter(), start_step

    def rate(self, step: int) -> tuple[float, float]:
        """(iterations per second since start of this process, ETA in seconds)."""
        dt = time.perf_counter() - self._t0
        done = step - self._s0
        ips = done / dt if dt > 0 and done > 0 else float("nan")
        return ips, (self.total - step) / ips if ips and math.isfinite(ips) else float("nan")

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
