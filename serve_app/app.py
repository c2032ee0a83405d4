"""The san-serve FastAPI application: ``create_app(settings, upscaler, synthesizer)``.

Routes (all errors ``{"error": {"code", "message"}}``; OpenAPI page at ``/docs``, schema at ``/openapi.json``):

* ``GET /`` the web page (``static/``); ``GET /healthz`` liveness, no token needed;
* ``GET /metrics`` Prometheus text; ``GET /v1/models`` what is loaded and the limits;
* ``POST /v1/upscale`` an image in, the upscaled image out (metrics in ``X-Metric-*`` headers, the job's
  JSON at ``/v1/jobs/{id}`` until it expires); a client that goes away cancels its job;
* ``POST /v1/jobs`` the same as a job (202 + id); ``GET /v1/jobs/{id}`` state, tile progress, metrics;
  ``GET /v1/jobs/{id}/result``; ``GET /v1/jobs/{id}/bicubic`` (the input resized bicubic to the output's
  size, for comparisons); ``DELETE /v1/jobs/{id}`` cancels a job, or deletes a finished one;
* ``POST /v1/synthesize`` a label map (+ instance map) in, a street scene out (with ``--translate-weights``);
  ``POST /v1/labels/colorize`` the label map in the Cityscapes palette.

Guards: ``uploads.UploadGuard`` (content type, size, slow bodies), the bearer token when set (constant-time
comparison), a Host allow-list against DNS rebinding (set for loopback binds), and cross-origin POST /
DELETE refused (another site's page cannot make a visitor's browser use this server).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import tempfile
import time
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .config import ServeSettings
from .errors import ApiError, error_body, install_handlers
from .jobs import Job, JobRunner
from .metrics import Metrics
from .uploads import UploadGuard, client_name, save_upload
from .work import SynthesisService, UpscaleParams, UpscaleService, colorize_label_file

__all__ = ["create_app"]

STATIC = Path(__file__).parent / "static"
UPLOAD_ROUTES = {"/v1/upscale", "/v1/jobs", "/v1/synthesize", "/v1/labels/colorize"}
UPSCALE_FIELDS = ("image", "reference", "outscale", "format", "tile", "niqe")
SYNTH_FIELDS = ("label", "instance")
PAGE_CSP = ("default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
            "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")  # fmt: skip
SYNTH_HOWTO = ("synthesis is off: start san-serve with --translate-weights PATH, a translate-train checkpoint "
               "(e.g. runs/<name>/ckpt/best.pt from `translate-train -c configs/spade_paper.yaml ...`)")  # fmt: skip
BICUBIC_MAX_PIXELS = 16_000_000
UPSCALE_DOC = {
    "image": "the image: PNG, JPEG, WebP, BMP, TIFF, GIF (still); alpha, gray and 16-bit are kept",
    "reference": "optional high-resolution original of the output's size: PSNR-Y / SSIM-Y (and LPIPS)",
    "outscale": "final scale > 0 (default: the network's, x4)",
    "format": "output format: auto (the input's when it can be written, else PNG), png, jpg, webp",
    "tile": "tile size in input pixels: auto, 0 (whole image) or >= 32",
    "niqe": "measure NIQE (outputs up to --niqe-max-mp)",
}


class _Guards:
    """Pure ASGI middleware: request counting and timing, the Host allow-list, cross-origin refusals,
    security headers."""

    def __init__(self, app: ASGIApp, metrics: Metrics, allowed_hosts: tuple[str, ...] | None) -> None:
        self.app = app
        self.metrics = metrics
        self.allowed_hosts = {h.lower() for h in allowed_hosts} if allowed_hosts else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        refusal = None
        if self.allowed_hosts is not None and _host_name(host) not in self.allowed_hosts:
            refusal = (421, "wrong_host", f"Host {host!r} is not served here (this server answers "
                       f"{', '.join(sorted(self.allowed_hosts))}; a DNS-rebinding guard)")  # fmt: skip
        elif scope["method"] not in ("GET", "HEAD", "OPTIONS") and headers.get("origin"):
            origin = urlsplit(headers["origin"]).netloc.lower()
            if origin != host.lower():
                refusal = (403, "cross_origin", f"requests from the page of {headers['origin']} are refused")

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                h = MutableHeaders(scope=message)
                h.setdefault("X-Content-Type-Options", "nosniff")
                h.setdefault("Referrer-Policy", "no-referrer")
                if scope["path"] == "/" or scope["path"].startswith("/static/"):
                    h.setdefault("Content-Security-Policy", PAGE_CSP)
            await send(message)

        try:
            if refusal is not None:
                self.metrics.error(refusal[1])
                await JSONResponse(error_body(*refusal[1:]), refusal[0])(scope, receive, send_wrapper)
            else:
                await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            self.metrics.request(scope["method"], getattr(route, "path", "unmatched"), status,
                                 time.perf_counter() - t0)  # fmt: skip


def _host_name(host: str) -> str:
    """The name of a Host header without its port ("[::1]:8000" -> "::1", "localhost:80" -> "localhost")."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _parse_tile(value: str) -> int | None:
    if value in ("", "auto"):
        return None
    try:
        tile = int(value)
    except ValueError:
        tile = -1
    if tile < 0 or 0 < tile < 32:
        msg = f"tile: must be auto, 0 (no tiling) or an integer >= 32, got {value!r}"
        raise ApiError(422, "invalid_parameter", msg)
    return tile


