"""The weight resolver: explicit path, weights/ by manifest name (hash checked), hub cache, clear errors."""

from __future__ import annotations

import hashlib
import json

import pytest

from gan_core import weights as W


@pytest.fixture
def fake_manifest(tmp_path, monkeypatch):
    wdir = tmp_path / "weights"
    wdir.mkdir()
    payload = b"pretend weights " * 100
    (tmp_path / "src.bin").write_bytes(payload)
    entry = {
        "file": "thing-1234.pth",
        "sha256": hashlib.sha256(payload).hexdigest(),
        "size": len(payload),
        "url": (tmp_path / "src.bin").as_uri(),  # file:// stands in for the network
        "license": "test",
    }
    (wdir / "manifest.json").write_text(json.dumps({"weights": {"thing": entry}}))
    monkeypatch.setenv("SAN_WEIGHTS_DIR", str(wdir))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("SAN_GAN_OFFLINE", raising=False)
    monkeypatch.chdir(tmp_path)  # isolate from ./weights and the repository's weights/
    monkeypatch.setattr(W, "REPO_WEIGHTS", tmp_path / "no-repo-weights")
    return wdir, payload, entry


def test_explicit_path_wins(tmp_path, fake_manifest):
    f = tmp_path / "mine.pth"
    f.write_bytes(b"x")
    assert W.resolve_weights(f) == f
    with pytest.raises(W.WeightsError, match="not found"):
        W.resolve_weights(tmp_path / "missing.pth")


def test_weights_folder_then_hash_check(fake_manifest):
    wdir, payload, _ = fake_manifest
    (wdir / "thing-1234.pth").write_bytes(payload)
    assert W.resolve_weights("thing") == wdir / "thing-1234.pth"
    (wdir / "thing-1234.pth").write_bytes(payload[:-1] + b"!")  # same size, different content
    with pytest.raises(W.WeightsError, match=r"SHA-256 .* expected"):
        W.resolve_weights("thing")
    (wdir / "thing-1234.pth").write_bytes(payload[:10])
    with pytest.raises(W.WeightsError, match="truncated or a different file"):
        W.resolve_weights("thing")


def test_download_is_verified_and_atomic(fake_manifest, tmp_path):
    path = W.resolve_weights("thing")
    assert path == W.hub_checkpoints_dir() / "thing-1234.pth" and path.read_bytes() == fake_manifest[1]
    assert not list(path.parent.glob("*.part"))
    assert {r["name"]: r["ok"] for r in W.weights_status()}["thing"]


def test_offline_and_bad_download_messages(fake_manifest, tmp_path, monkeypatch):
    _wdir, _, _entry = fake_manifest
    monkeypatch.setenv("SAN_GAN_OFFLINE", "1")
    with pytest.raises(W.WeightsError, match=r"(?s)thing-1234\.pth .*Put the file at one of.*Downloads are disabled"):
        W.resolve_weights("thing")
    monkeypatch.delenv("SAN_GAN_OFFLINE")
    (tmp_path / "src.bin").write_bytes(b"tampered")
    with pytest.raises(W.WeightsError, match="SHA-256"):
        W.resolve_weights("thing")
    assert not (W.hub_checkpoints_dir() / "thing-1234.pth").exists()
    with pytest.raises(W.WeightsError, match="unknown weights name 'nothing'"):
        W.resolve_weights("nothing")


def test_cwd_weights_folder_counts_only_when_named(tmp_path, monkeypatch, capsys):
    from gan_core.cli import weights_main

    payload = b"a file a stranger left in ./weights"
    wdir = tmp_path / "weights"
    wdir.mkdir()
    (wdir / "thing.pth").write_bytes(payload)
    entry = {"file": "thing.pth", "sha256": hashlib.sha256(payload).hexdigest(), "size": len(payload)}
    (wdir / "manifest.json").write_text(json.dumps({"weights": {"thing": entry}}))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SAN_WEIGHTS_DIR", "")  # unset for the code; restored after the test
    monkeypatch.setenv("SAN_GAN_OFFLINE", "1")
    assert wdir.resolve() not in [d.resolve() for d in W.weights_dirs()]
    with pytest.raises(W.WeightsError, match="unknown weights name 'thing'"):
        W.resolve_weights("thing")
    assert weights_main(["check", "--weights-dir", "weights"]) == 0  # only optional files are absent here
    out = capsys.readouterr().out
    assert f"weights folders: {wdir}, " in out
    assert any(
        line.startswith("ok") and " thing " in line and str(wdir / "thing.pth") in line for line in out.split("\n")
    )
    assert W.resolve_weights("thing") == wdir / "thing.pth"  # the flag holds for the rest of the process
    with pytest.raises(SystemExit) as info:
        weights_main(["check", "--weights-dir", "nowhere"])
    assert info.value.code == 2 and "weights folder not found: nowhere" in capsys.readouterr().err
