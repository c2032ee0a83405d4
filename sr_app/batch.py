"""sr-infer's batch logic: inputs -> outputs, one file at a time, never stopping the batch or losing data.

Every input is processed independently: an unreadable, truncated, empty, non-image, animated or too-large
file, or one whose output would be too large, gives one error line naming it and the reason (before any
upscaling), and the batch goes on; the exit status is non-zero when any file failed. Outputs are written
atomically and never replace an existing file without ``--overwrite``: not one that existed at the start
(an error, or skipped with ``--skip-existing``), and not one that appeared while this run was working,
e.g. written by another run into the same folder (the final step refuses to replace it). An output path
equal to an input path is refused, and two inputs that would write the same output are refused.
A stop request (Ctrl-C) ends the batch after the current file; the summary says what was not processed.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import math
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from gan_core.atomic import remove_stale_temporaries, write_text
from gan_core.extras import MissingExtraError
from gan_core.image_io import (
    ALPHA_FORMATS,
    INPUT_EXTENSIONS,
    ImageError,
    LoadedImage,
    format_for,
    list_images,
    read_image,
    write_image,
)

__all__ = [
    "BatchOptions",
    "Inputs",
    "Job",
    "Outcome",
    "Summary",
    "collect_inputs",
    "find_reference",
    "finish",
    "load_metrics",
    "measure_quality",
    "metric_functions",
    "prepare",
    "print_table",
    "remove_leftover_temporaries",
    "write_report",
]

_FORMAT_EXT = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "BMP": "bmp", "TIFF": "tif"}  # output name per format
_SEARCHED = ", ".join(e[1:] for e in INPUT_EXTENSIONS)
_NAMES_SHOWN = 3  # names listed in a note about skipped files


@dataclass
class BatchOptions:
    outdir: Path
    suffix: str = "out"
    ext: str = "auto"  # auto | png | jpg | webp
    quality: int = 95  # JPEG / WebP quality, 1..100
    skip_existing: bool = False
    overwrite: bool = False
    outscale: float | None = None  # None: the network's scale; else a finite number > 0 (checked by the Upscaler)
    max_pixels: int = 100_000_000  # inputs above are refused, outputs above max_pixels * scale**2 too
    ref_dir: Path | None = None
    niqe: bool = True
    niqe_max_pixels: int = 4_000_000  # NIQE works in float64 (~400 bytes per pixel): skipped above this


@dataclass
class Summary:
    done: int = 0  # outputs written
    skipped: int = 0  # outputs left alone (--skip-existing)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (input, message)
    rows: list[dict] = field(default_factory=list)  # one per output written: paths, sizes, finite metrics
    interrupted: bool = False
    not_processed: list[str] = field(default_factory=list)  # inputs not started (or abandoned) when interrupted

    @property
    def exit_code(self) -> int:
        return 130 if self.interrupted else 1 if self.failed else 0


class Inputs(NamedTuple):
    files: list[tuple[Path, Path]]  # (input file, output sub-folder)
    missing: list[tuple[str, str]]  # (argument, reason) for arguments that gave no image
    notes: list[str]  # what a folder held that is not searched, and why


def collect_inputs(inputs: list[str], recursive: bool) -> Inputs:
    """Input files from files, folders (``recursive`` mirrors the tree) and globs, in order and without
    duplicates; folders are searched for ``INPUT_EXTENSIONS`` (any case) and what else they hold is noted."""
    found: list[tuple[Path, Path]] = []
    missing: list[tuple[str, str]] = []
    notes: list[str] = []
    seen: set[Path] = set()

    def add(p: Path, rel: Path) -> None:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            found.append((p, rel))

    for arg in inputs:
        p = Path(arg)
        if p.is_dir():
            files = list_images(p, recursive=recursive, extensions=INPUT_EXTENSIONS)
            if not files:
                missing.append((arg, f"folder contains no image ({_SEARCHED})"))
            for f in files:
                add(f, f.parent.relative_to(p) if recursive else Path("."))
            notes += _not_searched(arg, p, recursive)
        elif p.is_file():
            add(p, Path("."))
        elif any(ch in arg for ch in "*?["):
            matches = [Path(m) for m in sorted(glob.glob(arg, recursive=True))]
            files = [m for m in matches if m.is_file() and m.suffix.lower() in INPUT_EXTENSIONS]
            if not files:
                missing.append((arg, "pattern matches no image"))
            for f in files:
                add(f, Path("."))
        else:
            missing.append((arg, "no such file or folder"))
    return Inputs(found, missing, notes)


def _not_searched(arg: str, folder: Path, recursive: bool) -> list[str]:
    """Note lines for a folder's files of other types and (without ``recursive``) its subfolders."""
    entries = sorted(folder.rglob("*") if recursive else folder.glob("*"))
    others = [e for e in entries if e.is_file() and e.suffix.lower() not in INPUT_EXTENSIONS]
    subfolders = [e for e in entries if e.is_dir()] if not recursive else []
    notes = []
    if others:
        names = ", ".join(str(e.relative_to(folder)) for e in others[:_NAMES_SHOWN])
        more = f" and {len(others) - _NAMES_SHOWN} more" if len(others) > _NAMES_SHOWN else ""
        notes.append(f"note: {arg}: {len(others)} file(s) skipped, not of a type sr-infer reads ({_SEARCHED}): "
                     f"{names}{more}")  # fmt: skip
    if subfolders:
        notes.append(f"note: {arg}: {len(subfolders)} subfolder(s) not searched (use --recursive)")
    return notes


