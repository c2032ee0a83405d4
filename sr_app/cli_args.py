"""Argument types and options the SR command lines share (``sr-infer``, ``sr-eval``, ``sr-metrics``).

Every bad value is an argparse usage error (exit 2, one line naming the option) before any work. The
option spellings of Real-ESRGAN's ``inference_realesrgan.py`` are accepted beside ours where they mean the
same (``--model_path``, ``--model_name``, ``--tile_pad``; ``-s/--outscale``, ``--suffix``, ``--fp32``,
``-g/--gpu-id`` and ``--ext`` are spelled alike already); its options without an equivalent here
(``--face_enhance``, ``-dn/--denoise_strength``, ``--pre_pad``, ``--alpha_upsampler realesrgan``) are usage
errors that say why in one line (:func:`add_real_esrgan_answers`).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

__all__ = [
    "MODEL_LOAD_ERRORS",
    "add_model_arguments",
    "add_real_esrgan_answers",
    "add_weights_dir_argument",
    "apply_weights_dir",
    "check_report_argument",
    "number",
    "quality",
    "tile_size",
]

MODEL_LOAD_ERRORS = (OSError, ValueError, RuntimeError, KeyError)  # load_generator's are one line each


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """``-n/--model NAME`` and ``--weights PATH`` (with Real-ESRGAN's ``--model_name`` / ``--model_path``)."""
    p.add_argument("-n", "--model", "--model_name", dest="model", metavar="NAME",
                   help="model name: an entry of weights/manifest.json (--list-models), or NAME.safetensors / "
                   "NAME.pth in the weights folders (--weights-dir, $SAN_WEIGHTS_DIR, weights/); default: the "
                   "default model")  # fmt: skip
    p.add_argument("--weights", "--model_path", dest="weights", type=Path, metavar="PATH",
                   help="model file: a san-gan .safetensors (+ .json) or sr-train .pt, or a community SR model "
                   "(.pth / .safetensors of any architecture spandrel recognises: ESRGAN, Real-ESRGAN Compact, "
                   "SwinIR, HAT, ...)")  # fmt: skip
    add_weights_dir_argument(p)


_REAL_ESRGAN_ONLY = {  # option strings -> (nargs, why sr-infer has no such option)
    ("--face_enhance",): (
        0,
        "Real-ESRGAN's GFPGAN face restoration is not part of sr-infer; run a face model on the outputs",
    ),
    ("-dn", "--denoise_strength"): (
        1,
        "realesr-general-x4v3's blend of two weight files is not supported; pass one model file (--weights)",
    ),
    ("--pre_pad",): (
        1,
        "not needed: sr-infer pads every image and tile with reflected context itself (--tile-pad for tiles)",
    ),
}


class _Unsupported(argparse.Action):
    """A Real-ESRGAN option sr-infer does not have: a one-line usage error that says why."""

    def __call__(self, parser, namespace, values, option_string=None):
        if self.dest == "alpha_upsampler":
            if values == "bicubic":
                return  # what sr-infer does anyway
            parser.error(f"{option_string} {values}: alpha is always upscaled by bicubic interpolation here (colour "
                         "under transparent pixels is bled first); only 'bicubic' is accepted")  # fmt: skip
        parser.error(f"{option_string}: {self.help_text}")

    def __init__(self, *args, help_text: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        self.help_text = help_text


def add_real_esrgan_answers(p: argparse.ArgumentParser) -> None:
    """Real-ESRGAN's options with no equivalent here: hidden, each a one-line usage error that says why
    (``--alpha_upsampler bicubic`` is accepted: it is what sr-infer does)."""
    for flags, (nargs, why) in _REAL_ESRGAN_ONLY.items():
        p.add_argument(*flags, nargs=nargs, action=_Unsupported, help_text=why, help=argparse.SUPPRESS)
    p.add_argument("--alpha_upsampler", action=_Unsupported, help=argparse.SUPPRESS)


def add_weights_dir_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights-dir", type=Path, metavar="DIR",
                   help="search DIR (its manifest.json and files) before the repository's weights/, for model "
                   "names and the default model (same as $SAN_WEIGHTS_DIR); ./weights is never searched unless "
                   "named")  # fmt: skip


def apply_weights_dir(p: argparse.ArgumentParser, folder: Path | None) -> None:
    """``--weights-dir``: every weight lookup of this process (and its children) searches ``folder`` first."""
    if folder is not None:
        from gan_core.weights import use_weights_dir

        try:
            use_weights_dir(folder)
        except ValueError as e:
            p.error(str(e))


def check_report_argument(p: argparse.ArgumentParser, report: Path | None, overwrite: bool) -> None:
    """``--report FILE``: a .json or .csv path that can be written (and does not exist unless ``overwrite``)."""
    if report is None:
        return
    if report.suffix.lower() not in (".json", ".csv"):
        p.error("--report must end in .json or .csv")
    from gan_core.atomic import check_output_path

    try:
        check_output_path(report, overwrite=overwrite)
    except ValueError as e:
        p.error(f"--report: {e}")


def tile_size(value: str) -> int | str:
    """argparse type of ``-t/--tile``: ``auto``, 0 (no tiling) or an integer >= 32."""
    if value == "auto":
        return value
    try:
        tile = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be auto, 0 (no tiling) or an integer >= 32, got {value!r}") from None
    if tile < 0 or 0 < tile < 32:
        raise argparse.ArgumentTypeError(f"must be auto, 0 (no tiling) or an integer >= 32, got {tile}")
    return tile


def number(low: float, low_allowed: bool, integer: bool = False, high: float = math.inf):
    """argparse type: a finite number (an integer with ``integer``) above ``low``, or equal to it when
    ``low_allowed``, and at most ``high``; anything else is a usage error naming the option."""

    def parse(text: str) -> float | int:
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            kind = "an integer" if integer else "a number"
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
        kind = "an integer" if integer else "a finite number"
        if not math.isfinite(value) or value < low or (value == low and not low_allowed):
            raise argparse.ArgumentTypeError(f"must be {kind} {'>=' if low_allowed else '>'} {low:g}, got {text!r}")
        if value > high:
            raise argparse.ArgumentTypeError(f"must be {kind} <= {high:g}, got {text!r}")
        return value

    return parse


quality = number(1, True, integer=True, high=100)  # --quality: JPEG / WebP quality 1..100
