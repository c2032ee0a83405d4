"""translate-infer / translate-eval hardening and the translate_app.infer API, on a 1-step tiny checkpoint."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from translate_app.cli import eval_main, infer_main, train_main

from .conftest import write_frame

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "spade_tiny.yaml"
FRAME = "frankfurt_000000_000019"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(Cityscapes root, translate-train checkpoint of 1 step on the tiny preset), made once per module."""
    root = tmp_path_factory.mktemp("city")
    for k in range(2):
        write_frame(root, "train", "aachen", f"aachen_00000{k}_000019", k)
        write_frame(root, "val", "frankfurt", f"frankfurt_00000{k}_000019", 10 + k)
    run = tmp_path_factory.mktemp("run")
    code = train_main(["-c", str(TINY), "--data-root", str(root), "--set", "loss.vgg_loss_weight=0", "--steps", "1",
                       "--batch-size", "1", "--device", "cpu", "--out", str(run)])  # fmt: skip
    assert code == 0
    return root, run / "ckpt" / "step_00000001.pt"


def labels_of(root: Path, frame: str = FRAME) -> Path:
    return root / "gtFine" / "val" / "frankfurt" / f"{frame}_gtFine_labelIds.png"


def infer(ckpt: Path, inputs: list, out: Path, *flags: str) -> int:
    return infer_main(["-i", *map(str, inputs), "-o", str(out), "--weights", str(ckpt), "--precision", "fp32", *flags])


def stderr_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


# -- case 22: the Python API ------------------------------------------------------------------------
def test_synthesizer_api_matches_the_cli(trained, tmp_path, capsys):
    from translate_app.data import load_label_pair, pair_instance_file
    from translate_app.infer import Synthesizer

    root, ckpt = trained
    syn = Synthesizer.from_checkpoint(ckpt, "cpu", "fp32")
    assert syn.size == (64, 128) and syn.precision_name == "fp32"
    lab = labels_of(root)
    labels, instances = load_label_pair(lab, pair_instance_file(lab), syn.size)
    rgb = syn.synthesize(labels, instances)
    assert rgb.shape == (64, 128, 3) and rgb.dtype == np.float32 and 0 <= rgb.min() and rgb.max() <= 1
    assert infer(ckpt, [lab], tmp_path) == 0
    written = np.asarray(Image.open(tmp_path / f"{FRAME}.png"), dtype=np.float32) / 255
    assert np.abs(written - rgb).max() <= 0.5 / 255 + 1e-6  # the CLI is this API plus 8-bit rounding
    # full-size ids are resized (nearest) exactly as the file loader does
    full = np.asarray(Image.open(lab)).astype(np.int64)
    full_inst = np.asarray(Image.open(pair_instance_file(lab))).astype(np.int64)
    assert full.shape == (128, 256)
    np.testing.assert_array_equal(syn.synthesize(full, full_inst), rgb)
    with pytest.raises(ValueError, match="label map is 256x128 but the instance map is 300x700"):
        syn.synthesize(full, np.zeros((700, 300), np.int64))
    with pytest.raises(ValueError, match=r"label ids must be in 0\.\.34"):
        syn.synthesize(np.full((4, 4), 35))


def test_non_finite_output_is_an_error_not_a_black_image(trained, tmp_path):
    from translate_app.infer import Synthesizer, load_generator

    G, cfg = load_generator(trained[1])
    with torch.no_grad():  # after the load-time check: a NaN reaches the output through the final tanh
        G.conv_img.bias.fill_(float("nan"))
    for precision in ("fp32", "bf16"):  # bf16 retries in fp32 first
        with pytest.raises(ValueError, match=r"non-finite values \(NaN/Inf\) even in fp32"):
            Synthesizer(G, cfg, "cpu", precision).synthesize(np.zeros((64, 128), np.int64))
    torch.save({**torch.load(trained[1], weights_only=True), "G": G.state_dict()}, tmp_path / "nan.pt")
    with pytest.raises(ValueError, match=r"nan\.pt: the generator has non-finite weights \(conv_img\.bias"):
        load_generator(tmp_path / "nan.pt")