def remove_leftover_temporaries(folders: Iterable[Path], started: float, log=print) -> list[Path]:
    """Remove the temporaries of ``gan_core.atomic`` older than ``started`` (a ``time.time()``) that no
    process is writing, in each of ``folders`` (not below): what a run killed while writing left behind.
    One note line when any were removed; returns them."""
    removed: list[Path] = []
    for folder in sorted(set(folders)):
        removed += remove_stale_temporaries(folder, started)
    if removed:
        names = ", ".join(str(p) for p in removed[:_NAMES_SHOWN])
        more = f" and {len(removed) - _NAMES_SHOWN} more" if len(removed) > _NAMES_SHOWN else ""
        log(f"note: removed {len(removed)} stale temporary file(s) left by an interrupted run: {names}{more}")
    return removed


def _output_path(src: Path, rel: Path, img: LoadedImage, opts: BatchOptions) -> tuple[Path, str]:
    """Output path and a note (e.g. why the format changed)."""
    note = ""
    ext = opts.ext
    if ext == "auto":  # the input's format when we can write it (GIF: no), else PNG
        try:
            ext = _FORMAT_EXT[format_for(src)]
        except ImageError:
            ext = "png"
    if img.bit_depth == 16 and ext != "png":
        note, ext = "16-bit image written as 16-bit PNG", "png"
    fmt = format_for(f"out.{ext}")
    if img.has_alpha and fmt not in ALPHA_FORMATS:
        note, ext = f"has transparency: written as PNG instead of {ext.upper()} (alpha kept)", "png"
    name = f"{src.stem}_{opts.suffix}.{ext}" if opts.suffix else f"{src.stem}.{ext}"
    return opts.outdir / rel / name, note


def _reference_for(src: Path, ref_dir: Path, scale: int) -> Path | None:
    stems = [src.stem]
    if src.stem.lower().endswith(f"x{scale}"):
        stems.append(src.stem[: -len(f"x{scale}")])  # EDSR-style LR names: babyx4 -> baby
    return find_reference(stems, ref_dir)


def find_reference(stems: list[str], ref_dir: Path) -> Path | None:
    """The first ``ref_dir/<stem><ext>`` that exists, for each stem in order and each of ``INPUT_EXTENSIONS``
    (lower or upper case)."""
    for stem in stems:
        for ext in INPUT_EXTENSIONS:
            for cand in (ref_dir / f"{stem}{ext}", ref_dir / f"{stem}{ext.upper()}"):
                if cand.is_file():
                    return cand
    return None


def measure_quality(out_pixels: np.ndarray, ref: LoadedImage | None, crop: int, niqe_fn, lpips_fn) -> dict:
    """PSNR-Y / SSIM-Y / LPIPS against ``ref`` and NIQE, as floats; NaN / Inf included (the caller drops them)."""
    from gan_core.metrics import psnr, ssim

    def rgb(p: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(p[..., :3] if p.shape[2] >= 3 else p[..., :1])).permute(2, 0, 1)

    res: dict = {}
    x = rgb(out_pixels)
    if ref is not None:
        r = rgb(ref.pixels)
        if r.shape[0] != x.shape[0]:  # gray vs colour: compare in colour
            x, r = x.expand(3, -1, -1), r.expand(3, -1, -1)
        res["psnr_y"] = float(psnr(x, r, crop))
        res["ssim_y"] = float(ssim(x, r, crop))
        if lpips_fn is not None:
            res["lpips"] = float(lpips_fn(x, r)[0])
    if niqe_fn is not None:
        res["niqe"] = float(niqe_fn(x, crop_border=crop)[0])
    return res


def metric_functions(opts: BatchOptions, log) -> tuple:
    """(NIQE, LPIPS) metric callables for this run (None where off or unavailable)."""
    return load_metrics(opts.niqe, opts.ref_dir is not None, log)


