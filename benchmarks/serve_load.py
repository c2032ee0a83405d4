"""Load test of san-serve on this machine's loopback: concurrency, latency, memory, overhead, bad input.

Starts ``python -m serve_app --port 0`` (the default model unless ``--weights``) and, against it only:

* ``load``: ``--clients`` concurrent clients each POST one ``--size`` image to /v1/upscale (NIQE off), for
  ``--rounds`` rounds. A 429 (queue full) is counted and retried after its Retry-After; anything else that
  is not 200 is an error. Per round: throughput, p50 / p95 latency (first attempt to image received), 429s,
  errors, the server's peak RSS during the round and its RSS after it (growth across rounds = a leak).
* ``overhead``: ``--overhead-size`` images one at a time; server overhead = client latency minus the model
  time the server reports (``Server-Timing: model``): decode, queue, encode, HTTP, as a share of the model.
* ``bad``: each bad-input case once: its status and time, then a good request.

Bounded: at most ``--clients`` requests in flight, ``--time-limit`` seconds per phase, and the server is
stopped at the end (also on Ctrl-C). Prints tables; ``--json FILE`` writes the numbers.

    python benchmarks/serve_load.py                                   # 100 x 256x256, 3 rounds, overhead at 512
    python benchmarks/serve_load.py --size 1448 --clients 8 --rounds 1 --skip overhead,bad   # 2 MP images
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def test_image(h: int, w: int, seed: int = 0) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.zeros((h, w, 3))
    for c in range(3):
        for _ in range(4):
            fy, fx, ph = rng.uniform(1, 20), rng.uniform(1, 20), rng.uniform(0, 6.3)
            img[..., c] += np.sin(2 * np.pi * (fy * yy + fx * xx) + ph)
    img = (img - img.min()) / (img.max() - img.min()) * 255
    buf = io.BytesIO()
    Image.fromarray(img.round().astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


class Server:
    """``python -m serve_app`` on a free loopback port; RSS sampled every 0.1 s."""

    def __init__(self, extra: list[str], log: Path) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        cmd = [sys.executable, "-m", "serve_app", "--host", "127.0.0.1", "--port", "0", "--log-level", "warning",
               *extra]  # fmt: skip
        self.log = open(log, "w")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env)
        line = self.proc.stdout.readline()
        if "http://" not in line:
            self.stop()
            raise SystemExit(f"serve_load: san-serve did not start: {line} (see {log})")
        self.url = line.split()[1].rstrip("/")
        self.peak = 0
        self._stop = threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()

    def rss(self) -> int:
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def _sample(self) -> None:
        while not self._stop.wait(0.1):
            self.peak = max(self.peak, self.rss())

    def stop(self) -> None:
        self._stop.set()
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def load_round(server: Server, data: bytes, clients: int, time_limit: float) -> dict:
    import httpx

    deadline = time.monotonic() + time_limit
    latencies: list[float] = []
    errors: list[str] = []
    rejected = [0]
    lock = threading.Lock()
    server.peak = server.rss()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    with httpx.Client(base_url=server.url, timeout=time_limit, limits=limits) as http:

        def one(k: int) -> None:
            t0 = time.monotonic()
            while time.monotonic() < deadline:
                try:
                    r = http.post("/v1/upscale", files={"image": (f"img{k}.png", data)}, data={"niqe": "false"})
                except httpx.HTTPError as e:
                    with lock:
                        errors.append(f"{type(e).__name__}: {e}")
                    return
                if r.status_code == 429:
                    with lock:
                        rejected[0] += 1
                    time.sleep(min(float(r.headers.get("retry-after", 1)), max(0.0, deadline - time.monotonic())))
                    continue
                with lock:
                    if r.status_code == 200 and r.content:
                        latencies.append(time.monotonic() - t0)
                    else:
                        errors.append(f"{r.status_code}: {r.text[:200]}")
                return
            with lock:
                errors.append("time limit")

        t0 = time.monotonic()
        threads = [threading.Thread(target=one, args=(k,)) for k in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - t0
    time.sleep(0.5)
    return {"requests": clients, "ok": len(latencies), "errors": len(errors), "error_samples": errors[:3],
            "rejected_429": rejected[0], "wall_s": round(wall, 1), "throughput_rps": round(len(latencies) / wall, 3),
            "p50_s": round(percentile(latencies, 50), 2), "p95_s": round(percentile(latencies, 95), 2),
            "peak_rss_mb": round(server.peak / 2**20), "rss_after_mb": round(server.rss() / 2**20)}  # fmt: skip


def overhead(server: Server, data: bytes, repeats: int) -> dict:
    import httpx

    rows = []
    with httpx.Client(base_url=server.url, timeout=3600) as http:
        for k in range(repeats + 1):
            t0 = time.monotonic()
            r = http.post("/v1/upscale", files={"image": ("o.png", data)}, data={"niqe": "false"})
            latency = time.monotonic() - t0
            r.raise_for_status()
            timing = dict(part.strip().split(";dur=") for part in r.headers["server-timing"].split(","))
            if k == 0:
                continue  # warm-up
            model = float(timing["model"]) / 1000
            rows.append({"latency_s": latency, "model_s": model, "prepare_s": float(timing["prepare"]) / 1000,
                         "finish_s": float(timing["finish"]) / 1000})  # fmt: skip
    lat = statistics.median(r["latency_s"] for r in rows)
    model = statistics.median(r["model_s"] for r in rows)
    return {"repeats": repeats, "latency_s": round(lat, 3), "model_s": round(model, 3),
            "decode_s": round(statistics.median(r["prepare_s"] for r in rows), 3),
            "encode_s": round(statistics.median(r["finish_s"] for r in rows), 3),
            "overhead_s": round(lat - model, 3), "overhead_pct": round(100 * (lat - model) / model, 1)}  # fmt: skip


def bad_inputs(server: Server) -> list[dict]:
    import httpx

    good = test_image(32, 32, 1)
    cases = {
        "empty": {"files": {"image": ("e.png", b"")}},
        "non-image": {"files": {"image": ("t.txt", b"text " * 100)}},
        "truncated": {"files": {"image": ("t.png", test_image(256, 256, 2)[:2000])}},
        "decompression bomb": {"files": {"image": ("b.png", _bomb(60000, 60000))}},
        "wrong content type": {"json": {"image": "x"}},
        "unknown field": {"files": {"image": ("g.png", good)}, "data": {"scale": "2"}},
        "oversized (bytes)": None,  # a raw socket: headers announcing 65 MiB, then the answer is read
    }
    rows = []
    with httpx.Client(base_url=server.url, timeout=60) as http:
        for name, kw in cases.items():
            t0 = time.monotonic()
            if kw is None:
                status, code = _oversized(server.url, 65 * 2**20)
            else:
                r = http.post("/v1/upscale", **kw)
                status, code = r.status_code, r.json()["error"]["code"]
            took = time.monotonic() - t0
            ok = http.post("/v1/upscale", files={"image": ("g.png", good)}, data={"niqe": "false"}).status_code
            rows.append({"case": name, "status": status, "code": code, "seconds": round(took, 3), "next_good": ok})
    return rows


def _oversized(url: str, size: int) -> tuple[int, str]:
    """(status, error code) of an upload announcing ``size`` bytes, of which only the first 64 KiB are sent."""
    import socket

    host, port = url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(f"POST /v1/upscale HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: multipart/form-data; "
                  f"boundary=b\r\nContent-Length: {size}\r\n\r\n".encode() + b"\0" * 65536)  # fmt: skip
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = s.recv(65536)
            if not chunk:
                break
            reply += chunk
    body = json.loads(reply.split(b"\r\n\r\n", 1)[1])
    return int(reply.split()[1]), body["error"]["code"]


def _bomb(w: int, h: int) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(b"\0" * (w + 1)) for _ in range(16)) + comp.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=100, help="concurrent requests per round (100)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", type=int, default=256, help="square input side for the load rounds (256)")
    ap.add_argument("--overhead-size", type=int, default=512)
    ap.add_argument("--overhead-repeats", type=int, default=3)
    ap.add_argument("--time-limit", type=float, default=3600.0, help="seconds per round at most")
    ap.add_argument("--skip", default="", help="comma-separated phases to skip: load, overhead, bad")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("server_args", nargs="*", help="extra san-serve flags after --, e.g. -- --workers-queue 32")
    args = ap.parse_args()
    if args.clients < 1 or args.clients > 1000:
        ap.error("--clients must be 1..1000")
    skip = set(filter(None, args.skip.split(",")))
    results: dict = {"machine": {"cpus": os.cpu_count(), "load_avg_start": os.getloadavg()},
                     "args": {**vars(args), "json": str(args.json) if args.json else None}}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(args.server_args, Path(tmp) / "server.log")
        try:
            if "load" not in skip:
                data = test_image(args.size, args.size)
                rows = []
                print(f"load: {args.clients} concurrent {args.size}x{args.size} requests x {args.rounds} rounds")
                print(f"{'round':>5} {'ok':>4} {'err':>4} {'429':>5} {'wall s':>7} {'req/s':>6} {'p50 s':>7} "
                      f"{'p95 s':>7} {'peak RSS MB':>12} {'RSS after MB':>13}")  # fmt: skip
                for k in range(args.rounds):
                    row = load_round(server, data, args.clients, args.time_limit)
                    rows.append(row)
                    print(f"{k + 1:>5} {row['ok']:>4} {row['errors']:>4} {row['rejected_429']:>5} {row['wall_s']:>7} "
                          f"{row['throughput_rps']:>6} {row['p50_s']:>7} {row['p95_s']:>7} {row['peak_rss_mb']:>12} "
                          f"{row['rss_after_mb']:>13}", flush=True)  # fmt: skip
                    for sample in row["error_samples"]:
                        print(f"      error: {sample}")
                results["load"] = rows
            if "overhead" not in skip:
                o = overhead(server, test_image(args.overhead_size, args.overhead_size, 3), args.overhead_repeats)
                results["overhead"] = o
                print(f"overhead at {args.overhead_size}x{args.overhead_size}: latency {o['latency_s']} s, model "
                      f"{o['model_s']} s (decode {o['decode_s']} s, encode {o['encode_s']} s): server overhead "
                      f"{o['overhead_s']} s = {o['overhead_pct']}% of the model time", flush=True)  # fmt: skip
            if "bad" not in skip:
                results["bad"] = bad_inputs(server)
                for r in results["bad"]:
                    print(f"bad input {r['case']:<20} -> {r['status']} {r['code']:<24} in {r['seconds']} s; "
                          f"next good request {r['next_good']}")  # fmt: skip
        finally:
            server.stop()
    results["machine"]["load_avg_end"] = os.getloadavg()
    print(f"load average (1, 5, 15 min) at start {results['machine']['load_avg_start']}, at end "
          f"{results['machine']['load_avg_end']} on {os.cpu_count()} CPUs")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
