"""Checkpoints: atomic writes, truncation detection, rotation, newest-valid selection."""

from __future__ import annotations

import pytest
import torch

from gan_core.checkpoint import (
    CheckpointManager,
    atomic_torch_save,
    find_latest_checkpoint,
    is_valid_checkpoint,
    load_checkpoint,
)


def test_round_trip_weights_only(tmp_path):
    state = {"step": 3, "w": torch.arange(5.0), "cfg": {"a": [1, 2]}, "rng": torch.get_rng_state()}
    p = atomic_torch_save(state, tmp_path / "x" / "c.pt")
    back = load_checkpoint(p)
    assert back["step"] == 3 and torch.equal(back["w"], state["w"]) and back["cfg"] == {"a": [1, 2]}
    assert not list((tmp_path / "x").glob("*.tmp"))


def test_truncated_and_garbage_files_are_detected(tmp_path):
    p = atomic_torch_save({"w": torch.randn(1000)}, tmp_path / "step_00000002.pt")
    data = p.read_bytes()
    assert is_valid_checkpoint(p)
    (tmp_path / "step_00000003.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "step_00000004.pt").write_bytes(b"not a checkpoint")
    flipped = bytearray(data)
    flipped[len(data) // 3] ^= 0xFF  # a corrupted byte inside a member: CRC check
    (tmp_path / "step_00000005.pt").write_bytes(bytes(flipped))
    for n in (3, 4, 5):
        assert not is_valid_checkpoint(tmp_path / f"step_0000000{n}.pt")
    assert find_latest_checkpoint(tmp_path) == p
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_checkpoint(tmp_path / "step_00000003.pt")


def test_manager_keeps_last_k_and_best(tmp_path):
    m = CheckpointManager(tmp_path, keep_last=2)
    for step in (10, 20, 30):
        m.save({"step": step}, step, is_best=step == 20)
    assert sorted(p.name for p in tmp_path.glob("step_*.pt")) == ["step_00000020.pt", "step_00000030.pt"]
    assert load_checkpoint(tmp_path / "best.pt")["step"] == 20
    assert m.latest().name == "step_00000030.pt"
    assert find_latest_checkpoint(tmp_path / "missing") is None
