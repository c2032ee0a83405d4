"""What a job does: upscaling through sr-infer's own per-file steps, and label-to-image synthesis.

``UpscaleService`` runs an uploaded image through exactly the steps of ``sr-infer``, on the job's private
folder: ``sr_app.batch.prepare`` (decode with alpha, gray, 16-bit, EXIF orientation, ICC; the input and
output pixel limits; the output format), the upscale (``sr_app.pipeline.upscale_job``, tile by tile), and
``sr_app.batch.finish`` (atomic write with ICC / EXIF, PSNR-Y / SSIM-Y / LPIPS against the reference, NIQE
up to ``--niqe-max-mp``). So the server writes byte for byte what ``sr-infer`` writes for the same file.

``SynthesisService`` runs a Cityscapes label map (+ instance map) through
``translate_app.data.load_label_pair`` and ``translate_app.infer.Synthesizer.synthesize`` and writes a PNG.

Every refusal is an ``ApiError`` (4xx) raised by ``prepare``, before the job reaches the device.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gan_core.image_io import ImageError, read_image, write_image
from sr_app.pipeline import upscale_job

from .errors import ApiError, image_error
from .jobs import Job

__all__ = ["SynthesisService", "UpscaleParams", "UpscaleService", "colorize_label_file", "count_tiles"]

MEDIA_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".webp": "image/webp", ".bmp": "image/bmp",
               ".tif": "image/tiff"}  # fmt: skip


def count_tiles(h: int, w: int, tile: int) -> int:
    """Tiles sr-infer's tiler visits for an h x w input with ``tile`` (0: one, the whole image)."""
    from gan_core.tiling import tile_spans
    from sr_app.infer import DEFAULT_OVERLAP

    if tile <= 0:
        return 1
    return len(tile_spans(h, tile, DEFAULT_OVERLAP)) * len(tile_spans(w, tile, DEFAULT_OVERLAP))


@dataclass
class UpscaleParams:
    outscale: float | None = None  # None: the network's scale
    ext: str = "auto"  # auto | png | jpg | webp (as sr-infer --ext)
    tile: int | None = None  # None: the server's automatic tile; 0: whole image; else >= 32
    niqe: bool = True


@dataclass
class _UpscalePayload:
    src: Path
    ref: Path | None
    params: UpscaleParams
    opts: object = None  # sr_app.batch.BatchOptions
    sr_job: object = None  # sr_app.batch.Job


def _cleaner(job: Job, *paths_and_names: tuple[Path, str]):
    """A log function for sr_app's messages: private paths replaced by what the client knows, ``note:``
    prefixes dropped, appended to ``job.notes``."""

    def log(msg: str) -> None:
        for path, shown in paths_and_names:
            msg = msg.replace(str(path), shown)
        msg = msg.replace(str(job.folder), "")
        for prefix in ("note: ", "warning: ", "error: "):
            msg = msg.removeprefix(prefix)
        job.notes.append(msg)

    return log


