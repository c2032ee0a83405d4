"""sr-infer / Upscaler: every kind of image, tiling, bad inputs, no data loss, metrics and reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gan_core.image_io import read_image, write_png16
from sr_app.cli import infer_main
from sr_app.infer import Upscaler, bleed_transparent

from .conftest import smooth_image


@pytest.fixture
def upscaler(tiny_model) -> Upscaler:
    return Upscaler.from_pretrained(tiny_model, device="cpu", precision="fp32")


def test_api_types_and_shapes(upscaler):
    pil = Image.fromarray(smooth_image(20, 24, 0))
    out = upscaler.upscale(pil)
    assert isinstance(out, Image.Image) and out.size == (96, 80) and out.mode == "RGB"
    arr = upscaler.upscale(smooth_image(10, 12, 1))
    assert arr.dtype == np.uint8 and arr.shape == (40, 48, 3)
    a16 = upscaler.upscale(smooth_image(10, 12, 1).astype(np.uint16) * 257)
    assert a16.dtype == np.uint16
    t = upscaler.upscale(torch.rand(2, 3, 8, 9))
    assert t.shape == (2, 3, 32, 36) and t.dtype == torch.float32 and 0 <= float(t.min()) and float(t.max()) <= 1
    gray = upscaler.upscale(Image.fromarray(smooth_image(16, 16, 2)[..., 0]))
    assert gray.mode == "L" and gray.size == (64, 64)
    rgba = np.concatenate([smooth_image(16, 16, 3), np.full((16, 16, 1), 128, np.uint8)], axis=2)
    out = upscaler.upscale(Image.fromarray(rgba, "RGBA"))
    assert out.mode == "RGBA" and np.asarray(out)[..., 3].min() >= 127
    assert upscaler.upscale(pil, outscale=2).size == (48, 40)
    with pytest.raises(TypeError, match="cannot upscale"):
        upscaler.upscale("photo.png")


def test_tiled_equals_untiled_within_one_level(tiny_model):
    whole = Upscaler.from_pretrained(tiny_model, device="cpu", precision="fp32", tile=0)
    tiled = Upscaler.from_pretrained(tiny_model, device="cpu", precision="fp32", tile=48)
    px = smooth_image(150, 170, 5).astype(np.float32) / 255
    a = whole.upscale_array(px, np.uint8)
    b = tiled.upscale_array(px, np.uint8)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_bleed_keeps_visible_pixels():
    color = np.random.default_rng(0).random((10, 10, 3)).astype(np.float32)
    alpha = np.zeros((10, 10, 1), np.float32)
    alpha[3:7, 3:7] = 1
    out = bleed_transparent(color, alpha)
    np.testing.assert_array_equal(out[3:7, 3:7], color[3:7, 3:7])
    assert np.abs(out[0, 0] - color[3:7, 3:7].reshape(-1, 3).mean(0)).max() < 0.3  # filled from visible colours


def make_inputs(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(smooth_image(24, 20, 1)).save(folder / "photo.jpg", quality=95)
    rgba = np.concatenate([smooth_image(16, 16, 2), np.full((16, 16, 1), 200, np.uint8)], axis=2)
    Image.fromarray(rgba, "RGBA").save(folder / "logo.png")
    Image.fromarray(smooth_image(16, 16, 3)[..., 0]).save(folder / "gray.png")
    with open(folder / "deep.png", "wb") as f:
        write_png16(f, smooth_image(16, 16, 4).astype(np.uint16) * 257)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(smooth_image(12, 20, 5)).save(folder / "rotated.jpg", exif=exif.tobytes())
    Image.fromarray(smooth_image(16, 16, 6)).save(folder / "ünïcødé 图.png")
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.png").write_text("not an image")
    good = (folder / "photo.jpg").read_bytes()
    (folder / "cut.jpg").write_bytes(good[: len(good) // 3])
    Image.fromarray(smooth_image(130, 130, 7)).save(folder / "huge.png")
    (folder / "sub").mkdir()
    Image.fromarray(smooth_image(16, 16, 8)).save(folder / "sub" / "nested.webp")
    return folder


def test_cli_batch_of_every_kind(tmp_path, tiny_model, capsys):
    src = make_inputs(tmp_path / "in")
    out = tmp_path / "out"
    code = infer_main(["-i", str(src), "-o", str(out), "--weights", str(tiny_model), "--recursive", "--no-niqe",
                       "--max-pixels", "10000", "--report", str(tmp_path / "r.json")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1  # some inputs failed
    for name, reason in [("empty.png", "empty file"), ("notes.png", "not an image"), ("cut.jpg", "cut.jpg"),
                         ("huge.png", "exceeds the limit")]:  # fmt: skip
        assert any(name in line and reason in line for line in err.splitlines() if line.startswith("error")), name
    assert "7 written, 0 skipped, 4 failed" in err
    assert Image.open(out / "photo_out.jpg").size == (80, 96)
    logo = read_image(out / "logo_out.png")
    assert logo.channels == 4 and logo.size == (64, 64)
    assert read_image(out / "gray_out.png").channels == 1
    deep = read_image(out / "deep_out.png")
    assert deep.bit_depth == 16 and deep.channels == 3
    assert read_image(out / "rotated_out.jpg").size == (48, 80)  # EXIF rotation applied
    assert (out / "ünïcødé 图_out.png").is_file()
    assert (out / "sub" / "nested_out.webp").is_file()  # tree mirrored
    report = json.loads((tmp_path / "r.json").read_text())
    assert len(report["images"]) == 7 and len(report["failed"]) == 4
    assert not list(out.rglob("*.tmp"))


def test_cli_never_replaces_or_loses_files(tmp_path, tiny_model, capsys):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(smooth_image(16, 16, 1)).save(src / "a.png")
    Image.fromarray(smooth_image(16, 16, 2)).save(src / "a.jpg")  # same stem: same output name with --ext png
    args = ["-i", str(src), "-o", str(tmp_path / "o"), "--weights", str(tiny_model), "--no-niqe", "--ext", "png"]
    assert infer_main(args) == 1
    assert "is also the output of" in capsys.readouterr().err
    before = (tmp_path / "o" / "a_out.png").read_bytes()
    one = [args[0], str(src / "a.png"), *args[2:]]
    assert infer_main(one) == 1  # exists: refused
    assert "exists (use --overwrite" in capsys.readouterr().err
    assert (tmp_path / "o" / "a_out.png").read_bytes() == before
    assert infer_main([*one, "--skip-existing"]) == 0
    assert "skip:" in capsys.readouterr().err
    assert infer_main([*one, "--overwrite"]) == 0
    same = ["-i", str(src / "a.png"), "-o", str(src), "--suffix", "", "--weights", str(tiny_model), "--no-niqe"]
    assert infer_main(same) == 1 and "would replace an input" in capsys.readouterr().err
    assert infer_main(["-i", str(tmp_path / "nothing*.png"), "-o", str(tmp_path / "o2"), "--weights",
                       str(tiny_model)]) == 1  # fmt: skip
    assert "pattern matches no image" in capsys.readouterr().err


def test_cli_ref_metrics_table_and_csv(tmp_path, tiny_model, capsys):
    hr = tmp_path / "hr"
    lr = tmp_path / "lr"
    hr.mkdir(), lr.mkdir()
    for k in range(2):
        img = smooth_image(256, 256, 10 + k)
        Image.fromarray(img).save(hr / f"im{k}.png")
        Image.fromarray(img[::4, ::4]).save(lr / f"im{k}x4.png")  # EDSR-style names are matched too
    Image.fromarray(smooth_image(60, 60, 3)).save(hr / "bad.png")
    Image.fromarray(smooth_image(10, 10, 3)).save(lr / "bad.png")  # 40x40 output vs 60x60 reference
    code = infer_main(["-i", str(lr), "-o", str(tmp_path / "o"), "--weights", str(tiny_model), "--ref", str(hr),
                       "--report", str(tmp_path / "r.csv")])  # fmt: skip
    cap = capsys.readouterr()
    assert code == 1 and "reference" in cap.err and "is 60x60 but the output is 40x40" in cap.err
    lines = cap.out.strip().splitlines()
    assert lines[0].split()[:4] == ["image", "PSNR-Y", "SSIM-Y", "NIQE"] and lines[-1].startswith("mean")
    rows = (tmp_path / "r.csv").read_text().splitlines()
    assert rows[0].startswith("input,output,reference") and rows[-1].startswith("mean")


def test_niqe_skipped_above_its_size_limit(tmp_path, tiny_model, capsys):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(smooth_image(60, 60, 1)).save(src / "big.png")  # 240x240 = 0.058 MP out
    Image.fromarray(smooth_image(50, 50, 2)).save(src / "small.png")  # 200x200 = 0.04 MP out
    report = tmp_path / "r.json"
    args = ["-i", str(src), "-o", str(tmp_path / "o"), "--weights", str(tiny_model), "--report", str(report)]
    assert infer_main([*args, "--niqe-max-mp", "0.05"]) == 0
    err = capsys.readouterr().err
    assert "big.png: NIQE skipped: the output has 0.1 MP, above --niqe-max-mp 0.05" in err
    rows = {Path(r["input"]).name: r for r in json.loads(report.read_text())["images"]}
    assert "niqe" not in rows["big.png"] and rows["small.png"]["niqe"] > 0


def test_list_models_default_by_name_and_bad_model(tmp_path, tiny_model, monkeypatch, capsys):
    import hashlib
    import shutil

    wdir = tmp_path / "weights"
    wdir.mkdir()
    shutil.copy(tiny_model, wdir / "tiny.safetensors")
    shutil.copy(tiny_model.with_suffix(".json"), wdir / "tiny.json")
    entry = {
        "file": "tiny.safetensors",
        "sha256": hashlib.sha256(tiny_model.read_bytes()).hexdigest(),
        "size": tiny_model.stat().st_size,
        "kind": "model",
        "config": "tiny.json",
        "description": "test model",
    }
    (wdir / "manifest.json").write_text(json.dumps({"default_sr_model": "tiny", "weights": {"tiny": entry}}))
    monkeypatch.setenv("SAN_WEIGHTS_DIR", str(wdir))
    assert infer_main(["--list-models"]) == 0
    out = capsys.readouterr().out
    assert "* tiny" in out and "ok" in out and "(* = default)" in out
    src = tmp_path / "in.png"
    Image.fromarray(smooth_image(8, 8, 0)).save(src)
    assert infer_main(["-i", str(src), "-o", str(tmp_path / "o"), "--no-niqe"]) == 0  # the default model by name
    assert Image.open(tmp_path / "o" / "in_out.png").size == (32, 32)
    assert infer_main(["-i", "x.png", "-o", str(tmp_path), "--weights", str(tmp_path / "none.safetensors")]) == 2
    assert "cannot load the model" in capsys.readouterr().err


def test_sr_eval_protocol_and_outputs(tmp_path, tiny_model, shared_data, capsys):
    from sr_app.cli import eval_main

    code = eval_main(["--weights", str(tiny_model), "--data", str(shared_data / "sr" / "Set5"), "--out",
                      str(tmp_path / "ev"), "--precision", "fp32"])  # fmt: skip
    assert code == 0
    res = json.loads((tmp_path / "ev" / "results.json").read_text())
    set5 = res["datasets"]["Set5"]
    # the published MATLAB bicubic x4 on Set5 (Y, crop 4) is 28.42 dB
    assert set5["bicubic"]["psnr_y"] == pytest.approx(28.42, abs=0.02)
    assert {"psnr_y", "ssim_y", "niqe"} <= set(set5["model"]) and set5["count"] == 5
    assert "crop = scale" in res["protocol"]["psnr_ssim"]
    assert (tmp_path / "ev" / "perception_distortion.png").is_file()
    assert "| Set5 | bicubic |" in capsys.readouterr().out


def test_demo_runs_offline(tmp_path, tiny_model, capsys):
    from sr_app.demo import main, render_test_image

    img = render_test_image(96)
    assert img.shape == (96, 96, 3) and img.dtype == np.uint8 and img.std() > 20
    assert main(["--out", str(tmp_path / "demo"), "--model", str(tiny_model), "--size", "96"]) == 0
    for image in ("photo", "chart"):  # the bundled public-domain photo and the drawn chart
        names = {p.name for p in (tmp_path / "demo" / image).iterdir()}
        assert {"reference_hr.png", "input_lr.png", "bicubic_x4.png", "side_by_side.png"} <= names
    out = capsys.readouterr().out
    assert "bicubic" in out and "model" in out and "NIQE" in out


def test_san_weights_check_lists_everything(capsys):
    from gan_core.cli import weights_main

    weights_main(["check"])
    out = capsys.readouterr().out
    assert "niqe_live" in out and "vgg19" in out and "ok" in out


@pytest.mark.parametrize(
    ("channels", "dtype", "outscale"),
    [(3, np.uint8, None), (4, np.uint8, 2.5), (1, np.uint16, None), (2, np.uint8, 0.5), (3, np.float32, 3.0)],
)
def test_whole_image_on_the_device_equals_the_tiled_path(tiny_model, channels, dtype, outscale):
    """upscale_images (everything after decoding on the device, several images per forward) gives the
    values of the CPU path (one tile covering the image, alpha and resize on the host)."""
    up = Upscaler.from_pretrained(tiny_model, device="cpu", precision="fp32", max_batch=2)
    rng = np.random.default_rng(channels)
    noise = rng.normal(0, 0.02, (3, 20, 28, channels))
    imgs = [np.clip(smooth_image(20, 28, k)[..., :1].repeat(channels, 2) / 255 + noise[k], 0, 1).astype(np.float32)
            for k in range(3)]  # fmt: skip
    batched = up.upscale_images(imgs, dtype, outscale)
    assert len(batched) == 3
    for img, got in zip(imgs, batched, strict=True):
        ref = up._upscale_pixels(img, dtype, outscale, tile=64)  # one tile: the host path
        assert got.dtype == ref.dtype and got.shape == ref.shape == (*up.output_size(20, 28, outscale), channels)
        tol = 1e-5 if dtype == np.float32 else 1
        assert np.abs(got.astype(np.float64) - ref.astype(np.float64)).max() <= tol


def test_folder_with_several_images_per_forward_equals_one_at_a_time(tmp_path, tiny_model):
    from sr_app.batch import BatchOptions
    from sr_app.pipeline import run_batch

    src = tmp_path / "in"
    src.mkdir()
    for k in range(5):
        Image.fromarray(smooth_image(24, 20, k)).save(src / f"a{k}.png")
    Image.fromarray(smooth_image(16, 16, 9)).save(src / "b.png")  # another size: its own forward
    (src / "c.png").write_bytes(b"")  # a failure in the middle of the batch
    files = [(p, Path(".")) for p in sorted(src.iterdir())]
    results = {}
    for batch in (1, 3):
        up = Upscaler.from_pretrained(tiny_model, device="cpu", precision="fp32", max_batch=batch)
        seen: list[int] = []
        forward = up._forward
        up._forward = lambda x, fp32=False, f=forward, seen=seen: seen.append(x.shape[0]) or f(x, fp32)
        out = tmp_path / f"out{batch}"
        summary = run_batch(files, up, BatchOptions(outdir=out, niqe=False), lambda m: None)
        assert summary.done == 6 and [f for f, _ in summary.failed] == [str(src / "c.png")]
        assert [Path(r["input"]).name for r in summary.rows] == ["a0.png", "a1.png", "a2.png", "a3.png", "a4.png",
                                                                 "b.png"]  # input order  # fmt: skip
        results[batch] = {p.name: np.asarray(Image.open(p)) for p in out.iterdir()}
        assert max(seen) == batch  # batch 3: [3, 2, 1] or [3, 1, 1, 1] as decoding keeps up
    assert results[1].keys() == results[3].keys()
    for name in results[1]:
        assert np.abs(results[1][name].astype(int) - results[3][name].astype(int)).max() <= 1, name
