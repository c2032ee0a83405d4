"""gan_core.atomic: no-replace finalisation, permission bits, stale temporaries, early path checks."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gan_core import atomic
from gan_core.atomic import atomic_write, check_output_path, current_umask, remove_stale_temporaries, write_text


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_no_replace_refuses_a_file_created_during_the_write(tmp_path):
    target = tmp_path / "out.png"
    with pytest.raises(FileExistsError), atomic_write(target) as f:
        f.write(b"ours")
        target.write_bytes(b"theirs")  # another process finishes first
    assert target.read_bytes() == b"theirs"
    assert os.listdir(tmp_path) == ["out.png"]  # our temporary is gone


def test_overwrite_replaces_and_keeps_the_mode(tmp_path):
    target = tmp_path / "r.json"
    target.write_text("old")
    target.chmod(0o640)
    with atomic_write(target, overwrite=True) as f:
        f.write(b"new")
    assert target.read_text() == "new" and _mode(target) == 0o640


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_new_files_honour_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        assert current_umask() == mask
        write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a.txt") == 0o666 & ~mask


@pytest.mark.parametrize("way", ["link", "excl"])
def test_fallbacks_without_renameat2_never_replace(tmp_path, monkeypatch, way):
    """Where the kernel or libc lacks renameat2 (or the file system lacks hard links) the fallbacks hold."""
    monkeypatch.setattr(atomic, "_RENAMEAT2", None)
    if way == "excl":

        def no_links(src, dst):
            raise OSError(1, "Operation not permitted")  # EPERM: e.g. FAT / some network file systems

        monkeypatch.setattr(os, "link", no_links)
    write_text(tmp_path / "a", "1")
    with pytest.raises(FileExistsError):
        write_text(tmp_path / "a", "2")
    assert (tmp_path / "a").read_text() == "1" and os.listdir(tmp_path) == ["a"]


def test_interrupted_write_leaves_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt), atomic_write(tmp_path / "x.png") as f:
        f.write(b"partial")
        raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []


_KILLED_WRITER = """
import os, sys, time
sys.path.insert(0, sys.argv[2])
from gan_core.atomic import atomic_write
with atomic_write(sys.argv[1]) as f:
    f.write(b"partial")
    f.flush()
    print("writing", flush=True)
    time.sleep(60)
"""


def _start_writer(target: Path) -> subprocess.Popen:
    repo = str(Path(__file__).resolve().parents[2])
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(target), repo], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "writing"
    return proc


def test_stale_temporaries_of_a_killed_writer_are_removed_live_ones_kept(tmp_path):
    dead = _start_writer(tmp_path / "a_out.png")
    dead.kill()
    dead.wait()
    live = _start_writer(tmp_path / "b_out.png")
    try:
        (tmp_path / "notes.tmp").write_text("someone else's")  # not our naming
        (tmp_path / ".keep.abcdefgh.txt").write_text("nor this")
        (tmp_path / ".c_out.png.Ab3_x9zq.tmp").write_bytes(b"left by an older version")  # legacy naming
        temps = sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp") and p.name.startswith("."))
        assert len(temps) == 3
        time.sleep(0.05)
        removed = remove_stale_temporaries(tmp_path, older_than=time.time())
        names = {p.name for p in removed}
        assert len(names) == 2 and all(n.startswith((".a_out.png.", ".c_out.png.")) for n in names)
        left = sorted(p.name for p in tmp_path.iterdir())
        assert "notes.tmp" in left and ".keep.abcdefgh.txt" in left
        assert any(n.startswith(".b_out.png.") for n in left)  # a concurrent writer's file in progress: kept
        assert remove_stale_temporaries(tmp_path, older_than=0) == []  # nothing older than the epoch
    finally:
        live.kill()
        live.wait()


def test_check_output_path(tmp_path):
    assert check_output_path(tmp_path / "new" / "deep" / "r.json") == tmp_path / "new" / "deep" / "r.json"
    assert (tmp_path / "new" / "deep").is_dir()
    (tmp_path / "r.csv").write_text("x")
    with pytest.raises(ValueError, match=r"exists \(use --overwrite"):
        check_output_path(tmp_path / "r.csv")
    assert check_output_path(tmp_path / "r.csv", overwrite=True)
    with pytest.raises(ValueError, match="is a folder"):
        check_output_path(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="cannot create the folder"):
        check_output_path(tmp_path / "file" / "r.json")
    if os.geteuid() != 0:  # root may write anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        with pytest.raises(ValueError, match="permission denied"):
            check_output_path(ro / "r.json")
