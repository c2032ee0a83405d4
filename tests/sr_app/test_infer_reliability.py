"""sr-infer under concurrency, interruption and hostile input: nothing replaced, nothing lost, clear errors.

The concurrency, Ctrl-C and kill tests run real ``sr-infer`` processes (the code under test is the one this
test process imports, so ``PYTHONPATH`` decides which tree is tested).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import sr_app
from sr_app.batch import BatchOptions
from sr_app.cli import infer_main
from sr_app.infer import Upscaler
from sr_app.pipeline import run_batch

from .conftest import smooth_image

SR_INFER = "import sys; from sr_app.cli import infer_main; sys.exit(infer_main())"


def _env() -> dict:
    """The environment for a child sr-infer that imports the same sr_app as this test process."""
    root = str(Path(sr_app.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    """A real sr-infer process; ``cwd`` should hold no sr_app (``python -c`` puts it first on sys.path)."""
    return subprocess.Popen([sys.executable, "-c", SR_INFER, *args], env=_env(), cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def _written(stderr: str) -> int:
    return int(re.search(r"sr-infer: (\d+) written", stderr).group(1))


def _holds_open(pid: int, path_part: str) -> bool:
    """True when process ``pid`` has a file whose path contains ``path_part`` open (Linux /proc)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if path_part in os.readlink(f"/proc/{pid}/fd/{fd}"):
                return True
        except OSError:
            continue
    return False


def _wait_for(predicate, procs: list[subprocess.Popen], what: str):
    """Poll ``predicate`` until it returns something truthy; fail if every process exits first."""
    while True:
        found = predicate()
        if found:
            return found
        if all(p.poll() is not None for p in procs):
            outs = [p.communicate()[1][-2000:] for p in procs]
            pytest.fail(f"the process(es) ended before {what}: {outs}")
        time.sleep(0.002)


def _race(common: list[str], out: Path) -> dict[float, tuple[int, str]] | None:
    """Start a x4 and a x3 run together; pause both as soon as one is writing its output (past the
    exists-check, not finalised); let the other finish, then resume the paused one. Returns {scale:
    (exit code, stderr)} and the scale of the paused run, or None when the writer finished before it
    could be paused (a heavily loaded machine)."""
    runs = {4: _start([*common, "-s", "4"], out.parent), 3: _start([*common, "-s", "3"], out.parent)}
    try:
        temp = _wait_for(lambda: next(out.glob(".a_out.png.*"), None) if out.is_dir() else None,
                         list(runs.values()), "writing an output")  # fmt: skip
        for p in runs.values():
            os.kill(p.pid, signal.SIGSTOP)
        writing = [s for s, p in runs.items() if _holds_open(p.pid, temp.name)]
        order = [*writing[:1], *(s for s in runs if s not in writing[:1])][::-1]  # the paused one last
        results = {}
        for s in order:
            os.kill(runs[s].pid, signal.SIGCONT)
            results[s] = (runs[s].wait(timeout=300), runs[s].stderr.read())
    finally:
        for p in runs.values():
            if p.poll() is None:
                os.kill(p.pid, signal.SIGCONT)
                p.kill()
                p.wait()
            p.stdout.close()
            p.stderr.close()
    return (results, writing[0]) if writing else None


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux /proc to see who is writing")
def test_two_runs_into_one_folder_never_replace_each_other(tmp_path, tiny_model):
    """Two real runs on one input into one folder, x4 and x3 (outputs differ in size), started together.
    The one caught writing is paused until the other has finished: it must not replace the file."""
    Image.fromarray(smooth_image(300, 300, 1)).save(tmp_path / "a.png")
    for attempt in range(3):  # a retry only when the writer could not be caught before it finished
        out = tmp_path / f"out{attempt}"
        common = ["-i", str(tmp_path / "a.png"), "-o", str(out), "--weights", str(tiny_model), "--no-niqe",
                  "--precision", "fp32", "--device", "cpu"]  # fmt: skip
        raced = _race(common, out)
        if raced is not None:
            break
    else:
        pytest.fail("in 3 attempts, the writing run finished before it could be paused")
    results, paused = raced
    (other,) = [s for s in results if s != paused]
    (paused_code, paused_err), (other_code, other_err) = results[paused], results[other]
    assert other_code == 0 and "1 written, 0 skipped, 0 failed" in other_err, other_err
    assert paused_code == 1, paused_err
    assert "appeared while this run was working (another run?); nothing replaced" in paused_err
    assert "0 written, 0 skipped, 1 failed" in paused_err
    assert Image.open(out / "a_out.png").size == (300 * other, 300 * other)  # the finished run's file
    assert sorted(p.name for p in out.iterdir()) == ["a_out.png"]  # no temporaries left
    assert _written(paused_err) + _written(other_err) == 1


