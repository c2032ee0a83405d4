"""What sr-train logs for studies of the critic: exact spectral norms of the critic's convs (an oracle of
single-tap kernels), gradient norms, seconds per step and non-finite steps in metrics.jsonl. Tiny critics and
images are made by the tests."""

from __future__ import annotations

import json
import math

import pytest
import torch

from gan_core.config import load_config
from sr_app.config import SRTrainConfig
from sr_app.models import SRCritic
from sr_app.train import TrainingDiverged, critic_spectral_norms, train

from .test_gan_preset import TINY


def rows(run, kind):
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


def test_spectral_norms_of_single_tap_kernels_are_their_taps():
    """A conv whose only non-zero weight is one tap c is a scaled (sub-sampled) shift: norm |c| on any grid,
    stride 1 or 2; the linear layers get their top singular value. Layer k's tap is k + 1."""
    D = SRCritic("none", batch_norm=False, num_blocks=3, width=4)
    convs = [(n, m) for n, m in D.named_modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        for k, (_, m) in enumerate(convs):
            m.weight.zero_()
            m.weight[-1, 0, 1, 2] = -(k + 1.0)
        D.head[0].weight.zero_()
        D.head[0].weight[:3, :3] = torch.diag(torch.tensor([0.5, 2.5, 1.0]))
    out = critic_spectral_norms(D)
    assert len(convs) == 6
    for k, (name, _) in enumerate(convs):
        assert out[f"spectral/{name}"] == pytest.approx(k + 1.0, rel=1e-5)
    assert out["spectral/max_conv"] == pytest.approx(6.0, rel=1e-5) and out["spectral/head.0"] == pytest.approx(2.5)
    assert "spectral/head.2" in out


def test_sn_critic_norms_and_the_grids_they_are_computed_on():
    """An SN critic's convs are normalized in their (out, in*k*k) view, which bounds nothing exactly on the
    grid; the spectral norm is positive and finite for every conv, computed for the grids 16 -> 8 -> 4."""
    D = SRCritic("sn", num_blocks=2, width=8)
    D(torch.rand(2, 3, 16, 16))
    out = critic_spectral_norms(D)
    assert [k for k in out if k.startswith("spectral/features.")] == [f"spectral/features.{i}" for i in (0, 3, 6, 9)]
    assert all(0 < v < 10 for v in out.values())


def test_a_study_run_logs_gradient_norms_step_time_and_critic_norms(tmp_path, hr_folder, val_folder):
    run = tmp_path / "run"
    cfg = load_config(SRTrainConfig, TINY, [f"data.train_dirs=[{hr_folder}]", f"data.val_dirs=[{val_folder}]",
                                            "train.device=cpu", "loss.vgg_loss_weight=0", "log.grad_norms=true",
                                            "log.critic_spectral=true"])  # fmt: skip
    train(cfg, run)
    train_rows = rows(run, "train")
    assert len(train_rows) == 4
    for r in train_rows:
        assert r["step_s"] > 0 and r["d_grad_norm"] > 0 and r["g_grad_norm"] > 0
        assert all(math.isfinite(r[k]) for k in ("step_s", "d_grad_norm", "g_grad_norm"))
    critic = rows(run, "critic")
    assert [r["step"] for r in critic] == [2, 4] == [r["step"] for r in rows(run, "val")]  # at every validation
    assert all(r["spectral/max_conv"] > 0 for r in critic)
    plain = tmp_path / "plain"  # off by default: the loop's rows stay as they were
    train(load_config(SRTrainConfig, TINY, [f"data.train_dirs=[{hr_folder}]", "train.device=cpu",
                                            "loss.vgg_loss_weight=0"]), plain)  # fmt: skip
    assert "d_grad_norm" not in rows(plain, "train")[0] and not rows(plain, "critic")


def test_non_finite_steps_are_rows_of_metrics_jsonl(tmp_path, hr_folder):
    cfg = load_config(SRTrainConfig, TINY, [f"data.train_dirs=[{hr_folder}]", "train.device=cpu",
                                            "train.stage=pretrain", "optim.lr_g=1e30", "train.max_nonfinite=2",
                                            "train.steps=20", "log.grad_norms=true"])  # fmt: skip
    with pytest.raises(TrainingDiverged):
        train(cfg, tmp_path / "nan")
    bad = rows(tmp_path / "nan", "nonfinite")
    assert [r["streak"] for r in bad] == [1, 2] and all("pixel" in r and "g_grad_norm" in r for r in bad)