class UpscaleService:
    """The ``upscale`` Work of ``JobRunner`` for one loaded ``Upscaler`` (see module docstring).

    Args:
        upscaler: ``sr_app.infer.Upscaler`` (its tile setting ``auto``).
        max_pixels: inputs above are refused, outputs above ``max_pixels * scale**2`` too (sr-infer's rule).
        niqe_max_pixels: NIQE is skipped (with a note) for larger outputs.
    """

    kind = "upscale"

    def __init__(self, upscaler, max_pixels: int, niqe_max_pixels: int, log=print) -> None:
        from sr_app.batch import BatchOptions, metric_functions

        self.upscaler = upscaler
        self.max_pixels = int(max_pixels)
        self.niqe_max_pixels = int(niqe_max_pixels)
        # created once: NIQE (and LPIPS, when its AlexNet trunk is present) for every request
        self.niqe_fn, self.lpips_fn = metric_functions(BatchOptions(outdir=Path("."), ref_dir=Path(".")), log)
        self.max_tile = upscaler.auto_tile(1 << 16, 1 << 16) or 1024  # the tile its memory budget allows

    def payload(self, src: Path, ref: Path | None, params: UpscaleParams) -> _UpscalePayload:
        return _UpscalePayload(src, ref, params)

    def prepare(self, job: Job) -> None:
        from sr_app.batch import BatchOptions, prepare

        p: _UpscalePayload = job.payload
        up = self.upscaler
        opts = BatchOptions(outdir=job.folder / "out", suffix="", ext=p.params.ext, outscale=p.params.outscale,
                            max_pixels=self.max_pixels, ref_dir=p.ref.parent if p.ref else None,
                            niqe=p.params.niqe, niqe_max_pixels=self.niqe_max_pixels)  # fmt: skip
        log = _cleaner(job, *([(p.ref, "the reference")] if p.ref else []), (p.src, job.name))
        try:
            sr_job = prepare(0, p.src, Path("."), up, opts, {p.src.resolve()}, log)
        except ImageError as e:
            raise image_error(str(e), str(p.src), job.name) from None
        H, W = sr_job.shape[:2]
        tile = p.params.tile
        if tile is not None:
            if tile == 0 and H * W > self.max_tile**2:
                raise ApiError(422, "invalid_parameter", f"tile 0 (the whole image at once) needs too much memory for "
                               f"a {W}x{H} image on this server; use a tile up to {self.max_tile} or auto")  # fmt: skip
            if tile > self.max_tile:
                raise ApiError(422, "invalid_parameter", f"tile {tile} is above this server's limit of "
                               f"{self.max_tile} (its memory budget); use a smaller tile or auto")  # fmt: skip
            sr_job.tile = tile
        out_h, out_w = up.output_size(H, W, opts.outscale)
        if p.ref is not None:
            self._check_reference(job, p.ref, out_w, out_h)
        job.tiles_total = count_tiles(H, W, sr_job.tile)
        job.info.update(size_in=f"{W}x{H}", size_out=f"{out_w}x{out_h}", model=up.name, scale=up.scale,
                        tile=sr_job.tile, channels=sr_job.shape[2], bit_depth=sr_job.image.bit_depth)  # fmt: skip
        p.opts, p.sr_job = opts, sr_job

    def _check_reference(self, job: Job, ref: Path, out_w: int, out_h: int) -> None:
        """The reference must be a readable image of the output's size: refused before any upscaling."""
        try:
            img = read_image(ref, max_pixels=out_w * out_h)
        except ImageError as e:
            if "exceeds the limit" in str(e):
                raise ApiError(422, "reference_size", f"the reference is larger than the output ({out_w}x{out_h}); "
                               "it must have the output's size") from None  # fmt: skip
            err = image_error(str(e), str(ref), "reference")
            raise ApiError(err.status_code, err.code, err.message) from None
        w, h = img.size
        if (w, h) != (out_w, out_h):
            raise ApiError(422, "reference_size", f"the reference is {w}x{h} but the output will be {out_w}x{out_h}; "
                           "give the high-resolution original of the uploaded image (or set outscale)")  # fmt: skip

    def compute(self, job: Job, on_tile) -> np.ndarray:
        p: _UpscalePayload = job.payload
        return upscale_job(p.sr_job, self.upscaler, p.opts, on_tile)

    def finish(self, job: Job, pixels: np.ndarray) -> None:
        from sr_app.batch import METRIC_COLUMNS, finish

        p: _UpscalePayload = job.payload
        log = _cleaner(job, *([(p.ref, "the reference")] if p.ref else []), (p.src, job.name))
        metrics = (self.niqe_fn if p.params.niqe else None, self.lpips_fn if p.ref else None)
        outcome = finish(p.sr_job, pixels, self.upscaler.scale, p.opts, metrics, log)
        for _, msg in outcome.errors:
            log(msg)
        if outcome.kind != "written":
            raise ApiError(500, "write_failed", job.notes[-1] if job.notes else "the output was not written")
        row = outcome.row
        job.metrics = {k: round(float(row[k]), 4) for k in METRIC_COLUMNS if k in row}
        job.result = Path(row["output"])
        job.media_type = MEDIA_TYPES.get(job.result.suffix, "application/octet-stream")
        job.download_name = f"{Path(job.name).stem}_x{p.params.outscale or self.upscaler.scale:g}{job.result.suffix}"


