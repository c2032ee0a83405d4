"""Stop signals: the first one is a request, a second one interrupts; loader workers ignore them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import gan_core
from gan_core.stopping import StopSignals, TrainingStopped

CODE = Path(gan_core.__file__).resolve().parents[1]  # the code under test, for child processes


def test_first_signal_sets_a_flag_and_the_handlers_are_restored():
    before = signal.getsignal(signal.SIGTERM)
    with StopSignals(announce=False) as stop:
        assert stop.signum == 0
        signal.raise_signal(signal.SIGTERM)  # runs the handler before returning
        assert stop.signum == signal.SIGTERM  # still running: only a request
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_second_signal_interrupts_at_once(sig, code):
    with StopSignals(announce=False, repeat_window=0) as stop:
        signal.raise_signal(sig)
        with pytest.raises(TrainingStopped) as info:
            signal.raise_signal(sig)
    assert stop.signum == sig
    err = info.value
    assert err.step is None and err.checkpoint is None and err.exit_code == code
    assert isinstance(err, KeyboardInterrupt)  # `except KeyboardInterrupt` code keeps working
    assert str(err) == f"interrupted by a second {sig.name}: no checkpoint of the step in progress"


def test_a_repeat_within_the_window_is_the_same_request():
    """torchrun forwards the signal SLURM already sent to every process: one request, not two."""
    with StopSignals(announce=False, repeat_window=3600) as stop:
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGTERM)
        assert stop.signum == signal.SIGTERM
        with pytest.raises(TrainingStopped):  # another signal than the first is never a repeat
            signal.raise_signal(signal.SIGINT)


def test_announce_writes_one_line(capfd):
    with StopSignals(announce=True):
        signal.raise_signal(signal.SIGTERM)
    assert capfd.readouterr().err == "SIGTERM: stopping after this step with a checkpoint (SIGTERM again: at once)\n"


def test_stopped_message_names_step_and_checkpoint():
    e = TrainingStopped(signal.SIGTERM, 12, Path("run/ckpt/step_00000012.pt"))
    assert str(e) == "stopped by SIGTERM at step 12; checkpoint run/ckpt/step_00000012.pt; resume with --resume auto"
    assert e.exit_code == 143
    assert "written by rank 0" in str(TrainingStopped(signal.SIGINT, 3))  # other ranks do not know the path


def test_outside_the_main_thread_nothing_is_installed():
    import threading

    before = signal.getsignal(signal.SIGTERM)
    seen = []

    def run():
        with StopSignals(announce=False) as stop:
            seen.append(signal.getsignal(signal.SIGTERM) is before and stop.signum == 0)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert seen == [True]


def test_loader_workers_ignore_stop_signals(tmp_path):
    """A real process: after ignore_stop_signals, SIGTERM and SIGINT (as `timeout` or SLURM send to the whole
    process group) leave it running."""
    code = (
        "import sys\nfrom gan_core.stopping import ignore_stop_signals\n"
        "ignore_stop_signals(0)\nprint('ready', flush=True)\nsys.stdin.readline()\nprint('alive', flush=True)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(CODE)),
    )
    try:
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate("go\n", timeout=60)
    finally:
        proc.kill()
    assert out == "alive\n" and proc.returncode == 0
