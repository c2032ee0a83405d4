"""Bad input never hurts san-serve: each case is a clear 4xx with its reason, the next good request works and
no file is left behind (files made by the tests; the tiny test model)."""

from __future__ import annotations

import io
import socket
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from .conftest import files_under, live_server, png_bytes, smooth_image

GOOD = png_bytes(smooth_image(24, 24, 1))


def bomb_png(w: int, h: int) -> bytes:
    """A valid gray PNG header for w x h pixels with a tiny zlib stream of zero rows (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(9)
    row = b"\x00" * (w + 1)
    idat = b"".join(comp.compress(row) for _ in range(64)) + comp.flush()  # only the start: enough to identify
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))  # fmt: skip


def animated_gif() -> bytes:
    frames = [Image.fromarray(smooth_image(16, 16, k)).convert("P") for k in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    return buf.getvalue()


def _image(data: bytes, name: str = "x.png") -> dict:
    return {"files": {"image": (name, data, "application/octet-stream")}}


# fmt: off
CASES = {
    "empty": (_image(b""), 400, "empty_file", "empty file"),
    "non-image": (_image(b"just some text, not pixels\n" * 20, "notes.txt"), 415, "not_an_image", "not an image"),
    "corrupt": (_image(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4), 415, "not_an_image", "x.png"),
    "truncated": (_image(png_bytes(smooth_image(64, 64, 2))[:700]), 422, "corrupt_image", "truncated"),
    "too many pixels": (_image(png_bytes(np.zeros((300, 400, 3), np.uint8))), 413, "too_many_pixels",
                        "400x300 = 0.1 MP exceeds the limit"),
    "decompression bomb": (_image(bomb_png(50_000, 50_000)), 413, "too_many_pixels", "decompression bomb"),
    "animated": (_image(animated_gif(), "a.gif"), 422, "animated_image", "animated GIF with 3 frames"),
    "output too large": ({**_image(GOOD), "data": {"outscale": "300"}}, 413, "output_too_large", "the output would"),
    "unknown field": ({**_image(GOOD), "data": {"scale": "2"}}, 422, "unknown_field", "unknown field(s) 'scale'"),
    "missing image": ({"files": {"picture": ("x.png", GOOD)}}, 422, "invalid_parameter", "image: required field"),
    "image as text": ({"data": {"image": "abc"}, "files": {"other": ("x", b"1")}}, 422, "invalid_parameter", "image"),
    "two images": ({"files": [("image", ("a.png", GOOD)), ("image", ("b.png", GOOD))]}, 422, "invalid_parameter",
                   "give one file"),
    "bad outscale": ({**_image(GOOD), "data": {"outscale": "nan"}}, 422, "invalid_parameter", "outscale"),
    "negative outscale": ({**_image(GOOD), "data": {"outscale": "-2"}}, 422, "invalid_parameter", "outscale"),
    "bad tile": ({**_image(GOOD), "data": {"tile": "7"}}, 422, "invalid_parameter", "tile: must be auto"),
    "tile above the budget": ({**_image(GOOD), "data": {"tile": "100000"}}, 422, "invalid_parameter", "limit"),
    "bad format": ({**_image(GOOD), "data": {"format": "gif"}}, 422, "invalid_parameter", "format"),
    "json body": ({"json": {"image": "aGVsbG8="}}, 415, "unsupported_media_type", "multipart/form-data"),
    "no content type": ({"content": b"raw bytes"}, 415, "unsupported_media_type", "no Content-Type"),
    "no boundary": ({"content": b"--x\r\ngarbage", "headers": {"Content-Type": "multipart/form-data"}}, 400,
                    "bad_multipart", "not valid multipart"),
    "garbage multipart": ({"content": b"--x\r\ngarbage",
                           "headers": {"Content-Type": "multipart/form-data; boundary=x"}}, 422, "invalid_parameter",
                          "image: required field missing"),
    "oversized body": ({**_image(b"\0" * 300_000)}, 413, "too_large", "above the limit of 0.25 MiB"),
    "oversized chunked": ({"content": iter([b"--b\r\n", b"\0" * 200_000, b"\0" * 200_000]),
                           "headers": {"Content-Type": "multipart/form-data; boundary=b"}}, 413, "too_large",
                          "above the limit"),
}
# fmt: on


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_a_clear_4xx_and_the_server_goes_on(make_client, tmp_path, name):
    kwargs, status, code, words = CASES[name]
    c = make_client(max_pixels=100_000, max_upload_bytes=256 * 1024)
    r = c.post("/v1/upscale", **kwargs)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code and words in err["message"], err
    assert "/san-serve-" not in err["message"] and str(tmp_path) not in err["message"]  # no private paths
    ok = c.post("/v1/upscale", **_image(GOOD), data={"niqe": "false"})
    assert ok.status_code == 200 and Image.open(io.BytesIO(ok.content)).size == (96, 96)
    assert files_under(c.app.state.runner.root) == []  # nothing left behind


def test_jobs_endpoint_refuses_bad_input_before_queueing(make_client):
    c = make_client()
    r = c.post("/v1/jobs", files={"image": ("e.png", b"")})
    assert r.status_code == 400 and r.json()["error"]["code"] == "empty_file"
    assert c.app.state.runner.jobs == {} and files_under(c.app.state.runner.root) == []


def _recv_all(sock: socket.socket, limit: float = 10) -> bytes:
    sock.settimeout(limit)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


def test_slow_upload_gets_408_while_others_are_served(upscaler, tmp_path):
    """A client that stops sending its body gets 408 after the idle timeout; meanwhile the server answers
    other requests (a real uvicorn on a loopback port)."""
    import httpx

    from serve_app import ServeSettings, create_app

    app = create_app(ServeSettings(upload_idle_timeout=0.5, temp_parent=tmp_path), upscaler, log=lambda m: None)
    with live_server(app) as url:
        port = int(url.rsplit(":", 1)[1])
        slow = socket.create_connection(("127.0.0.1", port))
        body = b'--b\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\n\r\n' + GOOD[:100]
        head = (f"POST /v1/upscale HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: multipart/form-data; "
                f"boundary=b\r\nContent-Length: {len(GOOD) + 500}\r\n\r\n").encode()  # fmt: skip
        slow.sendall(head + body)  # ... and nothing more
        t0 = time.monotonic()
        assert httpx.get(f"{url}/healthz").status_code == 200  # served while the slow upload waits
        reply = _recv_all(slow)
        slow.close()
        assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
        assert b'"code":"upload_timeout"' in reply and b"no data for 0.5 s" in reply
        assert time.monotonic() - t0 < 30
        r = httpx.post(f"{url}/v1/upscale", files={"image": ("x.png", GOOD)}, data={"niqe": "false"}, timeout=60)
        assert r.status_code == 200
        # the response's files are removed by a background task after its last byte is sent: wait for it
        end = time.monotonic() + 30
        while files_under(app.state.runner.root) and time.monotonic() < end:
            time.sleep(0.02)
        assert files_under(app.state.runner.root) == []
