"""sr-train end to end on the tiny preset: both stages, outputs, exact resume, divergence, CLI errors."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import sr_app
from gan_core.checkpoint import load_checkpoint
from gan_core.config import load_config
from sr_app.cli import train_main
from sr_app.config import SRTrainConfig
from sr_app.train import TrainingDiverged, train

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "sr_tiny.yaml"
CODE = Path(sr_app.__file__).resolve().parents[1]  # the code under test, for child processes


def tiny(hr_folder, val_folder=None, *overrides) -> SRTrainConfig:
    sets = [f"data.train_dirs=[{hr_folder}]", "train.device=cpu", *overrides]
    if val_folder is not None:
        sets.append(f"data.val_dirs=[{val_folder}]")
    return load_config(SRTrainConfig, TINY, sets)


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_pretrain_then_gan(tmp_path, hr_folder, val_folder, vgg_weights):
    pre = tmp_path / "pre"
    train(tiny(hr_folder, val_folder, "train.stage=pretrain"), pre)
    for f in ("config.yaml", "train.log", "metrics.jsonl", "ckpt/step_00000004.pt", "ckpt/best.pt"):
        assert (pre / f).is_file(), f
    assert sorted((pre / "ckpt").glob("step_*.pt"))[0].name == "step_00000002.pt"  # keep_last 2
    assert list((pre / "samples").glob("step_*.png"))
    r = rows(pre)
    assert [x["step"] for x in r if x["kind"] == "train"] == [1, 2, 3, 4]
    val = [x for x in r if x["kind"] == "val"]
    assert val and {"psnr_y", "ssim_y", "bicubic_psnr_y"} <= set(val[0]) and val[0]["dataset"] == "val"
    assert "pixel" in r[0] and "mse pixel loss" in (pre / "train.log").read_text()

    gan = tmp_path / "gan"
    cfg = tiny(hr_folder, val_folder, "train.stage=gan", f"train.init_from={pre / 'ckpt' / 'best.pt'}",
               f"loss.vgg_weights_file={vgg_weights}")  # fmt: skip
    result = train(cfg, gan)
    log = (gan / "train.log").read_text()
    assert "generator initialised from" in log and "critic: san (circular padding)" in log
    r = rows(gan)
    first = r[0]
    assert {"d_hinge", "d_real", "d_fake", "content", "vgg", "g_adv", "g_total", "lr_g"} <= set(first)
    assert any(k.startswith("norm/") for k in first)  # the critic's SAN constants are logged
    ck = load_checkpoint(gan / "ckpt" / "step_00000004.pt")
    assert ck["step"] == 4 and "D" in ck and ck["config"]["train"]["stage"] == "gan"
    assert "features.0.parametrizations.weight.0.s" in ck["D"]
    assert result.step == 4 and result.G_ema is not None


def test_training_without_vgg_is_a_different_objective(tmp_path, hr_folder):
    run = tmp_path / "novgg"
    train(tiny(hr_folder, None, "loss.vgg_loss_weight=0"), run)
    assert "objective: 0.01*l1 + 0.1*hinge" in (run / "train.log").read_text()
    assert "vgg" not in rows(run)[0]


def _all_tensors(state, prefix=""):
    if isinstance(state, torch.Tensor):
        yield prefix, state
    elif isinstance(state, dict):
        for k, v in state.items():
            yield from _all_tensors(v, f"{prefix}.{k}")
    elif isinstance(state, list | tuple):
        for i, v in enumerate(state):
            yield from _all_tensors(v, f"{prefix}[{i}]")


def test_resume_is_exact(tmp_path, hr_folder, vgg_weights):
    sets = [f"loss.vgg_weights_file={vgg_weights}", "model.san_ratio=0.25", "model.san_momentum=0.5"]
    cfg = tiny(hr_folder, None, *sets)
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(cfg, straight)
    train(cfg, split, stop_after=2)
    assert (split / "ckpt" / "step_00000002.pt").is_file() and not (split / "ckpt" / "step_00000004.pt").exists()
    train(cfg, split, resume="auto")
    a = load_checkpoint(straight / "ckpt" / "step_00000004.pt")
    b = load_checkpoint(split / "ckpt" / "step_00000004.pt")
    ta, tb = (
        dict(_all_tensors({k: a[k] for k in ("G", "G_ema", "D", "opt_g", "opt_d")})),
        dict(_all_tensors({k: b[k] for k in ("G", "G_ema", "D", "opt_g", "opt_d")})),
    )
    assert ta.keys() == tb.keys() and len(ta) > 50
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k
    assert "resumed from" in (split / "train.log").read_text()


def test_non_finite_losses_skip_then_stop_with_checkpoint(tmp_path, hr_folder):
    cfg = tiny(hr_folder, None, "train.stage=pretrain", "optim.lr_g=1e30", "train.max_nonfinite=2", "train.steps=20")
    run = tmp_path / "nan"
    with pytest.raises(TrainingDiverged, match="2 consecutive non-finite losses"):
        train(cfg, run)
    log = (run / "train.log").read_text()
    assert "non-finite loss" in log and "step skipped (1 in a row)" in log
    assert list((run / "ckpt").glob("step_*.pt"))


def test_cli_errors_before_any_work(tmp_path, hr_folder, capsys):
    assert train_main(["-c", str(TINY), "--set", "loss.adv_weigth=1", "--train-dir", str(hr_folder)]) == 2
    assert "unknown config key loss.adv_weigth" in capsys.readouterr().err
    assert train_main(["-c", str(TINY), "--set", "model.critic_norm=spectral", "--train-dir", str(hr_folder)]) == 2
    assert "allowed values: 'san', 'sn', 'bssn', 'none'" in capsys.readouterr().err
    assert train_main(["-c", str(TINY)]) == 2
    assert "no training data" in capsys.readouterr().err
    assert train_main(["-c", str(TINY), "--train-dir", str(tmp_path / "nope")]) == 2
    assert "folder not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    code = train_main(["-c", str(TINY), "--train-dir", str(tmp_path / "empty"), "--out", str(tmp_path / "r"),
                       "--set", "loss.vgg_loss_weight=0"])  # fmt: skip
    assert code == 1 and "no usable training image" in capsys.readouterr().err
    dry = ["-c", str(TINY), "--train-dir", str(hr_folder), "--steps", "7", "--set", "loss.vgg_loss_weight=0"]
    assert train_main([*dry, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "steps: 7" in out and "# training images: 6 usable" in out
    run = tmp_path / "twice"
    args = ["-c", str(TINY), "--train-dir", str(hr_folder), "--out", str(run), "--set", "loss.vgg_loss_weight=0"]
    assert train_main(args) == 0
    assert train_main(args) == 1 and "already has checkpoints" in capsys.readouterr().err
    assert train_main([*args, "--resume", "auto", "--set", "model.channels=16"]) == 1
    assert "model.channels: checkpoint 8, now 16" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_ddp_two_ranks_identical(tmp_path, hr_folder, vgg_weights):
    worker = Path(__file__).with_name("ddp_train_worker.py")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(worker),
           str(hr_folder), str(vgg_weights), str(tmp_path)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for part in ("G", "G_ema", "D"):
        for k in a[part]:
            if "running_" in k or "num_batches" in k:
                continue
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k}"
    assert any(k.endswith(".s") for k in a["D"])
    ck = load_checkpoint(tmp_path / "run" / "ckpt" / "step_00000004.pt")
    assert len(ck["rng"]) == 2 and ck["world_size"] == 2


# -- files a run needs, resumed speed, stop signals (issue 8: cases 17, 18, 15) ------------------------------
@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    """No pretrained weights anywhere and no downloads: an empty TORCH_HOME, offline, no ./weights."""
    monkeypatch.setenv("SAN_GAN_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("SAN_WEIGHTS_DIR", raising=False)
    monkeypatch.chdir(tmp_path)


def test_missing_files_listed_in_one_message_before_any_work(tmp_path, hr_folder, no_weights, capsys):
    run = tmp_path / "run"
    args = ["-c", str(TINY), "--train-dir", str(hr_folder), "--out", str(run),
            "--set", f"train.init_from={tmp_path / 'pre.pt'}"]  # fmt: skip
    for extra in (["--dry-run"], []):
        assert train_main([*args, *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith("sr-train: 2 files this run needs are missing or unusable:\n")
        assert "- loss.vgg_weights_file: weights 'vgg19' not found: vgg19-dcbb9e9d.pth" in err
        assert "Put the file at one of:" in err and "Downloads are disabled (SAN_GAN_OFFLINE=1)" in err
        assert f"- train.init_from: checkpoint not found: {tmp_path / 'pre.pt'}" in err
        assert "Traceback" not in err
        assert not run.exists()  # nothing created, nothing trained
    # the pixel-loss stage needs neither VGG-19 nor an init checkpoint
    assert train_main([*args, "--set", "train.stage=pretrain", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "# training images: 6 usable" in out and "# needs" not in out


def test_resumed_run_reports_the_speed_of_its_own_steps(tmp_path, hr_folder):
    """A run resumed at step 5000 that runs 2 steps reports about 2 steps' speed, not 5002 steps'."""
    cfg = tiny(hr_folder, None, "train.stage=pretrain")
    train(cfg, tmp_path / "first", stop_after=2)
    state = load_checkpoint(tmp_path / "first" / "ckpt" / "step_00000002.pt")
    state["step"] = 5000
    (tmp_path / "big").mkdir()
    torch.save(state, tmp_path / "big" / "step_00005000.pt")
    later = tiny(hr_folder, None, "train.stage=pretrain", "train.steps=5002")
    t0 = time.perf_counter()
    result = train(later, tmp_path / "resumed", resume=str(tmp_path / "big" / "step_00005000.pt"))
    wall = time.perf_counter() - t0
    assert result.step == 5002
    speeds = [(r["step"], r["it_per_s"]) for r in rows(tmp_path / "resumed") if r["kind"] == "train"]
    assert [s for s, _ in speeds] == [5001, 5002]
    for _, ips in speeds:
        assert 0 < ips * wall < 100  # ran 2 steps within `wall` seconds; counting from step 0 gives > 5000
    assert "resumed from" in (tmp_path / "resumed" / "train.log").read_text()


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 240.0) -> None:
    """Poll until ``predicate()``; fail if the process ends first or nothing happens in ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"process ended early ({proc.returncode}):\n{out[-3000:]}\n{err[-3000:]}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("timed out waiting for the run to start its loop")
        time.sleep(0.2)


