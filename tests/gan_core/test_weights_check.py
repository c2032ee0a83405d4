"""san-weights check: exit 0 when every file present is intact and only optional files are missing (a fresh
clone), 1 for a corrupt file or a missing required one. Weight files and manifests are made by the tests."""

from __future__ import annotations

import hashlib
import json

import pytest

from gan_core.cli import weights_main


@pytest.fixture
def no_hub(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # no stray copies in the torch hub cache
    monkeypatch.setenv("SAN_WEIGHTS_DIR", "")
    monkeypatch.setenv("SAN_GAN_OFFLINE", "1")


def _folder(tmp_path, entries: dict) -> str:
    folder = tmp_path / "w"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"weights": entries}))
    return str(folder)


def test_fresh_clone_passes_with_optional_files_missing(no_hub, capsys):
    assert weights_main(["check"]) == 0
    out = capsys.readouterr().out
    for name in ("vgg19", "alexnet", "fid_inception"):
        line = next(x for x in out.splitlines() if f" {name} " in x)
        assert line.startswith("missing (optional)")
        assert f"note: {name} is optional, needed only for " in out
    assert "`san-weights fetch vgg19`" in out and "LPIPS" in out and "FID" in out
    for name in ("srresnet-l1-x4", "niqe_live"):  # shipped with the repository
        assert next(x for x in out.splitlines() if f" {name} " in x).startswith("ok ")
    assert out.rstrip().endswith("san-weights: every file present is intact, only optional files are missing")


def test_corrupt_optional_file_fails(no_hub, tmp_path, capsys):
    folder = _folder(tmp_path, {})
    (tmp_path / "w" / "vgg19-dcbb9e9d.pth").write_bytes(b"not the VGG-19 weights")  # found before the real one
    assert weights_main(["check", "--weights-dir", folder]) == 1
    out, err = capsys.readouterr()
    assert next(x for x in out.splitlines() if " vgg19 " in x).split()[0] != "ok"
    assert "1 problem(s): vgg19" in err


def test_missing_required_file_fails(no_hub, tmp_path, capsys):
    payload = b"released model bytes"
    entries = {
        "mine": {"file": "mine.safetensors", "sha256": "0" * 64, "size": 3},  # listed, not there: required
        "good": {"file": "good.bin", "sha256": hashlib.sha256(payload).hexdigest(), "size": len(payload)},
    }
    folder = _folder(tmp_path, entries)
    (tmp_path / "w" / "good.bin").write_bytes(payload)
    assert weights_main(["check", "--weights-dir", folder]) == 1
    out, err = capsys.readouterr()
    assert next(x for x in out.splitlines() if " mine " in x).startswith("missing (required)")
    assert next(x for x in out.splitlines() if " good " in x).startswith("ok ")
    assert "1 problem(s): mine" in err
