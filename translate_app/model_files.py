"""Which generator file is this, and load it: translate-train checkpoints, SPADE's released
``latest_net_G.pth`` and the ``<name>.safetensors`` + ``<name>.json`` pairs that ``translate-export`` writes.

    from translate_app.model_files import load_model
    G, info = load_model("checkpoints/cityscapes_pretrained/latest_net_G.pth")
    print(info.describe())   # SPADE checkpoint (legacy torch format): .../latest_net_G.pth, 372.4 MB, sha256 ...

``G`` is a :class:`translate_app.generator.SPADEGenerator` in eval mode on the CPU: (B, 36, H, W) Cityscapes
one-hot label ids + instance edges (``translate_app.data.label_tensor``) -> (B, 3, H, W) RGB in [-1, 1].

Detection, without running anything stored in the file:

* suffix ``.safetensors``: an exported generator; the JSON beside it (``<name>.json``, format
  :data:`EXPORT_FORMAT`) rebuilds the network.
* a zip archive (``torch.save`` since PyTorch 1.6) or a file in the pre-1.6 legacy format (SPADE's 2019
  release): read with ``weights_only`` (``gan_core.checkpoint.safe_torch_load``). A dict with a ``format``
  entry must be a translate-train checkpoint (its generator ``G``; translate-train keeps no EMA copy); a
  dict with ``fc.weight`` and old spectral-norm keys (``*.weight_orig``) is SPADE's
  (``translate_app.spade_checkpoint``). A zip archive is CRC-checked first.
* anything else: "truncated or corrupt", as for any checkpoint.

Only Cityscapes generators are accepted (36 input channels), the only label handling this package has.
Errors: FileNotFoundError for a missing file, else ValueError in one line naming the file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .config import SpadeTrainConfig
from .data import SEMANTIC_NC
from .generator import SPADEGenerator

__all__ = [
    "EXPORT_FORMAT",
    "KIND_EXPORT",
    "KIND_SPADE",
    "KIND_TRAIN",
    "ModelInfo",
    "fit_report",
    "load_exported",
    "load_model",
    "load_train_checkpoint",
    "nonfinite_tensors",
]

EXPORT_FORMAT = "san-gan/spade-generator/1"  # the JSON config and the safetensors metadata of translate-export
KIND_TRAIN = "translate-train checkpoint"
KIND_SPADE = "SPADE checkpoint"
KIND_EXPORT = "exported generator"


@dataclass(frozen=True)
class ModelInfo:
    """What :func:`load_model` loaded.

    kind: :data:`KIND_TRAIN`, :data:`KIND_SPADE` or :data:`KIND_EXPORT`; detail: how it was stored (file
    format, dtype); kwargs: the SPADEGenerator constructor arguments (``size`` a (H, W) tuple); step: the
    training step when known; train_config: a translate-train checkpoint's config; record: its plain config
    dict (translate-train) or the JSON of an exported file.
    """

    kind: str
    path: Path
    nbytes: int
    sha256: str  # full hex digest of the file (an export: of its .safetensors)
    kwargs: dict
    detail: str = ""
    step: int | None = None
    train_config: SpadeTrainConfig | None = None
    record: dict = field(default_factory=dict)

    def describe(self) -> str:
        """``<kind> (<detail>), step N: <path>, <size>, sha256 <12 hex>`` in one line."""
        size = f"{self.nbytes / 1e6:.1f} MB" if self.nbytes >= 100_000 else f"{self.nbytes / 1e3:.1f} kB"
        what = self.kind + (f" ({self.detail})" if self.detail else "")
        what += f", step {self.step}" if self.step is not None else ""
        return f"{what}: {self.path}, {size}, sha256 {self.sha256[:12]}"

    def network(self) -> str:
        """``512x256, ngf 64, upsampling 'more'``: the generator's output size (W x H) and shape."""
        H, W = self.kwargs["size"]
        return f"{W}x{H}, ngf {self.kwargs['ngf']}, upsampling {self.kwargs['upsampling']!r}"


