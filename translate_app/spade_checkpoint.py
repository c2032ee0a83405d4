"""SPADE's released generators (NVlabs/SPADE ``checkpoints/*_pretrained/latest_net_G.pth``) as our SPADEGenerator.

SPADE saves ``netG.state_dict()`` of the same architecture as :class:`translate_app.generator.SPADEGenerator`
(no VAE). Module names agree; two things differ:

* The residual-block convs (``conv_0``, ``conv_1``, ``conv_s``) carry the old
  ``torch.nn.utils.spectral_norm`` hook, stored as ``<conv>.weight_orig`` / ``weight_u`` / ``weight_v``; ours use
  ``torch.nn.utils.parametrizations.spectral_norm``: ``<conv>.parametrizations.weight.original`` /
  ``.0._u`` / ``.0._v``. Both compute the eval-mode weight as ``W / (u . W_mat v)`` with ``W_mat = W.flatten(1)``
  and leave u, v alone in eval mode, so the three tensors carry over unchanged.
  Files written by PyTorch 1.0 hold ``<conv>.weight`` (the normalized weight) instead of ``weight_v``; a ``v``
  is then solved with ``u . W_mat v = sigma``, sigma the least-squares scale from ``weight`` to
  ``weight_orig``, so that the eval weight ``weight_orig / sigma`` is the stored ``weight``.
* The parameter-free norms are SyncBatchNorm (affine=False): ``running_mean`` / ``running_var`` /
  ``num_batches_tracked`` under the same names as our BatchNorm2d; a missing ``num_batches_tracked`` (unused
  in eval) becomes 0.

Every other key (``fc``, ``conv_img``, the SPADE ``mlp_shared.0`` / ``mlp_gamma`` / ``mlp_beta``, conv biases)
is copied as is. The constructor arguments come from the shapes: ``label_nc`` = fc input channels (36 for
Cityscapes: 35 label ids + the instance-edge channel), ``ngf`` = fc output channels / 16, ``spade_hidden`` =
``mlp_shared`` width (128). ``'normal'`` and ``'more'`` upsampling have the same parameters (only the forward
differs), so they cannot be told apart from the weights: without ``up_4`` the default is SPADE's Cityscapes
setting ``'more'``; ``up_4`` present means ``'most'``. The default size is SPADE's Cityscapes test size
(``load_size = crop_size = 512``, ``aspect_ratio = 2``, 'fixed' preprocessing): 256 x 512.
Files are read through ``gan_core.checkpoint.safe_torch_load`` (``torch.load(weights_only=True)``) only, in
both the zip format and the pre-1.6 legacy format SPADE's 2019 release uses (:func:`is_legacy_torch_file`;
``gan_core.checkpoint.load_checkpoint``'s zip/CRC check would call such a file corrupt).

Which models we can run: only Cityscapes ones, since the label handling (``translate_app.data``) is
Cityscapes': ``label_nc`` 36 (35 label ids + instance edges). :func:`check_cityscapes` refuses, in one line,
a model trained without instance maps (35 channels), SPADE's ADE20K (151) and COCO-Stuff (184) models and any
other width. A Cityscapes model trained with ``--contain_dontcare_label --no_instance`` would also have 36
channels and cannot be told apart; SPADE's Cityscapes options use neither.

Input: SPADE's Cityscapes model takes what :func:`translate_app.data.label_tensor` makes, (B, 36, 256, 512):
one-hot label ids 0..34 in channels 0..34 (``label_nc`` 35, no don't-care channel) and the instance-edge map
(1 on both sides of a 4-neighbour instance change) last, in channel 35; output (B, 3, 256, 512) in [-1, 1].
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from .data import SEMANTIC_NC
from .generator import UPSAMPLING, SPADEGenerator

__all__ = [
    "SPADE_CITYSCAPES_SIZE",
    "SPADE_CITYSCAPES_UPSAMPLING",
    "check_cityscapes",
    "convert_spade_generator",
    "infer_generator_kwargs",
    "is_legacy_torch_file",
    "is_spade_state_dict",
    "load_spade_generator",
    "spade_generator_from_state",
]

SPADE_CITYSCAPES_SIZE = (256, 512)  # (H, W): crop_size 512, aspect_ratio 2
SPADE_CITYSCAPES_UPSAMPLING = "more"  # set by SPADE's cityscapes dataset options
_SN_CONVS = ("conv_0", "conv_1", "conv_s")
_SN_SUFFIXES = {
    "weight_orig": "parametrizations.weight.original",
    "weight_u": "parametrizations.weight.0._u",
    "weight_v": "parametrizations.weight.0._v",
}
_LIST_AT_MOST = 8
# torch.save's pre-1.6 format starts with its magic number pickled at protocol 2 (PROTO 2, LONG1 of 10 bytes)
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
# fc input widths of SPADE's other released models: label_nc + don't-care channel + instance-edge channel
_OTHER_DATASETS = {
    SEMANTIC_NC - 1: "a Cityscapes model trained without instance maps (--no_instance: 35 channels, no "
    "instance-edge channel)",
    151: "SPADE's ADE20K model (150 classes + don't-care, no instance maps)",
    184: "SPADE's COCO-Stuff model (182 classes + don't-care + instance edges)",
}


def is_legacy_torch_file(path: str | Path) -> bool:
    """True if ``path`` starts like a file of ``torch.save`` before PyTorch 1.6 (the non-zip format)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(_LEGACY_MAGIC)) == _LEGACY_MAGIC
    except OSError:
        return False


