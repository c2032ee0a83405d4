"""The pieces both training loops share: file checks, rank agreement, non-finite streak, RNG, checkpoints."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest
import torch

import gan_core
from gan_core.checkpoint import rng_state
from gan_core.distributed import DistInfo
from gan_core.ema import ema_model
from gan_core.training import (
    NonFiniteStreak,
    TrainingDiverged,
    all_ranks_max,
    check_run_files,
    checkpoint_payload,
    gather_rng_states,
    load_parts,
    restore_rng_state,
    stopped_at,
)
from gan_core.weights import WeightsError


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    """No pretrained weights anywhere and no downloads: an empty TORCH_HOME, offline, no ./weights."""
    monkeypatch.setenv("SAN_GAN_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("SAN_WEIGHTS_DIR", raising=False)
    monkeypatch.chdir(tmp_path)


def test_every_missing_file_in_one_message(tmp_path, no_weights):
    vgg_weights = tmp_path / "my_vgg.pth"  # an explicit path is used as it is
    vgg_weights.write_bytes(b"weights")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a zip")
    good = tmp_path / "good.pt"
    torch.save({"step": 1}, good)
    weights = {"loss.vgg_weights": "vgg19", "log.fid_weights": "fid_inception", "other": str(vgg_weights)}
    with pytest.raises(WeightsError) as info:
        check_run_files(weights, {"train.init_from": str(tmp_path / "gone.pt"), "a": str(bad), "b": str(good)})
    msg = str(info.value)
    assert msg.startswith("4 files this run needs are missing or unusable:\n- loss.vgg_weights: weights 'vgg19'")
    assert "vgg19-dcbb9e9d.pth" in msg and "pt_inception-2015-12-05-6726825d.pth" in msg
    assert msg.count("Put the file at one of:") == 2  # each entry says where its file goes
    assert f"- train.init_from: checkpoint not found: {tmp_path / 'gone.pt'}" in msg
    assert f"- a: checkpoint {bad} is truncated or corrupt" in msg
    assert "other" not in msg and "- b" not in msg  # present files are not listed
    assert all(line.startswith(("- ", "  ")) for line in msg.splitlines()[1:])  # one entry per file
    assert check_run_files({"other": str(vgg_weights)}, {"b": str(good)}) == [f"other: {vgg_weights}", f"b: {good}"]


def test_dry_run_reports_a_download_instead_of_failing(tmp_path, no_weights, monkeypatch):
    monkeypatch.delenv("SAN_GAN_OFFLINE")
    lines = check_run_files({"loss.vgg_weights": "vgg19"}, dry_run=True)  # downloads nothing
    assert lines == ["loss.vgg_weights: vgg19 not present, downloaded at start from "
                     "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"]  # fmt: skip
    monkeypatch.setenv("SAN_GAN_OFFLINE", "1")
    with pytest.raises(WeightsError, match="1 file this run needs is missing"):
        check_run_files({"loss.vgg_weights": "vgg19"}, dry_run=True)


def test_non_finite_streak_counts_consecutive_steps_only():
    streak = NonFiniteStreak(limit=3)
    verdicts = [streak.update(bad) for bad in (True, True, False, True, True)]
    assert verdicts == [False, False, False, False, False] and streak.count == 2
    assert (
        streak.warning(5, {"g": float("nan"), "d": 1.5})
        == "step 5: non-finite loss (g=nan, d=1.5); step skipped (2 in a row)"
    )
    assert streak.update(True) is True
    err = streak.error(6, Path("run/ckpt"))
    assert isinstance(err, TrainingDiverged) and str(err).startswith("3 consecutive non-finite losses at step 6")


def test_all_ranks_max_in_one_process_is_the_values():
    assert all_ranks_max(True, 0, device=torch.device("cpu")) == (1, 0)
    assert all_ranks_max(False, 15, device=torch.device("cpu")) == (0, 15)


def test_restore_rng_state_picks_this_ranks_stream(caplog):
    states = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        states.append(rng_state())
    expected = torch.rand(3)  # what rank 1 (seed 2) draws next
    torch.manual_seed(99)
    restore_rng_state(states, DistInfo(rank=1, world_size=2), log=logging.getLogger("t"))
    assert torch.equal(torch.rand(3), expected) and not caplog.records
    restore_rng_state(states, DistInfo(rank=3, world_size=4), log=logging.getLogger("t"))  # beyond: the last
    assert torch.equal(torch.rand(3), expected)
    assert "resuming with 4 ranks from a 2-rank run" in caplog.text


def test_checkpoint_payload_round_trip(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    ema = ema_model(net, 0.9)
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1, 0.5)
    net(torch.randn(4, 3)).sum().backward()
    opt.step(), sched.step(), ema.update_parameters(net)
    gen = torch.Generator().manual_seed(5)
    parts = {"G": net, "G_ema": ema, "opt_g": opt, "sched_g": sched}
    payload = checkpoint_payload("fmt/1", {"a": 1}, 7, parts, gather_rng_states(DistInfo(), gen), 1, best=0.5)
    assert list(payload)[:3] == ["format", "config", "step"] and payload["step"] == 7 and payload["best"] == 0.5
    assert "n_averaged" in payload["G_ema"]  # the EMA's own state_dict (not its inner module's)
    assert payload["rng"][0]["generator"].equal(gen.get_state()) and payload["world_size"] == 1
    torch.save(payload, tmp_path / "c.pt")
    state = torch.load(tmp_path / "c.pt", weights_only=True)  # plain data only

    torch.manual_seed(1)
    net2 = torch.nn.Linear(3, 2)
    ema2, opt2 = ema_model(net2, 0.9), torch.optim.Adam(net2.parameters(), 1e-2)
    sched2 = torch.optim.lr_scheduler.StepLR(opt2, 1, 0.5)
    load_parts(state, {"G": net2, "G_ema": ema2, "opt_g": opt2, "sched_g": sched2})
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), net2.state_dict().values(), strict=True))
    assert int(ema2.n_averaged) == 1 and sched2.get_last_lr() == sched.get_last_lr()
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


_WORKER = """
import sys, torch, torch.distributed as dist
from gan_core.distributed import DistInfo
from gan_core.training import all_ranks_max, gather_rng_states
rank = int(sys.argv[1])
dist.init_process_group("gloo", init_method="file://" + sys.argv[2], rank=rank, world_size=2)
flags = all_ranks_max(rank == 0, 15 if rank == 1 else 0, device=torch.device("cpu"))
torch.manual_seed(10 + rank)
states = gather_rng_states(DistInfo(rank=rank, world_size=2))
torch.set_rng_state(states[1 - rank]["torch"])  # the other rank's stream
print(flags, float(torch.rand(())), flush=True)
dist.barrier()
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_two_ranks_agree_in_one_all_reduce_and_gather_rng(tmp_path):
    """Two real gloo processes: rank 0 saw a non-finite loss, rank 1 a SIGTERM: both get (1, 15); each holds
    the other's RNG state after the gather."""
    import subprocess

    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(gan_core.__file__).resolve().parents[1]))
    store = tmp_path / "store"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(r), str(store)],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in (0, 1)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    lines = [o[0].split() for o in outs]
    assert [line[:2] for line in lines] == [["(1,", "15)"]] * 2
    torch.manual_seed(11)
    draw1 = float(torch.rand(()))
    torch.manual_seed(10)
    draw0 = float(torch.rand(()))
    assert [float(lines[0][2]), float(lines[1][2])] == [draw1, draw0]


def test_stopped_at_logs_the_stop_line(caplog):
    log = logging.getLogger("t_stop")
    err = stopped_at(15, 42, Path("run/ckpt/step_00000042.pt"), log)  # one process: the barrier is a no-op
    assert err.step == 42 and err.exit_code == 143
    assert caplog.messages == [
        "stopped by SIGTERM at step 42; checkpoint run/ckpt/step_00000042.pt; resume with --resume auto"
    ]
