"""sr-infer's smaller frictions (default output folder, Real-ESRGAN's spellings, --quality) and sr-metrics.

Images and the model (``tiny_model``: a random-weight SRGenerator) are made by the tests themselves.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gan_core.image_io import read_image, write_image
from gan_core.metrics import psnr, ssim
from gan_core.metrics.lpips import lpips_available
from sr_app.cli import infer_main
from sr_app.metrics_cli import main as metrics_main
from sr_app.metrics_cli import reference_stems

from .conftest import smooth_image


def _lr_hr(root: Path, names=("a", "b")) -> tuple[Path, Path]:
    lr, hr = root / "lr", root / "hr"
    lr.mkdir(parents=True)
    hr.mkdir(parents=True)
    for k, name in enumerate(names):
        img = smooth_image(200, 208, 20 + k)  # NIQE needs 2x2 blocks of 96 px after the crop
        Image.fromarray(img).save(hr / f"{name}.png")
        Image.fromarray(img[::4, ::4]).save(lr / f"{name}.png")
    return lr, hr


def test_output_folder_defaults_to_results(tmp_path, tiny_model, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Image.fromarray(smooth_image(8, 8, 0)).save(tmp_path / "in.png")
    assert infer_main(["-i", "in.png", "--weights", str(tiny_model), "--no-niqe"]) == 0
    assert Image.open(tmp_path / "results" / "in_out.png").size == (32, 32)
    assert "output folder results" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        infer_main(["--weights", str(tiny_model)])
    assert info.value.code == 2 and "-i/--input is required" in capsys.readouterr().err


def test_real_esrgan_spellings_are_accepted(tmp_path, tiny_model, capsys):
    """inference_realesrgan.py's --model_path, --tile_pad, -s/--outscale, --suffix, -t, --fp32 do what ours do."""
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(smooth_image(40, 48, 1)).save(src / "x.png")
    theirs = ["-i", str(src), "-o", str(tmp_path / "a"), "--model_path", str(tiny_model), "-t", "32", "--tile_pad",
              "10", "--outscale", "2", "--suffix", "up", "--fp32", "--no-niqe"]  # fmt: skip
    ours = ["-i", str(src), "-o", str(tmp_path / "b"), "--weights", str(tiny_model), "-t", "32", "--tile-pad", "10",
            "-s", "2", "--suffix", "up", "--precision", "fp32", "--no-niqe"]  # fmt: skip
    assert infer_main(theirs) == 0 and infer_main(ours) == 0
    a, b = np.asarray(Image.open(tmp_path / "a" / "x_up.png")), np.asarray(Image.open(tmp_path / "b" / "x_up.png"))
    assert a.shape == (80, 96, 3) and np.array_equal(a, b)
    with pytest.raises(SystemExit) as info:
        infer_main([*ours, "-n", "srresnet-l1-x4"])
    assert info.value.code == 2 and "give --weights or -n/--model, not both" in capsys.readouterr().err


def test_real_esrgan_options_without_an_equivalent_say_why(tmp_path, tiny_model, capsys):
    base = ["-i", str(tmp_path), "--weights", str(tiny_model)]
    for extra, why in ((["--face_enhance"], "--face_enhance: Real-ESRGAN's GFPGAN face restoration is not part"),
                       (["-dn", "0.5"], "-dn: realesr-general-x4v3's blend of two weight files is not supported"),
                       (["--pre_pad", "10"], "--pre_pad: not needed: sr-infer pads every image and tile"),
                       (["--alpha_upsampler", "realesrgan"], "--alpha_upsampler realesrgan: alpha is always "
                        "upscaled by bicubic interpolation")):  # fmt: skip
        with pytest.raises(SystemExit) as info:
            infer_main([*base, *extra])
        err = capsys.readouterr().err.splitlines()
        assert info.value.code == 2 and err[-1].startswith(f"sr-infer: error: {why}"), err[-1]
    Image.fromarray(smooth_image(8, 8, 3)).save(tmp_path / "x.png")
    out = tmp_path / "o"
    assert infer_main([*base, "-o", str(out), "--alpha_upsampler", "bicubic", "--no-niqe"]) == 0  # what we do anyway
    assert (out / "x_out.png").is_file()


def test_quality_of_jpeg_and_webp_outputs(tmp_path, tiny_model, capsys):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(smooth_image(40, 40, 2)).save(src / "p.jpg", quality=95)
    sizes = {}
    for q in (30, 95):
        for ext in ("jpg", "webp"):
            out = tmp_path / f"q{q}"
            args = ["-i", str(src), "-o", str(out), "--weights", str(tiny_model), "--no-niqe", "--ext", ext]
            assert infer_main([*args, "--quality", str(q)]) == 0
            sizes[q, ext] = (out / f"p_out.{ext}").stat().st_size
    assert sizes[30, "jpg"] < sizes[95, "jpg"] and sizes[30, "webp"] < sizes[95, "webp"]
    for bad in ("0", "101", "high", "9.5"):
        with pytest.raises(SystemExit) as info:
            infer_main(["-i", str(src), "--weights", str(tiny_model), "--quality", bad])
        assert info.value.code == 2 and "--quality: " in capsys.readouterr().err
    with pytest.raises(ValueError, match="quality must be an integer from 1 to 100, got 0"):
        write_image(tmp_path / "x.jpg", np.zeros((4, 4, 3), np.float32), quality=0)
    assert not (tmp_path / "x.jpg").exists()


