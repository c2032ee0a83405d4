"""WGAN-GP as a critic objective of sr-train: validated once in the config, the critic step with the gradient
penalty, and a short run. Tiny critics and images are made by the tests."""

from __future__ import annotations

import json
import math

import pytest
import torch

from gan_core.config import ConfigError, load_config
from gan_core.runtime import training_runtime
from sr_app.config import SRTrainConfig
from sr_app.models import SRCritic
from sr_app.train import d_step, train

from .test_gan_preset import TINY

WGAN = ["loss.adversarial=wgan-gp", "model.critic_norm=none", "model.critic_bn=false"]


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["loss.adversarial=wgan-gp", "model.critic_bn=false"], "model.critic_norm: must be none with"),
        (["loss.adversarial=wgan-gp", "model.critic_norm=none"], "model.critic_bn: must be false with"),
        ([*WGAN, "loss.gp_weight=0"], "loss.gp_weight: must be > 0 with loss.adversarial=wgan-gp"),
        ([*WGAN, "train.compile=true"], "train.compile: must be false with loss.adversarial=wgan-gp"),
        (["loss.adversarial=wgan"], "allowed values: 'hinge', 'wgan-gp'"),
        (["loss.gp_weight=-1"], "loss.gp_weight: must be >= 0"),
    ],
)
def test_config_refuses_what_wgan_gp_cannot_run_with(sets, message):
    with pytest.raises(ConfigError, match=message):
        load_config(SRTrainConfig, TINY, sets)


def test_config_accepts_the_plain_critic_and_defaults_to_lambda_10():
    cfg = load_config(SRTrainConfig, TINY, WGAN)
    assert cfg.loss.adversarial == "wgan-gp" and cfg.loss.gp_weight == 10.0
    assert load_config(SRTrainConfig, TINY).loss.adversarial == "hinge"  # the paper's objective stays the default


def test_critic_step_adds_the_penalty_to_the_wasserstein_loss():
    rt = training_runtime("cpu", "fp32", False)
    torch.manual_seed(0)
    D = SRCritic("none", batch_norm=False, num_blocks=2, width=8)
    opt = torch.optim.Adam(D.parameters())
    real, fake = torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16)
    grads = {}
    for weight in (0.0, 10.0):
        torch.manual_seed(1)  # the same interpolation weights in both steps
        out = d_step(D, real, fake, opt, rt, "wgan-gp", weight)
        grads[weight] = torch.cat([p.grad.flatten() for p in D.parameters()])
        assert set(out) == {"d_wgan", "gp", "d_real", "d_fake"}
        assert float(out["d_wgan"]) == pytest.approx(float(out["d_fake"] - out["d_real"]), abs=1e-6)
        assert math.isfinite(float(out["gp"])) and float(out["gp"]) > 0
    assert not torch.allclose(grads[0.0], grads[10.0])  # the penalty's double backward reaches the weights
    with pytest.raises(ValueError, match="'hinge' or 'wgan-gp'"):
        d_step(D, real, fake, opt, rt, "wgan")


def test_a_few_wgan_gp_steps_are_finite_with_a_positive_penalty(tmp_path, hr_folder):
    run = tmp_path / "wgan"
    cfg = load_config(SRTrainConfig, TINY, [f"data.train_dirs=[{hr_folder}]", "train.device=cpu", *WGAN,
                                            "loss.vgg_loss_weight=0", "loss.content_weight=1",
                                            "loss.adv_weight=0.01", "log.grad_norms=true"])  # fmt: skip
    result = train(cfg, run)
    assert result.step == 4
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r["kind"] == "train"]
    assert len(steps) == 4 and not [r for r in rows if r["kind"] == "nonfinite"]
    for r in steps:
        assert r["gp"] > 0 and all(math.isfinite(r[k]) for k in ("d_wgan", "gp", "g_adv", "d_grad_norm"))
        assert "d_hinge" not in r
    assert "objective: 1*l1 + 0.01*wgan(gp 10)" in (run / "train.log").read_text()
    assert not any("running_mean" in k for k in result.D.state_dict())  # the critic has no BatchNorm