def load_metrics(niqe: bool, references: bool, log) -> tuple:
    """(NIQE, LPIPS) metric callables: NIQE when ``niqe``, LPIPS when there are ``references`` and its AlexNet
    trunk is present; None where off or unavailable (one line logged saying why)."""
    niqe_fn = lpips_fn = None
    if niqe:
        try:
            from gan_core.metrics.niqe import NIQE

            niqe_fn = NIQE()
        except MissingExtraError as e:
            log(f"note: {e.skipped}")
        except Exception as e:
            log(f"warning: NIQE unavailable ({e}); continuing without it")
    if references:
        from gan_core.metrics.lpips import LPIPS, lpips_unavailable_reason

        why = lpips_unavailable_reason()
        if why is None:
            lpips_fn = LPIPS()
        else:
            log(f"note: LPIPS skipped: {why}")
    return niqe_fn, lpips_fn


@dataclass
class Job:
    """One input on its way through the pipeline (``prepare`` -> upscale -> ``finish``)."""

    index: int  # position in the input list
    src: Path
    image: LoadedImage | None  # decoded; dropped as soon as the output pixels exist
    out_path: Path
    note: str  # e.g. why the output format changed
    tile: int  # the Upscaler's tile for this image (0: whole image, can share a forward with others)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.image.pixels.shape

    @property
    def out_dtype(self):
        return np.uint16 if self.image.bit_depth == 16 else np.uint8


@dataclass
class Outcome:
    """What happened to one input: ``written`` (with its report row), ``skipped`` or ``failed``; ``errors``
    also holds failures of a written output's measurements (e.g. a reference of another size)."""

    kind: str
    row: dict | None = None
    errors: list[tuple[str, str]] = field(default_factory=list)


def prepare(index: int, src: Path, rel: Path, upscaler, opts: BatchOptions, inputs: set[Path], log) -> Job | None:
    """Read and check one input (any thread): the Job, or None when skipped (``--skip-existing``).
    Every refusal is an ImageError naming the file; all of them come before any upscaling."""
    img = read_image(src, opts.max_pixels)
    H, W = img.pixels.shape[:2]
    out_h, out_w = upscaler.output_size(H, W, opts.outscale)
    limit = opts.max_pixels * upscaler.scale**2
    if out_h * out_w > limit:
        raise ImageError(
            f"{src}: the output would be {out_w}x{out_h} = {_pixels(out_h * out_w)}, above the limit of "
            f"{_pixels(limit)} (--max-pixels x {upscaler.scale}^2); lower -s or raise --max-pixels"
        )
    out_path, note = _output_path(src, rel, img, opts)
    if out_path.resolve() in inputs:
        raise ImageError(f"{src}: output {out_path} would replace an input; choose another -o or --suffix")
    if out_path.exists():
        if opts.skip_existing:
            log(f"skip: {out_path} exists")
            return None
        if not opts.overwrite:
            raise ImageError(f"{src}: {out_path} exists (use --overwrite to replace it or --skip-existing)")
    return Job(index, src, img, out_path, note, upscaler.auto_tile(H, W))


def finish(job: Job, pixels: np.ndarray, scale: int, opts: BatchOptions, metrics, log) -> Outcome:
    """Write one output (any thread) and measure it: the Outcome. Never replaces a file that appeared
    since ``prepare`` (another run?): an error, or skipped with ``--skip-existing``."""
    src, out_path = job.src, job.out_path
    H, W = job.shape[:2]
    bit_depth, icc, exif = job.image.bit_depth, job.image.icc_profile, job.image.exif
    job.image = None  # free the decoded input before the encoder needs its own copy of the output
    try:
        write_image(out_path, pixels, bit_depth, icc, exif, quality=opts.quality, overwrite=opts.overwrite)
    except FileExistsError:  # created by someone else (another run?) after the check in prepare
        if opts.skip_existing:
            log(f"skip: {out_path} appeared while this run was working (another run?); kept")
            return Outcome("skipped")
        msg = f"{src}: {out_path} appeared while this run was working (another run?); nothing replaced"
        return Outcome("failed", errors=[(str(src), msg)])
    if job.note:
        log(f"note: {src}: {job.note}")
    row = {"input": str(src), "output": str(out_path), "size_in": f"{W}x{H}",
           "size_out": f"{pixels.shape[1]}x{pixels.shape[0]}"}  # fmt: skip
    outcome = Outcome("written", row)
    _measure(src, pixels, row, scale, opts, *metrics, outcome.errors, log)
    return outcome


def _pixels(n: float) -> str:
    return f"{n / 1e6:,.1f} MP" if n >= 100_000 else f"{int(n):,} pixels"


