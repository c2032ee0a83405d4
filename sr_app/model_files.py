"""Model files of SAN-SRGAN: which file a name or path means, loading it safely, and ``sr-export``.

Released weights are a safetensors file plus a JSON config beside it that rebuilds the network
(``{"architecture": "SRGenerator", "kwargs": {...}, "scale": 4, ...}``); ``load_generator`` also takes
a manifest name or an ``sr-train`` checkpoint (its EMA generator). Every failure is one line (ValueError
or FileNotFoundError) naming the file and the reason.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from gan_core.weights import default_model_name, load_manifest, resolve_weights, sha256_file

from .models import SRGenerator, check_finite, count_parameters, generator_weights, strip_prefixes

SRGENERATOR_KEY = "image_to_features.weight"  # the first tensor of every SRGenerator state dict
MODEL_SUFFIXES = (".safetensors", ".pth", ".pt", ".ckpt")  # the model files --weights takes
NAMED_SUFFIXES = (".safetensors", ".pth")  # what -n NAME finds in the weights folders without a manifest entry

__all__ = [
    "check_finite",
    "export_generator",
    "export_paths",
    "load_generator",
    "load_manifest_default",
    "load_sr_checkpoint",
    "unlisted_model_files",
]


def _build(config: dict, where: Path) -> SRGenerator:
    arch = config.get("architecture", "SRGenerator")
    if arch != "SRGenerator":
        raise ValueError(f"{where}: unknown architecture {arch!r} (expected SRGenerator)")
    kwargs = config.get("kwargs", {})
    try:
        if not isinstance(kwargs, dict):
            raise TypeError(f"'kwargs' must be an object, got {type(kwargs).__name__}")
        return SRGenerator(**kwargs)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: cannot build the network from its config: {e}") from None


def _model_config(train_config: dict, where: Path) -> dict:
    """The released-model config (architecture + kwargs + scale) of an ``sr-train`` run's config dict."""
    try:
        scale = train_config["data"]["scale"]
        m = train_config["model"]
        kwargs = {"channels": m["channels"], "num_blocks": m["num_blocks"], "scale": scale}
    except (KeyError, TypeError) as e:
        raise ValueError(f"{where}: its training config lacks {e} (not an sr-train checkpoint?)") from None
    return {"architecture": "SRGenerator", "kwargs": kwargs, "scale": scale}


def _describe_format(fmt) -> str:
    if isinstance(fmt, str) and fmt.startswith("san-gan/translate-train/"):
        return "a translate-train (SAN-SPADE label-to-image) checkpoint"
    if fmt is None:
        return "a PyTorch file without a 'format' entry (not written by sr-train)"
    return f"a checkpoint of format {fmt!r}"


def load_sr_checkpoint(path: str | Path) -> dict:
    """The contents of an ``sr-train`` checkpoint, checked.

    Raises:
        FileNotFoundError: no such file.
        ValueError: one line naming what the file is instead (a translate-train checkpoint, a released
            ``.safetensors`` model, an unsafe or corrupt file, another format).
    """
    from gan_core.checkpoint import load_checkpoint

    path = Path(path)
    if path.suffix == ".safetensors" and path.is_file():
        raise ValueError(f"{path} is a released model (.safetensors), not an sr-train checkpoint (.pt)")
    return _checked_sr_checkpoint(load_checkpoint(path), path)


def _checked_sr_checkpoint(ck, path: Path) -> dict:
    from .train import CKPT_FORMAT

    fmt = ck.get("format") if isinstance(ck, dict) else None
    if fmt != CKPT_FORMAT:
        raise ValueError(f"{path} is {_describe_format(fmt)}, not an sr-train checkpoint")
    if not isinstance(ck.get("G_ema", ck.get("G")), dict) or not isinstance(ck.get("config"), dict):
        raise ValueError(f"{path} is an sr-train checkpoint without generator weights or config (damaged?)")
    return ck


def _load_state(G: SRGenerator, state: dict, where: Path, config_file: str) -> None:
    """``G.load_state_dict(state)`` with a one-line ValueError when the weights do not fit the network."""
    expected = G.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or reshaped:
        parts = [f"{len(v)} {what} (e.g. {v[0]})" for what, v in
                 (("missing", missing), ("unexpected", unexpected), ("of another shape", reshaped)) if v]  # fmt: skip
        raise ValueError(f"{where} does not fit the architecture in {config_file}: tensors {', '.join(parts)}")
    G.load_state_dict(state)


