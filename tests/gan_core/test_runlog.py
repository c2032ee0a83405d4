"""RunLogger: speed and ETA count only this process's steps; mean losses per logged row."""

from __future__ import annotations

import json
import math

from gan_core.runlog import RunLogger, format_eta


class Clock:
    """Seconds set by the test."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rate_counts_from_the_start_step(tmp_path):
    clock = Clock()
    logger = RunLogger(tmp_path, "t_rate", total_steps=5100, start_step=5000, clock=clock)
    try:
        assert all(math.isnan(v) for v in logger.rate(5000))  # no step yet
        clock.now += 10.0
        ips, eta = logger.rate(5020)  # 20 steps in 10 s, 80 to go
        assert ips == 2.0 and eta == 40.0
    finally:
        logger.close()


def test_start_loop_restarts_the_clock_at_the_resumed_step(tmp_path):
    """Building the run (data, networks) does not count, nor do the steps of an earlier process."""
    clock = Clock()
    logger = RunLogger(tmp_path, "t_start", clock=clock)
    try:
        clock.now += 500.0  # setup
        logger.start_loop(5000, 6000)
        assert (logger.total, logger.start, logger.bar.n, logger.bar.total) == (6000, 5000, 5000, 6000)
        clock.now += 4.0
        assert logger.rate(5002) == (0.5, 1996.0)
    finally:
        logger.close()


def test_log_means_writes_one_row_of_means_and_resets(tmp_path):
    clock = Clock()
    logger = RunLogger(tmp_path, "t_means", clock=clock)
    try:
        logger.start_loop(10, 20)
        logger.record(11, {"a": 1.0, "b": 4.0}, show=("a",))
        logger.record(12, {"a": 3.0, "b": 8.0}, show=("a",))
        clock.now += 1.0
        row = logger.log_means(12, {"lr_g": 0.1})
        assert row == {"a": 2.0, "b": 6.0, "lr_g": 0.1, "it_per_s": 2.0}
        logger.record(13, {"a": 5.0, "b": 0.0})
        clock.now += 0.5
        assert logger.log_means(13)["a"] == 5.0  # only the steps since the last row
    finally:
        logger.close()
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["kind"], r["a"]) for r in rows] == [(12, "train", 2.0), (13, "train", 5.0)]
    log = (tmp_path / "train.log").read_text()
    assert "step 12/20 a 2 b 6 | 2.00 it/s, ETA 0:00:04" in log


def test_format_eta():
    assert format_eta(3725.9) == "1:02:05" and format_eta(float("nan")) == "?"
