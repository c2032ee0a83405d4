"""Jobs: one inference at a time per device, a bounded queue, progress, cancellation and expiry.

A job goes ``queued`` -> ``running`` (on the device) -> ``encoding`` -> ``done``, or ends ``failed`` or
``cancelled``. Its work is three callables of a ``Work`` object:

* ``prepare(job)`` (decoder threads, at submission): read and check the inputs; an ``ApiError`` here is the
  answer to the request that submitted it (bad input is refused before it takes the device);
* ``compute(job, on_tile)`` (the device thread, one job at a time, in order of submission): the network;
  ``on_tile()`` after every tile counts progress and raises ``JobCancelled`` once the job is cancelled, so
  a cancelled job stops within one tile (a whole image that fits one tile is one "tile");
* ``finish(job, output)`` (the encoder thread): write the result into the job's folder, measure it.

Admission: at most ``capacity`` jobs are admitted (queued, running or encoding) at once; one more gets
``429 queue_full`` with ``Retry-After`` (seconds, from the recent time per job and the queue's depth)
before any decoding. A job's files live in its own folder under the runner's private root (mode 0700);
failed and cancelled jobs lose theirs at once, done ones ``ttl`` seconds after they ended (the record and
the files; later requests for the id get ``410 expired``). ``close`` cancels everything and removes the
root.
"""

from __future__ import annotations

import asyncio
import math
import os
import secrets
import shutil
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .errors import ApiError
from .metrics import Metrics

__all__ = ["Job", "JobCancelled", "JobRunner", "Work"]

_EXPIRED_REMEMBERED = 10_000  # ids answered "410 expired" instead of "404 unknown"


class JobCancelled(Exception):
    """Raised inside a job's compute when it was cancelled (DELETE, a client that went away, shutdown)."""