def check_cityscapes(kwargs: Mapping) -> None:
    """ValueError (one line) unless ``kwargs`` (from :func:`infer_generator_kwargs`) describe a Cityscapes
    generator we can feed: ``label_nc`` 36 = Cityscapes label ids 0..34 + the instance-edge channel."""
    nc = kwargs["label_nc"]
    if nc != SEMANTIC_NC:
        what = _OTHER_DATASETS.get(nc, f"a model for {nc} input channels")
        raise ValueError(
            f"SPADE checkpoint is {what}; only Cityscapes models with instance maps ({SEMANTIC_NC} input "
            "channels: 35 label ids + instance edges) can be run here, since only Cityscapes label maps are handled"
        )


def is_spade_state_dict(state: object) -> bool:
    """True for a SPADE-layout generator state dict (old spectral-norm keys), False for anything else."""
    return (
        isinstance(state, Mapping)
        and isinstance(state.get("fc.weight"), torch.Tensor)
        and isinstance(state.get("head_0.conv_0.weight_orig"), torch.Tensor)
    )


def _keys(keys) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:_LIST_AT_MOST])
    more = len(keys) - _LIST_AT_MOST
    return f"{shown} (+{more} more)" if more > 0 else shown


def _solve_v(weight_orig: torch.Tensor, u: torch.Tensor, weight: torch.Tensor, name: str) -> torch.Tensor:
    """v with ``u . (W_mat v) = sigma``, sigma = least-squares scale with ``weight_orig ~= sigma * weight``."""
    w_orig, w, u = weight_orig.double(), weight.double(), u.double()
    w_sq = float((w * w).sum())
    if w_sq == 0.0:
        raise ValueError(f"SPADE checkpoint: {name}.weight is all zeros, cannot recover its spectral norm")
    sigma = float((w_orig * w).sum()) / w_sq
    wt_u = w_orig.flatten(1).t() @ u
    norm_sq = float(wt_u @ wt_u)
    if not sigma > 0 or norm_sq == 0.0:
        raise ValueError(f"SPADE checkpoint: {name}: weight_orig, weight_u and weight are inconsistent")
    return (wt_u * (sigma / norm_sq)).to(weight_orig.dtype)


def _rename(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    legacy = {k[: -len(".weight_orig")] for k in state if k.endswith(".weight_orig")}
    legacy = {c for c in legacy if f"{c}.weight_v" not in state and f"{c}.weight" in state}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"SPADE checkpoint: {key} is a {type(value).__name__}, not a tensor")
        module, _, leaf = key.rpartition(".")
        if module.rpartition(".")[2] in _SN_CONVS and leaf in _SN_SUFFIXES:
            out[f"{module}.{_SN_SUFFIXES[leaf]}"] = value
        elif module in legacy and leaf == "weight":
            if f"{module}.weight_u" not in state:
                continue  # reported as the missing weight_u (._u) below
            out[f"{module}.parametrizations.weight.0._v"] = _solve_v(
                state[f"{module}.weight_orig"], state[f"{module}.weight_u"], value, module
            )
        else:
            out[key] = value
    return out


def infer_generator_kwargs(
    state: Mapping[str, torch.Tensor],
    upsampling: str | None = None,
    size: tuple[int, int] | None = None,
) -> dict:
    """SPADEGenerator arguments from a SPADE state dict's shapes (see the module docstring)."""
    fc = state.get("fc.weight")
    if not isinstance(fc, torch.Tensor):
        raise ValueError("not a SPADE generator state dict: missing key fc.weight")
    if fc.ndim == 2:
        raise ValueError(
            f"SPADE checkpoint: fc.weight is {tuple(fc.shape)} (a Linear layer): a VAE-trained (--use_vae) "
            "generator, which needs a style encoder; only the label-map generator is supported"
        )
    if fc.ndim != 4 or fc.shape[0] % 16:
        raise ValueError(
            f"SPADE checkpoint: fc.weight has shape {tuple(fc.shape)}, expected (16 * ngf, label_nc, 3, 3)"
        )
    hidden = state.get("head_0.norm_0.mlp_shared.0.weight")
    if not isinstance(hidden, torch.Tensor) or hidden.ndim != 4:
        raise ValueError("not a SPADE generator state dict: missing key head_0.norm_0.mlp_shared.0.weight")
    has_up_4 = any(k.startswith("up_4.") for k in state)
    if upsampling is None:
        upsampling = "most" if has_up_4 else SPADE_CITYSCAPES_UPSAMPLING
    if upsampling not in UPSAMPLING:
        raise ValueError(f"upsampling must be one of {', '.join(UPSAMPLING)}, got {upsampling!r}")
    if has_up_4 != (upsampling == "most"):
        raise ValueError(
            f"SPADE checkpoint {'has' if has_up_4 else 'has no'} up_4 block: its upsampling is "
            f"{'most' if has_up_4 else 'normal or more'}, not {upsampling!r}"
        )
    return {
        "label_nc": int(fc.shape[1]),
        "ngf": int(fc.shape[0]) // 16,
        "upsampling": upsampling,
        "size": tuple(size) if size is not None else SPADE_CITYSCAPES_SIZE,
        "spade_hidden": int(hidden.shape[0]),
    }