def _measure(src: Path, pixels: np.ndarray, row: dict, scale: int, opts: BatchOptions, niqe_fn, lpips_fn,
             errors: list, log) -> None:  # fmt: skip
    """Add the finite metrics of one output to ``row`` (NaN / Inf are left out with a note)."""
    ref = None
    if opts.ref_dir is not None:
        ref_path = _reference_for(src, opts.ref_dir, scale)
        if ref_path is None:
            log(f"note: {src}: no reference with stem '{src.stem}' in {opts.ref_dir}; no PSNR/SSIM")
        else:
            cand = read_image(ref_path)
            if cand.pixels.shape[:2] != pixels.shape[:2]:
                msg = (
                    f"{src}: reference {ref_path} is {cand.size[0]}x{cand.size[1]} but the output is "
                    f"{pixels.shape[1]}x{pixels.shape[0]}; no PSNR/SSIM/LPIPS"
                )
                errors.append((str(src), msg))
                log(f"error: {msg}")
            else:
                ref = cand
                row["reference"] = str(ref_path)
    top = 65535.0 if pixels.dtype == np.uint16 else 255.0
    use_niqe = niqe_fn
    n_out = pixels.shape[0] * pixels.shape[1]
    if niqe_fn is not None and n_out > opts.niqe_max_pixels:
        use_niqe = None
        log(
            f"note: {src}: NIQE skipped: the output has {n_out / 1e6:.1f} MP, above --niqe-max-mp "
            f"{opts.niqe_max_pixels / 1e6:g} (NIQE needs ~400 bytes per pixel)"
        )
    if use_niqe is None and ref is None:
        return
    crop = round(opts.outscale or scale)
    values = measure_quality(pixels.astype(np.float32) / top, ref, crop, use_niqe, lpips_fn)
    undefined = [k for k, v in values.items() if not math.isfinite(v)]
    if undefined:
        why = "; NIQE needs larger images" if "niqe" in undefined else ""
        log(f"note: {src}: {', '.join(_HEAD[k] for k in undefined)} not a finite number for this output "
            f"({pixels.shape[1]}x{pixels.shape[0]}{why}): not recorded, shown as -")  # fmt: skip
    row.update({k: v for k, v in values.items() if k not in undefined})


def _count_tiles(H: int, W: int, tile: int) -> int:
    from gan_core.tiling import tile_spans

    from .infer import DEFAULT_OVERLAP

    if tile <= 0:
        return 1
    return len(tile_spans(H, tile, DEFAULT_OVERLAP)) * len(tile_spans(W, tile, DEFAULT_OVERLAP))


METRIC_COLUMNS = ("psnr_y", "ssim_y", "lpips", "niqe")
_HEAD = {"psnr_y": "PSNR-Y", "ssim_y": "SSIM-Y", "lpips": "LPIPS", "niqe": "NIQE"}


def print_table(rows: list[dict], out=None) -> dict:
    """Per-image metrics and their means (to stdout); returns the means. A metric an image lacks is shown
    as "-"; each mean averages the values that exist."""
    out = out or sys.stdout
    cols = [c for c in METRIC_COLUMNS if any(c in r for r in rows)]
    if not cols:
        return {}
    width = max([len(Path(r["input"]).name) for r in rows] + [5])
    print(f"{'image':<{width}}" + "".join(f"{_HEAD[c]:>10}" for c in cols), file=out)
    for r in rows:
        cells = "".join(f"{r[c]:>10.4f}" if c in r else f"{'-':>10}" for c in cols)
        print(f"{Path(r['input']).name:<{width}}{cells}", file=out)
    means = {c: float(np.mean([r[c] for r in rows if c in r])) for c in cols}
    print(f"{'mean':<{width}}" + "".join(f"{means[c]:>10.4f}" for c in cols), file=out)
    return means


REPORT_COLUMNS = ("input", "output", "reference", "size_in", "size_out")  # sr-infer's CSV, before the metrics


def write_report(
    path: Path, summary: Summary, means: dict, meta: dict, overwrite: bool = False, columns=REPORT_COLUMNS
) -> None:
    """Per-image rows, means and failures as JSON (with ``meta``) or CSV (by ``path``'s suffix; ``columns``
    then the metrics), written atomically; an existing ``path`` is replaced only with ``overwrite`` (else
    FileExistsError). An interrupted run's report says so (JSON: ``interrupted`` and ``not_processed``; CSV:
    a last row)."""
    if path.suffix.lower() == ".csv":
        keys = [*columns, *METRIC_COLUMNS]
        buf = io.StringIO(newline="")
        w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        for r in summary.rows:
            w.writerow(r)
        w.writerow({"input": "mean", **means})
        if summary.interrupted:
            w.writerow({"input": "interrupted", keys[1]: f"{len(summary.not_processed)} input(s) not processed"})
        write_text(path, buf.getvalue(), overwrite=overwrite)
        return
    report = {
        **meta,
        "images": summary.rows,
        "mean": means,
        "failed": [{"input": i, "error": e} for i, e in summary.failed],
        "skipped": summary.skipped,
        "interrupted": summary.interrupted,
    }
    if summary.interrupted:
        report["not_processed"] = summary.not_processed
    write_text(path, json.dumps(report, indent=2) + "\n", overwrite=overwrite)
