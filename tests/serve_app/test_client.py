"""``serve_app.client.ServeClient`` against the real app (FastAPI's TestClient is the httpx.Client it uses) on
the tiny test model: the same bytes as the raw API, metrics and timings, jobs with progress, errors as
``ServeError``, the token, a full queue. Images and the model are made by the tests."""

from __future__ import annotations

import io
import threading

import pytest
from PIL import Image

from .conftest import png_bytes, smooth_image

pytest.importorskip("httpx")


def client_for(c, **kw):
    from serve_app.client import ServeClient

    return ServeClient(http=c, **kw)


def test_upscale_returns_the_apis_bytes_with_metrics_and_timings(make_client, tmp_path):
    c = make_client()
    src = tmp_path / "photo.png"
    src.write_bytes(png_bytes(smooth_image(72, 64, 3)))
    raw = c.post("/v1/upscale", files={"image": ("photo.png", src.read_bytes())})
    assert raw.status_code == 200
    with client_for(c) as sc:
        out = sc.upscale(src)
        assert out.content == raw.content  # the server's file, untouched
        assert out.filename == "photo_x4.png" and out.media_type == "image/png"
        assert Image.open(io.BytesIO(out.content)).size == (256, 288)
        assert set(out.metrics) == {"NIQE"} and out.metrics["NIQE"] > 0
        assert out.job_id and out.timings["model"] > 0
        ref = png_bytes(smooth_image(288, 256, 4))
        measured = sc.upscale(src.read_bytes(), name="p.png", reference=ref, niqe=False, format="jpg")
        assert measured.filename == "p_x4.jpg" and measured.media_type == "image/jpeg"
        assert set(measured.metrics) == {"PSNR-Y", "SSIM-Y"}
        assert 0 < measured.metrics["PSNR-Y"] < 100 and -1 <= measured.metrics["SSIM-Y"] <= 1


def test_jobs_progress_result_and_delete(make_client):
    from serve_app.client import ServeError

    c = make_client()
    with client_for(c) as sc:
        job = sc.submit(png_bytes(smooth_image(64, 64, 5)), name="big.png", tile=32, niqe=False)
        seen = []
        view = sc.wait(job, poll=0.02, timeout=60, on_progress=lambda j: seen.append(j["progress"]))
        assert view["state"] == "done" and view["progress"]["tiles_done"] == view["progress"]["tiles_total"] > 1
        assert seen[-1]["fraction"] == 1.0
        result = sc.result(job)
        assert result.filename == "big_x4.png" and Image.open(io.BytesIO(result.content)).size == (256, 256)
        assert sc.cancel(job) == "deleted"
        with pytest.raises(ServeError) as e:
            sc.job(job)
        assert (e.value.status, e.value.code) == (410, "expired")  # deleted: its files are gone
        with pytest.raises(ServeError) as e:
            sc.job("0" * 24)
        assert (e.value.status, e.value.code) == (404, "not_found")


def test_errors_become_serve_errors_with_the_servers_reason(make_client):
    from serve_app.client import ServeError

    with client_for(make_client()) as sc:
        with pytest.raises(ServeError) as e:
            sc.upscale(b"just some text, not pixels\n" * 20, name="notes.txt")
        assert (e.value.status, e.value.code) == (415, "not_an_image") and "notes.txt" in e.value.message
        with pytest.raises(ServeError) as e:
            sc.upscale(png_bytes(smooth_image(16, 16)), tile=5)
        assert e.value.status == 422 and "tile" in e.value.message
        with pytest.raises(ServeError) as e:
            sc.synthesize(png_bytes(smooth_image(16, 16, channels=1)[..., 0]))
        assert (e.value.status, e.value.code) == (503, "synthesis_unavailable")
        assert "--translate-weights" in e.value.message


def test_token(make_client):
    from serve_app.client import ServeError

    c = make_client(token="s3cret-token")
    with client_for(c) as sc:
        assert sc.health()["auth"] is True
        with pytest.raises(ServeError) as e:
            sc.models()
        assert (e.value.status, e.value.code) == (401, "unauthorized")
    with client_for(c, token="s3cret-token") as sc:
        assert sc.models()["upscale"]["name"] == "tiny-test"


def test_full_queue_is_retried_after_retry_after_or_reported(make_client, gated):
    from serve_app.client import ServeError

    up, gate = gated
    c = make_client(up=up, queue_size=1)
    with client_for(c, retries=0) as sc:
        held = sc.submit(png_bytes(smooth_image(20, 20, 1)), niqe=False)
        with pytest.raises(ServeError) as e:
            sc.upscale(png_bytes(smooth_image(20, 20, 2)), niqe=False)
        assert (e.value.status, e.value.code) == (429, "queue_full")
    results = []
    with client_for(c, retries=30) as sc:
        worker = threading.Thread(target=lambda: results.append(sc.upscale(png_bytes(smooth_image(20, 20, 2)),
                                                                             niqe=False)))  # fmt: skip
        worker.start()
        gate.allow(2)  # the held job ends; the retried request gets the device after its Retry-After
        worker.join(60)
        assert sc.wait(held, poll=0.02, timeout=60)["state"] == "done"
    assert len(results) == 1 and Image.open(io.BytesIO(results[0].content)).size == (80, 80)
