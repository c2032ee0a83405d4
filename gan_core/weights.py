"""One resolver for every weight file the project needs (pretrained feature nets, released models).

Order (docs/datasets.md): an explicit path; then the logical name looked up in ``weights/manifest.json``
(file, sha256, size, source URL, licence) inside the weights folders (``$SAN_WEIGHTS_DIR`` when set, which
``--weights-dir DIR`` of the CLIs sets through :func:`use_weights_dir`, then this repository's
``weights/``; never ``./weights`` unless asked, so a folder in the current directory cannot swap a model
behind the user's back); then the torch hub cache
(``$TORCH_HOME/hub/checkpoints``, where torchvision puts the same files); then a download from the
manifest URL when the machine is online (into the hub cache through a temporary file, SHA-256 checked
before the atomic rename). Files found by name are always SHA-256 checked; a mismatch is an error, never
a silent fallback. When nothing works the error says which file is needed, its size and hash, where to
put it and where to get it. ``SAN_GAN_OFFLINE=1`` forbids downloads.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from .atomic import atomic_write

__all__ = [
    "WeightSpec",
    "WeightsError",
    "default_model_name",
    "known_names",
    "load_manifest",
    "release_paths",
    "resolve_weights",
    "sha256_file",
    "unknown_name_message",
    "use_weights_dir",
    "weights_dirs",
    "weights_status",
]

REPO_WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
WEIGHTS_DIR_ENV = "SAN_WEIGHTS_DIR"


class WeightsError(FileNotFoundError):
    """A weight file is missing, unreadable or does not match its manifest entry."""


@dataclass(frozen=True)
class WeightSpec:
    name: str
    file: str
    sha256: str
    size: int
    url: str = ""
    license: str = ""
    description: str = ""
    kind: str = ""  # "pretrained" (third-party feature nets) or "model" (released by this project)
    config: str = ""  # released models: JSON config that rebuilds the network
    optional: str = ""  # not shipped and needed only by some features: what needs it (san-weights check)


def weights_dirs() -> list[Path]:
    """Folders searched by logical name, in order: ``$SAN_WEIGHTS_DIR`` (when set), the repository's.

    The current directory is never searched implicitly: ``./weights`` counts only when the user names it
    (``--weights-dir weights`` or ``SAN_WEIGHTS_DIR=weights``)."""
    env = os.environ.get(WEIGHTS_DIR_ENV)
    out: list[Path] = []
    for d in ([Path(env).absolute()] if env else []) + [REPO_WEIGHTS]:
        if d.resolve() not in [o.resolve() for o in out]:
            out.append(d)
    return out


def use_weights_dir(folder: str | os.PathLike) -> Path:
    """Search ``folder`` first for the rest of this process (what ``--weights-dir`` does): it becomes
    ``$SAN_WEIGHTS_DIR``, so every resolver (models, feature nets, ``san-weights``) and child process sees it.

    Raises:
        ValueError: ``folder`` is not an existing folder.
    """
    path = Path(folder).absolute()
    if not path.is_dir():
        raise ValueError(f"weights folder not found: {folder}")
    os.environ[WEIGHTS_DIR_ENV] = str(path)
    return path


def hub_checkpoints_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def load_manifest() -> dict[str, WeightSpec]:
    """Merged manifest entries (repository manifest first, then each weights folder's)."""
    specs: dict[str, WeightSpec] = {}
    # the repository's manifest first: entries of user folders (listed first in weights_dirs) override it
    candidates = [REPO_WEIGHTS / "manifest.json", *[d / "manifest.json" for d in reversed(weights_dirs())]]
    seen = set()
    for path in candidates:
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        data = _read_manifest(path)
        for name, entry in data.get("weights", {}).items():
            try:
                specs[name] = WeightSpec(name=name, **entry)
            except TypeError as e:
                raise WeightsError(f"{path}: entry {name!r} is malformed ({e})") from None
    return specs


def _read_manifest(path: Path) -> dict:
    """A manifest file's JSON object; WeightsError (one line) when it cannot be read or parsed."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WeightsError(f"{path} is not a readable JSON manifest: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("weights", {}), dict):
        raise WeightsError(f"{path} is not a weights manifest (expected {{'weights': {{name: entry}}}})")
    return data


def default_model_name(key: str = "default_sr_model") -> str:
    """The logical name stored under ``key`` in the first manifest that has it (``$SAN_WEIGHTS_DIR``'s, then
    the repository's). Raises WeightsError when none has it."""
    for d in weights_dirs():
        m = d / "manifest.json"
        if m.is_file():
            name = _read_manifest(m).get(key)
            if name:
                return str(name)
    raise WeightsError(f"no default model: no manifest.json in {', '.join(map(str, weights_dirs()))} has {key!r}")


_VERIFIED: dict[tuple[str, int, float], str] = {}


def release_paths(out: str | Path, tool: str) -> tuple[Path, Path]:
    """(weights ``.safetensors``, config ``.json``) of a released model written by ``tool`` (sr-export,
    translate-export) to ``out``. A path without suffix gets ``.safetensors``; any other suffix is refused
    (ValueError naming ``tool``), so that ``m.pt`` is never written as ``m.safetensors`` behind the user's back."""
    out = Path(out)
    if not out.suffix:
        out = out.with_name(out.name + ".safetensors")
    elif out.suffix != ".safetensors":
        raise ValueError(
            f"{out}: {tool} writes a .safetensors file (and its .json config beside it); give a path ending in "
            ".safetensors or without a suffix"
        )
    return out, out.with_suffix(".json")


def sha256_file(path: Path) -> str:
    """SHA-256 of a file (memoised per path, size and mtime within the process)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime)
    if key not in _VERIFIED:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _VERIFIED[key] = h.hexdigest()
    return _VERIFIED[key]


def _check(path: Path, spec: WeightSpec) -> Path:
    size = path.stat().st_size
    if spec.size and size != spec.size:
        raise WeightsError(
            f"{path} has {size} bytes but {spec.name} ({spec.file}) should have {spec.size}: truncated or a "
            f"different file. Delete it and fetch it again from {spec.url or 'its source'}."
        )
    digest = sha256_file(path)
    if spec.sha256 and digest != spec.sha256:
        raise WeightsError(
            f"{path} has SHA-256 {digest}, expected {spec.sha256} for {spec.name}: corrupt or a different file. "
            f"Delete it and fetch it again from {spec.url or 'its source'}."
        )
    return path


def _offline() -> bool:
    return os.environ.get("SAN_GAN_OFFLINE", "") not in ("", "0")


def _download(spec: WeightSpec, dest: Path, timeout: float = 20.0) -> Path:
    h = hashlib.sha256()
    with atomic_write(dest, overwrite=True) as out, urllib.request.urlopen(spec.url, timeout=timeout) as resp:
        for block in iter(lambda: resp.read(1 << 20), b""):
            out.write(block)
            h.update(block)
        if spec.sha256 and h.hexdigest() != spec.sha256:  # raised inside: the partial file is removed
            raise WeightsError(f"download of {spec.url} has SHA-256 {h.hexdigest()}, expected {spec.sha256}")
    return dest


def _missing_message(spec: WeightSpec, reason: str) -> str:
    where = "\n".join(f"  - {d / spec.file}" for d in weights_dirs())
    size = f"{spec.size / 2**20:.1f} MiB, " if spec.size else ""
    return (
        f"weights '{spec.name}' not found: {spec.file} ({size}sha256 {spec.sha256 or 'unknown'}).\n"
        f"{spec.description + chr(10) if spec.description else ''}"
        f"Put the file at one of:\n{where}\n  - {hub_checkpoints_dir() / spec.file} (torch hub cache)\n"
        f"Source: {spec.url or 'n/a'}{' (licence: ' + spec.license + ')' if spec.license else ''}\n{reason}"
    )


def resolve_weights(
    name_or_path: str | os.PathLike,
    *,
    download: bool | None = None,
    kind: str | None = None,
    suffixes: tuple[str, ...] = (),
) -> Path:
    """Path of a weight file by explicit path or manifest name (see module docstring for the order).

    Args:
        name_or_path: an existing file path, or a logical name from ``weights/manifest.json``.
        download: allow downloading (default: yes unless ``SAN_GAN_OFFLINE=1``).
        kind: what the caller wants (``"model"``, ``"pretrained"``): an unknown name's error lists only the
            known names of that kind (a model lookup never offers ``vgg19``).
        suffixes: a name without a manifest entry is also found as ``<name><suffix>`` in the weights folders
            (:func:`weights_dirs`, in order; each suffix in turn), unchecked: e.g. what ``sr-export`` wrote there.

    Raises:
        WeightsError: missing (message says what and where), an unknown name (with the known names of
            ``kind``), or a size / SHA-256 mismatch.
    """
    p = Path(name_or_path)
    if p.suffix and (p.is_file() or os.sep in str(name_or_path) or "/" in str(name_or_path)):
        if not p.is_file():
            raise WeightsError(f"weights file not found: {p}")
        return p
    manifest = load_manifest()
    name = str(name_or_path)
    if name not in manifest:
        if p.is_file():
            return p
        for d in weights_dirs() if suffixes and _is_plain_name(name) else []:
            for suffix in suffixes:
                if (d / f"{name}{suffix}").is_file():
                    return d / f"{name}{suffix}"
        raise WeightsError(unknown_name_message(name, kind, suffixes))
    spec = manifest[name]
    for d in weights_dirs():
        if (d / spec.file).is_file():
            return _check(d / spec.file, spec)
    hub = hub_checkpoints_dir() / spec.file
    if hub.is_file():
        return _check(hub, spec)
    if download is None:
        download = not _offline()
    if not spec.url:
        raise WeightsError(_missing_message(spec, "It has no download URL: it must be produced or copied by hand."))
    if not download:
        raise WeightsError(_missing_message(spec, "Downloads are disabled (SAN_GAN_OFFLINE=1)."))
    try:
        return _download(spec, hub)
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        raise WeightsError(_missing_message(spec, f"Download failed (offline?): {e}")) from None


def known_names(kind: str | None = None) -> list[str]:
    """Sorted manifest names, only those of ``kind`` (``"model"``, ``"pretrained"``) when given."""
    return sorted(name for name, spec in load_manifest().items() if kind is None or spec.kind == kind)


def unknown_name_message(name: str, kind: str | None = None, suffixes: tuple[str, ...] = ()) -> str:
    """One line for a name that is neither a manifest entry nor a file: what was searched and the known names
    of ``kind`` (e.g. ``unknown model 'x': ...; known models: srresnet-l1-x4``)."""
    what = {"model": "model", "pretrained": "pretrained weights"}.get(kind or "", "weights name")
    files = " or ".join(f"{name}{s}" for s in suffixes)
    searched = f", and no {files} in {', '.join(str(d) for d in weights_dirs())}" if files else " and no such file"
    known = ", ".join(known_names(kind)) or "none"
    plural = {"model": "models", "pretrained weights": "pretrained weights"}.get(what, "names")
    return f"unknown {what} {name!r}: not in a weights manifest{searched}; known {plural}: {known}"


def _is_plain_name(name: str) -> bool:
    return bool(name) and "/" not in name and os.sep not in name and name not in (".", "..")


def weights_status(names: Iterable[str] | None = None) -> list[dict]:
    """One row per manifest entry (or per entry of ``names``): where it was found (if anywhere) and whether
    its hash matches (hashing reads the whole file: ask only for the entries you show)."""
    rows = []
    wanted = None if names is None else set(names)
    for name, spec in sorted(load_manifest().items()):
        if wanted is not None and name not in wanted:
            continue
        found, ok, note = None, False, "missing"
        for cand in [*(d / spec.file for d in weights_dirs()), hub_checkpoints_dir() / spec.file]:
            if cand.is_file():
                found = cand
                try:
                    _check(cand, spec)
                    ok, note = True, "ok"
                except WeightsError as e:
                    note = str(e).split(":")[0] + ": hash/size mismatch"
                break
        rows.append({"name": name, "file": spec.file, "path": str(found) if found else "", "ok": ok, "status": note})
    return rows
