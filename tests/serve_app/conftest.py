"""Fixtures for san-serve: a tiny SR model made by the tests (random weights: its numbers mean nothing), a
"gated" copy of it whose every forward waits for the test's go-ahead (to hold a job on the device at a known
tile), test clients, and a real uvicorn server on a free loopback port."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi", reason="san-serve needs the 'serve' extra: pip install -e '.[serve]'")


def smooth_image(h: int, w: int, seed: int = 0, channels: int = 3) -> np.ndarray:
    """(h, w, channels) uint8 with structure at several scales."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.zeros((h, w, channels))
    for c in range(channels):
        for _ in range(3):
            fy, fx, ph = rng.uniform(1, 8), rng.uniform(1, 8), rng.uniform(0, 6.3)
            img[..., c] += np.sin(2 * np.pi * (fy * yy + fx * xx) + ph)
    img = (img - img.min()) / (img.max() - img.min())
    return (img * 255).round().astype(np.uint8)


def png_bytes(arr: np.ndarray, **save) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=save.pop("format", "PNG"), **save)
    return buf.getvalue()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny SRGenerator (8 channels, 1 block, x4) with random weights, released like a real model
    (safetensors + JSON config) by the test itself."""
    from safetensors.torch import save_file

    from sr_app.models import SRGenerator

    folder = tmp_path_factory.mktemp("serve_model")
    torch.manual_seed(0)
    G = SRGenerator(channels=8, num_blocks=1, init_scale=0.1)
    save_file({k: v.half() for k, v in G.state_dict().items()}, str(folder / "tiny.safetensors"))
    config = {"architecture": "SRGenerator", "kwargs": {"channels": 8, "num_blocks": 1, "scale": 4}, "scale": 4,
              "name": "tiny-test"}  # fmt: skip
    (folder / "tiny.json").write_text(json.dumps(config))
    return folder / "tiny.safetensors"


@pytest.fixture(scope="session")
def upscaler(tiny_model):
    from sr_app.infer import Upscaler

    return Upscaler.from_pretrained(tiny_model, "cpu", "fp32")


class Gate(torch.nn.Module):
    """Wraps a network: each forward waits until the test calls ``allow(n)`` (a stand-in for a slow model,
    so a job can be held on the device at a known tile). ``forwards`` counts the ones that started."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net
        self.scale = net.scale
        self._sem = threading.Semaphore(0)
        self.forwards = 0

    def allow(self, n: int = 1) -> None:
        for _ in range(n):
            self._sem.release()

    def forward(self, x):
        self.forwards += 1
        if not self._sem.acquire(timeout=60):
            raise RuntimeError("gate not opened within 60 s")
        return self.net(x)


@pytest.fixture
def gated(tiny_model):
    """(Upscaler whose forwards wait for the gate, the Gate)."""
    from sr_app.infer import Upscaler, load_generator

    net, config = load_generator(tiny_model)
    gate = Gate(net)
    up = Upscaler(gate, config, "cpu", "fp32")
    yield up, gate
    gate.allow(1000)  # nothing stays blocked after the test


@pytest.fixture
def make_client(upscaler, tmp_path):
    """``make_client(upscaler=..., synthesizer=..., **settings)`` -> a started TestClient (closed after the test).
    Job folders go under the test's tmp_path, so the tests can look at what is left."""
    from fastapi.testclient import TestClient

    from serve_app import ServeSettings, create_app

    clients = []

    def make(up=None, synthesizer=None, **kw):
        kw.setdefault("temp_parent", tmp_path)
        app = create_app(ServeSettings(**kw), up or upscaler, synthesizer, log=lambda m: None)
        client = TestClient(app)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.__exit__(None, None, None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def live_server(app):
    """Run ``app`` on uvicorn in a thread on a free loopback port; yields the base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())