def nonfinite_tensors(state: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors of ``state`` that hold NaN or Inf."""
    return [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def fit_report(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> str:
    """What keeps ``state`` from loading into ``model``, in one line."""
    own = model.state_dict()
    missing, unexpected = own.keys() - state.keys(), state.keys() - own.keys()
    shapes = [k for k in own.keys() & state.keys() if tuple(own[k].shape) != tuple(state[k].shape)]
    parts = [f"{len(shapes)} tensor(s) of another shape"] if shapes else []
    parts += [f"{len(missing)} missing"] if missing else []
    parts += [f"{len(unexpected)} unexpected"] if unexpected else []
    example = sorted(shapes or missing or unexpected)[:1]
    return ", ".join(parts) + (f" (e.g. {example[0]})" if example else "")


def _refuse_nonfinite(state: Mapping[str, torch.Tensor], where: str) -> None:
    bad = nonfinite_tensors(state)
    if bad:
        raise ValueError(f"{where}: the generator has non-finite weights ({bad[0]} and {len(bad) - 1} more)")


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _info(kind: str, path: Path, kwargs: dict, **more) -> ModelInfo:
    from gan_core.weights import sha256_file

    return ModelInfo(kind, path, path.stat().st_size, sha256_file(path), kwargs, **more)


def load_train_checkpoint(path: Path, ck: dict) -> tuple[SPADEGenerator, ModelInfo]:
    """The generator ``G`` of a translate-train checkpoint ``ck`` already read from ``path``."""
    from gan_core.config import ConfigError, from_dict, migrate_config

    from .train import CKPT_FORMAT, build_generator

    fmt = ck.get("format")
    if fmt != CKPT_FORMAT or not isinstance(ck.get("G"), dict):
        what = f"its format is {fmt!r}" if fmt else "it has no format record"
        raise ValueError(f"{path} is not a translate-train checkpoint ({what})")
    try:
        cfg = from_dict(SpadeTrainConfig, migrate_config(SpadeTrainConfig, ck["config"]))  # older key names too
    except (ConfigError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: its training config cannot be used: {_first_line(e)}") from None
    G = build_generator(cfg)
    try:
        G.load_state_dict(ck["G"])
    except RuntimeError:
        raise ValueError(
            f"{path}: the generator weights do not fit the network its config describes: {fit_report(G, ck['G'])}"
        ) from None
    _refuse_nonfinite(G.state_dict(), str(path))
    kwargs = {"label_nc": SEMANTIC_NC, "ngf": cfg.model.ngf, "upsampling": cfg.model.upsampling,
              "size": tuple(G.size), "spade_hidden": cfg.model.spade_hidden}  # fmt: skip
    step = ck.get("step") if isinstance(ck.get("step"), int) else None
    return G.eval(), _info(KIND_TRAIN, path, kwargs, step=step, train_config=cfg, record=ck["config"])


def _load_spade(path: Path, state: Mapping, detail: str) -> tuple[SPADEGenerator, ModelInfo]:
    from .spade_checkpoint import check_cityscapes, spade_generator_from_state

    try:
        G, kwargs = spade_generator_from_state(state)
        check_cityscapes(kwargs)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    _refuse_nonfinite(G.state_dict(), str(path))
    return G, _info(KIND_SPADE, path, kwargs, detail=detail)


def _looks_like_spade(state: Mapping) -> bool:
    return "fc.weight" in state and any(isinstance(k, str) and k.endswith(".weight_orig") for k in state)


def _read_export_config(path: Path) -> tuple[dict, Path]:
    config_path = path.with_suffix(".json")
    if not config_path.is_file():
        raise FileNotFoundError(f"{path}: its config {config_path} is missing (it rebuilds the network)")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{config_path} is not readable JSON: {e}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{config_path} is not a JSON object")
    if config.get("format") != EXPORT_FORMAT:
        arch = config.get("architecture")
        hint = ""
        if arch not in (None, "SPADEGenerator"):
            hint = f" (architecture {arch!r}: an sr-export model? use sr-infer)"
        raise ValueError(f"{config_path} is not a translate-export config (format {config.get('format')!r}){hint}")
    return config, config_path


def load_exported(path: str | Path) -> tuple[SPADEGenerator, ModelInfo]:
    """An exported ``<name>.safetensors`` + ``<name>.json`` (see ``translate_app.export``), weights as float32."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    config, config_path = _read_export_config(path)
    kwargs = config.get("kwargs")
    try:
        if not isinstance(kwargs, dict):
            raise TypeError(f"'kwargs' must be an object, got {type(kwargs).__name__}")
        kwargs = {**kwargs, "size": tuple(kwargs.get("size", ()))}
        if kwargs.get("label_nc") != SEMANTIC_NC:
            nc = kwargs.get("label_nc")
            raise ValueError(f"label_nc is {nc!r}; only Cityscapes generators ({SEMANTIC_NC} channels) run here")
        G = SPADEGenerator(**kwargs)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{config_path}: cannot build the generator from its config: {e}") from None
    try:
        state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path} is not a readable safetensors file: {_first_line(e)}") from None
    _refuse_nonfinite(state, str(path))
    try:
        G.load_state_dict(state)
    except RuntimeError:
        raise ValueError(f"{path}: the weights do not fit the network {config_path.name} describes: "
                         f"{fit_report(G, state)}") from None  # fmt: skip
    training = config.get("training") if isinstance(config.get("training"), dict) else {}
    step = training.get("step") if isinstance(training.get("step"), int) else None
    detail = str(config.get("dtype", ""))
    return G.eval(), _info(KIND_EXPORT, path, kwargs, detail=detail, step=step, record=config)


def load_model(path: str | Path) -> tuple[SPADEGenerator, ModelInfo]:
    """(SPADEGenerator in eval mode on the CPU, what was loaded) from any file kind above."""
    from gan_core.checkpoint import is_valid_checkpoint, safe_torch_load

    from .spade_checkpoint import is_legacy_torch_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        return load_exported(path)
    legacy = is_legacy_torch_file(path)
    if not legacy and not is_valid_checkpoint(path):
        raise ValueError(
            f"checkpoint {path} is truncated or corrupt, or not a PyTorch zip archive (zip/CRC check failed)"
        )
    obj = safe_torch_load(path)  # ValueError: not a safe checkpoint / cannot be read
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a checkpoint or a SPADE generator state dict")
    if "format" not in obj and _looks_like_spade(obj):
        return _load_spade(path, obj, "legacy torch format" if legacy else "zip format")
    if "format" in obj:
        return load_train_checkpoint(path, obj)
    raise ValueError(
        f"{path} is neither a translate-train checkpoint (it has no format record) nor a SPADE generator state "
        "dict (no fc.weight / *.weight_orig keys)"
    )
