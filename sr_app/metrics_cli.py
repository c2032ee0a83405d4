"""``sr-metrics``: PSNR-Y, SSIM-Y, LPIPS and NIQE of any images against any references, folder to folder.

    sr-metrics -i results -r HR                  # sr-infer's outputs (photo_out.png) against photo.png
    sr-metrics -t eval/images/Set5 -r Set5/HR    # pyiqa's spelling; sr-eval's photo_x4.png against photo.png

Pairs by stem, as ``sr-infer --ref`` does, trying in order: the target's stem; without the ``--suffix``
sr-infer added (``_out``); without a scale mark (``_x4`` of ``sr-eval --save-images``, ``x4`` of EDSR-style
names); both. The protocol is the SR benchmark's (``gan_core.metrics``: 8-bit values, BT.601 studio-range
Y, SSIM 11x11 Gaussian), with ``--crop-border`` pixels shaved from every side (default 0; the scale for
the published SR numbers). LPIPS needs its AlexNet trunk (``san-weights fetch alexnet``) and is left out
with a note without it; NIQE (no reference needed) is computed for every target up to ``--niqe-max-mp``.
Without ``-r`` only NIQE is measured.

A target that cannot be measured (unreadable, no reference of its stem, a reference of another size, too
small for the crop) gives one error line and the others are measured; the exit status is then 1. Usage
errors exit 2 before any work. The table goes to stdout, notes and errors to stderr; ``--report`` writes
the rows, means and failures as JSON or CSV (never replacing a file unless ``--overwrite``).
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path

import numpy as np

from gan_core.version import add_version_argument

from .cli_args import check_report_argument, number

__all__ = ["main", "reference_stems"]

_SCALE_MARK = re.compile(r"_?[xX]\d+$")  # _x4 (sr-eval --save-images), x4 (EDSR LR names)
PROTOCOL = {
    "psnr_ssim": "8-bit values, BT.601 studio-range Y (gray images compared as RGB), SSIM 11x11 Gaussian "
    "sigma 1.5, crop_border pixels removed from every side",
    "niqe": "pyiqa NIQE, LIVE parameters, same Y, same crop",
    "lpips": "lpips 0.1, AlexNet trunk, RGB in [0, 1] (when the trunk is present)",
    "pairs": "by stem: the stem, without _<suffix>, without a scale mark (_x4, x4), both",
}


def reference_stems(stem: str, suffix: str = "out") -> list[str]:
    """Stems a target named ``stem`` may have in the reference folder, most specific first (no duplicates):
    ``baby_out`` -> [baby_out, baby]; ``baby_x4`` -> [baby_x4, baby]; ``babyx4_out`` -> [babyx4_out, babyx4,
    baby]."""
    out = [stem]
    if suffix and stem.endswith(f"_{suffix}"):
        out.append(stem[: -len(suffix) - 1])
    for s in list(out):
        if _SCALE_MARK.search(s):
            out.append(_SCALE_MARK.sub("", s))
    return [s for i, s in enumerate(out) if s and s not in out[:i]]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sr-metrics",
        description="PSNR-Y, SSIM-Y, LPIPS and NIQE of images (files, folders, globs) against the references of "
        "the same stem in a folder: sr-infer's and sr-eval's outputs, or anyone's.",
        epilog="Pairs: a target's stem, then without _<suffix> (sr-infer's _out), then without a scale mark (_x4, "
        "x4). Exit 1 if any target could not be measured, 2 on a usage error.",
    )
    add_version_argument(p)
    p.add_argument("-i", "--input", "-t", "--target", dest="input", nargs="+", required=True, metavar="TARGET",
                   help="images to measure: files, folders, globs (pyiqa's -t/--target works too)")  # fmt: skip
    p.add_argument("-r", "--ref", "--reference", dest="ref", type=Path, metavar="DIR",
                   help="folder of reference images (full-reference metrics); without it only NIQE")  # fmt: skip
    p.add_argument("--crop-border", "--crop_border", dest="crop_border", type=number(0, True, integer=True),
                   default=0, metavar="N", help="pixels removed from every side before measuring (default 0; "
                   "the scale for published SR numbers)")  # fmt: skip
    p.add_argument("--suffix", default="out", help="suffix to drop from target stems when pairing (default: out)")
    p.add_argument("--recursive", action="store_true", help="recurse into target folders")
    p.add_argument("--no-niqe", action="store_true", help="do not compute NIQE")
    p.add_argument("--niqe-max-mp", type=number(0, True), default=4.0,
                   help="skip NIQE for images above this many megapixels (default 4; ~400 bytes/pixel)")  # fmt: skip
    p.add_argument("--report", type=Path, metavar="FILE", help="write per-image results to FILE.json or FILE.csv")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --report")
    return p


def main(argv: list[str] | None = None) -> int:
    p = _parser()
    args = p.parse_args(argv)
    if args.ref is not None and not args.ref.is_dir():
        p.error(f"reference folder not found: {args.ref}")
    if args.ref is None and args.no_niqe:
        p.error("nothing to measure: give -r/--ref DIR (PSNR, SSIM, LPIPS) or leave NIQE on")
    check_report_argument(p, args.report, args.overwrite)
    try:
        return _run(args)
    except KeyboardInterrupt:
        print("sr-metrics: interrupted; no report written", file=sys.stderr)
        return 130


def _log(msg: str) -> None:
    print(msg, file=sys.stderr)


def _run(args: argparse.Namespace) -> int:
    from .batch import Summary, collect_inputs, load_metrics, print_table, write_report

    files, missing, notes = collect_inputs(args.input, args.recursive)
    for arg, reason in missing:
        _log(f"error: {arg}: {reason}")
    for note in notes:
        _log(note)
    niqe_fn, lpips_fn = load_metrics(not args.no_niqe, args.ref is not None, _log)
    metrics = [name for name, on in (("PSNR-Y", args.ref), ("SSIM-Y", args.ref), ("LPIPS", lpips_fn),
                                     ("NIQE", niqe_fn)) if on is not None]  # fmt: skip
    _log(f"sr-metrics: {len(files)} target(s), references {args.ref or '(none)'}, crop border {args.crop_border}, "
         f"metrics {' '.join(metrics) or '(none)'}")  # fmt: skip
    summary = Summary()
    summary.failed += missing
    for src, _ in files:
        try:
            row = _measure(src, args, niqe_fn, lpips_fn)
        except (ValueError, RuntimeError, OSError) as e:
            msg = str(e) if str(e).startswith(str(src)) else f"{src}: {e}"
            _log(f"error: {msg}")
            summary.failed.append((str(src), msg))
            continue
        summary.done += 1
        summary.rows.append(row)
    means = print_table(summary.rows) if summary.rows else {}
    code = 1 if summary.failed else 0
    if args.report is not None:
        meta = {"references": str(args.ref) if args.ref else None, "crop_border": args.crop_border,
                "protocol": PROTOCOL}  # fmt: skip
        try:
            write_report(args.report, summary, means, meta, overwrite=args.overwrite,
                         columns=("input", "reference", "size"))  # fmt: skip
        except (OSError, ValueError) as e:
            _log(f"error: report {args.report} not written: {e}")
            code = 1
    _log(f"sr-metrics: {summary.done} measured, {len(summary.failed)} failed")
    return code


def _measure(src: Path, args: argparse.Namespace, niqe_fn, lpips_fn) -> dict:
    """One target's row: input, reference, size and the finite metrics. ValueError (one line) when it cannot
    be measured."""
    from gan_core.image_io import read_image

    from .batch import find_reference, measure_quality

    img = read_image(src)
    H, W = img.pixels.shape[:2]
    crop = args.crop_border
    if 2 * crop >= min(H, W):
        raise ValueError(f"{src}: {W}x{H} is too small for --crop-border {crop}")
    row: dict = {"input": str(src), "size": f"{W}x{H}"}
    ref = None
    if args.ref is not None:
        stems = reference_stems(src.stem, args.suffix)
        ref_path = find_reference(stems, args.ref)
        if ref_path is None:
            raise ValueError(f"{src}: no reference in {args.ref} with the stem {' or '.join(map(repr, stems))}")
        ref = read_image(ref_path)
        if ref.pixels.shape[:2] != (H, W):
            raise ValueError(f"{src}: {W}x{H} but its reference {ref_path} is {ref.size[0]}x{ref.size[1]}")
        row["reference"] = str(ref_path)
    use_niqe = niqe_fn
    if niqe_fn is not None and H * W > args.niqe_max_mp * 1e6:
        use_niqe = None
        _log(f"note: {src}: NIQE skipped: {H * W / 1e6:.1f} MP, above --niqe-max-mp {args.niqe_max_mp:g}")
    values = measure_quality(np.ascontiguousarray(img.pixels, dtype=np.float32), ref, crop, use_niqe, lpips_fn)
    undefined = [k for k, v in values.items() if not math.isfinite(v)]
    if undefined:
        _log(f"note: {src}: {', '.join(undefined)} not a finite number for this image ({W}x{H}): shown as -")
    row.update({k: v for k, v in values.items() if k not in undefined})
    return row


if __name__ == "__main__":
    raise SystemExit(main())
