"""sr-infer's batch logic: inputs -> outputs, one file at a time, never stopping the batch or losing data.

Every input is processed independently: an unreadable, truncated, empty, non-image or too-large file
gives one error line naming it and the reason, and the batch goes on; the exit status is non-zero when
any file failed. Outputs are written atomically, an output path equal to an input path is refused, two
inputs that would write the same output are refused, and an existing output is kept unless
``--overwrite`` (or skipped with ``--skip-existing``).
"""

from __future__ import annotations

import csv
import glob
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from gan_core.image_io import (
    ALPHA_FORMATS,
    IMAGE_EXTENSIONS,
    ImageError,
    LoadedImage,
    format_for,
    list_images,
    read_image,
    write_image,
)

__all__ = ["BatchOptions", "collect_inputs", "run_batch"]

_FORMAT_EXT = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "BMP": "bmp", "TIFF": "tif"}  # output name per format


@dataclass
class BatchOptions:
    outdir: Path
    suffix: str = "out"
    ext: str = "auto"  # auto | png | jpg | webp
    skip_existing: bool = False
    overwrite: bool = False
    outscale: float | None = None
    max_pixels: int = 100_000_000
    ref_dir: Path | None = None
    niqe: bool = True
    niqe_max_pixels: int = 4_000_000  # NIQE works in float64 (~400 bytes per pixel): skipped above this


@dataclass
class Summary:
    done: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


def collect_inputs(inputs: list[str], recursive: bool) -> tuple[list[tuple[Path, Path]], list[tuple[str, str]]]:
    """(input file, output sub-folder) pairs from files, folders (``recursive`` mirrors the tree) and
    globs; plus (input, reason) for arguments that match nothing."""
    found: list[tuple[Path, Path]] = []
    missing: list[tuple[str, str]] = []
    seen: set[Path] = set()

    def add(p: Path, rel: Path) -> None:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            found.append((p, rel))

    for arg in inputs:
        p = Path(arg)
        if p.is_dir():
            files = list_images(p, recursive=recursive)
            if not files:
                missing.append((arg, "folder contains no image (png, jpg, jpeg, bmp, webp)"))
            for f in files:
                add(f, f.parent.relative_to(p) if recursive else Path("."))
        elif p.is_file():
            add(p, Path("."))
        elif any(ch in arg for ch in "*?["):
            matches = [Path(m) for m in sorted(glob.glob(arg, recursive=True))]
            files = [m for m in matches if m.is_file() and m.suffix.lower() in IMAGE_EXTENSIONS]
            if not files:
                missing.append((arg, "pattern matches no image"))
            for f in files:
                add(f, Path("."))
        else:
            missing.append((arg, "no such file or folder"))
    return found, missing


def _output_path(src: Path, rel: Path, img: LoadedImage, opts: BatchOptions) -> tuple[Path, str]:
    """Output path and a note (e.g. why the format changed)."""
    note = ""
    ext = opts.ext
    if ext == "auto":  # the input's format when we can write it, else PNG
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
    for stem in stems:
        for ext in IMAGE_EXTENSIONS:
            for cand in (ref_dir / f"{stem}{ext}", ref_dir / f"{stem}{ext.upper()}"):
                if cand.is_file():
                    return cand
    return None


def _quality(out_pixels: np.ndarray, ref: LoadedImage | None, crop: int, niqe_fn, lpips_fn) -> dict:
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


