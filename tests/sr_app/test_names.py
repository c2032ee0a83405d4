"""The SR critic's two seeds are named for what they seed: crops (per rank) and the norm's draws (shared)."""

from __future__ import annotations

import torch

from gan_core.config import load_config
from sr_app.config import SRTrainConfig
from sr_app.models import SRCritic


def san_seeds(D) -> list[int]:
    return [int(m.parametrizations.weight[0].seed) for m in D.modules() if isinstance(m, torch.nn.Conv2d)]


def crops(D, n: int = 8) -> list[int]:
    x = torch.arange(40 * 40, dtype=torch.float32).reshape(1, 1, 40, 40).expand(1, 3, 40, 40)
    return [int(D.random_crop(x)[0, 0, 0, 0]) for _ in range(n)]


def test_crop_seed_and_norm_seed_are_separate():
    kw = dict(num_blocks=2, width=8, ratio=0.5)
    base = SRCritic("san", crop_seed=1, norm_seed=5, **kw)
    other_crops = SRCritic("san", crop_seed=2, norm_seed=5, **kw)
    other_norm = SRCritic("san", crop_seed=1, norm_seed=6, **kw)
    assert san_seeds(base) == san_seeds(other_crops) != san_seeds(other_norm)  # the norm's draws follow norm_seed
    assert crops(base) == crops(other_norm) != crops(other_crops)  # the crops follow crop_seed
    # "none" has nothing to seed: the norm seed is accepted and unused
    assert len(crops(SRCritic("none", padding="zeros", crop_seed=1, norm_seed=5, num_blocks=2, width=8))) == 8


def test_train_builds_the_critic_with_both_seeds():
    from sr_app.train import build_critic

    cfg = load_config(SRTrainConfig, None, ["train.seed=3", "model.critic_blocks=2", "model.critic_width=8"])
    a, b = build_critic(cfg, crop_seed=11), build_critic(cfg, crop_seed=12)  # two DDP ranks
    assert san_seeds(a) == san_seeds(b) == san_seeds(SRCritic("san", num_blocks=2, width=8, norm_seed=3))
    assert crops(a) != crops(b)
