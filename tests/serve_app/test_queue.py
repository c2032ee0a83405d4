"""One inference at a time: the bounded queue (429 + Retry-After), cancellation between tiles (DELETE, a
client that disconnects), shutdown. The network is the tiny test model behind a gate the test opens forward
by forward, so a job is held on the device at a known tile."""

from __future__ import annotations

import socket
import time

from .conftest import files_under, live_server, png_bytes, smooth_image


def wait_for(cond, what: str, limit: float = 30.0):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def post_job(c, seed: int = 0, size=(20, 20), **data):
    return c.post("/v1/jobs", files={"image": ("p.png", png_bytes(smooth_image(*size, seed)))},
                  data={"niqe": "false", **data})  # fmt: skip


def test_queue_limit_gives_429_with_retry_after_then_admits_again(make_client, gated):
    up, gate = gated
    c = make_client(up=up, queue_size=2)
    first = post_job(c, 1).json()["id"]
    second = post_job(c, 2).json()["id"]
    wait_for(lambda: gate.forwards == 1, "the first job on the device")
    assert c.get(f"/v1/jobs/{first}").json()["state"] == "running"
    assert c.get(f"/v1/jobs/{second}").json()["state"] == "queued"  # one inference at a time
    full = post_job(c, 3)
    assert full.status_code == 429 and full.json()["error"]["code"] == "queue_full"
    assert int(full.headers["retry-after"]) >= 1
    sync = c.post("/v1/upscale", files={"image": ("p.png", png_bytes(smooth_image(20, 20)))})
    assert sync.status_code == 429  # the same queue
    assert "san_serve_queue_depth 2" in c.get("/metrics").text
    gate.allow(2)
    wait_for(lambda: c.get(f"/v1/jobs/{second}").json()["state"] == "done", "the second job")
    assert c.get(f"/v1/jobs/{first}").json()["state"] == "done"
    gate.allow(1)
    assert post_job(c, 4).status_code == 202
    assert len([p for p in files_under(c.app.state.runner.root) if "out" in p.parts]) <= 3


def test_delete_cancels_a_running_job_between_tiles(make_client, gated):
    up, gate = gated
    c = make_client(up=up)
    job = post_job(c, 5, size=(90, 90), tile="32").json()  # 4 x 4 = 16 tiles
    total = job["progress"]["tiles_total"]
    assert total == 16
    gate.allow(3)
    wait_for(lambda: c.get(f"/v1/jobs/{job['id']}").json()["progress"]["tiles_done"] == 3, "three tiles")
    wait_for(lambda: gate.forwards == 4, "the fourth tile waiting on the device")
    gate.allow(1)  # the tile in progress completes; the job stops before the next one
    r = c.delete(f"/v1/jobs/{job['id']}")
    assert r.json() == {"id": job["id"], "state": "cancelled"}
    view = c.get(f"/v1/jobs/{job['id']}").json()
    assert view["state"] == "cancelled" and view["progress"]["tiles_done"] <= 4 < total
    assert gate.forwards <= 5  # no more forwards after the cancel
    assert not (c.app.state.runner.root / job["id"]).exists()
    res = c.get(f"/v1/jobs/{job['id']}/result")
    assert res.status_code == 409 and res.json()["error"]["code"] == "cancelled"
    # a queued job is cancelled before it reaches the device
    gate.allow(1000)


def test_a_client_that_disconnects_cancels_its_job(gated, tmp_path):
    """POST /v1/upscale, then the client goes away while its job is on the device: the job is cancelled
    within a tile and its files are removed (a real uvicorn on a loopback port)."""
    import httpx

    from serve_app import ServeSettings, create_app

    up, gate = gated
    app = create_app(ServeSettings(temp_parent=tmp_path), up, log=lambda m: None)
    with live_server(app) as url:
        port = int(url.rsplit(":", 1)[1])
        req = httpx.Request("POST", f"{url}/v1/upscale", files={"image": ("p.png", png_bytes(smooth_image(90, 90)))},
                            data={"tile": "32", "niqe": "false"})  # fmt: skip
        body = req.read()
        head = "".join(f"{k}: {v}\r\n" for k, v in req.headers.items())
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(f"POST /v1/upscale HTTP/1.1\r\n{head}\r\n".encode() + body)
        runner = app.state.runner
        wait_for(lambda: gate.forwards == 1, "the job on the device")
        (job,) = runner.jobs.values()
        gate.allow(1)
        wait_for(lambda: job.tiles_done == 1, "one tile")
        sock.close()  # the client goes away
        time.sleep(0.3)
        gate.allow(1)  # the tile in progress ends; the job must stop there
        wait_for(lambda: job.ended, "the job to end")
        assert job.state == "cancelled" and job.tiles_done <= 2 < job.tiles_total == 16
        assert gate.forwards <= 3
        wait_for(lambda: not files_under(runner.root), "its files to go")
        assert httpx.get(f"{url}/healthz").status_code == 200


def test_shutdown_cancels_jobs_and_removes_every_file(make_client, gated):
    up, gate = gated
    c = make_client(up=up)
    job = post_job(c, 6, size=(90, 90), tile="32").json()
    root = c.app.state.runner.root
    wait_for(lambda: gate.forwards == 1, "the job on the device")
    assert root.is_dir() and files_under(root)
    gate.allow(1)
    c.__exit__(None, None, None)  # lifespan shutdown
    assert not root.exists()
    assert c.app.state.runner.jobs[job["id"]].state == "cancelled"
