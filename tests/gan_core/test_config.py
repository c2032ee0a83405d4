"""Config loading: defaults <- YAML <- --set, unknown keys and bad values named, round trips."""

from __future__ import annotations

import pytest

from gan_core.config import ConfigError, apply_overrides, from_dict, load_config, save_yaml, to_dict
from sr_app.config import SRTrainConfig


def test_defaults_are_the_paper_preset_file(tmp_path):
    from pathlib import Path

    preset = load_config(SRTrainConfig, Path(__file__).resolve().parents[2] / "configs" / "sr_paper.yaml")
    assert to_dict(preset) == to_dict(SRTrainConfig())


def test_overrides_and_yaml_number_coercion(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("optim:\n  lr_g: 1e-4\n  betas_g: [0.9, 0.99]\ntrain:\n  steps: 1e3\n")  # PyYAML reads 1e-4 as str
    cfg = load_config(SRTrainConfig, f, ["loss.adv_weight=0.01", "model.san_gain=auto", "data.train_dirs=[a, b]"])
    assert cfg.optim.lr_g == 1e-4 and isinstance(cfg.optim.lr_g, float)
    assert cfg.optim.betas_g == (0.9, 0.99) and cfg.train.steps == 1000
    assert cfg.loss.adv_weight == 0.01 and cfg.model.san_gain == "auto"
    assert cfg.data.train_dirs == ["a", "b"]
    assert load_config(SRTrainConfig, None, ["model.san_gain=1.3"]).model.san_gain == 1.3


def test_unknown_keys_name_the_key_and_the_allowed_ones(tmp_path):
    with pytest.raises(
        ConfigError, match=r"unknown config key loss\.adv_weigth; allowed keys under loss: .*adv_weight"
    ):
        load_config(SRTrainConfig, None, ["loss.adv_weigth=0.1"])
    f = tmp_path / "c.yaml"
    f.write_text("model:\n  critic: san\n")
    with pytest.raises(ConfigError, match=r"unknown config key model\.critic;"):
        load_config(SRTrainConfig, f)
    with pytest.raises(ConfigError, match=r"unknown config key trian"):
        load_config(SRTrainConfig, None, ["trian.steps=3"])


def test_bad_values_name_the_key_and_the_allowed_values():
    with pytest.raises(
        ConfigError, match=r"model\.critic_norm: 'spectral' is not allowed; allowed values: 'san', 'sn'"
    ):
        load_config(SRTrainConfig, None, ["model.critic_norm=spectral"])
    with pytest.raises(ConfigError, match=r"train\.steps: 'many' is not int"):
        load_config(SRTrainConfig, None, ["train.steps=many"])
    with pytest.raises(ConfigError, match=r"model\.san_ratio: must be in \(0, 1\]"):
        load_config(SRTrainConfig, None, ["model.san_ratio=1.5"])
    with pytest.raises(ConfigError, match=r"model\.critic_padding: SAN needs circular padding"):
        load_config(SRTrainConfig, None, ["model.critic_padding=zeros"])
    with pytest.raises(ConfigError, match=r"optim\.betas_g: expected 2 values"):
        load_config(SRTrainConfig, None, ["optim.betas_g=[0.5]"])
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["loss.adv_weight"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(SRTrainConfig, "nope.yaml")


def test_round_trip_through_yaml_and_dict(tmp_path):
    cfg = load_config(SRTrainConfig, None, ["model.critic_norm=bssn", "model.critic_padding=zeros", "train.seed=5"])
    save_yaml(cfg, tmp_path / "r.yaml")
    again = load_config(SRTrainConfig, tmp_path / "r.yaml")
    assert again == cfg
    assert from_dict(SRTrainConfig, to_dict(cfg)) == cfg
