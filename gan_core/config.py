"""Configs as nested dataclasses: defaults in code <- YAML file <- ``--set a.b=value`` overrides.

* Unknown keys are errors that name the key and list the allowed ones, at any depth.
* Values are coerced to the field's declared type (``1e-4`` read by YAML as a string becomes a float),
  ``Literal`` fields list their allowed values, and each dataclass validates itself in
  ``__post_init__`` (which raises ``ConfigError`` with the dotted key).
* ``to_dict`` / ``save_yaml`` give the resolved config, stored in every run directory and checkpoint;
  ``from_dict`` rebuilds it.
* Keys that were renamed or removed stay listed in the dataclass that held them (class attributes
  ``renamed_keys = {"old": "new"}`` and ``removed_keys = {"old": "why"}``): user input (YAML, ``--set``)
  with an old key is refused with a message that gives the new name; configs saved before the change
  (checkpoints, released-model JSONs) are read through ``migrate_config``, which renames and drops them.

No ``exec``, no class names in strings: a config is plain data.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

__all__ = [
    "ConfigError",
    "apply_overrides",
    "config_differences",
    "from_dict",
    "load_config",
    "migrate_config",
    "require",
    "require_betas",
    "require_device",
    "save_yaml",
    "to_dict",
]

T = TypeVar("T")


class ConfigError(ValueError):
    """A config key or value that cannot be used; the message names the key."""


def _fields(cls) -> dict[str, tuple[dataclasses.Field, Any]]:
    hints = typing.get_type_hints(cls)
    return {f.name: (f, hints[f.name]) for f in dataclasses.fields(cls) if f.init}


def _type_name(tp) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin in (list, tuple):
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in get_args(tp) if a is not Ellipsis)}]"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp, key: str) -> Any:
    """Convert ``value`` to type ``tp`` or raise ConfigError naming ``key``."""
    origin = get_origin(tp)
    bad = ConfigError(f"{key}: {value!r} is not {_type_name(tp)}")
    if tp is Any:
        return value
    if origin is Literal:
        allowed = get_args(tp)
        if value in allowed and not (isinstance(value, bool) and not any(isinstance(a, bool) for a in allowed)):
            return value
        raise ConfigError(f"{key}: {value!r} is not allowed; allowed values: {', '.join(repr(a) for a in allowed)}")
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        # Literals and exact types first, so that "auto" in float | Literal["auto"] is kept as a string
        for arg in sorted(args, key=lambda a: 0 if get_origin(a) is Literal or a is str else 1):
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: {value!r} is not {_type_name(tp)}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {', '.join(_fields(tp))}, got {value!r}")
        return from_dict(tp, value, prefix=key)
    if origin in (list, tuple):
        if isinstance(value, str | int | float) and not isinstance(value, bool) and origin is list:
            value = [value]  # a single value where a list is expected
        if not isinstance(value, list | tuple):
            raise bad
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{key}: expected {len(args)} values, got {value!r}")
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off", "1", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        raise bad
    if tp is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                f = float(value)
            except ValueError:
                raise bad from None
            if f.is_integer():
                return int(f)
        raise bad
    if tp is float:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise bad
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise bad


def _unknown_key(cls, key: str, prefix: str) -> ConfigError:
    """The error for a key ``cls`` does not have: renamed (gives the new name), removed (says why), unknown."""
    where = f"{prefix}." if prefix else ""
    renamed = getattr(cls, "renamed_keys", {})
    removed = getattr(cls, "removed_keys", {})
    if key in renamed:
        return ConfigError(f"config key {where}{key} was renamed: use {where}{renamed[key]}")
    if key in removed:
        return ConfigError(f"config key {where}{key} was removed: {removed[key]}")
    return ConfigError(
        f"unknown config key {where}{key}; allowed keys{' under ' + prefix if prefix else ''}: "
        + ", ".join(_fields(cls))
    )


def migrate_config(cls: type, data: dict) -> dict:
    """A config dict saved by an older version (checkpoint, released-model JSON) in today's key names.

    Walks ``data`` along the dataclass ``cls``: a key listed in a dataclass's ``renamed_keys`` is moved
    to its new name (unless the new name is present too, which wins), one in ``removed_keys`` is dropped.
    Everything else is kept as it is (``from_dict`` still refuses unknown keys). ``data`` is not modified.
    Example (SR): ``{"loss": {"feature_weight": 0.5}, "optim": {"d_steps_per_g": 1}}`` becomes
    ``{"loss": {"vgg_loss_weight": 0.5}, "optim": {}}``.
    """
    if not isinstance(data, dict):
        return data
    fields = _fields(cls)
    renamed = getattr(cls, "renamed_keys", {})
    removed = getattr(cls, "removed_keys", {})
    out: dict = {}
    for key, value in data.items():
        if key in removed and key not in fields:
            continue
        if key in renamed and key not in fields:
            if renamed[key] in data:
                continue
            key = renamed[key]
        tp = fields[key][1] if key in fields else None
        out[key] = migrate_config(tp, value) if tp is not None and dataclasses.is_dataclass(tp) else value
    return out


def from_dict(cls: type[T], data: dict, prefix: str = "") -> T:
    """Build dataclass ``cls`` from a (partial) nested dict; unknown, renamed or removed keys raise
    ConfigError (a saved config goes through ``migrate_config`` first)."""
    fields = _fields(cls)
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise _unknown_key(cls, unknown[0], prefix)
    kwargs = {}
    for name, value in data.items():
        _, tp = fields[name]
        kwargs[name] = _coerce(value, tp, f"{prefix}.{name}" if prefix else name)
    try:
        return cls(**kwargs)
    except ConfigError as e:
        if prefix and not str(e).startswith(prefix):
            raise ConfigError(f"{prefix}.{e}") from None
        raise


def to_dict(cfg) -> dict:
    """Plain nested dict (tuples as lists) of a config dataclass: YAML/JSON/checkpoint friendly."""

    def plain(v):
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v) if f.init}
        if isinstance(v, list | tuple):
            return [plain(x) for x in v]
        return v

    return plain(cfg)


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``a.b.c=value`` strings (values parsed as YAML scalars/lists) to a nested dict."""
    data = dict(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node: dict = {}
        cur = node
        parts = key.split(".")
        for p in parts[:-1]:
            cur[p] = {}
            cur = cur[p]
        cur[parts[-1]] = value
        data = _merge(data, node)
    return data


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | tuple = ()) -> T:
    """Defaults of ``cls``, then the YAML file at ``path`` (if any), then ``overrides``; validated."""
    data = to_dict(cls())
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        with open(path, encoding="utf-8") as f:
            try:
                loaded = yaml.safe_load(f) or {}
            except yaml.YAMLError as e:
                raise ConfigError(f"cannot parse {path}: {e}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        _check_keys(cls, loaded, "")
        data = _merge(data, loaded)
    overridden = apply_overrides({}, list(overrides))
    _check_keys(cls, overridden, "")
    data = _merge(data, overridden)
    return from_dict(cls, data)


def _check_keys(cls, data: dict, prefix: str) -> None:
    """Unknown, renamed or removed keys anywhere in ``data`` (before merging, so the error names what the
    user wrote)."""
    fields = _fields(cls)
    for k, v in data.items():
        if k not in fields:
            raise _unknown_key(cls, k, prefix)
        tp = fields[k][1]
        if dataclasses.is_dataclass(tp) and isinstance(v, dict):
            _check_keys(tp, v, f"{prefix}.{k}" if prefix else k)


def require(condition: bool, key: str, message: str) -> None:
    """For ``__post_init__`` validators: raise ConfigError("key: message") unless ``condition``."""
    if not condition:
        raise ConfigError(f"{key}: {message}")


def require_betas(betas, key: str) -> None:
    """Adam betas: each in [0, 1)."""
    require(all(0 <= x < 1 for x in betas), key, f"betas must be in [0, 1), got {betas}")


def require_device(device: str, key: str) -> None:
    """A device name the training tools accept: auto, cpu, cuda, cuda:N or mps."""
    ok = device in ("auto", "cpu", "cuda", "mps") or device.startswith("cuda:")
    require(ok, key, f"must be auto, cpu, cuda, cuda:N or mps, got {device!r}")


def config_differences(now: dict, saved: dict, mutable: tuple[str, ...] = (), prefix: str = "") -> list[str]:
    """Keys whose values differ between two config dicts (e.g. a resumed run and its checkpoint).

    ``mutable``: keys (``"train.steps"``) or prefixes ending in ``.`` (``"log."``) allowed to differ.
    A ``saved`` config from an older version must be passed through ``migrate_config`` first
    (``gan_core.checkpoint.resume_state`` does).
    """
    out = []
    for k in sorted(set(now) | set(saved)):
        key = f"{prefix}{k}"
        va, vb = now.get(k), saved.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += config_differences(va, vb, mutable, key + ".")
        elif va != vb and not any(key == m or (m.endswith(".") and key.startswith(m)) for m in mutable):
            out.append(f"{key}: checkpoint {vb!r}, now {va!r}")
    return out


def save_yaml(cfg, path: str | Path) -> None:
    """Write the resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")
