"""Plain-dict checkpoints: atomic writes, integrity checks, ``weights_only`` loads, rotation.

A checkpoint holds only tensors and plain Python containers / numbers / strings (config dict, state
dicts, optimizer and scheduler states, step, RNG states as uint8 tensors), so
``torch.load(..., weights_only=True)`` reads it without executing code. Files are written to a
temporary name in the same folder, flushed and fsync'ed, then renamed: a crash never leaves a partial
``step_*.pt``. ``is_valid_checkpoint`` checks the zip container and every member's CRC, which detects
truncated or corrupted files without unpickling them.

Every ``torch.load`` of a user's file goes through :func:`safe_torch_load`: a file that would need
anything but tensors and plain data (a pickle naming ``os.system``, say) is refused in one line,
``<file> is not a safe checkpoint: ...``, and nothing in it runs.
"""

from __future__ import annotations

import logging
import pickle
import re
import warnings
import zipfile
from pathlib import Path

import torch

from .atomic import atomic_write

__all__ = [
    "CheckpointManager",
    "atomic_torch_save",
    "find_latest_checkpoint",
    "is_valid_checkpoint",
    "load_checkpoint",
    "resume_state",
    "rng_state",
    "safe_torch_load",
    "set_rng_state",
]

log = logging.getLogger(__name__)
_STEP_RE = re.compile(r"step_(\d+)\.pt$")


def atomic_torch_save(obj, path: str | Path) -> Path:
    """``torch.save`` to ``path`` through a temporary file + fsync + ``os.replace``."""
    path = Path(path)
    with atomic_write(path, overwrite=True) as f:  # run state: best.pt is replaced as training improves
        torch.save(obj, f)
    return path


def is_valid_checkpoint(path: str | Path) -> bool:
    """True if ``path`` is a complete torch zip archive whose members all pass their CRC check."""
    try:
        with zipfile.ZipFile(path) as z:
            return z.testzip() is None
    except (OSError, zipfile.BadZipFile, EOFError, ValueError):
        return False


_GLOBAL_RE = re.compile(r"GLOBAL ([\w.]+)")
_OPERAND_RE = re.compile(r"Unsupported operand (\d+)")


def safe_torch_load(path: str | Path, map_location="cpu"):
    """``torch.load`` restricted to tensors and plain data (``weights_only``): no code in the file runs.

    Raises:
        ValueError: one line, ``<path> is not a safe checkpoint: ...`` when the file needs anything else
            (what it names is quoted; PyTorch's advice to load it unrestricted is not repeated), or
            ``<path> cannot be read as a PyTorch file: ...``.
    """
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")  # legacy files: noise
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        found, operand = _GLOBAL_RE.search(str(e)), _OPERAND_RE.search(str(e))
        if found:
            what = f"it names {found.group(1)}, which loading would import and call"
        elif operand:
            what = f"it is not a pickle of tensors and plain data (pickle opcode {operand.group(1)} refused)"
        else:
            what = "it holds objects other than tensors and plain data"
        raise ValueError(f"{path} is not a safe checkpoint: {what}; nothing in it was run") from None
    except (RuntimeError, EOFError, OSError, KeyError, zipfile.BadZipFile, ValueError) as e:
        lines = str(e).strip().splitlines()
        reason = f"{type(e).__name__}: {lines[0]}" if lines else f"{type(e).__name__} (empty or cut short?)"
        raise ValueError(f"{path} cannot be read as a PyTorch file: {reason}") from None


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load a checkpoint dict through :func:`safe_torch_load`; a one-line error for unusable files.

    Raises:
        FileNotFoundError: no such file.
        ValueError: truncated / corrupt (zip or CRC check), not a safe checkpoint, or not a dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if not is_valid_checkpoint(path):
        raise ValueError(
            f"checkpoint {path} is truncated or corrupt, or not a PyTorch zip archive (zip/CRC check failed)"
        )
    obj = safe_torch_load(path, map_location=map_location)
    if not isinstance(obj, dict):
        raise ValueError(f"{path} does not hold a checkpoint dict")
    return obj