class _AnotherRunMeanwhile(Upscaler):
    """An Upscaler during whose work "another run" writes the output file this run is about to write."""

    other_output: Path

    def _upscale_pixels(self, *args, **kwargs):
        self.other_output.write_bytes(b"written by another run")
        return super()._upscale_pixels(*args, **kwargs)


@pytest.mark.parametrize("skip_existing", [False, True])
def test_output_appearing_during_the_work_is_never_replaced(tmp_path, tiny_model, skip_existing):
    Image.fromarray(smooth_image(16, 16, 1)).save(tmp_path / "a.png")
    up = _AnotherRunMeanwhile.from_pretrained(tiny_model, device="cpu", precision="fp32")
    up.other_output = tmp_path / "out" / "a_out.png"
    up.other_output.parent.mkdir()
    logs: list[str] = []
    opts = BatchOptions(outdir=tmp_path / "out", niqe=False, skip_existing=skip_existing)
    summary = run_batch([(tmp_path / "a.png", Path("."))], up, opts, logs.append)
    assert up.other_output.read_bytes() == b"written by another run"
    assert summary.done == 0 and not summary.rows
    if skip_existing:
        assert summary.skipped == 1 and not summary.failed
        assert any("appeared while this run was working" in line for line in logs)
    else:
        assert summary.skipped == 0 and len(summary.failed) == 1
        assert summary.failed[0][1].endswith("appeared while this run was working (another run?); nothing replaced")
    assert sorted(p.name for p in up.other_output.parent.iterdir()) == ["a_out.png"]


def _one_input(tmp_path: Path, size: int = 16) -> Path:
    src = tmp_path / "in"
    src.mkdir(exist_ok=True)
    Image.fromarray(smooth_image(size, size, 1)).save(src / "a.png")
    return src


def test_bad_report_path_is_a_usage_error_before_any_work(tmp_path, tiny_model, capsys):
    src = _one_input(tmp_path)
    out = tmp_path / "out"
    existing = tmp_path / "old.json"
    existing.write_text("{}")
    (tmp_path / "folder.json").mkdir()
    (tmp_path / "afile").write_text("")
    cases = [(existing, "exists (use --overwrite"), (tmp_path / "folder.json", "is a folder"),
             (tmp_path / "afile" / "r.json", "cannot create the folder")]  # fmt: skip
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        cases.append((locked / "r.json", "permission denied"))
    for report, reason in cases:
        with pytest.raises(SystemExit) as e:
            infer_main(["-i", str(src), "-o", str(out), "--weights", str(tiny_model), "--report", str(report)])
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and err[-1].startswith("sr-infer: error: --report: ") and reason in err[-1], err
        assert not out.exists()  # nothing was processed
    assert existing.read_text() == "{}"
    args = ["-i", str(src), "-o", str(out), "--weights", str(tiny_model), "--no-niqe", "--report", str(existing)]
    assert infer_main([*args, "--overwrite"]) == 0
    assert json.loads(existing.read_text())["images"][0]["output"] == str(out / "a_out.png")


def test_non_finite_model_output_is_a_per_file_error(tmp_path, tiny_model, capsys):
    """Finite float32 weights that overflow: the output is NaN even in fp32. No all-black image."""
    from safetensors.torch import load_file, save_file

    huge = tmp_path / "huge.safetensors"
    save_file({k: v.float() * 1e30 for k, v in load_file(str(tiny_model)).items()}, str(huge))
    huge.with_suffix(".json").write_text(tiny_model.with_suffix(".json").read_text())
    assert all(torch.isfinite(v).all() for v in load_file(str(huge)).values())
    src = _one_input(tmp_path)
    Image.fromarray(smooth_image(12, 12, 2)).save(src / "b.png")
    out = tmp_path / "out"
    for precision in ("auto", "fp32"):  # auto: the retry in fp32 is not finite either
        code = infer_main(["-i", str(src), "-o", str(out), "--weights", str(huge), "--no-niqe", "--precision",
                           precision])  # fmt: skip
        err = capsys.readouterr().err
        assert code == 1 and "0 written, 0 skipped, 2 failed" in err
        assert sum("not finite (NaN or Inf) even in fp32" in line for line in err.splitlines()
                   if line.startswith("error: ")) == 2  # fmt: skip
        assert not out.exists() or not any(out.iterdir())
    up = Upscaler.from_pretrained(huge, device="cpu", precision="fp32")
    with pytest.raises(RuntimeError, match="not finite"):
        up.upscale(smooth_image(8, 8, 3))