# -- case 8: an instance map of another size ---------------------------------------------------------
def test_instance_map_of_another_size_is_a_per_file_error(trained, tmp_path, capsys):
    from translate_app.data import CityscapesDataset

    root, ckpt = trained
    src = tmp_path / "labels"
    src.mkdir()
    for frame in (FRAME, "frankfurt_000001_000019"):
        shutil.copy(labels_of(root, frame), src)
        inst = labels_of(root, frame).with_name(f"{frame}_gtFine_instanceIds.png")
        shutil.copy(inst, src)
    bad = src / f"{FRAME}_gtFine_instanceIds.png"
    Image.fromarray(np.zeros((700, 300), np.uint16)).save(bad)  # 300x700 beside a 256x128 label map
    out = tmp_path / "out"
    assert infer(ckpt, [src], out) == 1
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if x.startswith("error:"))
    assert f"{FRAME}_gtFine_labelIds.png" in line and "256x128" in line and "300x700" in line and str(bad) in line
    assert "1 written, 1 failed" in err  # the batch went on
    assert sorted(p.name for p in out.iterdir()) == ["frankfurt_000001_000019.png"]
    # the dataset (training, translate-eval) refuses the pair the same way
    city = tmp_path / "city"
    shutil.copytree(root, city)
    shutil.copy(bad, city / "gtFine" / "val" / "frankfurt")
    with pytest.raises(ValueError, match=r"256x128 but its instance map .* is 300x700"):
        CityscapesDataset(city, "val", (64, 128))[0]


# -- case 1: outputs are never replaced without --overwrite -------------------------------------------
def test_two_inputs_with_one_output_name_do_not_replace_each_other(trained, tmp_path, capsys):
    root, ckpt = trained
    a, b = tmp_path / "a", tmp_path / "b"
    for d, frame in ((a, FRAME), (b, "frankfurt_000001_000019")):
        d.mkdir()
        shutil.copy(labels_of(root, frame), d / "scene_labelIds.png")  # both give scene.png
    out = tmp_path / "out"
    assert infer(ckpt, [a, b], out, "--overwrite") == 1
    err = capsys.readouterr().err
    assert f"{b / 'scene_labelIds.png'}: output {out / 'scene.png'} is also the output of" in err
    assert "1 written, 1 failed" in err
    first = tmp_path / "first"
    assert infer(ckpt, [a], first) == 0
    assert (out / "scene.png").read_bytes() == (first / "scene.png").read_bytes()  # a's image, not b's


