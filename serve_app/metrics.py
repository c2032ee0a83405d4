"""san-serve's ``/metrics``: counters and histograms in the Prometheus text format (version 0.0.4).

Series (``route`` is the route's template, e.g. ``/v1/jobs/{job_id}``, so ids never become labels; a path
that matches no route is ``route="unmatched"``):

* ``san_serve_requests_total{method, route, status}``: answered requests;
* ``san_serve_request_duration_seconds{route}``: histogram, from the request's first byte to the end of the
  response;
* ``san_serve_errors_total{code}``: error answers by their JSON ``error.code`` (4xx and 5xx);
* ``san_serve_inference_seconds{kind}``: histogram of the time on the device per job (``upscale``,
  ``synthesize``);
* ``san_serve_jobs_total{kind, state}``: jobs that ended (``done``, ``failed``, ``cancelled``);
* ``san_serve_queue_depth``: jobs admitted and not finished (queued, on the device or being encoded);
* ``san_serve_queue_capacity``: ``--workers-queue``;
* ``process_resident_memory_bytes``: the server's RSS (Linux).

Thread-safe: the job threads and the event loop record into it.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections import defaultdict

__all__ = ["LATENCY_BUCKETS", "Metrics", "resident_memory_bytes"]

LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


def resident_memory_bytes() -> int:
    """Current RSS of this process (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            import os

            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _labels(pairs: tuple[tuple[str, str], ...]) -> str:
    if not pairs:
        return ""
    esc = [(k, v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")) for k, v in pairs]
    return "{" + ",".join(f'{k}="{v}"' for k, v in esc) + "}"


def _num(x: float) -> str:
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return repr(float(x)) if not float(x).is_integer() else str(int(x))


class _Histogram:
    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one: above every bucket
        self.total = 0.0
        self.n = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.n += 1


class Metrics:
    """The registry behind ``/metrics`` (see module docstring)."""

    def __init__(self, queue_capacity: int = 0) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple, int] = defaultdict(int)
        self._errors: dict[str, int] = defaultdict(int)
        self._jobs: dict[tuple, int] = defaultdict(int)
        self._latency: dict[str, _Histogram] = {}
        self._inference: dict[str, _Histogram] = {}
        self.queue_capacity = queue_capacity

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self._requests[(method, route, str(status))] += 1
            self._latency.setdefault(route, _Histogram(LATENCY_BUCKETS)).observe(seconds)

    def error(self, code: str) -> None:
        with self._lock:
            self._errors[code] += 1

    def job_ended(self, kind: str, state: str, device_seconds: float | None) -> None:
        with self._lock:
            self._jobs[(kind, state)] += 1
            if device_seconds is not None:
                self._inference.setdefault(kind, _Histogram(LATENCY_BUCKETS)).observe(device_seconds)

    def render(self, queue_depth: int) -> str:
        """The exposition text (``text/plain; version=0.0.4``)."""
        out: list[str] = []

        def head(name: str, kind: str, text: str) -> None:
            out.append(f"# HELP {name} {text}")
            out.append(f"# TYPE {name} {kind}")

        def histogram(name: str, label: str, hists: dict[str, _Histogram]) -> None:
            for key, h in sorted(hists.items()):
                cumulative = 0
                for bound, count in zip((*h.buckets, math.inf), h.counts, strict=True):
                    cumulative += count
                    out.append(f"{name}_bucket{_labels(((label, key), ('le', _num(bound))))} {cumulative}")
                out.append(f"{name}_sum{_labels(((label, key),))} {_num(h.total)}")
                out.append(f"{name}_count{_labels(((label, key),))} {h.n}")

        with self._lock:
            head("san_serve_requests_total", "counter", "HTTP requests answered, by method, route and status.")
            for (method, route, status), n in sorted(self._requests.items()):
                labels = _labels((("method", method), ("route", route), ("status", status)))
                out.append(f"san_serve_requests_total{labels} {n}")
            head("san_serve_request_duration_seconds", "histogram", "Time to answer a request, by route.")
            histogram("san_serve_request_duration_seconds", "route", self._latency)
            head("san_serve_errors_total", "counter", "Error answers (4xx, 5xx) by error code.")
            for code, n in sorted(self._errors.items()):
                out.append(f"san_serve_errors_total{_labels((('code', code),))} {n}")
            head("san_serve_inference_seconds", "histogram", "Time on the device per job, by kind.")
            histogram("san_serve_inference_seconds", "kind", self._inference)
            head("san_serve_jobs_total", "counter", "Jobs that ended, by kind and state.")
            for (kind, state), n in sorted(self._jobs.items()):
                out.append(f"san_serve_jobs_total{_labels((('kind', kind), ('state', state)))} {n}")
        head("san_serve_queue_depth", "gauge", "Jobs admitted and not finished (queued, running, encoding).")
        out.append(f"san_serve_queue_depth {queue_depth}")
        head("san_serve_queue_capacity", "gauge", "Most jobs admitted at once (--workers-queue).")
        out.append(f"san_serve_queue_capacity {self.queue_capacity}")
        head("process_resident_memory_bytes", "gauge", "Resident memory of the server process.")
        out.append(f"process_resident_memory_bytes {resident_memory_bytes()}")
        return "\n".join(out) + "\n"