def convert_spade_generator(
    state: Mapping[str, torch.Tensor],
    upsampling: str | None = None,
    size: tuple[int, int] | None = None,
) -> tuple[dict[str, torch.Tensor], dict]:
    """SPADE generator state dict -> (our SPADEGenerator state dict, its constructor kwargs).

    ``upsampling`` / ``size`` override the Cityscapes defaults ('more' or 'most' by the blocks present;
    256 x 512), e.g. ``'normal'`` and ``(256, 256)`` for SPADE's ADE20K / COCO models. The result loads with
    ``strict=True``; the input tensors are shared, not copied. ValueError naming the missing, unexpected or
    mis-shaped keys (in SPADE's names where they come from SPADE's file) when the layout does not match.
    """
    if not isinstance(state, Mapping):
        raise ValueError(f"not a SPADE generator state dict: got a {type(state).__name__}")
    kwargs = infer_generator_kwargs(state, upsampling, size)
    with torch.device("meta"):
        expected = SPADEGenerator(**kwargs).state_dict()
    return _match(state, expected, kwargs), kwargs


def _match(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], kwargs: dict) -> dict:
    """Renamed ``state`` with exactly the keys and shapes of ``expected``, or a ValueError naming the culprits."""
    converted = _rename(state)
    for key in expected:
        if key.endswith(".num_batches_tracked") and key not in converted:
            converted[key] = torch.tensor(0, dtype=torch.long)
    sn_convs = {k.split(".parametrizations.")[0] for k in expected if ".parametrizations." in k}
    to_spade = {f"{c}.{ours}": f"{c}.{theirs}" for c in sn_convs for theirs, ours in _SN_SUFFIXES.items()}
    missing = [to_spade.get(k, k) for k in expected if k not in converted]
    unexpected = [to_spade.get(k, k) for k in converted if k not in expected]
    if missing or unexpected:
        what = f"ngf {kwargs['ngf']}, label_nc {kwargs['label_nc']}, upsampling {kwargs['upsampling']!r}"
        parts = [f"missing {len(missing)} key(s): {_keys(missing)}"] if missing else []
        parts += [f"unexpected {len(unexpected)} key(s): {_keys(unexpected)}"] if unexpected else []
        raise ValueError(f"SPADE checkpoint does not match the SPADE generator layout ({what}): {'; '.join(parts)}")
    wrong = [
        f"{to_spade.get(k, k)} {tuple(converted[k].shape)} (expected {tuple(v.shape)})"
        for k, v in expected.items()
        if converted[k].shape != v.shape
    ]
    if wrong:
        raise ValueError(f"SPADE checkpoint: {len(wrong)} tensor(s) of the wrong shape: {_keys(wrong)}")
    return {k: converted[k] for k in expected}


def spade_generator_from_state(
    state: object, upsampling: str | None = None, size: tuple[int, int] | None = None
) -> tuple[SPADEGenerator, dict]:
    """(SPADEGenerator in eval mode on the CPU, its kwargs) from a SPADE state dict already in memory.

    ValueError naming what does not fit (see :func:`convert_spade_generator`); no Cityscapes check."""
    if not isinstance(state, Mapping):
        raise ValueError(f"not a SPADE generator state dict: got a {type(state).__name__}")
    kwargs = infer_generator_kwargs(state, upsampling, size)
    generator = SPADEGenerator(**kwargs)
    generator.load_state_dict(_match(state, generator.state_dict(), kwargs), strict=True)
    return generator.eval(), kwargs


def load_spade_generator(
    path: str | Path,
    device: str | torch.device = "cpu",
    upsampling: str | None = None,
    size: tuple[int, int] | None = None,
) -> tuple[SPADEGenerator, dict]:
    """(SPADEGenerator in eval mode on ``device``, its kwargs) from SPADE's ``latest_net_G.pth``.

    Read through ``gan_core.checkpoint.safe_torch_load`` (``weights_only``): a file that would need arbitrary
    pickled objects is refused and nothing in it runs. FileNotFoundError for a missing file; ValueError (naming
    the file) for an unreadable or unsafe one or a wrong layout. Any ``label_nc`` loads here (with ``size`` /
    ``upsampling`` for non-Cityscapes models); :func:`check_cityscapes` is the caller's.
    """
    from gan_core.checkpoint import safe_torch_load

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SPADE checkpoint not found: {path}")
    state = safe_torch_load(path)  # ValueError "<path> is not a safe checkpoint / cannot be read ..."
    try:
        generator, kwargs = spade_generator_from_state(state, upsampling, size)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    return generator.to(device), kwargs