def _read_model_config(candidates: list[Path], weights: Path) -> tuple[dict, Path]:
    """(config dict, its file): the first of ``candidates`` that exists; one-line errors naming the files."""
    for c in candidates:
        if c.is_file():
            try:
                config = json.loads(c.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                raise ValueError(f"model config {c} is not readable JSON: {e}") from None
            if not isinstance(config, dict):
                raise ValueError(f"model config {c} is not a JSON object")
            return config, c
    looked = " or ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"{weights}: its model config is missing (looked for {looked}; it rebuilds the network)")


def _is_manifest_name(name_or_path: str | Path) -> bool:
    """A bare name (no folder part) listed in the manifest: resolved there, never as a file in the cwd."""
    return _is_bare(name_or_path) and str(name_or_path) in load_manifest()


def _is_bare(name_or_path: str | Path) -> bool:
    text = str(name_or_path)
    return "/" not in text and os.sep not in text


def load_generator(name_or_path: str | Path | None = None) -> tuple[nn.Module, dict]:
    """(network in eval mode on the CPU, its config dict) from a name or a file.

    - a name listed in a manifest (``$SAN_WEIGHTS_DIR``'s, the repository's ``weights/``): that entry,
      hash-checked, never a file of the same name in the current directory;
    - another bare name NAME: ``NAME.safetensors`` (with ``NAME.json``) or ``NAME.pth`` in those weights
      folders (what ``sr-export`` wrote there, or a community model put there), not hash-checked;
    - a ``.safetensors`` file: a SRGenerator (our release format: ``<name>.json`` or ``config.json`` beside
      it; recognised by its tensors, its metadata or its ``<name>.json``), else a community model;
    - a ``.pth`` / ``.pt`` / ``.ckpt`` file read with ``torch.load(weights_only=True)`` (no code in it runs):
      an ``sr-train`` checkpoint (its EMA generator), else a community model;
    - a folder holding ``model.safetensors``.

    Community models are any SR / restoration architecture spandrel recognises from the state dict
    (:mod:`sr_app.community`: ESRGAN / Real-ESRGAN RRDBNet, Real-ESRGAN Compact, SwinIR, HAT, ...). The
    config has ``architecture``, ``scale``, ``parameters``, ``name`` (the file's stem unless the config
    names it), ``source`` (the resolved file, absolute) and ``sha256`` (its full SHA-256).

    Raises:
        FileNotFoundError: a missing model file or config, an unknown name (the message names the files
            looked for and the known models).
        ValueError: one line for everything else: an unreadable / unsafe file, a config or weights that do
            not fit, non-finite weights, a checkpoint that is not from sr-train, a state dict spandrel does not
            recognise, a model that is not for SR / restoration.
    """
    if name_or_path is None:
        name_or_path = load_manifest_default()
    config_files: list[Path] | None = None  # None: decided by the file's contents
    name = ""
    if _is_manifest_name(name_or_path):
        name = str(name_or_path)
        spec = load_manifest()[name]
        if spec.kind not in ("", "model"):
            raise ValueError(f"{name!r} is a {spec.kind} weight file, not an SR model (see sr-infer --list-models)")
        p = resolve_weights(name)
        if spec.config:
            config_files = [p.parent / spec.config]
    else:
        p = Path(name_or_path)
        if p.is_dir():
            p = p / "model.safetensors"
        if not p.is_file():
            if p.suffix or not _is_bare(name_or_path):
                raise FileNotFoundError(f"model file not found: {p}")
            p = resolve_weights(str(name_or_path), kind="model", suffixes=NAMED_SUFFIXES)  # else: unknown, listed
    if p.suffix == ".safetensors":
        model, config = _load_safetensors(p, config_files)
    elif p.suffix in MODEL_SUFFIXES:
        model, config = _load_torch_file(p)
    else:
        raise ValueError(
            f"{p}: not a model file (expected .safetensors, .pth, .pt or .ckpt: a san-gan model or sr-train "
            "checkpoint, or a community SR model spandrel recognises)"
        )
    config.setdefault("name", name or p.stem)
    return model.eval(), {**config, "source": str(p.resolve()), "sha256": sha256_file(p)}


def _load_safetensors(p: Path, config_files: list[Path] | None) -> tuple[nn.Module, dict]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(p), framework="pt") as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{p} is not a readable safetensors file: {e}") from None
    ours = (
        config_files is not None
        or str(metadata.get("format", "")).startswith("san-gan/sr-generator/")
        or SRGENERATOR_KEY in strip_prefixes(state)
        or p.with_suffix(".json").is_file()
    )
    if not ours:
        from .community import load_state_dict_model

        return load_state_dict_model(state, p)
    config, cfg_path = _read_model_config(config_files or [p.with_suffix(".json"), p.parent / "config.json"], p)
    G = _build(config, cfg_path)
    state = {k: v.float() for k, v in strip_prefixes(state).items()}
    check_finite(state, str(p))
    _load_state(G, state, p, cfg_path.name)
    return G, {**config, "parameters": count_parameters(G)}


