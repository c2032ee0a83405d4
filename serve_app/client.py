"""A small Python client of san-serve's HTTP API (``httpx``, part of the ``serve`` extra).

    from serve_app.client import ServeClient

    with ServeClient("http://127.0.0.1:8000") as sc:              # token=... when the server has one
        out = sc.upscale("photo.jpg", niqe=True)                   # waits; retries a full queue (429)
        Path(out.filename).write_bytes(out.content)                # photo_x4.jpg, the server's bytes
        print(out.metrics)                                         # {"NIQE": 4.21} (PSNR-Y / SSIM-Y with reference=)
        job = sc.submit("big.png", tile=256)                       # a job: poll its tile progress
        sc.wait(job, on_progress=lambda j: print(j["progress"]["fraction"]))
        Path("big_x4.png").write_bytes(sc.result(job).content)

Images are given as a path or as bytes (then ``name`` is the file name the server sees: its extension and
the output name come from it). Every error of the server raises ``ServeError`` with its status, code and
message (``{"error": {"code", "message"}}``); a 429 (queue full) is retried after its ``Retry-After`` up to
``retries`` times first.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

__all__ = ["ServeClient", "ServeError", "ServeImage"]

ImageInput = str | Path | bytes


class ServeError(Exception):
    """A san-serve error answer: ``status`` (HTTP), ``code`` (e.g. ``"too_large"``), ``message`` (one line)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


@dataclass
class ServeImage:
    """An image the server returned: ``content`` (the encoded file), ``media_type`` (image/png, ...),
    ``filename`` (the server's download name, e.g. photo_x4.png), ``metrics`` from the ``X-Metric-*`` headers
    (``PSNR-Y``, ``SSIM-Y``, ``NIQE``, ``LPIPS`` when measured; floats), ``job_id``, ``timings`` (seconds from
    ``Server-Timing``: prepare, queue, model, finish)."""

    content: bytes
    media_type: str
    filename: str
    metrics: dict[str, float] = field(default_factory=dict)
    job_id: str = ""
    timings: dict[str, float] = field(default_factory=dict)


