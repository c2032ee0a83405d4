"""The presets in configs/ are recipes that work: every one loads, and an SR generator built from any of them
starts inside the image range; sr_pretrain.yaml as shipped trains sanely from its first step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import sr_app
from gan_core.config import load_config
from gan_core.losses import pixel_loss
from gan_core.metrics import psnr
from sr_app.config import SRTrainConfig
from sr_app.data import SRValDataset
from sr_app.models import SRGenerator
from translate_app.config import SpadeTrainConfig

# the presets shipped beside the code under test
PRESETS = Path(sr_app.__file__).resolve().parents[1] / "configs"
SR_PRESETS = sorted(p.name for p in PRESETS.glob("sr_*.yaml"))


def test_every_preset_loads_with_todays_keys():
    names = sorted(p.name for p in PRESETS.glob("*.yaml"))
    assert "sr_pretrain.yaml" in names and "san_spade_paper.yaml" in names
    for name in names:
        cls = SRTrainConfig if name.startswith("sr_") else SpadeTrainConfig
        assert load_config(cls, PRESETS / name).name == name.removesuffix(".yaml")


def generator_of(cfg: SRTrainConfig) -> SRGenerator:
    m = cfg.model
    return SRGenerator(m.channels, m.num_blocks, cfg.data.scale, m.init_scale, m.residual_init_scale)


@pytest.mark.parametrize("preset", SR_PRESETS)
def test_an_untrained_generator_of_every_sr_preset_starts_inside_the_image_range(preset, val_folder):
    """Stage gan without train.init_from starts from this generator too (sr_paper, sr_official_code)."""
    cfg = load_config(SRTrainConfig, PRESETS / preset)
    torch.manual_seed(cfg.train.seed)
    G = generator_of(cfg).eval()
    item = SRValDataset(str(val_folder), cfg.data.scale)[0]
    with torch.no_grad():
        sr = G(item["lr"][None])
    assert float(pixel_loss(sr, item["hr"][None], "mse")) < 0.1  # images in [0, 1]; Kaiming x1.0 gives ~1e5
    assert float(sr.abs().max()) < 2


@pytest.mark.slow
def test_sr_pretrain_as_shipped_trains_sanely(tmp_path, hr_folder, val_folder):
    """The preset's model, loss and optimizer exactly as in the YAML; only the data and the run are small."""
    from sr_app.train import train

    small = [f"data.train_dirs=[{hr_folder}]", f"data.val_dirs=[{val_folder}]", "data.lr_patch=8",
             "train.batch_size=4", "train.steps=4", "train.device=cpu", "train.precision=fp32",
             "log.log_every=1", "log.eval_every=4", "log.save_every=4", "log.sample_every=4"]  # fmt: skip
    cfg = load_config(SRTrainConfig, PRESETS / "sr_pretrain.yaml", small)
    assert cfg.model.channels == 64 and cfg.model.num_blocks == 16  # the full network

    # the validation PSNR of the network train() starts from (same seed, same construction)
    torch.manual_seed(cfg.train.seed)
    G0 = generator_of(cfg).eval()
    val = SRValDataset(str(val_folder), cfg.data.scale)
    with torch.no_grad():
        start = sum(float(psnr(G0(it["lr"][None]).clamp(0, 1), it["hr"][None], 4)) for it in val) / len(val)

    train(cfg, tmp_path / "run")
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["pixel"] for r in rows if r["kind"] == "train"]
    assert len(losses) == 4 and losses[0] < 0.5 and all(loss < 0.5 for loss in losses)  # shipped before: 2.5e6
    (after,) = [r for r in rows if r["kind"] == "val"]
    # training keeps the generator where it starts, at the interpolation baseline (before: 10 dB under it)
    assert after["psnr_y"] > start - 0.05
    assert after["psnr_y"] > after["bicubic_psnr_y"] - 1.0
