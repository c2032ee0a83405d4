"""benchmarks/critic_study.py: the smoke mode runs every critic through sr-train's loop and writes the JSON,
the markdown table and the plots; the held-out split, the budget arithmetic and the usage errors. The
images and the tiny released generator it starts from are made by the test (its numbers mean nothing)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("critic_study", REPO / "benchmarks" / "critic_study.py")
study = importlib.util.module_from_spec(spec)
spec.loader.exec_module(study)


def write_images(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(count):
        yy, xx = np.mgrid[0:72, 0:80] / 80
        img = np.stack([np.sin(rng.uniform(3, 20) * xx + rng.uniform(3, 20) * yy + c) for c in range(3)], axis=2)
        Image.fromarray(((img * 0.5 + 0.5) * 255).astype(np.uint8)).save(folder / f"{100 + k}.png")
    return folder


@pytest.fixture
def tiny_init(tmp_path) -> Path:
    """An 8-channel, 1-block generator released as .safetensors + .json (random weights)."""
    from safetensors.torch import save_file

    from sr_app.models import SRGenerator

    torch.manual_seed(0)
    G = SRGenerator(channels=8, num_blocks=1, init_scale=0.1)
    path = tmp_path / "tiny.safetensors"
    save_file({k: v.half() for k, v in G.state_dict().items()}, str(path))
    config = {"architecture": "SRGenerator", "kwargs": {"channels": 8, "num_blocks": 1, "scale": 4}, "scale": 4}
    path.with_suffix(".json").write_text(json.dumps(config))
    return path


@pytest.mark.slow
def test_smoke_runs_every_critic_and_writes_the_report(tmp_path, tiny_init, capsys):
    hr = write_images(tmp_path / "hr", 6)
    out = tmp_path / "study"
    args = ["--out", str(out), "--smoke", "--train-dir", str(hr), "--init", str(tiny_init), "--device", "cpu",
            "--set", "model.channels=8", "--set", "model.num_blocks=1", "--curve-images", "1"]  # fmt: skip
    assert study.main(args) == 0
    printed = capsys.readouterr().out
    assert "plan: 2 steps per run, 4 validations, 6 runs" in printed
    report = json.loads((out / "study.json").read_text())
    assert [r["critic"] for r in report["runs"]] == list(study.CRITICS)
    assert report["val_images"] == ["100", "103"] and sorted(p.name for p in (out / "val").iterdir()) == [
        "100.png", "103.png"]  # fmt: skip
    for r in report["runs"]:
        s = r["summary"]
        assert s["outcome"] == "finished" and s["steps"] == 2, r["critic"]
        assert s["s_per_step"] > 0 and s["spectral_max_conv"] > 0 and s["d_grad_norm"] > 0 and s["g_grad_norm"] > 0
        assert np.isfinite(s["psnr_y"]) and [v["step"] for v in r["curves"]["val"]] == [1, 2]
        final = Path(r["run_dir"]) / "final_generator.safetensors"  # exported for the lead, loadable as a model
        assert s["ship"]["generator"] == str(final) and final.with_suffix(".json").is_file()
        assert np.isfinite(s["ship"]["psnr_y"]) and 0 < s["ship"]["ssim_y"] <= 1
        log = (Path(r["run_dir"]) / "train.log").read_text()
        assert "train images: 4 " in log and "released model" in log  # the held-out pair is not trained on
    wgan = report["runs"][-1]["curves"]["train"][0]
    assert wgan["gp"] > 0 and "d_hinge" not in wgan
    table = (out / "study.md").read_text()
    assert "Command: `python benchmarks/critic_study.py" in table
    assert all(f"| {c} | 0 | 2 |" in table for c in study.CRITICS)
    assert "## Ship decision" in table and all(f"| {c} s0 | " in table for c in study.CRITICS)
    # the curves validate on the first held-out image, the ship decision on both, whole
    assert report["curve_count"] == 1 and [p.name for p in (out / "val_curves").iterdir()] == ["100.png"]
    assert report["ship_init"]["psnr_y"] != report["init"]["psnr_y"]
    assert (out / "curves.png").stat().st_size > 0
    assert not (out / "perception_distortion.png").exists()  # no NIQE on images this small

    # a second invocation keeps the finished runs (summary.json) and rewrites the report
    before = (Path(report["runs"][0]["run_dir"]) / "train.log").read_text()
    assert study.main(args) == 0
    assert (Path(report["runs"][0]["run_dir"]) / "train.log").read_text() == before


def test_holdout_is_spread_over_the_names_and_never_302003(tmp_path):
    folder = tmp_path / "bsd"
    folder.mkdir()
    for stem in ["302003", *(f"{k:03d}" for k in range(10))]:
        Image.new("RGB", (4, 4)).save(folder / f"{stem}.png")
    assert [f.stem for f in study.holdout_files(folder, 3)] == ["000", "003", "006"]
    val = study.make_val_folder(study.holdout_files(folder, 5), tmp_path / "val")
    assert sorted(p.name for p in study.make_val_folder(study.holdout_files(folder, 3), val).iterdir()) == [
        "000.png", "003.png", "006.png"]  # fmt: skip
    with pytest.raises(ValueError, match="--holdout must be in"):
        study.holdout_files(folder, 10)


def test_budget_fits_the_minutes():
    calib = {"a": {"s_per_step": 1.0, "setup_s": 10.0, "eval_extra_s": 2.0},
             "b": {"s_per_step": 3.0, "setup_s": 30.0, "eval_extra_s": 2.0}}  # fmt: skip
    # fixed: (10 + 4 * (5 + 2)) + (30 + 4 * (5 + 2)) = 96 s; 4 s per common step -> (600 - 96) / 4 = 126
    assert study.steps_for_minutes(10, calib, seeds=1, evals=4, eval_s=5.0) == 126
    assert study.steps_for_minutes(10, calib, seeds=2, evals=4, eval_s=5.0) == 51  # (600 - 192) / 8
    assert sum(study.run_seconds(c, 126, 4, 5.0) for c in calib.values()) <= 600


def test_usage_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        study.main(["--out", str(tmp_path), "--critics", "san,spectral"])
    assert e.value.code == 2 and "unknown critic 'san'" in capsys.readouterr().err
    assert study.main(["--out", str(tmp_path), "--train-dir", str(tmp_path / "nope")]) == 2
    assert "folder not found" in capsys.readouterr().err
    hr = write_images(tmp_path / "hr", 3)
    bad = ["--out", str(tmp_path / "o"), "--smoke", "--train-dir", str(hr), "--set", "loss.gp_weight=-1"]
    assert study.main(bad) == 2
    assert "config error: loss.gp_weight: must be >= 0" in capsys.readouterr().err
