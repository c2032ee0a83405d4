"""sr-eval on imperfect folders: bad images listed and the rest evaluated, undefined NIQE left out, outputs
checked before any work and never replaced without --overwrite."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sr_app.cli import eval_main

from .conftest import write_images


def _strict_json(path: Path) -> dict:
    """JSON as the standard defines it: NaN / Infinity are refused."""

    def refuse(token: str):
        raise AssertionError(f"{path} holds {token}")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_bad_images_are_listed_and_the_rest_evaluated(tmp_path, tiny_model, capsys):
    mixed, broken = tmp_path / "mixed", tmp_path / "broken"
    write_images(mixed, [(44, 40), (48, 48)], seed=1)
    (mixed / "empty.png").write_bytes(b"")
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(mixed / "one.png")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(mixed / "small.png")  # below 2 * 4 + 11 px
    broken.mkdir()
    (broken / "empty.png").write_bytes(b"")
    out = tmp_path / "ev"
    args = ["--weights", str(tiny_model), "--data", str(mixed), str(broken), "--out", str(out), "--no-niqe"]
    assert eval_main(args) == 1
    err = capsys.readouterr().err
    res = _strict_json(out / "results.json")
    assert list(res["datasets"]) == ["mixed"] and res["datasets"]["mixed"]["count"] == 2
    assert [r["name"] for r in res["datasets"]["mixed"]["images"]] == ["img000", "img001"]
    failed = {(r["dataset"], Path(r["file"]).name): r["error"] for r in res["failed"]}
    assert failed.keys() == {("mixed", "empty.png"), ("mixed", "one.png"), ("mixed", "small.png"),
                             ("broken", "empty.png")}  # fmt: skip
    assert "too small: 16x16 px, the x4 metrics need at least 19x19" in failed["mixed", "small.png"]
    for r in res["failed"]:
        assert f"  failed: {r['file']}: {r['error']}" in err
    assert "sr-eval: 4 file(s) failed" in err and "Traceback" not in err

    nothing = ["--weights", str(tiny_model), "--data", str(broken), "--out", str(tmp_path / "none"), "--no-niqe"]
    assert eval_main(nothing) == 1
    assert "sr-eval: nothing to evaluate: all 1 file(s) failed" in capsys.readouterr().err
    assert not (tmp_path / "none" / "results.json").exists()


@pytest.mark.slow
def test_undefined_niqe_is_left_out_and_means_cover_what_exists(tmp_path, tiny_model, capsys):
    big, small = tmp_path / "big", tmp_path / "small"
    write_images(big, [(208, 208), (48, 40)], seed=2)  # NIQE (96x96 blocks after the crop) defined, and not
    write_images(small, [(40, 40)], seed=3)
    out = tmp_path / "ev"
    args = ["--weights", str(tiny_model), "--data", str(big), str(small), "--out", str(out), "--precision", "fp32"]
    assert eval_main(args) == 0
    captured = capsys.readouterr()
    res = _strict_json(out / "results.json")
    rows = res["datasets"]["big"]["images"]
    assert "niqe" in rows[0]["model"] and "niqe" not in rows[1]["model"]
    assert res["datasets"]["big"]["model"]["niqe"] == pytest.approx(rows[0]["model"]["niqe"])  # a mean of one
    assert math.isfinite(res["datasets"]["big"]["bicubic"]["niqe"])
    assert "niqe" not in res["datasets"]["small"]["model"] and "niqe" not in res["datasets"]["small"]["bicubic"]
    table = {line.split("|")[1].strip() + "/" + line.split("|")[2].strip(): line for line in captured.out.splitlines()}
    assert table["small/bicubic"].rstrip(" |").endswith("| -") and "nan" not in captured.out.lower()
    assert "NIQE undefined for 1 of 2 image(s)" in captured.err
    assert (out / "perception_distortion.png").is_file()  # drawn from the dataset that has NIQE


def test_outputs_are_checked_first_and_never_replaced(tmp_path, tiny_model, capsys):
    data = tmp_path / "val"
    write_images(data, [(40, 40)], seed=4)
    out = tmp_path / "ev"
    out.mkdir()
    base = ["--weights", str(tiny_model), "--data", str(data), "--out", str(out)]

    (out / "results.json").write_text("earlier results")
    assert eval_main(base) == 2
    assert f"sr-eval: {out / 'results.json'} exists (use --overwrite to replace it)" in capsys.readouterr().err
    assert (out / "results.json").read_text() == "earlier results" and not (out / "perception_distortion.png").exists()

    (out / "results.json").unlink()
    (out / "perception_distortion.png").write_bytes(b"earlier plot")
    assert eval_main(base) == 2 and "perception_distortion.png exists" in capsys.readouterr().err
    assert not (out / "results.json").exists()

    (out / "images" / "val").mkdir(parents=True)
    (out / "images" / "val" / "img000_x4.png").write_bytes(b"earlier image")
    assert eval_main([*base, "--no-niqe", "--save-images"]) == 2  # the plot is not written without NIQE
    assert "img000_x4.png exists (use --overwrite" in capsys.readouterr().err
    assert not (out / "results.json").exists()

    (tmp_path / "a-file").write_text("")
    assert eval_main([*base, "--json", str(tmp_path / "a-file" / "r.json")]) == 2
    assert "cannot create the folder of" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        eval_main([*base, "--data", str(data), str(data)])
    assert info.value.code == 2 and "two --data folders are named val" in capsys.readouterr().err

    assert eval_main([*base, "--no-niqe", "--save-images", "--overwrite"]) == 0
    assert _strict_json(out / "results.json")["datasets"]["val"]["count"] == 1
    assert Image.open(out / "images" / "val" / "img000_x4.png").size == (40, 40)  # the SR of its x4-smaller LR
    assert (out / "perception_distortion.png").read_bytes() == b"earlier plot"  # not an output of this run
    assert not list(out.rglob("*.tmp"))