def test_reference_stems():
    assert reference_stems("baby_out") == ["baby_out", "baby"]
    assert reference_stems("baby_x4") == ["baby_x4", "baby"]
    assert reference_stems("babyx4_out") == ["babyx4_out", "babyx4", "baby"]
    assert reference_stems("img_up", suffix="up") == ["img_up", "img"]
    assert reference_stems("box") == ["box"]


def test_sr_metrics_gives_sr_infers_numbers_over_two_folders(tmp_path, tiny_model, capsys):
    """sr-infer --ref measures its outputs; sr-metrics over the outputs and the references, paired by stem
    (a_out -> a), gives the same PSNR / SSIM / NIQE, and they are gan_core.metrics' values."""
    lr, hr = _lr_hr(tmp_path, names=("a",))
    Image.fromarray(smooth_image(200, 208, 9)).save(hr / "b.png")  # a reference without a target: not an error
    out = tmp_path / "out"
    assert infer_main(["-i", str(lr), "-o", str(out), "--weights", str(tiny_model), "--ref", str(hr), "--report",
                       str(tmp_path / "infer.json"), "--precision", "fp32"]) == 0  # fmt: skip
    capsys.readouterr()
    report = tmp_path / "m.json"
    assert metrics_main(["-i", str(out), "-r", str(hr), "--crop-border", "4", "--report", str(report)]) == 0
    cap = capsys.readouterr()
    head = cap.out.splitlines()[0].split()
    assert head[:4] == ["image", "PSNR-Y", "SSIM-Y", "NIQE"] and cap.out.splitlines()[-1].startswith("mean")
    assert "sr-metrics: 1 measured, 0 failed" in cap.err
    if lpips_available():
        assert "LPIPS" in head
    else:  # without its AlexNet trunk: left out with one note saying how to get it
        notes = [line for line in cap.err.splitlines() if "LPIPS" in line and "metrics" not in line]
        assert notes == [
            "note: LPIPS skipped: its AlexNet trunk (alexnet-owt-7be5be79.pth) is not in weights/ or the torch "
            "hub cache (get it with: san-weights fetch alexnet)"
        ]
    by_infer = {Path(r["output"]).name: r for r in json.loads((tmp_path / "infer.json").read_text())["images"]}
    rows = json.loads(report.read_text())["images"]
    assert [Path(r["input"]).name for r in rows] == ["a_out.png"] and Path(rows[0]["reference"]).name == "a.png"
    for r in rows:
        mine = by_infer[Path(r["input"]).name]
        assert r["reference"] == mine["reference"]
        for k in ("psnr_y", "ssim_y", "niqe"):
            assert r[k] == pytest.approx(mine[k], abs=1e-9), k
        x = torch.from_numpy(read_image(r["input"]).pixels).permute(2, 0, 1)
        ref = torch.from_numpy(read_image(r["reference"]).pixels).permute(2, 0, 1)
        assert r["psnr_y"] == pytest.approx(float(psnr(x, ref, 4))) and r["ssim_y"] == pytest.approx(
            float(ssim(x, ref, 4))
        )
    # pyiqa's spelling, NIQE off, a CSV report
    assert metrics_main(["-t", str(out / "a_out.png"), "-r", str(hr), "--no-niqe", "--report",
                         str(tmp_path / "m.csv")]) == 0  # fmt: skip
    lines = (tmp_path / "m.csv").read_text().splitlines()
    assert lines[0] == "input,reference,size,psnr_y,ssim_y,lpips,niqe" and lines[-1].startswith("mean")


def test_sr_metrics_failures_are_one_line_each_and_the_others_measured(tmp_path, capsys):
    _, hr = _lr_hr(tmp_path, names=("a", "b", "c"))
    tgt = tmp_path / "tgt"
    tgt.mkdir()
    Image.fromarray(smooth_image(200, 208, 20)).save(tgt / "a_x4.png")  # pairs with a.png (sr-eval's name)
    Image.fromarray(smooth_image(50, 50, 1)).save(tgt / "b_out.png")  # another size than b.png
    Image.fromarray(smooth_image(200, 208, 1)).save(tgt / "zzz.png")  # no reference of that stem
    (tgt / "d.png").write_bytes(b"not an image")
    assert metrics_main(["-i", str(tgt), "-r", str(hr), "--no-niqe"]) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 3 and "sr-metrics: 1 measured, 3 failed" in err
    assert any("b_out.png: 50x50 but its reference" in e and "is 208x200" in e for e in errors)
    assert any("zzz.png: no reference in" in e and "with the stem 'zzz'" in e for e in errors)
    assert any("d.png" in e and "not an image" in e for e in errors)
    for argv, text in (([str(tgt), "-r", str(tmp_path / "none")], "reference folder not found"),
                       ([str(tgt), "--no-niqe"], "nothing to measure"),
                       ([str(tgt), "-r", str(hr), "--crop-border", "-1"], "--crop-border")):  # fmt: skip
        with pytest.raises(SystemExit) as info:
            metrics_main(["-i", *argv])
        assert info.value.code == 2 and text in capsys.readouterr().err
    assert metrics_main(["-i", str(tgt / "a_x4.png"), "-r", str(hr), "--crop-border", "100", "--no-niqe"]) == 1
    assert "is too small for --crop-border 100" in capsys.readouterr().err