@dataclass
class _SynthPayload:
    label: Path
    instance: Path | None
    labels: np.ndarray | None = None
    instances: np.ndarray | None = None


def _check_id_map(path: Path, shown: str, max_pixels: int) -> None:
    """Empty, not an image, or above ``max_pixels`` (a decompression bomb): the ApiError, before decoding."""
    from gan_core.image_io import probe_size

    if path.stat().st_size == 0:
        raise ApiError(400, "empty_file", f"{shown}: empty file (0 bytes)")
    n = probe_size(path)
    if n == 0:
        raise ApiError(415, "not_an_image", f"{shown}: not an image (or an unsupported format)")
    if n > max_pixels:
        msg = f"{shown}: {n / 1e6:.1f} MP exceeds the limit of {max_pixels / 1e6:.1f} MP (--max-pixels; a "
        raise ApiError(413, "too_many_pixels", msg + "decompression bomb or simply too large)")


class SynthesisService:
    """The ``synthesize`` Work of ``JobRunner`` for one loaded ``translate_app.infer.Synthesizer``."""

    kind = "synthesize"

    def __init__(self, synthesizer, max_pixels: int) -> None:
        self.synthesizer = synthesizer
        self.max_pixels = int(max_pixels)

    def payload(self, label: Path, instance: Path | None) -> _SynthPayload:
        return _SynthPayload(label, instance)

    def prepare(self, job: Job) -> None:
        from translate_app.data import load_label_pair

        p: _SynthPayload = job.payload
        _check_id_map(p.label, job.name, self.max_pixels)
        if p.instance is not None:
            _check_id_map(p.instance, "instance map", self.max_pixels)
        try:
            p.labels, p.instances = load_label_pair(p.label, p.instance, self.synthesizer.size)
        except ValueError as e:
            msg = str(e).replace(str(p.label), job.name)
            if p.instance is not None:
                msg = msg.replace(str(p.instance), "the instance map")
            raise ApiError(422, "invalid_label_map", msg) from None
        h, w = self.synthesizer.size
        job.info.update(size_out=f"{w}x{h}", model=Path(self.synthesizer.name).name)

    def compute(self, job: Job, on_tile) -> np.ndarray:
        p: _SynthPayload = job.payload
        rgb = self.synthesizer.synthesize(p.labels, p.instances)
        on_tile()
        return rgb

    def finish(self, job: Job, rgb: np.ndarray) -> None:
        out = job.folder / "out" / "synthesized.png"
        write_image(out, rgb)
        job.result, job.media_type = out, "image/png"
        job.download_name = f"{Path(job.name).stem.replace('_gtFine_labelIds', '')}_synth.png"


def colorize_label_file(path: Path, shown: str, max_pixels: int, size: tuple[int, int] | None) -> bytes:
    """PNG bytes of a label map in the Cityscapes palette (``translate_app.data.colorize_labels``), at ``size``
    (H, W) when given (the model's), else at the file's own size. ApiError for bad files."""
    from PIL import Image

    from translate_app.data import colorize_labels, load_label_map

    _check_id_map(path, shown, max_pixels)
    if size is None:
        with Image.open(path) as im:
            size = (im.size[1], im.size[0])
    try:
        labels = load_label_map(path, size)
    except ValueError as e:
        raise ApiError(422, "invalid_label_map", str(e).replace(str(path), shown)) from None
    buf = io.BytesIO()
    Image.fromarray(colorize_labels(labels).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()
