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


class _RunsCode:
    """Pickles as a call of os.system: loading it unrestricted would create ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def _assert_refused(load, evil) -> None:
    with pytest.raises(ValueError) as info:
        load(evil)
    msg = str(info.value)
    assert msg.startswith(f"{evil} is not a safe checkpoint: it names ") and "system" in msg
    assert "\n" not in msg and "weights_only" not in msg and "trust" not in msg


def test_malicious_pickle_is_refused_in_one_line_without_running(tmp_path, vgg_weights):
    from gan_core.losses import VGG19Features

    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.pt"
    torch.save({"step": 1, "payload": _RunsCode(marker)}, evil)  # a valid zip: it passes the CRC check
    assert is_valid_checkpoint(evil)
    _assert_refused(load_checkpoint, evil)
    _assert_refused(lambda p: VGG19Features(weights=p), evil)  # pretrained-net loaders go the same way
    from gan_core.checkpoint import safe_torch_load

    _assert_refused(safe_torch_load, evil)
    assert not marker.exists()
    assert safe_torch_load(vgg_weights)["features.0.bias"].shape == (64,)  # a plain state dict still loads


def test_unreadable_torch_files_are_one_line(tmp_path):
    from gan_core.checkpoint import safe_torch_load

    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "text.pt").write_text("hello world")
    for name in ("empty.pt", "text.pt"):
        with pytest.raises(ValueError) as info:
            safe_torch_load(tmp_path / name)
        assert str(info.value).startswith(str(tmp_path / name)) and "\n" not in str(info.value)
