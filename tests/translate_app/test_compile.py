"""translate-train with train.compile: a few compiled steps match eager, and a compiled run resumes exactly."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch._dynamo.utils import counters

from gan_core.config import load_config
from translate_app.config import SpadeTrainConfig
from translate_app.train import build_critic, build_generator, train

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from compiled_runs import (
    assert_first_losses_match,
    assert_first_update_matches,
    assert_no_compiled_prefixes,
    assert_same_state,
    assert_within_adam_bound,
    checkpoint,
)

TINY = Path(__file__).resolve().parents[2] / "configs" / "spade_tiny.yaml"


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):  # never fall back to eager silently
        yield
    torch._dynamo.reset()


@pytest.mark.slow
def test_compiled_steps_match_eager_and_resume_exactly(tmp_path, city_root, fresh_dynamo):
    # fp32: rounding is then the only difference (see tests/compiled_runs.py for the tolerances); no VGG term
    # (its weights would only add compile time: VGG-19 is compiled like the generator)
    sets = [f"data.root={city_root}", "train.device=cpu", "loss.vgg_loss_weight=0", "train.precision=fp32",
            "log.save_every=1", "log.keep_last=4"]  # fmt: skip
    eager = load_config(SpadeTrainConfig, TINY, sets)
    compiled = load_config(SpadeTrainConfig, TINY, [*sets, "train.compile=true"])
    train(eager, tmp_path / "eager")
    train(compiled, tmp_path / "compiled")  # sample grids at steps 2 and 4: the generator's eager code
    split = tmp_path / "split"
    train(compiled, split, stop_after=2)
    train(compiled, split, resume="auto")

    assert "compiled: G, D (torch.compile, mode=default)" in (tmp_path / "compiled" / "train.log").read_text()
    assert not counters["graph_break"]  # whole compiled regions: no .item(), no data-dependent branch
    assert counters["stats"]["unique_graphs"] >= 4  # G with / without gradients, D with / without its own
    assert list((tmp_path / "compiled" / "samples").glob("step_*.png"))

    params = {"G": ([n for n, _ in build_generator(eager).named_parameters()], eager.optim.lr_g),
              "D": ([n for n, _ in build_critic(eager).named_parameters()], eager.optim.lr_d)}  # fmt: skip
    # SPADE's order: the generator step first, from the initial state
    assert_first_losses_match(tmp_path / "eager", tmp_path / "compiled", ("g_adv", "g_feat", "g_total"))
    assert_first_update_matches(checkpoint(tmp_path / "eager", 1), checkpoint(tmp_path / "compiled", 1), params)
    betas = {"G": eager.optim.betas_g, "D": eager.optim.betas_d}
    assert_within_adam_bound(checkpoint(tmp_path / "eager", 4), checkpoint(tmp_path / "compiled", 4), params, betas, 4)

    straight, resumed = checkpoint(tmp_path / "compiled", 4), checkpoint(split, 4)
    assert assert_same_state(straight, resumed, ("G", "D", "opt_g", "opt_d")) > 50
    assert_no_compiled_prefixes(straight, ("G", "D"))
