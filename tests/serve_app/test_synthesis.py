"""POST /v1/synthesize and /v1/labels/colorize on a translate-train checkpoint of 1 step on the tiny preset
(trained by the test on label maps it draws; its pictures mean nothing)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]


def write_frame(root: Path, split: str, city: str, frame: str, seed: int, size=(128, 256)) -> None:
    """Cityscapes-style label / instance / photo files: road, sky, building and three cars."""
    rng = np.random.default_rng(seed)
    H, W = size
    labels = np.full((H, W), 7, np.uint8)
    labels[: H // 3] = 23
    labels[H // 3 : H // 2, : W // 2] = 11
    inst = labels.astype(np.uint16).copy()
    for k in range(3):
        y, x = rng.integers(H // 2, H - 12), rng.integers(0, W - 24)
        labels[y : y + 10, x : x + 20] = 26
        inst[y : y + 10, x : x + 20] = 26000 + k
    gt, photos = root / "gtFine" / split / city, root / "leftImg8bit" / split / city
    gt.mkdir(parents=True, exist_ok=True)
    photos.mkdir(parents=True, exist_ok=True)
    Image.fromarray(labels, "L").save(gt / f"{frame}_gtFine_labelIds.png")
    Image.fromarray(inst).save(gt / f"{frame}_gtFine_instanceIds.png")
    Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(photos / f"{frame}_leftImg8bit.png")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> tuple[Path, Path]:
    """(a label map, the translate-train checkpoint of 1 step on configs/spade_tiny.yaml)."""
    from translate_app.cli import train_main

    root = tmp_path_factory.mktemp("city")
    write_frame(root, "train", "aachen", "aachen_000000_000019", 0)
    write_frame(root, "val", "frankfurt", "frankfurt_000000_000019", 10)
    run = tmp_path_factory.mktemp("run")
    code = train_main(["-c", str(REPO / "configs" / "spade_tiny.yaml"), "--data-root", str(root), "--set",
                       "loss.vgg_loss_weight=0", "--steps", "1", "--batch-size", "1", "--device", "cpu",
                       "--out", str(run)])  # fmt: skip
    assert code == 0
    return root / "gtFine" / "val" / "frankfurt" / "frankfurt_000000_000019_gtFine_labelIds.png", next(
        (run / "ckpt").glob("step_*.pt")
    )


@pytest.fixture(scope="module")
def synthesizer(checkpoint):
    from translate_app.infer import Synthesizer

    return Synthesizer.from_checkpoint(checkpoint[1], "cpu", "fp32")


def test_synthesize_returns_the_synthesizers_picture(make_client, checkpoint, synthesizer):
    from translate_app.data import colorize_labels, load_label_pair

    label = checkpoint[0]
    instance = Path(str(label).replace("labelIds", "instanceIds"))
    c = make_client(synthesizer=synthesizer)
    models = c.get("/v1/models").json()["synthesize"]
    assert models["loaded"] is True and models["size"] == "128x64"
    files = {"label": (label.name, label.read_bytes()), "instance": (instance.name, instance.read_bytes())}
    r = c.post("/v1/synthesize", files=files)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    assert 'filename="frankfurt_000000_000019_synth.png"' in r.headers["content-disposition"]
    got = np.asarray(Image.open(io.BytesIO(r.content)))
    labels, instances = load_label_pair(label, instance, synthesizer.size)
    expected = np.rint(synthesizer.synthesize(labels, instances) * 255).astype(np.uint8)
    np.testing.assert_array_equal(got, expected)
    col = c.post("/v1/labels/colorize", files={"label": (label.name, label.read_bytes())})
    assert col.status_code == 200
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(col.content))), colorize_labels(labels))
    assert c.app.state.runner.jobs  # the job record stays for its metrics and timings until it expires


def test_bad_label_maps_are_refused(make_client, checkpoint, synthesizer, tmp_path):
    label = checkpoint[0]
    c = make_client(synthesizer=synthesizer)
    bad = np.full((64, 128), 200, np.uint8)
    buf = io.BytesIO()
    Image.fromarray(bad, "L").save(buf, format="PNG")
    r = c.post("/v1/synthesize", files={"label": ("x_labelIds.png", buf.getvalue())})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_label_map"
    assert "x_labelIds.png: unexpected label value(s) [200]" in r.json()["error"]["message"]
    small = io.BytesIO()
    Image.fromarray(np.zeros((10, 10), np.uint16)).save(small, format="PNG")
    files = {"label": (label.name, label.read_bytes()), "instance": ("i.png", small.getvalue())}
    r = c.post("/v1/synthesize", files=files)
    assert r.status_code == 422 and "must describe the same pixels" in r.json()["error"]["message"]
    assert str(tmp_path) not in r.json()["error"]["message"]
    r = c.post("/v1/synthesize", files={"label": ("e.png", b"")})
    assert r.status_code == 400 and r.json()["error"]["code"] == "empty_file"
    r = c.post("/v1/synthesize", files={"label": ("t.txt", b"text")})
    assert r.status_code == 415 and r.json()["error"]["code"] == "not_an_image"
    r = c.post("/v1/synthesize", files={"labels": ("t.png", label.read_bytes())})
    assert r.status_code == 422 and r.json()["error"]["message"] == "label: required field missing"
    files = {"label": (label.name, label.read_bytes()), "colour": ("c.png", b"1")}
    r = c.post("/v1/synthesize", files=files)
    assert r.status_code == 422 and r.json()["error"]["code"] == "unknown_field"


def test_without_a_translate_model_synthesis_says_how_to_get_one(make_client, checkpoint):
    c = make_client()
    label = checkpoint[0]
    r = c.post("/v1/synthesize", files={"label": (label.name, label.read_bytes())})
    assert r.status_code == 503 and r.json()["error"]["code"] == "synthesis_unavailable"
    assert "--translate-weights" in r.json()["error"]["message"]
    col = c.post("/v1/labels/colorize", files={"label": (label.name, label.read_bytes())})
    assert col.status_code == 200 and Image.open(io.BytesIO(col.content)).size == (256, 128)  # its own size
