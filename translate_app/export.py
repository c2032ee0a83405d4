"""``translate-export``: a SPADE generator as ``<name>.safetensors`` + ``<name>.json``.

The source is anything ``model_files.load_model`` reads: a translate-train checkpoint (its generator ``G``;
translate-train keeps no EMA copy), SPADE's released ``latest_net_G.pth`` (converted to our layout) or an
earlier export (e.g. to change its dtype). What is written:

* ``<name>.safetensors``: our SPADEGenerator's ``state_dict`` (spectral-norm ``parametrizations`` keys, the
  BatchNorm running statistics), floating tensors in float16 (default) or float32, integer counters as they
  are; metadata ``{"format": EXPORT_FORMAT}``. A weight that float16 cannot hold (overflow to Inf) refuses
  the export and names the tensor: export with ``fp16=False`` (``--fp32``) then.
* ``<name>.json``: ``format``, ``architecture`` ``SPADEGenerator`` and its ``kwargs`` (``label_nc``, ``ngf``,
  ``upsampling``, ``size`` [H, W], ``spade_hidden``), ``output_size`` (height, width), ``label_encoding``
  (what the 36 input channels mean, as ``translate_app.data.label_tensor`` makes them), ``dtype``,
  ``source`` (kind, file name, sha256, stored format), ``training`` (step and config when known) and
  ``name`` (``--name``, else an earlier export's, else the output's stem).

Both outputs are checked before anything is read or written, and neither replaces a file unless
``overwrite`` (``gan_core.atomic``: no partial files, nothing replaced that appears meanwhile).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .data import LABEL_NC, SEMANTIC_NC
from .model_files import EXPORT_FORMAT, KIND_EXPORT, ModelInfo, load_model, nonfinite_tensors

__all__ = ["LABEL_ENCODING", "export_config", "export_generator", "export_paths"]

LABEL_ENCODING = {
    "dataset": "cityscapes",
    "channels": SEMANTIC_NC,
    "label_ids": f"channels 0..{LABEL_NC - 1}: one-hot Cityscapes labelIds 0..{LABEL_NC - 1} (gtFine_labelIds.png, "
    "not trainIds), resized nearest to the output size",
    "instance_edges": f"channel {LABEL_NC}: 1 on both sides of every horizontal or vertical change of the "
    "instance id (gtFine_instanceIds.png), else 0; all 0 without an instance map",
    "output": "RGB in [-1, 1] (tanh); (x + 1) / 2 gives [0, 1]",
}


def export_paths(out: str | Path) -> tuple[Path, Path]:
    """(``.safetensors``, ``.json``) translate-export writes for ``out`` (:func:`gan_core.weights.release_paths`)."""
    from gan_core.weights import release_paths

    return release_paths(out, "translate-export")


def export_config(info: ModelInfo, dtype: torch.dtype, name: str | None = None) -> dict:
    """The JSON config written beside the weights (see the module docstring); ``name`` if given."""
    H, W = info.kwargs["size"]
    kwargs = {**info.kwargs, "size": [H, W]}
    if info.kind == KIND_EXPORT:  # re-export: keep where the weights came from
        source, training = info.record.get("source"), info.record.get("training")
    else:
        source = {"kind": info.kind, "file": info.path.name, "sha256": info.sha256, "stored_as": info.detail or None}
        training = {"step": info.step, "config": info.record or None}
    config = {
        "format": EXPORT_FORMAT,
        "architecture": "SPADEGenerator",
        "kwargs": kwargs,
        "output_size": {"height": H, "width": W},
        "label_encoding": LABEL_ENCODING,
        "dtype": str(dtype).removeprefix("torch."),
        "source": source,
        "training": training,
    }
    if name:
        config["name"] = name
    return config


def _cast(state: dict[str, torch.Tensor], dtype: torch.dtype, where: str) -> dict[str, torch.Tensor]:
    tensors = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    bad = nonfinite_tensors(tensors)
    if bad:
        peak = float(state[bad[0]].abs().max())
        raise ValueError(
            f"{where}: {bad[0]} (max |w| {peak:.4g}) does not fit in {str(dtype).removeprefix('torch.')}"
            f"{f' (and {len(bad) - 1} more tensors)' if len(bad) > 1 else ''}; export with --fp32"
        )
    return tensors


def export_generator(
    source: str | Path, out: str | Path, fp16: bool = True, name: str | None = None, overwrite: bool = False
) -> tuple[Path, ModelInfo]:
    """Write the generator of ``source`` as ``out`` (.safetensors) + ``out``.json; returns (weights path, the
    source's ModelInfo).

    Raises:
        ValueError: an output that exists (without ``overwrite``), cannot be written or is the source itself,
            a suffix other than ``.safetensors``, a source that does not load (see ``load_model``), a weight
            that does not fit in float16.
        FileNotFoundError: no such source.
        FileExistsError: an output appeared while exporting (nothing of ours is left behind).
    """
    from safetensors.torch import save

    from gan_core.atomic import atomic_write, check_output_path, write_text

    weights_path, config_path = export_paths(out)
    source = Path(source)
    for path in (weights_path, config_path):
        if source.exists() and path.resolve() in (source.resolve(), source.with_suffix(".json").resolve()):
            raise ValueError(f"{path} is the source model itself; choose another output")
        check_output_path(path, overwrite)
    G, info = load_model(source)
    dtype = torch.float16 if fp16 else torch.float32
    tensors = _cast(G.state_dict(), dtype, str(source))
    blob = save(tensors, metadata={"format": EXPORT_FORMAT})
    if name is None and info.kind == KIND_EXPORT:
        name = info.record.get("name")
    text = json.dumps(export_config(info, dtype, name or weights_path.stem), indent=2) + "\n"
    with atomic_write(weights_path, overwrite=overwrite) as f:
        f.write(blob)
    try:
        write_text(config_path, text, overwrite=overwrite)
    except BaseException:
        if not overwrite:  # ours (placed without replacing): do not leave weights without their config
            weights_path.unlink(missing_ok=True)
        raise
    return weights_path, info