def _frames(n: int, size: int = 12) -> list[Image.Image]:
    return [Image.fromarray(smooth_image(size, size, k)) for k in range(n)]


def test_animated_and_multi_page_images_refused_still_gif_and_tiff_upscaled(tmp_path, tiny_model, capsys):
    src = tmp_path / "in"
    src.mkdir()
    frames = _frames(12)
    frames[0].save(src / "anim.gif", save_all=True, append_images=frames[1:], duration=40, loop=0)
    frames[0].save(src / "pages.tif", save_all=True, append_images=frames[1:3])
    frames[1].save(src / "still.gif")
    frames[2].save(src / "scan.tiff")
    for name in ("notes.txt", "layers.psd", "clip.mp4", "raw.heic"):
        (src / name).write_bytes(b"x")
    (src / "sub").mkdir()
    out = tmp_path / "out"
    code = infer_main(["-i", str(src), "-o", str(out), "--weights", str(tiny_model), "--no-niqe"])
    err = capsys.readouterr().err
    assert code == 1 and "2 written, 0 skipped, 2 failed" in err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert any("anim.gif: animated GIF with 12 frames: only still images" in line for line in errors), errors
    assert any("pages.tif: multi-page TIFF with 3 pages: only still images" in line for line in errors), errors
    assert Image.open(out / "still_out.png").size == (48, 48)  # GIF in, PNG out
    assert Image.open(out / "scan_out.tif").size == (48, 48)
    notes = [line for line in err.splitlines() if line.startswith("note: ")]
    assert f"note: {src}: 4 file(s) skipped, not of a type sr-infer reads" in err
    assert any("clip.mp4, layers.psd, notes.txt and 1 more" in line for line in notes), notes
    assert any("1 subfolder(s) not searched (use --recursive)" in line for line in notes), notes


@pytest.mark.parametrize(
    "bad",
    [["-s", "0"], ["-s=-2"], ["-s", "nan"], ["-s", "inf"], ["-s", "two"], ["--tile-pad", "-50"],
     ["--tile-pad", "2.5"], ["--max-pixels", "0"], ["--max-pixels", "-5"], ["--max-pixels", "nan"],
     ["--max-pixels", "inf"], ["--niqe-max-mp", "-1"], ["--niqe-max-mp", "inf"], ["-t", "abc"]],
)  # fmt: skip
def test_bad_numbers_are_one_line_usage_errors(tmp_path, tiny_model, capsys, bad):
    src = _one_input(tmp_path)
    with pytest.raises(SystemExit) as e:
        infer_main(["-i", str(src), "-o", str(tmp_path / "out"), "--weights", str(tiny_model), "--no-niqe", *bad])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("sr-infer: error: ")]
    assert e.value.code == 2 and len(errors) == 1 and "Traceback" not in err, err  # usage, then one error line
    assert not (tmp_path / "out").exists()


def test_output_size_bounded_by_max_pixels_before_upscaling(tmp_path, tiny_model, capsys):
    """--max-pixels 100 allows 10x10 inputs and outputs up to 100 x 4^2 = 1600 pixels."""
    src = _one_input(tmp_path, size=10)
    base = ["-i", str(src), "-o", str(tmp_path / "out"), "--weights", str(tiny_model), "--no-niqe"]
    assert infer_main([*base, "--max-pixels", "100", "-s", "5"]) == 1
    err = capsys.readouterr().err
    assert "the output would be 50x50 = 2,500 pixels, above the limit of 1,600 pixels (--max-pixels x 4^2)" in err
    assert not (tmp_path / "out" / "a_out.png").exists()
    assert infer_main([*base, "-s", "5000"]) == 1  # 50000x50000: refused before anything is allocated
    assert "the output would be 50000x50000 = 2,500.0 MP, above the limit of 1,600.0 MP" in capsys.readouterr().err
    assert infer_main([*base, "--max-pixels", "100", "-s", "4"]) == 0  # 40x40 = 1600: allowed
    assert Image.open(tmp_path / "out" / "a_out.png").size == (40, 40)


def test_api_refuses_bad_outscale_and_tile_pad(tiny_model):
    up = Upscaler.from_pretrained(tiny_model, device="cpu", precision="fp32")
    img = Image.fromarray(smooth_image(8, 8, 1))
    for bad in (0, -2, float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError, match="outscale must be a finite number > 0"):
            up.upscale(img, outscale=bad)
        with pytest.raises(ValueError, match="outscale must be a finite number > 0"):
            up.upscale(smooth_image(8, 8, 1), outscale=bad)
    assert up.upscale(img, outscale=2.5).size == (20, 20)
    with pytest.raises(ValueError, match="tile_pad must be an integer >= 0"):
        Upscaler.from_pretrained(tiny_model, device="cpu", tile_pad=-50)