def run_batch(files: list[tuple[Path, Path]], upscaler, opts: BatchOptions, log=print) -> Summary:
    """Upscale every file; returns the summary (per-file rows, failures)."""
    summary = Summary()
    niqe_fn = lpips_fn = None
    if opts.niqe:
        try:
            from gan_core.metrics.niqe import NIQE

            niqe_fn = NIQE()
        except Exception as e:
            log(f"warning: NIQE unavailable ({e}); continuing without it")
    if opts.ref_dir is not None:
        from gan_core.metrics.lpips import LPIPS, lpips_available

        if lpips_available():
            lpips_fn = LPIPS()
        else:
            log(
                "note: LPIPS skipped: its AlexNet trunk (alexnet-owt-7be5be79.pth) is not in weights/ "
                "or the torch hub cache"
            )
    written: dict[Path, Path] = {}
    inputs = {p.resolve() for p, _ in files}
    scale = upscaler.scale
    eff_scale = opts.outscale or scale
    for src, rel in tqdm(files, desc="images", unit="img", disable=None if len(files) > 1 else True):
        try:
            img = read_image(src, opts.max_pixels)
            out_path, note = _output_path(src, rel, img, opts)
            key = out_path.resolve()
            if key in inputs:
                raise ImageError(f"{src}: output {out_path} would replace an input; choose another -o or --suffix")
            if key in written:
                raise ImageError(f"{src}: output {out_path} was already written for {written[key]}; rename one of them")
            if out_path.exists():
                if opts.skip_existing:
                    summary.skipped += 1
                    log(f"skip: {out_path} exists")
                    continue
                if not opts.overwrite:
                    raise ImageError(f"{src}: {out_path} exists (use --overwrite to replace it or --skip-existing)")
            H, W = img.pixels.shape[:2]
            tile = upscaler.auto_tile(H, W)
            n_tiles = _count_tiles(H, W, tile)
            bar = tqdm(total=n_tiles, desc=src.name, unit="tile", leave=False, disable=None if n_tiles > 4 else True)
            dtype = np.uint16 if img.bit_depth == 16 else np.uint8
            pixels = upscaler._upscale_pixels(img.pixels, dtype, opts.outscale, on_tile=bar.update, tile=tile)
            bar.close()
            bit_depth, icc, exif = img.bit_depth, img.icc_profile, img.exif
            img = None  # free the decoded input before the encoder needs its own copy of the output
            write_image(out_path, pixels, bit_depth, icc, exif, overwrite=opts.overwrite)
            written[key] = src
            summary.done += 1
            row = {
                "input": str(src),
                "output": str(out_path),
                "size_in": f"{W}x{H}",
                "size_out": f"{pixels.shape[1]}x{pixels.shape[0]}",
            }
            if note:
                log(f"note: {src}: {note}")
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
                        summary.failed.append((str(src), msg))
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
            if use_niqe is not None or ref is not None:
                row.update(_quality(pixels.astype(np.float32) / top, ref, round(eff_scale), use_niqe, lpips_fn))
            summary.rows.append(row)
        except ImageError as e:
            summary.failed.append((str(src), str(e)))
            log(f"error: {e}")
        except Exception as e:
            summary.failed.append((str(src), f"{type(e).__name__}: {e}"))
            log(f"error: {src}: {type(e).__name__}: {e}")
    return summary


def _count_tiles(H: int, W: int, tile: int) -> int:
    from gan_core.tiling import tile_spans

    from .infer import DEFAULT_OVERLAP

    if tile <= 0:
        return 1
    return len(tile_spans(H, tile, DEFAULT_OVERLAP)) * len(tile_spans(W, tile, DEFAULT_OVERLAP))


METRIC_COLUMNS = ("psnr_y", "ssim_y", "lpips", "niqe")


def print_table(rows: list[dict], out=None) -> dict:
    """Per-image metrics and their mean (to stdout); returns the means."""
    out = out or sys.stdout
    cols = [c for c in METRIC_COLUMNS if any(c in r for r in rows)]
    if not cols:
        return {}
    width = max([len(Path(r["input"]).name) for r in rows] + [5])
    head = {"psnr_y": "PSNR-Y", "ssim_y": "SSIM-Y", "lpips": "LPIPS", "niqe": "NIQE"}
    print(f"{'image':<{width}}" + "".join(f"{head[c]:>10}" for c in cols), file=out)
    for r in rows:
        cells = "".join(f"{r[c]:>10.4f}" if c in r else f"{'-':>10}" for c in cols)
        print(f"{Path(r['input']).name:<{width}}{cells}", file=out)
    means = {c: float(np.mean([r[c] for r in rows if c in r])) for c in cols}
    print(f"{'mean':<{width}}" + "".join(f"{means[c]:>10.4f}" for c in cols), file=out)
    return means


def write_report(path: Path, summary: Summary, means: dict, meta: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".csv":
        keys = ["input", "output", "reference", "size_in", "size_out", *METRIC_COLUMNS]
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
            w.writeheader()
            for r in summary.rows:
                w.writerow(r)
            w.writerow({"input": "mean", **means})
        return
    report = {
        **meta,
        "images": summary.rows,
        "mean": means,
        "failed": [{"input": i, "error": e} for i, e in summary.failed],
        "skipped": summary.skipped,
    }
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
