"""Stage gan without VGG-19: the sr_gan_l1adv preset, the warning on weights that need a perceptual term, and
``train.init_from`` taking a released model as well as a checkpoint. Tiny models and images are made here."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import sr_app
from gan_core.config import load_config
from gan_core.runtime import training_runtime
from sr_app.cli import train_main
from sr_app.config import SRTrainConfig
from sr_app.train import (
    MAX_ADV_TO_CONTENT_WITHOUT_VGG,
    build_networks,
    load_init_from,
    objective_warning,
    required_files,
    train,
)

CONFIGS = Path(sr_app.__file__).resolve().parents[1] / "configs"
TINY = CONFIGS / "sr_tiny.yaml"
WARNING = "stage gan without a perceptual term"


def tiny(hr_folder, *overrides) -> SRTrainConfig:
    return load_config(SRTrainConfig, TINY, [f"data.train_dirs=[{hr_folder}]", "train.device=cpu", *overrides])


def warnings_in(run: Path) -> list[str]:
    return [line for line in (run / "train.log").read_text().splitlines() if WARNING in line]


# -- the preset and the warning rule ---------------------------------------------------------------------
def test_preset_is_the_paper_recipe_with_l1_instead_of_vgg():
    preset = load_config(SRTrainConfig, CONFIGS / "sr_gan_l1adv.yaml")
    paper = load_config(SRTrainConfig, CONFIGS / "sr_paper.yaml")
    assert preset.loss.vgg_loss_weight == 0 and preset.loss.content_weight == 1.0 and preset.loss.pixel == "l1"
    assert 1e-3 <= preset.loss.adv_weight <= 1e-2 and preset.loss.adversarial == "hinge"
    assert preset.train.init_from == "srresnet-l1-x4" and preset.train.stage == "gan"
    # everything but the loss (and the init, the NIQE validation) is the paper's
    assert (preset.model, preset.optim, preset.data) == (paper.model, paper.optim, paper.data)
    assert objective_warning(preset) is None


@pytest.mark.parametrize(
    ("sets", "warns"),
    [
        (["loss.vgg_loss_weight=0"], True),  # the paper's 0.01 * L1 + 0.1 * hinge without VGG: 100x over the limit
        (["loss.vgg_loss_weight=0", "loss.content_weight=1", "loss.adv_weight=0.1"], False),  # exactly the limit
        (["loss.vgg_loss_weight=0", "loss.content_weight=1", "loss.adv_weight=0.11"], True),
        (["loss.vgg_loss_weight=0", "loss.content_weight=0", "loss.adv_weight=0.005"], True),  # nothing holds G
        (["loss.vgg_loss_weight=0", "loss.adv_weight=0"], False),  # no adversarial term: a pixel-loss run
        ([], False),  # the paper's objective with VGG
        (["loss.vgg_loss_weight=0", "train.stage=pretrain"], False),
    ],
)
def test_warning_rule(sets, warns):
    cfg = load_config(SRTrainConfig, CONFIGS / "sr_paper.yaml", sets)
    line = objective_warning(cfg)
    assert (line is not None) == warns
    if warns:
        assert "\n" not in line and f"{MAX_ADV_TO_CONTENT_WITHOUT_VGG:g} x loss.content_weight" in line
        assert "configs/sr_gan_l1adv.yaml" in line


def test_train_logs_the_warning_once_and_not_for_sound_weights(tmp_path, hr_folder):
    bad = tmp_path / "bad"
    train(tiny(hr_folder, "loss.vgg_loss_weight=0"), bad)  # tiny = paper weights: 0.01 * l1 + 0.1 * hinge
    (line,) = warnings_in(bad)
    assert " WARNING " in line and "loss.adv_weight 0.1 > 0.1 x loss.content_weight 0.01" in line
    good = tmp_path / "good"
    train(tiny(hr_folder, "loss.vgg_loss_weight=0", "loss.content_weight=1", "loss.adv_weight=0.005"), good)
    assert warnings_in(good) == []
    assert "objective: 1*l1 + 0.005*hinge" in (good / "train.log").read_text()


# -- train.init_from: released model or checkpoint -------------------------------------------------------
def test_required_files_route_released_models_to_the_weights_check(tmp_path, tiny_model):
    def init(value):
        return required_files(load_config(SRTrainConfig, TINY, [f"train.init_from={value}"]))

    assert init("runs/pre/ckpt/best.pt") == ({"loss.vgg_weights_file": "vgg19"},
                                             {"train.init_from": "runs/pre/ckpt/best.pt"})  # fmt: skip
    assert init(tiny_model)[0]["train.init_from"] == str(tiny_model) and init(tiny_model)[1] == {}
    assert init("srresnet-l1-x4")[0]["train.init_from"] == "srresnet-l1-x4"
    assert init(tiny_model.parent)[0]["train.init_from"] == str(tiny_model.parent / "model.safetensors")


def test_a_released_model_initialises_the_generator(tmp_path, hr_folder, tiny_model):
    """The tiny released model (8 channels, 1 block, fp16 file) is the generator stage gan starts from."""
    cfg = tiny(hr_folder, "model.num_blocks=1", "loss.vgg_loss_weight=0", f"train.init_from={tiny_model}")
    _, what = load_init_from(cfg)
    assert what.startswith("released model, sha256 ")
    released = {k: v.float() for k, v in load_file(str(tiny_model)).items()}
    log = logging.getLogger("test_gan_preset")
    nets = build_networks(cfg, training_runtime("cpu", "fp32", False), log, fresh=True)
    start = nets.G.state_dict()
    assert start.keys() == released.keys()
    for k in released:
        assert torch.equal(start[k], released[k]), k
    run = tmp_path / "run"
    result = train(cfg, run)  # and a whole (2-step) run from it
    assert result.step == 4 and "generator initialised from" in (run / "train.log").read_text()


def test_the_shipped_pixel_model_is_accepted_by_name():
    cfg = load_config(SRTrainConfig, CONFIGS / "sr_gan_l1adv.yaml")
    weights, what = load_init_from(cfg)
    assert what.startswith("released model") and weights["features.15.conv2.weight"].shape == (64, 64, 3, 3)


def test_init_from_errors_are_one_line_before_any_work(tmp_path, hr_folder, tiny_model, capsys):
    run = tmp_path / "run"
    base = ["-c", str(TINY), "--train-dir", str(hr_folder), "--out", str(run), "--set", "loss.vgg_loss_weight=0"]
    # another architecture (the config builds 2 blocks, the file has 1)
    assert train_main([*base, "--set", f"train.init_from={tiny_model}"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"train.init_from: {tiny_model} is a 8-channel 1-block x4 generator" in err and "2 blocks" in err
    assert not (run / "ckpt").exists() and not (run / "train.log").exists()
    # a missing file, and a model whose JSON config is missing
    assert train_main([*base, "--set", f"train.init_from={tmp_path / 'nope.safetensors'}"]) == 2
    assert "train.init_from: weights file not found" in capsys.readouterr().err
    lone = tmp_path / "lone" / "m.safetensors"
    lone.parent.mkdir()
    lone.write_bytes(tiny_model.read_bytes())
    assert train_main([*base, "--set", f"train.init_from={lone}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sr-train: train.init_from: ") and "its model config is missing" in err
    # a file that is no generator at all
    (tmp_path / "notes.safetensors").write_text(json.dumps({"not": "a model"}))
    (tmp_path / "notes.json").write_text(json.dumps({"architecture": "SRGenerator", "kwargs": {"channels": 8}}))
    assert train_main([*base, "--set", f"train.init_from={tmp_path / 'notes.safetensors'}"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sr-train: train.init_from: ") and err.count("\n") == 1


@pytest.mark.parametrize(
    ("shape", "grid", "stride"), [((8, 3, 3, 3), 8, 1), ((8, 8, 4, 4), 8, 2), ((16, 8, 3, 3), 4, 1)]
)
def test_power_iteration_critic_norm_converges_to_the_exact_one(shape, grid, stride):
    """conv_power_norm (log.critic_spectral_iters > 0) estimates the operator conv_spectral_norm computes exactly:
    never above it, equal after enough iterations (random weights made here)."""
    from gan_core.norm import conv_spectral_norm
    from sr_app.train import conv_power_norm

    w = torch.randn(*shape, generator=torch.Generator().manual_seed(3))
    exact = float(conv_spectral_norm(w, (grid, grid), stride))
    assert conv_power_norm(w, grid, stride, 2) <= exact * (1 + 1e-5)
    assert conv_power_norm(w, grid, stride, 300) == pytest.approx(exact, rel=1e-3)