class ServeClient:
    """``ServeClient(url, token=None, timeout=600, retries=20)``; ``http`` replaces the ``httpx.Client`` (e.g.
    FastAPI's TestClient, which is one). Use it as a context manager or call ``close()``."""

    def __init__(self, url: str = "http://127.0.0.1:8000", token: str | None = None, timeout: float = 600.0,
                 retries: int = 20, http: httpx.Client | None = None) -> None:  # fmt: skip
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._own = http is None
        self.http = http if http is not None else httpx.Client(base_url=url.rstrip("/"), timeout=timeout)
        self.http.headers.update(headers)
        self.retries = retries

    def __enter__(self) -> ServeClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._own:
            self.http.close()

    # -- requests ------------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kw) -> httpx.Response:
        for attempt in range(self.retries + 1):
            r = self.http.request(method, path, **kw)
            if r.status_code != 429 or attempt == self.retries:
                break
            time.sleep(float(r.headers.get("retry-after", "1")))
        if r.status_code >= 400:
            try:
                err = r.json()["error"]
                raise ServeError(r.status_code, err["code"], err["message"])
            except (ValueError, KeyError, TypeError):
                raise ServeError(r.status_code, "http_error", r.text[:200] or r.reason_phrase) from None
        return r

    @staticmethod
    def _file(image: ImageInput, name: str | None, default: str) -> tuple[str, bytes]:
        if isinstance(image, bytes):
            return name or default, image
        path = Path(image)
        return name or path.name, path.read_bytes()

    @staticmethod
    def _image(r: httpx.Response) -> ServeImage:
        metrics = {k[len("x-metric-") :].upper(): float(v) for k, v in r.headers.items() if k.startswith("x-metric-")}
        timings = {}
        for part in filter(None, r.headers.get("server-timing", "").split(",")):
            key, _, dur = part.strip().partition(";dur=")
            timings[key] = float(dur) / 1000
        disposition = r.headers.get("content-disposition", "")
        filename = disposition.split("filename=", 1)[1].strip('"') if "filename=" in disposition else ""
        return ServeImage(r.content, r.headers.get("content-type", ""), filename, metrics,
                          r.headers.get("x-job-id", ""), timings)  # fmt: skip

    def _upscale_form(self, image, name, reference, outscale, format, tile, niqe) -> dict:
        files = {"image": self._file(image, name, "image.png")}
        if reference is not None:
            files["reference"] = self._file(reference, None, "reference.png")
        data = {"format": format, "tile": str(tile), "niqe": "true" if niqe else "false"}
        if outscale is not None:
            data["outscale"] = str(outscale)
        return {"files": files, "data": data}

    # -- the API -------------------------------------------------------------------------------------------

    def health(self) -> dict:
        """``GET /healthz``: {"status": "ok", "auth": bool, "synthesis": bool}."""
        return self._request("GET", "/healthz").json()

    def models(self) -> dict:
        """``GET /v1/models``: the loaded models (name, scale, device, precision, metrics) and the limits."""
        return self._request("GET", "/v1/models").json()

    def upscale(self, image: ImageInput, *, name: str | None = None, reference: ImageInput | None = None,
                outscale: float | None = None, format: str = "auto", tile: int | str = "auto",
                niqe: bool = True) -> ServeImage:  # fmt: skip
        """``POST /v1/upscale``: the upscaled image, as sr-infer writes it. ``format``: auto (as the input), png,
        jpg, webp; ``tile``: auto, 0 (whole image) or a side in pixels; ``reference``: the ground truth at the
        output's size (PSNR-Y / SSIM-Y)."""
        form = self._upscale_form(image, name, reference, outscale, format, tile, niqe)
        return self._image(self._request("POST", "/v1/upscale", **form))

    def submit(self, image: ImageInput, *, name: str | None = None, reference: ImageInput | None = None,
               outscale: float | None = None, format: str = "auto", tile: int | str = "auto",
               niqe: bool = True) -> str:  # fmt: skip
        """``POST /v1/jobs``: starts the same work as ``upscale`` and returns the job id at once."""
        form = self._upscale_form(image, name, reference, outscale, format, tile, niqe)
        return self._request("POST", "/v1/jobs", **form).json()["id"]

    def job(self, job_id: str) -> dict:
        """``GET /v1/jobs/{id}``: state (queued, running, encoding, done, failed, cancelled), progress
        (tiles_done, tiles_total, fraction), metrics, timings, error."""
        return self._request("GET", f"/v1/jobs/{job_id}").json()

    def wait(self, job_id: str, poll: float = 0.5, timeout: float | None = None,
             on_progress: Callable[[dict], None] | None = None) -> dict:  # fmt: skip
        """Polls the job until it has ended; returns its JSON. Raises ``ServeError`` when it failed or was
        cancelled, ``TimeoutError`` after ``timeout`` seconds (the job keeps running: ``cancel`` it)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            view = self.job(job_id)
            if on_progress is not None:
                on_progress(view)
            if view["state"] == "done":
                return view
            if view["state"] in ("failed", "cancelled"):
                err = view.get("error") or {"code": view["state"], "message": f"job {job_id} {view['state']}"}
                raise ServeError(409 if view["state"] == "cancelled" else 422, err["code"], err["message"])
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {view['state']} after {timeout} s")
            time.sleep(poll)

    def result(self, job_id: str) -> ServeImage:
        """``GET /v1/jobs/{id}/result``: the finished job's image (409 ``not_ready`` while it runs)."""
        return self._image(self._request("GET", f"/v1/jobs/{job_id}/result"))

    def cancel(self, job_id: str) -> str:
        """``DELETE /v1/jobs/{id}``: cancels a running job (returns its state, "cancelled") or deletes a finished
        one and its files ("deleted")."""
        return self._request("DELETE", f"/v1/jobs/{job_id}").json()["state"]

    def synthesize(self, label: ImageInput, instance: ImageInput | None = None) -> ServeImage:
        """``POST /v1/synthesize``: a street scene (PNG) from a Cityscapes label-id map (+ instance-id map);
        503 ``synthesis_unavailable`` when the server has no translate model."""
        files = {"label": self._file(label, None, "labels.png")}
        if instance is not None:
            files["instance"] = self._file(instance, None, "instance.png")
        return self._image(self._request("POST", "/v1/synthesize", files=files))
