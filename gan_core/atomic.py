"""Safe file writes: a temporary file beside the target, flushed, fsync'ed, then put in place.

Every file the project writes (images, reports, exported models, checkpoints, downloads) goes through
``atomic_write``. Guarantees:

* Readers never see a partial file; an interrupted write leaves the old file (or none), never a
  truncated one. The temporary is ``.<name>.<8 random chars>.san.tmp`` in the target's folder.
* ``overwrite=False`` (the default, for people's files): the final step never replaces a file that
  appeared meanwhile, even one written by another process a moment earlier. It uses
  ``renameat2(RENAME_NOREPLACE)`` where the kernel and file system have it, else a hard link of the
  temporary (``link`` fails on an existing name) then unlinking it, else an ``O_EXCL`` claim of the name
  followed by a rename onto our own claim. An existing target raises ``FileExistsError``.
* ``overwrite=True`` replaces the target atomically and keeps its permission bits.
* New files get ``0o666 & ~umask`` like any file the user creates (``mkstemp`` alone would give 0600).
* While a temporary is written its descriptor holds an exclusive ``flock``. ``remove_stale_temporaries``
  deletes temporaries of our naming that are older than the current run and not locked, so a process
  killed with SIGKILL leaves nothing behind after the next run, and a concurrent run's files in progress
  are never touched.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

try:
    import fcntl
except ImportError:  # Windows: no flock; stale temporaries are then judged by age alone
    fcntl = None  # type: ignore[assignment]

__all__ = ["atomic_write", "check_output_path", "current_umask", "remove_stale_temporaries", "write_text"]

TEMP_SUFFIX = ".san.tmp"
# ours: ".<name>.<8 chars>.san.tmp"; before this module had a tag, temporaries ended in ".<8 chars>.tmp"
_TEMP_RE = re.compile(r"^\.(?P<target>.+)\.[A-Za-z0-9_]{8}(\.san)?\.tmp$")
_LEGACY_TARGET = re.compile(r"\.(png|jpe?g|webp|bmp|tiff?|json|csv|safetensors|pt|npz)$", re.IGNORECASE)
_RENAME_NOREPLACE = 1
_AT_FDCWD = -100
_umask_lock = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where Linux reports it (else a locked swap)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _renameat2():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError, TypeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_RENAMEAT2 = _renameat2() if os.name == "posix" else None


def _exists_error(path: Path) -> FileExistsError:
    return FileExistsError(errno.EEXIST, "exists (written by someone else meanwhile?)", str(path))


def _place_no_replace(tmp: Path, path: Path) -> None:
    """Move ``tmp`` to ``path`` unless ``path`` exists (FileExistsError); see the module docstring."""
    if _RENAMEAT2 is not None:
        if _RENAMEAT2(_AT_FDCWD, os.fsencode(tmp), _AT_FDCWD, os.fsencode(path), _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            raise _exists_error(path)
        if err not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise OSError(err, os.strerror(err), str(path))
    try:  # no renameat2 here: a hard link cannot replace either
        os.link(tmp, path)
    except FileExistsError:
        raise _exists_error(path) from None
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS):
            raise
    else:
        tmp.unlink()
        return
    try:  # no hard links on this file system: claim the name, then rename onto our own claim
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        raise _exists_error(path) from None
    os.replace(tmp, path)


@contextmanager
def atomic_write(path: str | Path, overwrite: bool = False) -> Iterator[BinaryIO]:
    """``with atomic_write(path) as f: f.write(...)``: ``path`` appears complete when the block succeeds.

    Args:
        path: the target file; its folder is created if needed.
        overwrite: replace an existing ``path`` (keeping its mode); False raises ``FileExistsError``
            when ``path`` exists at the end, whoever created it.

    On any exception (including the FileExistsError) the temporary is removed and the exception propagates.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_BINARY", 0), 0o600)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)  # marks the temporary as in use (remove_stale_temporaries)
        mode = 0o666 & ~current_umask()
        if overwrite:
            try:
                mode = path.stat().st_mode & 0o7777
            except FileNotFoundError:
                pass
        if hasattr(os, "fchmod"):
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb", closefd=False) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            _place_no_replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)


def _unlocked(path: Path) -> bool:
    """True when nobody holds the flock of ``atomic_write`` on ``path``."""
    if fcntl is None:
        return True
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def remove_stale_temporaries(folder: str | Path, older_than: float) -> list[Path]:
    """Delete temporaries of ``atomic_write``'s naming in ``folder`` (not below it) that were last modified
    before ``older_than`` (a ``time.time()``, e.g. the start of this run) and that no process is writing.

    Returns the removed paths. Other files are never touched.
    """
    folder = Path(folder)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = _TEMP_RE.match(entry.name)
        if m is None or (not entry.name.endswith(TEMP_SUFFIX) and not _LEGACY_TARGET.search(m["target"])):
            continue
        try:
            if not entry.is_file(follow_symlinks=False) or entry.stat().st_mtime >= older_than:
                continue
        except OSError:
            continue
        path = Path(entry.path)
        if _unlocked(path):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def check_output_path(path: str | Path, overwrite: bool = False) -> Path:
    """Check before any work that ``path`` can be written: ValueError with the reason if not.

    Creates missing parent folders (as the write would). Refuses a folder, a parent that is not a folder
    or not writable, and an existing file unless ``overwrite``.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give a file name")
    if path.exists() and not overwrite:
        raise ValueError(f"{path} exists (use --overwrite to replace it)")
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"cannot create the folder of {path}: {e.strerror or e}") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write in {parent}: permission denied")
    return path


def write_text(path: str | Path, text: str, overwrite: bool = False) -> Path:
    """``text`` as UTF-8 into ``path`` through ``atomic_write`` (reports, JSON sidecars)."""
    with atomic_write(path, overwrite=overwrite) as f:
        f.write(text.encode("utf-8"))
    return Path(path)