async def _check_fields(request: Request, allowed: tuple[str, ...], files: tuple[str, ...]) -> None:
    """422 for form fields the endpoint does not take, or a file field given twice."""
    form = await request.form()
    unknown = sorted({k for k in form.keys() if k not in allowed})
    if unknown:
        raise ApiError(422, "unknown_field", f"unknown field(s) {', '.join(map(repr, unknown))}; this endpoint "
                       f"takes {', '.join(allowed)}")  # fmt: skip
    for name in files:
        if len(form.getlist(name)) > 1:
            raise ApiError(422, "invalid_parameter", f"{name}: give one file, got {len(form.getlist(name))}")


async def _wait_or_cancel(request: Request, runner: JobRunner, job: Job) -> bool:
    """Wait for ``job`` to end; True if it did, False when the client disconnected first (the job is
    then cancelled: it stops within one tile and its files are removed)."""

    async def disconnected() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    watch = asyncio.create_task(disconnected())
    ended = asyncio.create_task(job.done.wait())
    try:
        await asyncio.wait({watch, ended}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
    if job.done.is_set():
        return True
    runner.cancel(job)
    ended.cancel()
    return False


def _job_error(job: Job) -> ApiError:
    err = job.error or {"code": "internal_error", "message": "the job failed"}
    status = 409 if err["code"] == "cancelled" else 500 if err["code"] in ("internal_error", "write_failed") else 422
    return ApiError(status, err["code"], err["message"])


def _metric_headers(job: Job) -> dict[str, str]:
    names = {"psnr_y": "PSNR-Y", "ssim_y": "SSIM-Y", "lpips": "LPIPS", "niqe": "NIQE"}
    h = {f"X-Metric-{names[k]}": f"{v:.4f}" for k, v in job.metrics.items() if k in names}
    h["X-Job-Id"] = job.id
    h["Link"] = f'</v1/jobs/{job.id}>; rel="describedby"'
    timing = ", ".join(f"{k};dur={v * 1000:.1f}" for k, v in job.timings.items())
    if timing:
        h["Server-Timing"] = timing
    return h


def create_app(settings: ServeSettings, upscaler, synthesizer=None, log=print) -> FastAPI:
    """The application for a loaded ``sr_app.infer.Upscaler`` (and optionally a
    ``translate_app.infer.Synthesizer``). Its job folder is made on startup and removed on shutdown."""
    metrics = Metrics(settings.queue_size)
    upscale_service = UpscaleService(upscaler, settings.max_pixels, settings.niqe_max_pixels, log)
    synth_service = SynthesisService(synthesizer, settings.max_pixels) if synthesizer is not None else None
    state: dict = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        root = Path(tempfile.mkdtemp(prefix="san-serve-", dir=settings.temp_parent))
        runner = JobRunner(root, settings.queue_size, settings.result_ttl, metrics)
        state["runner"] = app.state.runner = runner
        reaper = asyncio.create_task(runner.reap_forever())
        try:
            yield
        finally:
            reaper.cancel()
            await runner.close()

    try:
        from swagger_ui_bundle import swagger_ui_path  # offline API page (no CDN)
    except ImportError:
        swagger_ui_path = None

    app = FastAPI(
        title="san-serve",
        version="1",
        description="Upscaling (SAN-SRGAN / SRResNet) and label-to-image synthesis (SAN-SPADE) over HTTP. "
        'Errors are JSON `{"error": {"code", "message"}}`. With a token, send `Authorization: Bearer <token>`.',
        lifespan=lifespan,
        docs_url=None if swagger_ui_path else "/docs",
        redoc_url=None,
    )
    install_handlers(app, metrics.error)
    app.add_middleware(UploadGuard, max_bytes=settings.max_upload_bytes, multipart_paths=UPLOAD_ROUTES,
                       idle_timeout=settings.upload_idle_timeout, total_timeout=settings.upload_total_timeout,
                       on_error=metrics.error)  # fmt: skip
    app.add_middleware(_Guards, metrics=metrics, allowed_hosts=settings.allowed_hosts)
    app.state.settings = settings
    app.state.metrics = metrics

    if swagger_ui_path is not None:
        from fastapi.openapi.docs import get_swagger_ui_html

        app.mount("/docs-assets", StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

        @app.get("/docs", include_in_schema=False)
        async def docs() -> Response:
            return get_swagger_ui_html(openapi_url="/openapi.json", title="san-serve API",
                                       swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                       swagger_css_url="/docs-assets/swagger-ui.css",
                                       swagger_favicon_url="/docs-assets/favicon-32x32.png")  # fmt: skip

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    def runner() -> JobRunner:
        return state["runner"]

    async def authorized(request: Request) -> None:
        if settings.token is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(value.strip().encode(), settings.token.encode()):
            why = "missing" if not given else "wrong"
            raise ApiError(401, "unauthorized", f"a token is required ({why}): send 'Authorization: Bearer <token>'",
                           {"WWW-Authenticate": "Bearer"})  # fmt: skip

    auth = [Depends(authorized)]

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/healthz", summary="Liveness: the server answers; no token needed")
    async def healthz() -> dict:
        return {"status": "ok", "auth": settings.token is not None, "synthesis": synth_service is not None}

    @app.get("/metrics", dependencies=auth, response_class=PlainTextResponse,
             summary="Prometheus metrics: requests, latency, queue depth, errors")  # fmt: skip
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(runner().depth), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models", dependencies=auth, summary="The loaded models and the server's limits")
    async def models() -> dict:
        up = upscaler
        res = {"upscale": {"name": up.name, "scale": up.scale, "file": Path(up.source).name if up.source else "",
                           "sha256": up.sha256[:12], "device": str(up.device), "precision": up.precision_name,
                           "max_tile": upscale_service.max_tile,
                           "metrics": ["psnr_y", "ssim_y"] + (["lpips"] if upscale_service.lpips_fn else [])
                           + (["niqe"] if upscale_service.niqe_fn else [])},
               "synthesize": {"loaded": synth_service is not None},
               "limits": {"max_pixels": settings.max_pixels, "max_upload_mb": settings.max_upload_bytes / 2**20,
                          "niqe_max_mp": settings.niqe_max_pixels / 1e6, "queue_size": settings.queue_size,
                          "result_ttl_s": settings.result_ttl}}  # fmt: skip
        if synthesizer is not None:
            h, w = synthesizer.size
            res["synthesize"].update(name=Path(synthesizer.name).name, size=f"{w}x{h}",
                                     device=str(synthesizer.device), precision=synthesizer.precision_name)  # fmt: skip
        else:
            res["synthesize"]["how"] = SYNTH_HOWTO
        return res

    async def submit_upscale(request: Request, image: UploadFile, reference: UploadFile | None, outscale,
                             fmt: str, tile: str, niqe: bool) -> Job:  # fmt: skip
        await _check_fields(request, UPSCALE_FIELDS, ("image", "reference"))
        if outscale is not None and not (math.isfinite(outscale) and outscale > 0):
            raise ApiError(422, "invalid_parameter", f"outscale: must be a finite number > 0, got {outscale}")
        params = UpscaleParams(outscale, fmt, _parse_tile(tile), niqe)
        r = runner()
        job = r.create("upscale", client_name(image.filename))
        try:
            (job.folder / "in").mkdir()
            src = await run_in_threadpool(save_upload, image.file, job.folder / "in", "input", image.filename)
            ref = None
            if reference is not None:
                (job.folder / "ref").mkdir()
                ref = await run_in_threadpool(save_upload, reference.file, job.folder / "ref", "input",
                                              reference.filename or "reference.png")  # fmt: skip
                if ref.suffix == ".img":  # sr-infer matches references by known extensions
                    ref = ref.rename(ref.with_suffix(".png"))
        except BaseException:
            r._remove_files(job)
            raise
        job.payload = upscale_service.payload(src, ref, params)
        job.info["options"] = {"outscale": outscale, "format": fmt, "tile": tile, "niqe": niqe,
                               "reference": reference is not None}  # fmt: skip
        return await r.submit(job, upscale_service)

    @app.post("/v1/upscale", dependencies=auth, response_class=Response,
              summary="Upscale one image and return it (metrics in X-Metric-* headers)",
              responses={200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}}},
                         429: {"description": "queue full: retry after Retry-After seconds"}})  # fmt: skip
    async def upscale(
        request: Request,
        image: Annotated[UploadFile, File(description=UPSCALE_DOC["image"])],
        reference: Annotated[UploadFile | None, File(description=UPSCALE_DOC["reference"])] = None,
        outscale: Annotated[float | None, Form(description=UPSCALE_DOC["outscale"])] = None,
        format: Annotated[Literal["auto", "png", "jpg", "webp"], Form(description=UPSCALE_DOC["format"])] = "auto",
        tile: Annotated[str, Form(description=UPSCALE_DOC["tile"])] = "auto",
        niqe: Annotated[bool, Form(description=UPSCALE_DOC["niqe"])] = True,
    ) -> Response:
        r = runner()
        job = await submit_upscale(request, image, reference, outscale, format, tile, niqe)
        if not await _wait_or_cancel(request, r, job):
            return Response(status_code=499)  # nobody reads it
        if job.state != "done":
            raise _job_error(job)
        return FileResponse(job.result, media_type=job.media_type, filename=job.download_name,
                            headers=_metric_headers(job), background=BackgroundTask(r.discard_result, job))  # fmt: skip

    @app.post("/v1/jobs", dependencies=auth, status_code=202,
              summary="Start an upscale job (same fields as /v1/upscale); poll GET /v1/jobs/{id}")  # fmt: skip
    async def create_job(
        request: Request,
        image: Annotated[UploadFile, File(description=UPSCALE_DOC["image"])],
        reference: Annotated[UploadFile | None, File(description=UPSCALE_DOC["reference"])] = None,
        outscale: Annotated[float | None, Form(description=UPSCALE_DOC["outscale"])] = None,
        format: Annotated[Literal["auto", "png", "jpg", "webp"], Form(description=UPSCALE_DOC["format"])] = "auto",
        tile: Annotated[str, Form(description=UPSCALE_DOC["tile"])] = "auto",
        niqe: Annotated[bool, Form(description=UPSCALE_DOC["niqe"])] = True,
    ) -> JSONResponse:
        job = await submit_upscale(request, image, reference, outscale, format, tile, niqe)
        return JSONResponse(job.view(), 202, headers={"Location": f"/v1/jobs/{job.id}"})

    @app.get("/v1/jobs/{job_id}", dependencies=auth, summary="A job's state, tile progress, metrics")
    async def job_status(job_id: str) -> dict:
        return runner().get(job_id).view()

    @app.get("/v1/jobs/{job_id}/result", dependencies=auth, response_class=FileResponse,
             summary="A finished job's image (409 while it runs)")  # fmt: skip
    async def job_result(job_id: str) -> FileResponse:
        job = runner().get(job_id)
        if job.state in ("failed", "cancelled"):
            raise _job_error(job)
        if job.state != "done":
            raise ApiError(409, "not_ready", f"job {job_id} is {job.state} ({job.tiles_done}/{job.tiles_total} "
                           "tiles); poll GET /v1/jobs/{id} until its state is done")  # fmt: skip
        if job.result is None or not job.result.exists():
            raise ApiError(410, "expired", f"the result of job {job_id} was already delivered and removed")
        return FileResponse(job.result, media_type=job.media_type, filename=job.download_name,
                            headers=_metric_headers(job))  # fmt: skip

    @app.get("/v1/jobs/{job_id}/bicubic", dependencies=auth, response_class=Response,
             summary="The job's input resized bicubic to the output's size (PNG), for comparisons")  # fmt: skip
    async def job_bicubic(job_id: str) -> Response:
        job = runner().get(job_id)
        if job.kind != "upscale" or job.state != "done" or not (job.folder / "in").is_dir():
            raise ApiError(409, "not_ready", f"job {job_id} has no finished upscale to compare with")
        w, h = (int(x) for x in job.info["size_out"].split("x"))
        if w * h > BICUBIC_MAX_PIXELS:
            raise ApiError(413, "too_large", f"a bicubic preview of {w}x{h} is above {BICUBIC_MAX_PIXELS / 1e6:g} MP")
        src = next((job.folder / "in").iterdir())
        data = await run_in_threadpool(_bicubic_png, src, w, h)
        return Response(data, media_type="image/png")

    @app.delete("/v1/jobs/{job_id}", dependencies=auth, summary="Cancel a job, or delete a finished one")
    async def delete_job(job_id: str) -> dict:
        r = runner()
        job = r.get(job_id)
        if not job.ended:
            r.cancel(job)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(job.done.wait()), 30)
            return {"id": job_id, "state": job.state}
        r.forget(job)
        return {"id": job_id, "state": "deleted"}

    @app.post("/v1/synthesize", dependencies=auth, response_class=Response,
              summary="A street scene from a Cityscapes label map (+ instance map), with --translate-weights",
              responses={200: {"content": {"image/png": {}}}})  # fmt: skip
    async def synthesize(
        request: Request,
        label: Annotated[UploadFile, File(description="label-id PNG (Cityscapes ids 0..34, *_gtFine_labelIds.png)")],
        instance: Annotated[UploadFile | None, File(description="optional instance-id PNG of the same size")] = None,
    ) -> Response:
        await _check_fields(request, SYNTH_FIELDS, SYNTH_FIELDS)
        if synth_service is None:
            raise ApiError(503, "synthesis_unavailable", SYNTH_HOWTO)
        r = runner()
        job = r.create("synthesize", client_name(label.filename, "labels"))
        try:
            (job.folder / "in").mkdir()
            lab = await run_in_threadpool(save_upload, label.file, job.folder / "in", "label", label.filename)
            inst = None
            if instance is not None:
                inst = await run_in_threadpool(save_upload, instance.file, job.folder / "in", "instance",
                                               instance.filename)  # fmt: skip
        except BaseException:
            r._remove_files(job)
            raise
        job.payload = synth_service.payload(lab, inst)
        await r.submit(job, synth_service)
        if not await _wait_or_cancel(request, r, job):
            return Response(status_code=499)
        if job.state != "done":
            raise _job_error(job)
        return FileResponse(job.result, media_type="image/png", filename=job.download_name,
                            headers=_metric_headers(job), background=BackgroundTask(r.discard_result, job))  # fmt: skip

    @app.post("/v1/labels/colorize", dependencies=auth, response_class=Response,
              summary="A label map in the Cityscapes palette (PNG), at the synthesis model's size when loaded",
              responses={200: {"content": {"image/png": {}}}})  # fmt: skip
    async def colorize(request: Request, label: Annotated[UploadFile, File(description="label-id PNG")]) -> Response:
        await _check_fields(request, ("label",), ("label",))
        with tempfile.TemporaryDirectory(dir=runner().root) as tmp:
            path = await run_in_threadpool(save_upload, label.file, Path(tmp), "label", label.filename)
            size = synthesizer.size if synthesizer is not None else None
            shown = client_name(label.filename, "labels")
            data = await run_in_threadpool(colorize_label_file, path, shown, settings.max_pixels, size)
        return Response(data, media_type="image/png")

    return app


def _bicubic_png(src: Path, w: int, h: int) -> bytes:
    """PNG bytes of ``src`` resized to w x h with Pillow's bicubic filter (8-bit, alpha kept)."""
    import io

    from PIL import Image

    from gan_core.image_io import pixels_to_pil, read_image

    im = pixels_to_pil(read_image(src).pixels).resize((w, h), Image.BICUBIC)
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
