"""sr-infer's pipeline: decoding, upscaling and encoding of a batch of files overlap.

Three stages, each file in order through all of them:

1. ``prepare`` (decoder threads): read and check the input (``sr_app.batch.prepare``), a few files ahead.
2. Upscaling (the calling thread, the only one that touches the network): consecutive whole images of
   one shape share a forward (``Upscaler.upscale_images``; on CUDA up to ``Upscaler.batch_size`` of them);
   a large image goes alone, tiled (several tiles per forward on CUDA).
3. ``finish`` (writer threads): encode and write the output, measure it (``sr_app.batch.finish``).

Memory stays bounded: decoding ahead stops at ``ahead_pixels`` input pixels in flight, and writing behind
at ``behind_pixels`` output pixels (an image larger than that is still processed, alone). The outcome of
every file is recorded by its position, so the summary, the report and the exit status are those of a
sequential run; only the order of log lines can differ.

Stop requests: ``stop_requested()`` is asked before each upscale; when it answers True no further image
is upscaled, the outputs already computed are still written, and the files decoded ahead are
"not processed". A KeyboardInterrupt during an upscale abandons the images of that forward (nothing of
them is written) and stops the same way.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from gan_core.image_io import ImageError, probe_size

from .batch import BatchOptions, Job, Outcome, Summary, finish, metric_functions, prepare
from .infer import NonFiniteOutputError

__all__ = ["PipelineLimits", "run_batch", "upscale_job"]


@dataclass(frozen=True)
class PipelineLimits:
    """How far the stages may run ahead of the upscaler (``for_device`` picks them)."""

    decoders: int = 1  # threads reading inputs
    writers: int = 1  # threads encoding outputs
    ahead_pixels: int = 4_000_000  # input pixels decoded (float32: 12 bytes each for RGB) but not yet upscaled
    behind_pixels: int = 64_000_000  # output pixels upscaled but not yet written

    @classmethod
    def for_device(cls, device_type: str) -> PipelineLimits:
        """CPU: one thread per stage beside the network (its own threads use the cores). CUDA: enough
        encoders to keep up with the GPU (PNG encoding is single-threaded per image)."""
        if device_type != "cuda":
            return cls()
        cpus = os.cpu_count() or 4
        return cls(decoders=max(1, min(4, cpus // 4)), writers=max(1, min(8, cpus - 2)),
                   ahead_pixels=32_000_000, behind_pixels=256_000_000)  # fmt: skip


def _failure(src: Path, e: BaseException) -> Outcome:
    if isinstance(e, ImageError):
        return Outcome("failed", errors=[(str(src), str(e))])
    if isinstance(e, NonFiniteOutputError):
        return Outcome("failed", errors=[(str(src), f"{src}: {e}; nothing written")])
    return Outcome("failed", errors=[(str(src), f"{src}: {type(e).__name__}: {e}")])


def run_batch(
    files: list[tuple[Path, Path]],
    upscaler,
    opts: BatchOptions,
    log=print,
    stop_requested: Callable[[], bool] = lambda: False,
    limits: PipelineLimits | None = None,
) -> Summary:
    """Upscale every (input, output sub-folder) pair; returns the summary (counts, per-file rows in input
    order, failures). Never raises for a bad file; see the module docstring for stops."""
    limits = limits or PipelineLimits.for_device(upscaler.device.type)
    metrics = metric_functions(opts, log)
    inputs = {p.resolve() for p, _ in files}
    outcomes: dict[int, Outcome] = {}
    claimed: dict[Path, Path] = {}  # output -> the input it is written for
    interrupted = False

    def report(index: int, outcome: Outcome) -> None:
        outcomes[index] = outcome
        for _, msg in outcome.errors:
            if outcome.kind == "failed":
                log(f"error: {msg}")

    bar = tqdm(total=len(files), desc="images", unit="img", disable=None if len(files) > 1 else True)
    with ThreadPoolExecutor(limits.decoders) as decoders, ThreadPoolExecutor(limits.writers) as writers:
        decoding: deque[tuple[int, int, Future]] = deque()  # (index, input pixels, future of prepare)
        writing: deque[tuple[int, int, Future]] = deque()  # (index, output pixels, future of finish)
        next_file = 0

        def fill_decoders(computing: int = 0) -> None:
            """Decode ahead while the input pixels in flight (``computing`` included) stay within the limit;
            with nothing in flight the next file is always started, whatever its size."""
            nonlocal next_file
            while next_file < len(files):
                pixels = probe_size(files[next_file][0])
                in_flight = computing + sum(p for _, p, _ in decoding)
                if in_flight and in_flight + pixels > limits.ahead_pixels:
                    return
                src, rel = files[next_file]
                fut = decoders.submit(prepare, next_file, src, rel, upscaler, opts, inputs, log)
                decoding.append((next_file, pixels, fut))
                next_file += 1

        def collect_writes(keep_pixels: int) -> None:
            while writing and (sum(p for _, p, _ in writing) > keep_pixels or writing[0][2].done()):
                index, _, fut = writing.popleft()
                try:
                    report(index, fut.result())
                except Exception as e:  # an unexpected writer error: this file failed, the batch goes on
                    report(index, _failure(files[index][0], e))
                bar.update()

        def take_job() -> Job | None:
            """The next input that is ready to upscale (failures and skips recorded on the way), or None."""
            while True:
                if not decoding:
                    fill_decoders()
                    if not decoding:
                        return None
                index, _, fut = decoding.popleft()
                src = files[index][0]
                try:
                    job = fut.result()
                except Exception as e:
                    report(index, _failure(src, e))
                    bar.update()
                    continue
                if job is None:
                    report(index, Outcome("skipped"))
                    bar.update()
                    continue
                key = job.out_path.resolve()
                if key in claimed:
                    msg = f"{src}: output {job.out_path} is also the output of {claimed[key]}; rename one of them"
                    report(index, _failure(src, ImageError(msg)))
                    bar.update()
                    continue
                claimed[key] = src
                return job

        def ready_companions(job: Job, room: int) -> list[Job]:
            """Inputs already decoded right behind ``job`` that can share its forward."""
            group = []
            while room > 0 and decoding and decoding[0][2].done():
                nxt = decoding[0][2]
                if nxt.exception() is not None or nxt.result() is None:
                    break
                other: Job = nxt.result()
                if other.tile != 0 or other.shape != job.shape or other.out_dtype != job.out_dtype:
                    break
                if other.out_path.resolve() in claimed:
                    break  # take_job reports it
                decoding.popleft()
                claimed[other.out_path.resolve()] = other.src
                group.append(other)
                room -= 1
            return group

        try:
            while True:
                collect_writes(limits.behind_pixels)
                fill_decoders()
                if stop_requested():
                    interrupted = True
                    break
                job = take_job()
                if job is None:
                    break
                group = [job]
                if job.tile == 0:
                    group += ready_companions(job, upscaler.batch_size(*job.shape[:2]) - 1)
                fill_decoders(computing=sum(j.shape[0] * j.shape[1] for j in group))
                results = _upscale(group, upscaler, opts)
                for done_job, result in zip(group, results, strict=True):
                    if isinstance(result, BaseException):
                        report(done_job.index, _failure(done_job.src, result))
                        bar.update()
                        continue
                    fut = writers.submit(finish, done_job, result, upscaler.scale, opts, metrics, log)
                    writing.append((done_job.index, result.shape[0] * result.shape[1], fut))
                del group, results
        except KeyboardInterrupt:  # a second Ctrl-C: the images of this forward are abandoned
            interrupted = True
        for _, _, fut in decoding:
            fut.cancel()
        collect_writes(0)
    bar.close()
    return _summary(files, outcomes, interrupted)


def _upscale(group: list[Job], upscaler, opts: BatchOptions) -> list[np.ndarray | BaseException]:
    """Output pixels (or the exception) of each job: one forward for a group of whole images, the tiled path
    with a progress bar for a large one. A group that fails is retried one image at a time, so one bad image
    does not fail the others."""
    first = group[0]
    if len(group) > 1:
        try:
            return upscaler.upscale_images([j.image.pixels for j in group], first.out_dtype, opts.outscale)
        except (NonFiniteOutputError, RuntimeError, ValueError):
            return [r for j in group for r in _upscale([j], upscaler, opts)]
    H, W = first.shape[:2]
    n_tiles = _count_tiles(H, W, first.tile)
    bar = tqdm(total=n_tiles, desc=first.src.name, unit="tile", leave=False, disable=None if n_tiles > 4 else True)
    try:
        return [upscale_job(first, upscaler, opts, bar.update)]
    except (ImageError, NonFiniteOutputError, RuntimeError, ValueError) as e:
        return [e]
    finally:
        bar.close()


def upscale_job(job: Job, upscaler, opts: BatchOptions, on_tile: Callable[[], object] | None = None) -> np.ndarray:
    """Output pixels of one prepared ``Job``: (H', W', C) of ``job.out_dtype`` (uint8 or uint16), tiled as
    ``job.tile`` says (0: the whole image in one forward). ``on_tile()`` runs after every tile (once for a
    whole image); an exception it raises stops the upscale and propagates (san-serve cancels jobs this way).
    Raises what the Upscaler raises (NonFiniteOutputError, RuntimeError for out of memory, ValueError)."""
    return upscaler._upscale_pixels(job.image.pixels, job.out_dtype, opts.outscale, on_tile, job.tile)


def _count_tiles(H: int, W: int, tile: int) -> int:
    from gan_core.tiling import tile_spans

    from .infer import DEFAULT_OVERLAP

    if tile <= 0:
        return 1
    return len(tile_spans(H, tile, DEFAULT_OVERLAP)) * len(tile_spans(W, tile, DEFAULT_OVERLAP))


def _summary(files: list[tuple[Path, Path]], outcomes: dict[int, Outcome], interrupted: bool) -> Summary:
    summary = Summary(interrupted=interrupted)
    for index, (src, _) in enumerate(files):
        outcome = outcomes.get(index)
        if outcome is None:
            summary.not_processed.append(str(src))
            continue
        if outcome.kind == "written":
            summary.done += 1
            summary.rows.append(outcome.row)
        elif outcome.kind == "skipped":
            summary.skipped += 1
        summary.failed += outcome.errors
    return summary
