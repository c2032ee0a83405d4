"""sr-train end to end on the tiny preset: both stages, outputs, exact resume, divergence, CLI errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gan_core.checkpoint import load_checkpoint
from gan_core.config import load_config
from sr_app.cli import train_main
from sr_app.config import SRTrainConfig
from sr_app.train import TrainingDiverged, train

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "sr_tiny.yaml"


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
    code = train_main(["-c", str(TINY), "--train-dir", str(tmp_path / "empty"), "--out", str(tmp_path / "r")])
    assert code == 1 and "no usable training image" in capsys.readouterr().err
    assert train_main(["-c", str(TINY), "--train-dir", str(hr_folder), "--steps", "7", "--dry-run"]) == 0
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