def _loop_started(run: Path):
    return lambda: (run / "metrics.jsonl").is_file() and '"train"' in (run / "metrics.jsonl").read_text()


@pytest.mark.slow
def test_sigterm_writes_a_checkpoint_and_resume_continues(tmp_path, hr_folder):
    """sr-train in its own process group, with a loader worker, gets SIGTERM like `timeout` sends it (to the
    whole group): a checkpoint at the step it stopped after, exit 143, one log line; --resume auto continues."""
    run = tmp_path / "run"
    base = ["-c", str(TINY), "--train-dir", str(hr_folder), "--out", str(run), "--set", "train.stage=pretrain"]
    long = ["--steps", "100000", "--set", "data.num_workers=1", "--set", "log.save_every=100000",
            "--set", "log.eval_every=100000", "--set", "log.sample_every=100000"]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(CODE))
    proc = subprocess.Popen(
        [sys.executable, "-m", "sr_app.cli", *base, *long],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    _wait_for(_loop_started(run), proc)
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143, err[-3000:]
    m = re.search(r"stopped by SIGTERM at step (\d+); checkpoint (\S+); resume with --resume auto", err)
    assert m, err[-3000:]
    step = int(m.group(1))
    assert Path(m.group(2)) == run / "ckpt" / f"step_{step:08d}.pt"
    assert [p.name for p in (run / "ckpt").glob("step_*.pt")] == [f"step_{step:08d}.pt"]  # only the stop's
    assert load_checkpoint(m.group(2))["step"] == step and "Traceback" not in err
    assert m.group(0) in (run / "train.log").read_text()

    assert train_main([*base, "--steps", str(step + 2), "--resume", "auto"]) == 0
    assert f"at step {step}" in (run / "train.log").read_text().split("resumed from")[-1]
    assert load_checkpoint(run / "ckpt" / f"step_{step + 2:08d}.pt")["step"] == step + 2


@pytest.mark.slow
def test_torchrun_sigterm_to_one_rank_stops_both_at_the_same_step(tmp_path, hr_folder):
    """2 gloo ranks, stage gan (two all-reduces a step, per-rank critic crops): SIGTERM to rank 1 only. Both
    ranks stop after the same step, rank 0 (which got no signal) writes the checkpoint with both ranks' RNG
    states, rank 1 exits 143, nothing hangs."""
    run = tmp_path / "run"
    worker = Path(__file__).with_name("ddp_cli_worker.py")
    args = ["-c", str(TINY), "--train-dir", str(hr_folder), "--out", str(run), "--steps", "100000", "--device", "cpu",
            "--set", "loss.vgg_loss_weight=0", "--set", "log.save_every=100000", "--set", "log.eval_every=100000",
            "--set", "log.sample_every=100000"]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(CODE))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(worker),
           str(tmp_path), *args]  # fmt: skip
    proc = subprocess.Popen(
        cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    _wait_for(lambda: (tmp_path / "rank1.pid").is_file() and _loop_started(run)(), proc)
    os.kill(int((tmp_path / "rank1.pid").read_text()), signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert (tmp_path / "rank1.exit").read_text() == "143", err[-3000:]
    log = (run / "train.log").read_text()  # rank 0 logs
    m = re.search(r"stopped by SIGTERM at step (\d+); checkpoint (\S+); resume with --resume auto", log)
    assert m, log[-3000:]
    ck = load_checkpoint(m.group(2))
    assert ck["step"] == int(m.group(1)) and ck["world_size"] == 2 and len(ck["rng"]) == 2
    assert not ck["rng"][0]["generator"].equal(ck["rng"][1]["generator"])  # each rank's own crop stream