def _load_torch_file(p: Path) -> tuple[nn.Module, dict]:
    """A ``.pth`` / ``.pt`` / ``.ckpt``: our checkpoints carry a ``format`` entry, anything else is a state dict
    for spandrel. Read with ``weights_only`` (``gan_core.checkpoint.safe_torch_load``): no code in it runs."""
    import zipfile

    from gan_core.checkpoint import is_valid_checkpoint, safe_torch_load

    if zipfile.is_zipfile(p) and not is_valid_checkpoint(p):
        raise ValueError(f"{p} is truncated or corrupt (its zip/CRC check failed)")
    obj = safe_torch_load(p)
    if isinstance(obj, dict) and "format" in obj:
        return _checkpoint_generator(_checked_sr_checkpoint(obj, p), p)
    from .community import load_state_dict_model

    return load_state_dict_model(obj, p)


def _checkpoint_generator(ck: dict, p: Path) -> tuple[SRGenerator, dict]:
    config = {**_model_config(ck["config"], p), "name": p.stem}
    G = _build(config, p)
    state, key = generator_weights(ck)
    check_finite(state, f"{p} ({key})")
    _load_state(G, state, p, "its training config")
    return G, {**config, "parameters": count_parameters(G)}


def unlisted_model_files() -> list[Path]:
    """Model files ``-n NAME`` finds without a manifest entry: ``NAME.safetensors`` / ``NAME.pth`` in the weights
    folders (first folder first; a name found twice is listed once, as ``-n`` resolves it) that are not a
    manifest entry's file nor a manifest name."""
    from gan_core.weights import weights_dirs

    manifest = load_manifest()
    taken = set(manifest) | {spec.file for spec in manifest.values()}
    found: dict[str, Path] = {}
    for d in weights_dirs():
        for suffix in NAMED_SUFFIXES:
            for f in sorted(d.glob(f"*{suffix}")) if d.is_dir() else []:
                if f.is_file() and f.stem not in taken and f.name not in taken:
                    found.setdefault(f.stem, f)
    return list(found.values())


def load_manifest_default() -> str:
    """Logical name of the default SR model (``default_sr_model`` of ``$SAN_WEIGHTS_DIR``'s manifest, else
    the repository's ``weights/manifest.json``; never a ``./weights`` the user did not name)."""
    return default_model_name("default_sr_model")


def export_paths(out: str | Path) -> tuple[Path, Path]:
    """(``.safetensors``, ``.json``) that sr-export writes for ``out``: :func:`gan_core.weights.release_paths`."""
    from gan_core.weights import release_paths

    return release_paths(out, "sr-export")


def export_generator(
    checkpoint: str | Path, out: str | Path, fp16: bool = True, extra: dict | None = None, overwrite: bool = False
) -> Path:
    """Write the EMA generator of an ``sr-train`` checkpoint as ``out`` (.safetensors) + ``out``.json.

    Both outputs are checked before either is written, and neither replaces an existing file unless
    ``overwrite`` (written through ``gan_core.atomic``: no partial files, no replacing a file that appears
    meanwhile). Returns the ``.safetensors`` path.

    Raises:
        ValueError: an output that exists (without ``overwrite``) or cannot be written, a suffix other than
            ``.safetensors``, a checkpoint that is not an sr-train one, non-finite weights.
        FileNotFoundError: no such checkpoint.
        FileExistsError: an output appeared while exporting (nothing of ours is left behind).
    """
    from safetensors.torch import save

    from gan_core.atomic import atomic_write, check_output_path, write_text

    weights_path, config_path = export_paths(out)
    for path in (weights_path, config_path):
        check_output_path(path, overwrite)
    ck = load_sr_checkpoint(checkpoint)
    cfg = ck["config"]
    model_config = _model_config(cfg, Path(checkpoint))
    state, key = generator_weights(ck)
    check_finite(state, f"{checkpoint} ({key})")
    _load_state(_build(model_config, Path(checkpoint)), {k: v.float() for k, v in state.items()}, Path(checkpoint),
                "its training config")  # fmt: skip
    dtype = torch.float16 if fp16 else torch.float32
    tensors = {k: v.to(dtype).contiguous() for k, v in state.items()}
    if fp16:
        check_finite(tensors, f"{checkpoint} ({key}, in float16; export with --fp32)")
    blob = save(tensors, metadata={"format": "san-gan/sr-generator/1", "scale": str(model_config["scale"])})
    config = {
        **model_config,
        "dtype": "float16" if fp16 else "float32",
        "training": {"step": ck.get("step"), "stage": cfg.get("train", {}).get("stage"), "config": cfg},
        **(extra or {}),
    }
    with atomic_write(weights_path, overwrite=overwrite) as f:
        f.write(blob)
    try:
        write_text(config_path, json.dumps(config, indent=2) + "\n", overwrite=overwrite)
    except BaseException:
        if not overwrite:  # ours (placed without replacing): do not leave weights without their config
            weights_path.unlink(missing_ok=True)
        raise
    return weights_path
