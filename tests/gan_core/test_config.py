"""Config loading: defaults <- YAML <- --set, unknown keys and bad values named, round trips."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from gan_core.config import ConfigError, apply_overrides, from_dict, load_config, save_yaml, to_dict
from sr_app.config import SRTrainConfig
from translate_app.config import SpadeTrainConfig

REPO = Path(__file__).resolve().parents[2]


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


# (config class, old key, new key or None when removed)
RENAMED = [
    (SRTrainConfig, "loss.feature_weight", "loss.vgg_loss_weight"),
    (SRTrainConfig, "loss.vgg_weights", "loss.vgg_weights_file"),
    (SRTrainConfig, "optim.d_steps_per_g", None),
    (SpadeTrainConfig, "loss.feat_weight", "loss.feature_matching_weight"),
    (SpadeTrainConfig, "loss.vgg_weight", "loss.vgg_loss_weight"),
    (SpadeTrainConfig, "loss.vgg_weights", "loss.vgg_weights_file"),
    (SpadeTrainConfig, "log.fid_weights", "log.fid_weights_file"),
]


@pytest.mark.parametrize(("cls", "old", "new"), RENAMED)
def test_old_key_names_are_refused_with_the_new_one(tmp_path, cls, old, new):
    section, key = old.split(".")
    value = "vgg19" if key.endswith("weights") else "2"  # a file name, or a number
    said = f"config key {old} was renamed: use {new}" if new else f"config key {old} was removed: it was never read"
    with pytest.raises(ConfigError, match="^" + re.escape(said)):
        load_config(cls, None, [f"{old}={value}"])
    f = tmp_path / "old.yaml"
    f.write_text(f"{section}:\n  {key}: {value}\n")
    with pytest.raises(ConfigError, match="^" + re.escape(said)):
        load_config(cls, f)
    with pytest.raises(ConfigError, match="^" + re.escape(said)):
        from_dict(cls, {section: {key: value}})  # a saved config goes through migrate_config first
    if new:  # the new name takes the value
        got = getattr(getattr(load_config(cls, None, [f"{new}={value}"]), section), new.split(".")[1])
        assert str(got) in (value, "2.0")


def test_saved_configs_with_old_names_are_migrated():
    from gan_core.config import migrate_config

    for cls in (SRTrainConfig, SpadeTrainConfig):
        now = to_dict(cls())
        old = json.loads(json.dumps(now))
        for c, old_key, new_key in RENAMED:
            if c is cls:
                section, key = old_key.split(".")
                if new_key:
                    old[section][key] = old[section].pop(new_key.split(".")[1])
                else:
                    old[section][key] = 1
        assert old != now
        migrated = migrate_config(cls, old)
        assert migrated == now and from_dict(cls, migrated) == cls()
        assert migrate_config(cls, now) == now  # today's names pass unchanged
    # the released default model's JSON holds the training config under the old names
    released = json.loads((REPO / "weights" / "srresnet-l1-x4.json").read_text())["training"]["config"]
    assert "feature_weight" in released["loss"] and "d_steps_per_g" in released["optim"]
    cfg = from_dict(SRTrainConfig, migrate_config(SRTrainConfig, released))
    assert cfg.loss.vgg_loss_weight == 1.0 and cfg.loss.vgg_weights_file == "vgg19" and cfg.model.init_scale == 0.1


def test_resume_migrates_the_checkpoint_config():
    """A checkpoint written before the renames resumes (same config under old names) and differs otherwise."""
    import tempfile

    from gan_core.checkpoint import CheckpointManager, resume_state

    cfg = load_config(SRTrainConfig, None, ["loss.vgg_loss_weight=0.5"])
    old = to_dict(cfg)
    old["loss"]["feature_weight"] = old["loss"].pop("vgg_loss_weight")
    old["loss"]["vgg_weights"] = old["loss"].pop("vgg_weights_file")
    old["optim"]["d_steps_per_g"] = 1
    with tempfile.TemporaryDirectory() as d:
        ckpts = CheckpointManager(Path(d) / "ckpt", 2)
        ckpts.save({"format": "test/1", "config": old, "step": 3}, 3)
        path, state = resume_state(ckpts, "auto", "test/1", cfg)
        assert path.name == "step_00000003.pt" and state["config"] == to_dict(cfg)
        other = load_config(SRTrainConfig, None, ["loss.vgg_loss_weight=0.25"])
        with pytest.raises(ValueError, match=r"loss\.vgg_loss_weight: checkpoint 0\.5, now 0\.25"):
            resume_state(ckpts, "auto", "test/1", other)
