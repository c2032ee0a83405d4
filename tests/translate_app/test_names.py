"""SAN-SPADE: the critic's norm seed by its name, and checkpoints saved under the old config key names."""

from __future__ import annotations

import torch
from torch import nn

from gan_core.config import to_dict
from translate_app.config import SpadeTrainConfig
from translate_app.discriminator import MultiscaleDiscriminator


def san_seeds(D) -> list[int]:
    return [int(m.parametrizations.weight[0].seed) for m in D.modules() if isinstance(m, nn.Conv2d)]


def test_critic_norm_seed():
    kw = dict(ndf=8, critic_norm="san", ratio=0.25)
    a, b = MultiscaleDiscriminator(norm_seed=1, **kw), MultiscaleDiscriminator(norm_seed=2, **kw)
    assert san_seeds(a) == san_seeds(MultiscaleDiscriminator(norm_seed=1, **kw)) != san_seeds(b)
    MultiscaleDiscriminator(ndf=8, critic_norm="none", padding="zeros", norm_seed=1)  # nothing to seed


def test_infer_loads_a_checkpoint_saved_with_the_old_key_names(tmp_path):
    from gan_core.checkpoint import atomic_torch_save
    from translate_app.infer import load_generator
    from translate_app.train import CKPT_FORMAT, build_generator

    cfg = SpadeTrainConfig()
    cfg.model.ngf, cfg.model.spade_hidden, cfg.model.upsampling, cfg.data.size = 8, 16, "normal", (64, 128)
    old = to_dict(cfg)
    old["loss"] = {"feat_weight": 3.0, "vgg_weight": 4.0, "vgg_weights": "vgg19"}
    old["log"]["fid_weights"] = old["log"].pop("fid_weights_file")
    G = build_generator(cfg)
    path = atomic_torch_save({"format": CKPT_FORMAT, "config": old, "G": G.state_dict(), "step": 1}, tmp_path / "a.pt")
    loaded, got = load_generator(path)
    assert (got.loss.feature_matching_weight, got.loss.vgg_loss_weight) == (3.0, 4.0)
    assert got.log.fid_weights_file == "fid_inception"
    assert all(torch.equal(v, G.state_dict()[k]) for k, v in loaded.state_dict().items())
