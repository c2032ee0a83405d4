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

from gan_core.weights import default_model_name, load_manifest, resolve_weights, sha256_file

from .models import SRGenerator, generator_weights, strip_prefixes

__all__ = [
    "check_finite",
    "export_generator",
    "export_paths",
    "load_generator",
    "load_manifest_default",
    "load_sr_checkpoint",
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

    from .train import CKPT_FORMAT

    path = Path(path)
    if path.suffix == ".safetensors" and path.is_file():
        raise ValueError(f"{path} is a released model (.safetensors), not an sr-train checkpoint (.pt)")
    ck = load_checkpoint(path)
    if ck.get("format") != CKPT_FORMAT:
        raise ValueError(f"{path} is {_describe_format(ck.get('format'))}, not an sr-train checkpoint")
    if not isinstance(ck.get("G_ema", ck.get("G")), dict) or not isinstance(ck.get("config"), dict):
        raise ValueError(f"{path} is an sr-train checkpoint without generator weights or config (damaged?)")
    return ck


def check_finite(state: dict, where: str) -> None:
    """ValueError naming the first tensor of ``state`` that holds NaN or Inf (the weights are unusable)."""
    bad = [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point() and not v.isfinite().all()]
    if bad:
        more = f" (and {len(bad) - 1} more tensors)" if len(bad) > 1 else ""
        raise ValueError(
            f"{where} has non-finite weights (NaN/Inf) in {bad[0]}{more}: the training diverged or the file is "
            "damaged; refused"
        )


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
    text = str(name_or_path)
    return "/" not in text and os.sep not in text and text in load_manifest()


def load_generator(name_or_path: str | Path | None = None) -> tuple[SRGenerator, dict]:
    """(generator in eval mode, its config dict) from a manifest name, a safetensors file (with its JSON
    config ``<name>.json``, else ``config.json`` beside it), a folder holding ``model.safetensors``, or an
    ``sr-train`` checkpoint (.pt, its EMA generator).

    A bare name listed in the manifest always means that entry (hash-checked), never a file of the same
    name in the current directory. The config gets ``source`` (the resolved file, absolute) and
    ``sha256`` (its full SHA-256).

    Raises:
        FileNotFoundError: a missing model file or config (the message names the files looked for).
        ValueError: one line for everything else: an unreadable / unsafe file, a config or weights that do
            not fit, non-finite weights, a checkpoint that is not from sr-train.
    """
    if name_or_path is None:
        name_or_path = load_manifest_default()
    if _is_manifest_name(name_or_path):
        name = str(name_or_path)
        spec = load_manifest()[name]
        if spec.kind not in ("", "model"):
            raise ValueError(f"{name!r} is a {spec.kind} weight file, not an SR model (see sr-infer --list-models)")
        p = resolve_weights(name)
        candidates = [p.parent / spec.config] if spec.config else [p.with_suffix(".json")]
    else:
        p = Path(name_or_path)
        if p.is_dir():
            p = p / "model.safetensors"
        if not p.is_file():
            if not p.suffix and "/" not in str(name_or_path):
                resolve_weights(name_or_path)  # raises: unknown name, with the known names
            raise FileNotFoundError(f"model file not found: {p}")
        if p.suffix == ".pt":
            return _load_checkpoint_generator(p)
        if p.suffix != ".safetensors":
            raise ValueError(f"{p}: not a model file (expected .safetensors with its .json, or an sr-train .pt)")
        candidates = [p.with_suffix(".json"), p.parent / "config.json"]
    config, cfg_path = _read_model_config(candidates, p)
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    G = _build(config, cfg_path)
    try:
        state = {k: v.float() for k, v in load_file(str(p)).items()}
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{p} is not a readable safetensors file: {e}") from None
    state = strip_prefixes(state)
    check_finite(state, str(p))
    _load_state(G, state, p, cfg_path.name)
    return G.eval(), {**config, "source": str(p.resolve()), "sha256": sha256_file(p)}


def _load_checkpoint_generator(p: Path) -> tuple[SRGenerator, dict]:
    ck = load_sr_checkpoint(p)
    config = {**_model_config(ck["config"], p), "name": p.stem}
    G = _build(config, p)
    state, key = generator_weights(ck)
    check_finite(state, f"{p} ({key})")
    _load_state(G, state, p, "its training config")
    return G.eval(), {**config, "source": str(p.resolve()), "sha256": sha256_file(p)}


def load_manifest_default() -> str:
    """Logical name of the default SR model (``default_sr_model`` of ``$SAN_WEIGHTS_DIR``'s manifest, else
    the repository's ``weights/manifest.json``; never a ``./weights`` the user did not name)."""
    return default_model_name("default_sr_model")


def export_paths(out: str | Path) -> tuple[Path, Path]:
    """(weights ``.safetensors``, config ``.json``) that :func:`export_generator` writes for ``out``.

    A path without suffix gets ``.safetensors``; any other suffix is refused (ValueError), so that
    ``m.pt`` is never written as ``m.safetensors`` behind the user's back."""
    out = Path(out)
    if not out.suffix:
        out = out.with_name(out.name + ".safetensors")
    elif out.suffix != ".safetensors":
        raise ValueError(
            f"{out}: sr-export writes a .safetensors file (and its .json config beside it); give a path ending in "
            ".safetensors or without a suffix"
        )
    return out, out.with_suffix(".json")


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