def _step_of(path: Path) -> int:
    m = _STEP_RE.search(path.name)
    return int(m.group(1)) if m else -1


def find_latest_checkpoint(folder: str | Path) -> Path | None:
    """Newest valid ``step_*.pt`` in ``folder`` (by step); invalid ones are skipped with a warning."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    for path in sorted(folder.glob("step_*.pt"), key=_step_of, reverse=True):
        if is_valid_checkpoint(path):
            return path
        log.warning("skipping invalid checkpoint %s (truncated or corrupt)", path)
    return None


class CheckpointManager:
    """Writes ``<folder>/step_XXXXXXXX.pt``, keeps the newest ``keep_last`` of them, and ``best.pt``."""

    def __init__(self, folder: str | Path, keep_last: int = 3) -> None:
        self.folder = Path(folder)
        self.keep_last = max(1, int(keep_last))

    def save(self, state: dict, step: int, is_best: bool = False, step_file: bool = True) -> Path:
        """Write ``step_XXXXXXXX.pt`` (unless ``step_file`` is False) and, if ``is_best``, ``best.pt``."""
        path = self.folder / "best.pt"
        if step_file:
            path = atomic_torch_save(state, self.folder / f"step_{step:08d}.pt")
        if is_best:
            atomic_torch_save(state, self.folder / "best.pt")
        old = sorted(self.folder.glob("step_*.pt"), key=_step_of)[: -self.keep_last]
        for p in old:
            p.unlink(missing_ok=True)
        return path

    def latest(self) -> Path | None:
        return find_latest_checkpoint(self.folder)


def resume_state(
    ckpts: CheckpointManager, resume: str | None, fmt: str, config, mutable: tuple[str, ...] = ()
) -> tuple[Path | None, dict | None]:
    """The checkpoint a training run starts from, checked: (path, contents), or (None, None) for a fresh run.

    ``resume``: None (fresh; refuses a folder that already has step checkpoints), ``"auto"`` (the newest
    valid one, or fresh when there is none) or a path. The checkpoint must have format ``fmt`` and a
    config equal to ``config`` except for the ``mutable`` keys; otherwise ValueError lists the differences.
    ``config``: the run's config dataclass (the checkpoint's config, saved perhaps under older key names, is
    migrated to today's with ``migrate_config``, and returned so) or its plain dict (compared as saved).
    """
    import dataclasses

    from .config import config_differences, migrate_config, to_dict

    if resume is None and any(ckpts.folder.glob("step_*.pt")):
        raise FileExistsError(
            f"{ckpts.folder.parent} already has checkpoints: use --resume auto to continue or another --out"
        )
    path = ckpts.latest() if resume == "auto" else (Path(resume) if resume else None)
    if path is None:
        return None, None
    state = load_checkpoint(path)
    if state.get("format") != fmt:
        raise ValueError(f"{path} is not a {fmt} checkpoint (format {state.get('format')!r})")
    if dataclasses.is_dataclass(config):
        state["config"] = migrate_config(type(config), state["config"])
        config = to_dict(config)
    diffs = config_differences(config, state["config"], mutable)
    if diffs:
        raise ValueError("config differs from the checkpoint's:\n  " + "\n  ".join(diffs))
    return path, state


def rng_state(generator: torch.Generator | None = None) -> dict:
    """Python, NumPy and torch (CPU, CUDA) RNG states, plus ``generator``'s, as weights_only-safe data."""
    import random

    import numpy as np

    np_state = np.random.get_state()  # noqa: NPY002 - saved for libraries using the global RNG
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype("int64")), *np_state[2:]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def set_rng_state(state: dict, generator: torch.Generator | None = None) -> None:
    """Restore what :func:`rng_state` saved."""
    import random

    import numpy as np

    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype("uint32"), *rest))  # noqa: NPY002
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"])