@pytest.mark.slow
def test_ctrl_c_stops_after_the_current_file_with_summary_and_report(tmp_path, tiny_model):
    src = tmp_path / "in"
    src.mkdir()
    for k in range(12):
        Image.fromarray(smooth_image(160, 160, k)).save(src / f"img{k:02d}.png")
    out, report = tmp_path / "out", tmp_path / "report.json"
    proc = _start(["-i", str(src), "-o", str(out), "--weights", str(tiny_model), "--no-niqe", "--precision", "fp32",
                   "--device", "cpu", "--report", str(report)], tmp_path)  # fmt: skip
    try:
        _wait_for(lambda: (out / "img00_out.png").exists(), [proc], "writing its first output")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "stopping after the current file" in err
    outputs = sorted(p.name for p in out.iterdir())
    assert all(not name.startswith(".") for name in outputs)  # no temporaries
    written = _written(err)
    assert 1 <= written < 12 and len(outputs) == written
    assert f"{written} written, 0 skipped, 0 failed, {12 - written} not processed (interrupted)" in err
    assert f"processed: {written} input(s) in order, {src / 'img00.png'}" in err
    assert f"not processed: {12 - written} input(s), from {src / f'img{written:02d}.png'}" in err
    data = json.loads(report.read_text())
    assert data["interrupted"] is True and len(data["images"]) == written
    assert data["not_processed"] == [str(src / f"img{k:02d}.png") for k in range(written, 12)]


def test_stale_temporaries_in_the_output_folders_are_removed_at_start(tmp_path, tiny_model, capsys):
    src = _one_input(tmp_path)
    out = tmp_path / "out"
    (out / "elsewhere").mkdir(parents=True)
    old = time.time() - 3600
    stale = [out / ".x_out.png.ab12cd34.tmp", out / ".y_out.jpg.0123abcd.san.tmp"]  # old naming, current naming
    kept = [out / "keep.png", out / ".notes.txt", out / "work.tmp", out / "elsewhere" / ".z.png.ab12cd34.san.tmp"]
    for p in stale + kept:
        p.write_bytes(b"partial")
        os.utime(p, (old, old))
    code = infer_main(["-i", str(src), "-o", str(out), "--weights", str(tiny_model), "--no-niqe"])
    err = capsys.readouterr().err
    assert code == 0 and "note: removed 2 stale temporary file(s) left by an interrupted run" in err
    assert not any(p.exists() for p in stale)
    assert all(p.read_bytes() == b"partial" for p in kept)
    assert (out / "a_out.png").is_file()


def test_outputs_honour_the_umask_and_overwrite_keeps_the_mode(tmp_path, tiny_model):
    src = _one_input(tmp_path)
    out, report = tmp_path / "out", tmp_path / "r.json"
    args = ["-i", str(src), "-o", str(out), "--weights", str(tiny_model), "--no-niqe", "--report", str(report)]
    previous = os.umask(0o022)
    try:
        assert infer_main(args) == 0
        assert (out / "a_out.png").stat().st_mode & 0o777 == 0o644
        assert report.stat().st_mode & 0o777 == 0o644
        (out / "a_out.png").chmod(0o640)
        assert infer_main([*args, "--overwrite"]) == 0
        assert (out / "a_out.png").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(previous)


def test_undefined_niqe_shown_as_dash_and_mean_of_what_exists(tmp_path, tiny_model, capsys):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(smooth_image(10, 10, 1)).save(src / "small.png")  # 40x40 out: NIQE is NaN
    Image.fromarray(smooth_image(60, 60, 2)).save(src / "big.png")  # 240x240 out: NIQE defined
    report = tmp_path / "r.json"
    code = infer_main(["-i", str(src), "-o", str(tmp_path / "out"), "--weights", str(tiny_model),
                       "--report", str(report)])  # fmt: skip
    cap = capsys.readouterr()
    assert code == 0 and "nan" not in cap.out.lower()
    table = {line.split()[0]: line.split()[1:] for line in cap.out.strip().splitlines()}
    assert table["small.png"] == ["-"] and np.isfinite(float(table["big.png"][0]))
    assert table["mean"] == table["big.png"]
    assert "small.png: NIQE not a finite number for this output (40x40; NIQE needs larger images)" in cap.err
    data = json.loads(report.read_text())
    rows = {Path(r["input"]).name: r for r in data["images"]}
    assert "niqe" not in rows["small.png"] and data["mean"]["niqe"] == rows["big.png"]["niqe"]