@dataclass
class Job:
    id: str
    kind: str  # upscale | synthesize
    folder: Path
    name: str  # the uploaded file's (safe) name
    created: float = field(default_factory=time.time)
    state: str = "queued"  # queued | running | encoding | done | failed | cancelled
    tiles_done: int = 0
    tiles_total: int = 1
    started: float | None = None
    finished: float | None = None
    result: Path | None = None
    media_type: str = "application/octet-stream"
    download_name: str = ""
    metrics: dict = field(default_factory=dict)  # PSNR-Y / SSIM-Y / LPIPS / NIQE (finite values only)
    notes: list[str] = field(default_factory=list)
    error: dict | None = None  # {"code", "message"} when failed
    timings: dict = field(default_factory=dict)  # seconds: prepare, queue, model, finish
    info: dict = field(default_factory=dict)  # sizes, model, options: shown as they are
    payload: Any = None  # the Work's own state between its stages
    cancel_event: threading.Event = field(default_factory=threading.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    expires: float | None = None
    task: asyncio.Task | None = None  # runs the device and encoder stages

    @property
    def ended(self) -> bool:
        return self.state in ("done", "failed", "cancelled")

    def view(self) -> dict:
        """The JSON of ``GET /v1/jobs/{id}``."""
        res = {"id": self.id, "kind": self.kind, "state": self.state, "name": self.name,
               "progress": {"tiles_done": self.tiles_done, "tiles_total": self.tiles_total,
                            "fraction": round(self.tiles_done / max(1, self.tiles_total), 4)},
               "created": self.created, "started": self.started, "finished": self.finished,
               "metrics": self.metrics, "notes": self.notes, "timings": self.timings, **self.info}  # fmt: skip
        if self.error:
            res["error"] = self.error
        if self.state == "done" and self.result is not None:
            res["result"] = f"/v1/jobs/{self.id}/result"
            res["expires"] = self.expires
        return res


class Work(Protocol):
    kind: str

    def prepare(self, job: Job) -> None: ...

    def compute(self, job: Job, on_tile) -> Any: ...

    def finish(self, job: Job, output: Any) -> None: ...


class JobRunner:
    """The queue of one device (see module docstring).

    Args:
        root: a private folder for the jobs' files (created 0700, removed by ``close``).
        capacity: most jobs admitted at once (``--workers-queue``).
        ttl: seconds a finished job's record and result are kept.
        metrics: where job ends and device times are counted.
    """

    def __init__(self, root: Path, capacity: int, ttl: float, metrics: Metrics, decoders: int = 2) -> None:
        self.root = Path(root)
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.capacity = capacity
        self.ttl = ttl
        self.metrics = metrics
        self.jobs: dict[str, Job] = {}
        self._expired: OrderedDict[str, float] = OrderedDict()
        self._admitted = 0
        self._recent: deque[float] = deque(maxlen=20)  # seconds per job (device + encode), for Retry-After
        self._decoders = ThreadPoolExecutor(decoders, thread_name_prefix="san-serve-decode")
        self._device = ThreadPoolExecutor(1, thread_name_prefix="san-serve-device")
        self._encoder = ThreadPoolExecutor(1, thread_name_prefix="san-serve-encode")
        self._closed = False

    # -- admission ------------------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        """Jobs admitted and not finished."""
        return self._admitted

    def retry_after(self) -> int:
        """Seconds a refused client should wait: the recent mean time per job times the jobs ahead of it."""
        per_job = sum(self._recent) / len(self._recent) if self._recent else 1.0
        return int(min(600, max(1, math.ceil(per_job * max(1, self._admitted)))))

    def _admit(self) -> None:
        if self._closed:
            raise ApiError(503, "shutting_down", "the server is shutting down")
        if self._admitted >= self.capacity:
            wait = self.retry_after()
            raise ApiError(429, "queue_full", f"the queue is full ({self.capacity} jobs); retry in {wait} s",
                           {"Retry-After": str(wait)})  # fmt: skip
        self._admitted += 1

    # -- jobs -----------------------------------------------------------------------------------------
    def create(self, kind: str, name: str) -> Job:
        """A new job with its own empty folder (not yet admitted: ``submit`` does that)."""
        job_id = secrets.token_hex(12)
        folder = self.root / job_id
        folder.mkdir(mode=0o700)
        return Job(job_id, kind, folder, name)

    async def submit(self, job: Job, work: Work) -> Job:
        """Admit ``job`` (429 when full), prepare it (its ApiError is raised here, the job forgotten and its
        files removed) and queue it for the device. Returns at once; ``job.done`` is set when it ends."""
        try:
            self._admit()
        except ApiError:
            self._remove_files(job)
            raise
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        try:
            await loop.run_in_executor(self._decoders, work.prepare, job)
        except BaseException:
            self._admitted -= 1
            self._remove_files(job)
            raise
        job.timings["prepare"] = round(time.perf_counter() - t0, 4)
        self.jobs[job.id] = job
        job.task = asyncio.create_task(self._run(job, work))
        return job

    async def _run(self, job: Job, work: Work) -> None:
        loop = asyncio.get_running_loop()
        queued = time.perf_counter()
        device_seconds = None
        try:
            output = await loop.run_in_executor(self._device, self._compute, job, work, queued)
            device_seconds = job.timings.get("model")
            job.state = "encoding"
            t0 = time.perf_counter()
            await loop.run_in_executor(self._encoder, work.finish, job, output)
            del output
            job.timings["finish"] = round(time.perf_counter() - t0, 4)
            job.state = "done"
            self._recent.append(time.perf_counter() - queued - job.timings.get("queue", 0.0))
        except JobCancelled:
            job.state = "cancelled"
            job.error = {"code": "cancelled", "message": "the job was cancelled"}
        except ApiError as e:
            job.state, job.error = "failed", {"code": e.code, "message": e.message}
        except Exception as e:  # a model or encoder failure: this job fails, the server goes on
            job.state = "failed"
            job.error = {"code": "internal_error", "message": f"{type(e).__name__}: {e}"}
        finally:
            self._admitted -= 1
            job.finished = time.time()
            job.expires = job.finished + self.ttl
            job.payload = None
            if job.state != "done":
                self._remove_files(job)
                job.result = None
            self.metrics.job_ended(job.kind, job.state, device_seconds)
            job.done.set()

    def _compute(self, job: Job, work: Work, queued: float) -> Any:
        if job.cancel_event.is_set():
            raise JobCancelled
        job.timings["queue"] = round(time.perf_counter() - queued, 4)
        job.state, job.started = "running", time.time()

        def on_tile() -> None:
            if job.cancel_event.is_set():
                raise JobCancelled
            job.tiles_done += 1

        t0 = time.perf_counter()
        output = work.compute(job, on_tile)
        job.timings["model"] = round(time.perf_counter() - t0, 4)
        if job.cancel_event.is_set():
            raise JobCancelled
        return output

    def get(self, job_id: str) -> Job:
        """The job, else ``404 not_found`` or ``410 expired``."""
        job = self.jobs.get(job_id)
        if job is not None:
            return job
        if job_id in self._expired:
            raise ApiError(410, "expired", f"job {job_id} has expired (results are kept {self.ttl:g} s); its files "
                           "are removed")  # fmt: skip
        raise ApiError(404, "not_found", f"no job {job_id}")

    def cancel(self, job: Job) -> None:
        """Ask a queued or running job to stop (it ends ``cancelled`` within one tile)."""
        if not job.ended:
            job.cancel_event.set()

    def forget(self, job: Job) -> None:
        """Drop an ended job now: its record and files (``DELETE`` of a finished job)."""
        self._remove_files(job)
        self.jobs.pop(job.id, None)
        self._remember_expired(job.id)

    def discard_result(self, job: Job) -> None:
        """Remove an ended job's files but keep its record (state, metrics) until it expires."""
        self._remove_files(job)
        job.result = None

    # -- expiry and shutdown --------------------------------------------------------------------------
    def sweep(self, now: float | None = None) -> list[str]:
        """Expire the jobs that ended more than ``ttl`` s before ``now``; returns their ids."""
        now = time.time() if now is None else now
        gone = [j for j in self.jobs.values() if j.ended and j.expires is not None and j.expires <= now]
        for job in gone:
            self.forget(job)
        return [j.id for j in gone]

    async def reap_forever(self) -> None:
        """``sweep`` every ttl/4 seconds (between 0.2 and 30 s) until cancelled."""
        interval = max(0.2, min(30.0, self.ttl / 4))
        while True:
            await asyncio.sleep(interval)
            self.sweep()

    async def close(self) -> None:
        """Refuse new jobs, cancel the others, wait for the device to let go, remove every file."""
        self._closed = True
        pending = [j for j in self.jobs.values() if not j.ended]
        for job in pending:
            job.cancel_event.set()
        for job in pending:
            try:
                await asyncio.wait_for(job.done.wait(), 60)
            except asyncio.TimeoutError:
                pass
        for pool in (self._decoders, self._device, self._encoder):
            pool.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(self.root, ignore_errors=True)

    def _remember_expired(self, job_id: str) -> None:
        self._expired[job_id] = time.time()
        while len(self._expired) > _EXPIRED_REMEMBERED:
            self._expired.popitem(last=False)

    @staticmethod
    def _remove_files(job: Job) -> None:
        if job.folder.exists():
            shutil.rmtree(job.folder, ignore_errors=True)


def pid_alive(pid: int) -> bool:
    """True when a process with this id exists (for the leftover folders of a killed server)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
