"""translate-train / translate-infer / translate-eval end to end on the tiny preset."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import translate_app
from gan_core.checkpoint import load_checkpoint
from gan_core.config import load_config
from translate_app.cli import eval_main, infer_main, train_main
from translate_app.config import SpadeTrainConfig
from translate_app.train import train

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "spade_tiny.yaml"
CODE = Path(translate_app.__file__).resolve().parents[1]  # the code under test, for child processes


def tiny(root, *sets):
    return load_config(SpadeTrainConfig, TINY, [f"data.root={root}", "train.device=cpu", *sets])


def test_train_resume_exact_infer_and_eval(tmp_path, city_root, vgg_weights, fid_weights, capsys):
    cfg = tiny(city_root, f"loss.vgg_weights_file={vgg_weights}", "log.fid_every=2", "log.fid_images=2",
               f"log.fid_weights_file={fid_weights}")  # fmt: skip
    straight, split = tmp_path / "straight", tmp_path / "split"
    result = train(cfg, straight)
    assert result.step == 4 and result.fid is not None and result.fid >= 0
    rows = [json.loads(x) for x in (straight / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["kind"] == "train"]
    assert {"g_adv", "g_feat", "g_vgg", "d_hinge", "lr_g"} <= set(train_rows[0])
    assert any(k.startswith("norm/") for k in train_rows[0])  # SAN constants logged
    assert [r["fid"] for r in rows if r["kind"] == "val"]
    assert list((straight / "samples").glob("*.png"))
    train(cfg, split, stop_after=2)
    train(cfg, split, resume="auto")
    a = load_checkpoint(straight / "ckpt" / "step_00000004.pt")
    b = load_checkpoint(split / "ckpt" / "step_00000004.pt")
    for part in ("G", "D", "opt_g", "opt_d"):
        ta = a[part] if part in ("G", "D") else a[part]["state"]
        tb = b[part] if part in ("G", "D") else b[part]["state"]
        for k in ta:
            va, vb = ta[k], tb[k]
            if isinstance(va, dict):
                for kk in va:
                    if torch.is_tensor(va[kk]):
                        assert torch.equal(va[kk], vb[kk]), f"{part}.{k}.{kk}"
            else:
                assert torch.equal(va, vb), f"{part}.{k}"
    s_keys = [k for k in a["D"] if k.endswith("weight.0.s")]
    assert len(s_keys) == 10

    # translate-infer: labels -> images of the model's size; instance maps picked up; bad files reported
    labels = city_root / "gtFine" / "val"
    (labels / "frankfurt" / "broken_gtFine_labelIds.png").write_bytes(b"nope")
    out = tmp_path / "synth"
    code = infer_main(["-i", str(labels), "-o", str(out), "--weights", str(straight / "ckpt" / "step_00000004.pt"),
                       "--colorize"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and "broken_gtFine_labelIds.png" in err and "3 written, 1 failed" in err
    img = Image.open(out / "frankfurt_000000_000019.png")
    assert img.size == (128, 64) and (out / "frankfurt_000000_000019_labels.png").is_file()
    assert not list(out.glob("*instance*"))

    # translate-eval: folder vs folder, then the cached-statistics mode
    reals = tmp_path / "reals"
    reals.mkdir()
    for k, p in enumerate(sorted((city_root / "leftImg8bit" / "val").rglob("*.png"))):
        Image.open(p).resize((128, 64)).save(reals / f"{k}.png")
    fakes = tmp_path / "fakes"
    fakes.mkdir()
    for k, p in enumerate(sorted(out.glob("frankfurt_*0019.png"))):
        Image.open(p).save(fakes / f"{k}.png")
    args = ["--fake", str(fakes), "--real", str(reals), "--fid-weights", str(fid_weights)]
    assert eval_main([*args, "--save-stats", str(tmp_path / "real.npz"), "--json", str(tmp_path / "f.json")]) == 0
    fid1 = json.loads((tmp_path / "f.json").read_text())["fid"]
    assert eval_main(["--fake", str(fakes), "--real-stats", str(tmp_path / "real.npz"), "--fid-weights",
                      str(fid_weights), "--json", str(tmp_path / "g.json")]) == 0  # fmt: skip
    assert json.loads((tmp_path / "g.json").read_text())["fid"] == fid1
    assert eval_main(["--fake", str(reals), "--real", str(reals), "--fid-weights", str(fid_weights),
                      "--json", str(tmp_path / "z.json")]) == 0  # fmt: skip
    assert abs(json.loads((tmp_path / "z.json").read_text())["fid"]) < 1e-4
    gen = ["--weights", str(straight / "ckpt" / "step_00000004.pt"), "--data-root", str(city_root), "--fid-weights",
           str(fid_weights), "--out", str(tmp_path / "gen")]  # fmt: skip
    (labels / "frankfurt" / "broken_gtFine_labelIds.png").unlink()
    assert eval_main(gen) == 0 and len(list((tmp_path / "gen").glob("*.png"))) == 3
    assert "FID" in capsys.readouterr().out


def test_cli_errors(tmp_path, city_root, capsys):
    assert train_main(["-c", str(TINY), "--data-root", str(city_root), "--set", "model.ngff=3"]) == 2
    assert "unknown config key model.ngff" in capsys.readouterr().err
    assert train_main(["-c", str(TINY), "--data-root", str(tmp_path / "none")]) == 2
    assert "Cityscapes root not found" in capsys.readouterr().err
    assert (
        train_main(["-c", str(TINY), "--data-root", str(city_root), "--set", "loss.vgg_loss_weight=0", "--dry-run"])
        == 0
    )
    assert "# training frames: 3" in capsys.readouterr().out
    code = train_main(["-c", str(TINY), "--data-root", str(city_root), "--set", "loss.vgg_loss_weight=0",
                       "--set", "train.batch_size=4", "--out", str(tmp_path / "r")])  # fmt: skip
    assert code == 1 and "fewer than one batch" in capsys.readouterr().err
    assert infer_main(["-i", "x.png", "-o", str(tmp_path), "--weights", str(tmp_path / "missing.pt")]) == 2
    assert "cannot load" in capsys.readouterr().err
    assert eval_main(["--fake", str(tmp_path), "--real", str(tmp_path), "--fid-weights", str(tmp_path / "no.pth")]) == 2
    assert "weights file not found" in capsys.readouterr().err


def test_lr_schedule_is_constant_then_linear():
    from translate_app.train import lr_factor

    assert [round(lr_factor(s, 200, 100, 100), 3) for s in (0, 99, 100, 150, 200)] == [1.0, 1.0, 1.0, 0.5, 0.0]
    assert np.isclose(lr_factor(10, 10, 1, 0), 1.0)


@pytest.mark.slow
def test_torchrun_ddp_two_ranks_identical(tmp_path, city_root):
    """2 gloo ranks (SAN critic): identical weights and SAN constants on both ranks."""
    worker = Path(__file__).with_name("ddp_train_worker.py")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(worker),
           str(city_root), str(tmp_path)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for part in ("G", "D"):
        for k in a[part]:
            if "running_" in k or "num_batches" in k:  # CPU: per-rank BatchNorm statistics (no SyncBN)
                continue
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k}"
    assert any(k.endswith(".s") for k in a["D"])
    ck = load_checkpoint(tmp_path / "run" / "ckpt" / "step_00000004.pt")
    assert ck["world_size"] == 2


# -- files a run needs, stop signals (issue 8: cases 17, 15) -------------------------------------------------
def test_missing_weights_listed_in_one_message_before_any_work(tmp_path, city_root, monkeypatch, capsys):
    monkeypatch.setenv("SAN_GAN_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # empty: no hub cache
    monkeypatch.delenv("SAN_WEIGHTS_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    args = ["-c", str(TINY), "--data-root", str(city_root), "--out", str(run), "--set", "log.fid_every=2"]
    for extra in (["--dry-run"], []):
        assert train_main([*args, *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith("translate-train: 2 files this run needs are missing or unusable:\n")
        assert "- loss.vgg_weights_file: weights 'vgg19' not found: vgg19-dcbb9e9d.pth" in err
        assert "- log.fid_weights_file: weights 'fid_inception' not found: pt_inception-2015-12-05-6726825d.pth" in err
        assert err.count("Put the file at one of:") == 2 and "Traceback" not in err
        assert not run.exists()
    # without the VGG term and periodic FID the run needs no pretrained file
    assert train_main([*args, "--set", "loss.vgg_loss_weight=0", "--set", "log.fid_every=0", "--dry-run"]) == 0
    assert "# needs" not in capsys.readouterr().out


@pytest.mark.slow
def test_sigterm_writes_a_checkpoint_and_resume_continues(tmp_path, city_root):
    """translate-train gets SIGTERM mid-run: a checkpoint at the step it stopped after, exit 143, one log line;
    --resume auto continues from it."""
    run = tmp_path / "run"
    base = ["-c", str(TINY), "--data-root", str(city_root), "--out", str(run), "--set", "loss.vgg_loss_weight=0"]
    long = ["--steps", "100000", "--set", "log.save_every=100000", "--set", "log.sample_every=100000"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(CODE))
    proc = subprocess.Popen(
        [sys.executable, "-m", "translate_app.cli", *base, *long],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        metrics = run / "metrics.jsonl"
        while not (metrics.is_file() and '"train"' in metrics.read_text()):  # the loop has started
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the run did not start its loop"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=240)
    finally:
        proc.kill()
    assert proc.returncode == 143, err[-3000:]
    m = re.search(r"stopped by SIGTERM at step (\d+); checkpoint (\S+); resume with --resume auto", err)
    assert m, err[-3000:]
    step = int(m.group(1))
    assert [p.name for p in (run / "ckpt").glob("step_*.pt")] == [f"step_{step:08d}.pt"]
    assert load_checkpoint(m.group(2))["step"] == step

    assert train_main([*base, "--steps", str(step + 1), "--resume", "auto"]) == 0
    assert f"resumed from {m.group(2)} at step {step}" in (run / "train.log").read_text()
    assert load_checkpoint(run / "ckpt" / f"step_{step + 1:08d}.pt")["step"] == step + 1
