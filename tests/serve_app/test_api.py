"""san-serve's HTTP API on the tiny test model: every endpoint, the same bytes as sr-infer, metrics, the
token and the guards (images and models are made by the tests)."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
import torch
from PIL import Image

from .conftest import png_bytes, smooth_image


def upscale(client, data: bytes, name: str = "photo.png", headers=None, **fields):
    files = {"image": (name, data, "application/octet-stream")}
    if "reference" in fields:
        files["reference"] = ("ref.png", fields.pop("reference"), "image/png")
    return client.post("/v1/upscale", files=files, data={k: str(v) for k, v in fields.items()}, headers=headers)


def test_health_models_docs_and_openapi_work_offline(make_client):
    c = make_client()
    assert c.get("/healthz").json() == {"status": "ok", "auth": False, "synthesis": False}
    m = c.get("/v1/models").json()
    assert m["upscale"]["name"] == "tiny-test" and m["upscale"]["scale"] == 4
    assert m["upscale"]["precision"] == "fp32" and "niqe" in m["upscale"]["metrics"]
    assert m["synthesize"]["loaded"] is False and "--translate-weights" in m["synthesize"]["how"]
    assert m["limits"]["queue_size"] == 16
    docs = c.get("/docs").text
    assert "/docs-assets/swagger-ui-bundle.js" in docs and "cdn" not in docs.lower()  # no CDN: works offline
    assert c.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    paths = c.get("/openapi.json").json()["paths"]
    for p in ("/v1/upscale", "/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/result", "/v1/synthesize",
              "/v1/models", "/healthz", "/metrics"):  # fmt: skip
        assert p in paths
    page = c.get("/")
    assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]
    for f in ("index.html", "app.js", "style.css"):  # the page loads nothing from elsewhere
        text = c.get("/" if f == "index.html" else f"/static/{f}").text
        assert not re.search(r"(src|href)=\"(https?:)?//|url\((https?:)?//|import .* from \"http", text), f


@pytest.mark.parametrize("case", ["rgba", "gray16", "jpeg_exif_icc"])
def test_upscale_writes_exactly_what_sr_infer_writes(make_client, tiny_model, tmp_path, case):
    """The server goes through sr-infer's prepare / upscale / finish: the same bytes for the same file
    (alpha, 16-bit gray, JPEG with EXIF orientation and an ICC profile), and nothing left behind."""
    from sr_app.cli import infer_main

    if case == "rgba":
        arr = smooth_image(40, 52, 1, channels=4)
        arr[:10, :, 3] = 0
        data, name = png_bytes(arr), "a.png"
    elif case == "gray16":
        arr = (smooth_image(44, 36, 2, channels=1)[..., 0].astype(np.uint16) * 257) + 3
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG")  # mode I;16
        data, name = buf.getvalue(), "g.png"
    else:
        from PIL import ImageCms

        icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
        exif = Image.Exif()
        exif[0x0112] = 6  # rotate 90 degrees on display
        exif[0x010F] = "TestCam"
        data = png_bytes(smooth_image(30, 46, 3), format="JPEG", quality=92, exif=exif.tobytes(), icc_profile=icc)
        name = "j.jpg"
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / name).write_bytes(data)
    assert infer_main(["-i", str(tmp_path / "in" / name), "-o", str(tmp_path / "out"), "--weights", str(tiny_model),
                       "--precision", "fp32", "--device", "cpu", "--no-niqe"]) == 0  # fmt: skip
    expected = next((tmp_path / "out").iterdir())
    c = make_client(temp_parent=tmp_path)
    r = upscale(c, data, name, niqe="false")
    assert r.status_code == 200, r.text
    assert r.content == expected.read_bytes()
    stem = name.rsplit(".", 1)[0]
    assert f'filename="{stem}_x4{expected.suffix}"' in r.headers["content-disposition"]
    job = c.get(f"/v1/jobs/{r.headers['x-job-id']}").json()
    assert job["state"] == "done" and job["size_out"] == "x".join(map(str, Image.open(expected).size))
    assert not [p for p in (tmp_path).glob("san-serve-*/**/*") if p.is_file()]  # the result was removed after sending


def test_metrics_headers_match_gan_core_metrics(make_client, upscaler):
    """NIQE without a reference; PSNR-Y / SSIM-Y against a reference of the output's size equal the values
    of gan_core.metrics on the returned image."""
    from gan_core.metrics import psnr, ssim

    c = make_client()
    data = png_bytes(smooth_image(80, 80, 5))  # NIQE needs outputs of some size (320 x 320 here)
    r = upscale(c, data)
    assert r.status_code == 200 and float(r.headers["x-metric-niqe"]) > 0
    out = np.asarray(Image.open(io.BytesIO(r.content)), dtype=np.float32) / 255
    ref = smooth_image(320, 320, 6)
    r2 = upscale(c, data, reference=png_bytes(ref), niqe="false")
    assert r2.status_code == 200 and "x-metric-niqe" not in r2.headers
    t = torch.from_numpy(out).permute(2, 0, 1)
    tr = torch.from_numpy(ref.astype(np.float32) / 255).permute(2, 0, 1)
    assert float(r2.headers["x-metric-psnr-y"]) == pytest.approx(float(psnr(t, tr, 4)), abs=1e-3)
    assert float(r2.headers["x-metric-ssim-y"]) == pytest.approx(float(ssim(t, tr, 4)), abs=1e-3)
    job = c.get(r2.headers["link"].split(">")[0][1:]).json()
    assert set(job["metrics"]) >= {"psnr_y", "ssim_y"} and job["timings"]["model"] > 0
    # a reference of another size is refused before any upscaling
    bad = upscale(c, data, reference=png_bytes(smooth_image(100, 100, 7)))
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "reference_size"
    assert "100x100 but the output will be 320x320" in bad.json()["error"]["message"]


def test_outscale_format_and_tile_options(make_client):
    c = make_client()
    data = png_bytes(smooth_image(40, 60, 8))
    r = upscale(c, data, outscale=2, format="jpg", tile=32, niqe="false")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(r.content)).size == (120, 80)
    job = c.get(f"/v1/jobs/{r.headers['x-job-id']}").json()
    assert job["tile"] == 32 and job["progress"]["tiles_total"] == job["progress"]["tiles_done"] > 1


def test_jobs_progress_result_bicubic_delete_and_expiry(make_client, tmp_path):
    c = make_client(result_ttl=0.3)
    r = c.post("/v1/jobs", files={"image": ("p.png", png_bytes(smooth_image(70, 50, 9)))}, data={"tile": "32"})
    assert r.status_code == 202 and r.headers["location"] == f"/v1/jobs/{r.json()['id']}"
    job_id = r.json()["id"]
    job = _wait_done(c, job_id)
    assert job["progress"]["tiles_done"] == job["progress"]["tiles_total"] == 6  # 3 x 2 tiles of 32 (overlap 8)
    res = c.get(f"/v1/jobs/{job_id}/result")
    assert res.status_code == 200 and Image.open(io.BytesIO(res.content)).size == (200, 280)
    bic = c.get(f"/v1/jobs/{job_id}/bicubic")
    assert bic.status_code == 200 and Image.open(io.BytesIO(bic.content)).size == (200, 280)
    folder = c.app.state.runner.root / job_id
    assert folder.is_dir()
    # expiry: record and files go; the id then answers 410
    c.app.state.runner.sweep(now=job["finished"] + 1)
    assert not folder.exists()
    gone = c.get(f"/v1/jobs/{job_id}")
    assert gone.status_code == 410 and gone.json()["error"]["code"] == "expired"
    assert c.get(f"/v1/jobs/{job_id}/result").status_code == 410
    assert c.get("/v1/jobs/0123456789abcdef").status_code == 404
    # DELETE of a finished job removes it at once
    job2 = c.post("/v1/jobs", files={"image": ("q.png", png_bytes(smooth_image(20, 20, 1)))}).json()["id"]
    _wait_done(c, job2)
    assert c.delete(f"/v1/jobs/{job2}").json() == {"id": job2, "state": "deleted"}
    assert c.get(f"/v1/jobs/{job2}").status_code == 410
    assert not (c.app.state.runner.root / job2).exists()


def _wait_done(c, job_id: str, states=("done", "failed", "cancelled")) -> dict:
    import time

    for _ in range(2000):
        job = c.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in states:
            return job
        time.sleep(0.01)
    raise AssertionError(f"job {job_id} did not end: {job}")


def test_token_is_required_when_set(make_client):
    c = make_client(token="s3cret-token")
    assert c.get("/healthz").json()["auth"] is True  # liveness stays open, and tells the page to ask
    r = c.get("/v1/models")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert r.json()["error"]["code"] == "unauthorized" and "missing" in r.json()["error"]["message"]
    wrong = c.get("/v1/models", headers={"Authorization": "Bearer nope-nope"})
    assert wrong.status_code == 401 and "wrong" in wrong.json()["error"]["message"]
    assert c.get("/metrics").status_code == 401
    assert upscale(c, png_bytes(smooth_image(16, 16))).status_code == 401
    ok = {"Authorization": "Bearer s3cret-token"}
    assert c.get("/v1/models", headers=ok).status_code == 200
    assert upscale(c, png_bytes(smooth_image(16, 16)), headers=ok, niqe="false").status_code == 200


def test_host_allow_list_and_cross_origin_posts_are_refused(make_client):
    c = make_client(allowed_hosts=("127.0.0.1", "localhost"))
    r = c.get("/healthz", headers={"Host": "attacker.example:8000"})
    assert r.status_code == 421 and r.json()["error"]["code"] == "wrong_host"
    assert c.get("/healthz", headers={"Host": "localhost:8000"}).status_code == 200
    files = {"image": ("p.png", png_bytes(smooth_image(16, 16)))}
    evil = c.post("/v1/upscale", files=files, headers={"Host": "127.0.0.1:8000", "Origin": "http://evil.example"})
    assert evil.status_code == 403 and evil.json()["error"]["code"] == "cross_origin"
    same = c.post("/v1/upscale", files=files, data={"niqe": "false"},
                  headers={"Host": "127.0.0.1:8000", "Origin": "http://127.0.0.1:8000"})  # fmt: skip
    assert same.status_code == 200


def test_metrics_endpoint_counts_requests_errors_and_queue(make_client):
    c = make_client()
    assert upscale(c, png_bytes(smooth_image(16, 16)), niqe="false").status_code == 200
    assert upscale(c, b"hello, not an image").status_code == 415
    c.get("/v1/jobs/ffff")
    text = c.get("/metrics").text
    assert 'san_serve_requests_total{method="POST",route="/v1/upscale",status="200"} 1' in text
    assert 'san_serve_requests_total{method="POST",route="/v1/upscale",status="415"} 1' in text
    assert 'san_serve_requests_total{method="GET",route="/v1/jobs/{job_id}",status="404"} 1' in text
    assert 'san_serve_errors_total{code="not_an_image"} 1' in text
    assert 'san_serve_jobs_total{kind="upscale",state="done"} 1' in text
    assert "san_serve_queue_depth 0" in text and "san_serve_queue_capacity 16" in text
    buckets = [
        int(v)
        for v in re.findall(r'san_serve_request_duration_seconds_bucket\{route="/v1/upscale",le="[^"]+"\} (\d+)', text)
    ]
    assert buckets == sorted(buckets) and buckets[-1] == 2  # cumulative, +Inf holds both
    assert re.search(r"^process_resident_memory_bytes [1-9]\d+$", text, re.M)


def test_unknown_paths_and_methods_are_json_errors(make_client):
    c = make_client()
    r = c.get("/v2/nothing")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = c.put("/v1/models")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