def test_output_that_appears_while_synthesizing_is_kept(trained, tmp_path):
    """Another process creates the output between the early exists-check and the final write (simulated by
    a generator that writes the file while it runs): the other file is kept, the input is a per-file error."""
    from translate_app.infer import InferOptions, Synthesizer, load_generator, run_batch

    root, ckpt = trained
    out = tmp_path / "out"
    out.mkdir()
    target = out / f"{FRAME}.png"

    class OtherRunWritesMeanwhile(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            if not target.exists():
                target.write_bytes(b"the other run's image")
            return self.inner(x)

    G, cfg = load_generator(ckpt)
    syn = Synthesizer(OtherRunWritesMeanwhile(G), cfg, "cpu", "fp32")
    logs: list[str] = []
    s = run_batch([labels_of(root)], syn, InferOptions(out), logs.append)
    assert s.written == [] and s.exit_code == 1
    assert s.failed[0][1].endswith(f"{target} appeared while this run was working (another run?); nothing replaced")
    assert target.read_bytes() == b"the other run's image"
    assert [p.name for p in out.iterdir()] == [target.name]  # no temporary left behind
    target.unlink()
    s = run_batch([labels_of(root)], syn, InferOptions(out, skip_existing=True), logs.append)
    assert (s.skipped, s.failed, s.exit_code) == (1, [], 0) and target.read_bytes() == b"the other run's image"
    s = run_batch([labels_of(root)], syn, InferOptions(out, overwrite=True), logs.append)
    assert len(s.written) == 1 and Image.open(target).size == (128, 64)


# -- cases 1 and 10: outputs checked before any work ---------------------------------------------------
def test_output_paths_are_checked_before_any_work(trained, tmp_path, fid_weights, capsys):
    root, ckpt = trained
    a_file = tmp_path / "not_a_folder"
    a_file.write_text("x")
    assert infer(ckpt, [labels_of(root)], a_file) == 2
    assert stderr_lines(capsys) == [f"translate-infer: {a_file} is not a folder"]

    reals = tmp_path / "reals"
    reals.mkdir()
    for k, p in enumerate(sorted((root / "leftImg8bit").rglob("*.png"))):
        Image.open(p).save(reals / f"{k}.png")
    base = ["--fake", str(reals), "--real", str(reals), "--fid-weights", str(fid_weights)]
    old_json, old_stats = tmp_path / "r.json", tmp_path / "s.npz"
    old_json.write_text("keep me")
    old_stats.write_bytes(b"keep me too")
    for flag, path in (("--json", old_json), ("--save-stats", old_stats)):
        assert eval_main([*base, flag, str(path)]) == 2
        captured = capsys.readouterr()
        assert captured.err.strip() == f"translate-eval: {path} exists (use --overwrite to replace it)"
        assert "FID" not in captured.out  # refused before any work
    gen_out = tmp_path / "gen"
    gen_out.mkdir()
    (gen_out / f"{FRAME}.png").write_bytes(b"an earlier image")
    gen = ["--weights", str(ckpt), "--data-root", str(root), "--fid-weights", str(fid_weights), "--out", str(gen_out)]
    assert eval_main(gen) == 2
    assert f"{gen_out / FRAME}.png exists" in capsys.readouterr().err
    assert (gen_out / f"{FRAME}.png").read_bytes() == b"an earlier image"
    assert old_json.read_text() == "keep me" and old_stats.read_bytes() == b"keep me too"


@pytest.mark.slow
def test_eval_overwrite_replaces_its_outputs(trained, tmp_path, fid_weights):
    root, _ = trained
    reals = tmp_path / "reals"
    reals.mkdir()
    for k, p in enumerate(sorted((root / "leftImg8bit").rglob("*.png"))):
        Image.open(p).save(reals / f"{k}.png")
    old_json, old_stats = tmp_path / "r.json", tmp_path / "s.npz"
    old_json.write_text("keep me")
    old_stats.write_bytes(b"keep me too")
    os.chmod(old_json, 0o640)
    args = ["--fake", str(reals), "--real", str(reals), "--fid-weights", str(fid_weights), "--json", str(old_json),
            "--save-stats", str(old_stats), "--overwrite"]  # fmt: skip
    assert eval_main(args) == 0
    assert abs(json.loads(old_json.read_text())["fid"]) < 1e-4 and zipfile.is_zipfile(old_stats)
    assert old_json.stat().st_mode & 0o777 == 0o640  # replaced, mode kept


# -- case 14: one-line errors for unusable checkpoints ------------------------------------------------
def test_unusable_checkpoints_are_one_line_exit_2(trained, tmp_path, fid_weights, capsys):
    root, ckpt = trained
    ck = torch.load(ckpt, weights_only=True)
    bad = {
        "missing.pt": None,
        "text.pt": b"not a checkpoint\n",
        "truncated.pt": ckpt.read_bytes()[: ckpt.stat().st_size // 2],
    }
    for name, data in bad.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
    torch.save({"format": "san-gan/sr-train/1", "config": {}, "G_ema": {}}, tmp_path / "sr_train.pt")
    torch.save({**ck, "config": {**ck["config"], "model": {**ck["config"]["model"], "ngf": 16}}}, tmp_path / "other.pt")
    marker = tmp_path / "code_ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"format": "san-gan/translate-train/1", "G": Payload()}, tmp_path / "pickle.pt")
    expect = {"missing.pt": "not found", "text.pt": "truncated or corrupt", "truncated.pt": "truncated or corrupt",
              "sr_train.pt": "is not a translate-train checkpoint (its format is 'san-gan/sr-train/1')",
              "other.pt": "the generator weights do not fit the network its config describes",
              "pickle.pt": "not a safe checkpoint"}  # fmt: skip
    for name, words in expect.items():
        path = tmp_path / name
        gen = ["--weights", str(path), "--data-root", str(root), "--fid-weights", str(fid_weights)]
        for tool in ("infer", "eval"):
            code = infer(path, [labels_of(root)], tmp_path / "out") if tool == "infer" else eval_main(gen)
            lines = stderr_lines(capsys)
            assert code == 2 and len(lines) == 1, (name, tool, lines)
            assert "cannot load" in lines[0] and words in lines[0] and "weights_only" not in lines[0]
    assert not marker.exists()
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


# -- case 12: stale temporaries ------------------------------------------------------------------------
def test_stale_temporaries_of_our_naming_are_removed_at_start(trained, tmp_path, capsys):
    root, ckpt = trained
    out = tmp_path / "out"
    out.mkdir()
    stale = out / f".{FRAME}.png.ab12cd34.san.tmp"  # what a run killed with SIGKILL leaves
    stale.write_bytes(b"partial")
    others = [out / ".notes.tmp", out / "keep.png.ab12cd34.san.tmp", out / "notes.txt"]
    for p in others:
        p.write_text("not ours")
    hour_ago = time.time() - 3600
    for p in (stale, *others):
        os.utime(p, (hour_ago, hour_ago))
    assert infer(ckpt, [labels_of(root)], out) == 0
    assert f"removed 1 unfinished temporary file(s) of an earlier run in {out}" in capsys.readouterr().err
    assert not stale.exists() and all(p.exists() for p in others) and (out / f"{FRAME}.png").is_file()
    json_dir = tmp_path / "reports"
    json_dir.mkdir()
    stale = json_dir / ".r.json.0123abcd.san.tmp"
    stale.write_text("{")
    os.utime(stale, (hour_ago, hour_ago))
    assert eval_main(["--fake", str(out), "--real", str(out), "--json", str(json_dir / "r.json"),
                      "--fid-weights", str(tmp_path / "none.pth")]) == 2  # fmt: skip
    assert not stale.exists()


# -- case 11: Ctrl-C -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_ctrl_c_finishes_the_current_file_and_lists_what_was_done(trained, tmp_path):
    root, ckpt = trained
    src = tmp_path / "labels"
    src.mkdir()
    for k in range(400):  # hard links: 400 distinct inputs, one label map
        os.link(labels_of(root), src / f"scene{k:03d}_labelIds.png")
    out = tmp_path / "out"
    code = "from translate_app.cli import infer_main; raise SystemExit(infer_main())"
    import translate_app

    code_root = Path(translate_app.__file__).resolve().parents[1]  # the code this test process imports
    env = dict(os.environ, PYTHONPATH=str(code_root), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-c", code, "-i", str(src), "-o", str(out), "--weights", str(ckpt), "--precision", "fp32"]
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600  # a guard against a hung test, not a timing assertion
    try:
        while not (out.is_dir() and any(p.suffix == ".png" for p in out.iterdir())):
            assert proc.poll() is None and time.time() < deadline, "no output appeared"
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    summary = next(line for line in err.splitlines() if "interrupted (SIGINT)" in line)
    done = [line.split(" -> ")[1] for line in err.splitlines() if line.startswith("  done: ")]
    present = sorted(str(p) for p in out.iterdir())  # no temporaries: the file in progress was finished
    assert sorted(done) == present and 0 < len(done) < 400
    assert f"{len(done)} written, 0 failed, {400 - len(done)} not processed" in summary
