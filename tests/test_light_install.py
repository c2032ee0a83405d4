"""The default install (no extras) runs the product: every module imports, and sr-infer, sr-eval and the demo
give the same pixels and numbers with the ``metrics`` extra's packages blocked, NIQE / LPIPS reported as
skipped in one line naming the extra.

A venv without the extra is simulated in a subprocess: ``sys.modules[name] = None`` for pyiqa, lpips,
matplotlib, scipy and tensorboard makes any import of them fail as if they were not installed. Images
are made by the tests; the model is the default one in weights/ (small inputs, fp32, CPU).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
BLOCKED = ("pyiqa", "lpips", "matplotlib", "scipy", "tensorboard")
NIQE_NOTE = "note: NIQE skipped: pip install 'san-gan[metrics]'"


def _python(code: str, *args: str, blocked: bool, cwd: Path | None = None) -> subprocess.CompletedProcess:
    prelude = "import sys\n" + (f"for _m in {BLOCKED!r}:\n    sys.modules[_m] = None\n" if blocked else "")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    return subprocess.run(
        [sys.executable, "-c", prelude + code, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd or REPO,
        timeout=600,
    )


def _photo(h: int, w: int, seed: int) -> np.ndarray:
    """(h, w, 3) uint8: smooth random walks along x (photo-like, not a benchmark image)."""
    rng = np.random.default_rng(seed)
    walk = np.cumsum(rng.normal(size=(h, w, 3)), axis=1) / 20 + np.linspace(0.2, 0.8, h)[:, None, None]
    return (np.clip(walk, 0, 1) * 255).round().astype(np.uint8)


def test_every_module_imports_without_the_extras():
    code = f"""
import importlib, pkgutil
BLOCKED = {BLOCKED!r}
names = []
for pkg in ("gan_core", "sr_app", "translate_app"):
    mod = importlib.import_module(pkg)
    names.append(pkg)
    for info in pkgutil.walk_packages(mod.__path__, pkg + "."):
        if info.name.endswith("_triton"):  # need triton (CUDA builds of torch); imported only on CUDA
            continue
        importlib.import_module(info.name)
        names.append(info.name)
from gan_core.extras import has_module
assert not any(has_module(m) for m in BLOCKED)
print(len(names), "modules")
"""
    r = _python(code, blocked=True)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout.split()[0]) > 40


def test_missing_extra_messages_name_the_extra():
    code = """
from gan_core.extras import MissingExtraError
from gan_core.metrics.fid import FIDInception
from gan_core.metrics.lpips import LPIPS, lpips_available, lpips_unavailable_reason
from gan_core.metrics.niqe import NIQE
for make in (NIQE, LPIPS, FIDInception):
    try:
        make()
    except MissingExtraError as e:
        assert isinstance(e, RuntimeError)  # the CLIs' one-line handlers catch it
        print(e)
        print(e.skipped)
print(lpips_available(), lpips_unavailable_reason())
"""
    r = _python(code, blocked=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "NIQE needs pyiqa, which is not installed: pip install 'san-gan[metrics]'",
        "NIQE skipped: pip install 'san-gan[metrics]'",
        "LPIPS needs lpips, which is not installed: pip install 'san-gan[metrics]'",
        "LPIPS skipped: pip install 'san-gan[metrics]'",
        "FID needs pyiqa, which is not installed: pip install 'san-gan[metrics]'",
        "FID skipped: pip install 'san-gan[metrics]'",
        "False pip install 'san-gan[metrics]'",
    ]


INFER = "from sr_app.cli import infer_main; raise SystemExit(infer_main(sys.argv[1:]))"
EVAL = "from sr_app.cli import eval_main; raise SystemExit(eval_main(sys.argv[1:]))"


@pytest.mark.slow
def test_sr_infer_same_output_without_the_extras(tmp_path):
    hr = _photo(208, 208, 0)
    (tmp_path / "in").mkdir()
    (tmp_path / "ref").mkdir()
    Image.fromarray(hr).save(tmp_path / "ref" / "a.png")
    Image.fromarray(hr).resize((52, 52), Image.BICUBIC).save(tmp_path / "in" / "a.png")
    runs = {}
    for blocked in (False, True):
        out = tmp_path / f"out_{blocked}"
        args = ["-i", str(tmp_path / "in"), "-o", str(out), "--device", "cpu", "--precision", "fp32"]
        args += ["--ref", str(tmp_path / "ref"), "--report", str(out / "report.json")]
        r = _python(INFER, *args, blocked=blocked)
        assert r.returncode == 0, r.stderr
        assert "Traceback" not in r.stderr
        runs[blocked] = (r, np.asarray(Image.open(out / "a_out.png")), json.loads((out / "report.json").read_text()))
    (_, px_full, rep_full), (r_light, px_light, rep_light) = runs[False], runs[True]
    assert np.array_equal(px_full, px_light)
    for key in ("psnr_y", "ssim_y"):
        assert rep_full["images"][0][key] == rep_light["images"][0][key]
    assert NIQE_NOTE in r_light.stderr
    assert "note: LPIPS skipped: pip install 'san-gan[metrics]'" in r_light.stderr
    assert "niqe" not in rep_light["images"][0]


@pytest.mark.slow
def test_sr_eval_same_numbers_without_the_extras(tmp_path):
    data = tmp_path / "tiny_set"  # HR-only folder: LR made by gan_core.matlab_resize (no pyiqa)
    data.mkdir()
    Image.fromarray(_photo(96, 112, 1)).save(data / "x.png")
    results = {}
    for blocked in (False, True):
        out = tmp_path / f"eval_{blocked}"
        r = _python(EVAL, "--data", str(data), "--out", str(out), "--device", "cpu", "--precision", "fp32",
                    blocked=blocked)  # fmt: skip
        assert r.returncode == 0, r.stderr
        results[blocked] = (r, json.loads((out / "results.json").read_text()))
    full, light = results[False][1]["datasets"]["tiny_set"], results[True][1]["datasets"]["tiny_set"]
    for method in ("model", "bicubic"):
        for key in ("psnr_y", "ssim_y"):
            assert full[method][key] == light[method][key]
    assert NIQE_NOTE in results[True][0].stderr


@pytest.mark.slow
def test_demo_runs_without_the_extras_and_shows_the_gain(tmp_path):
    r = _python("from sr_app.demo import main; raise SystemExit(main(sys.argv[1:]))", "--out", str(tmp_path),
                "--size", "128", blocked=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert NIQE_NOTE in r.stderr
    rows = {
        tuple(line.split()[:2]): line.split() for line in r.stdout.splitlines() if line.startswith(("photo", "chart"))
    }
    bic, model = float(rows[("photo", "bicubic")][2]), float(rows[("photo", "model")][2])
    assert model - bic > 2.0  # the default model on the bundled photo: +2.35 dB (README)
    assert rows[("photo", "model")][-2:] == [f"{model - bic:+.2f}", "dB"]
    for name in ("photo", "chart"):
        for f in ("reference_hr.png", "input_lr.png", "bicubic_x4.png", "side_by_side.png"):
            assert (tmp_path / name / f).is_file()
    assert Image.open(tmp_path / "photo" / "side_by_side.png").size == (4 * 384, 384)


# import name -> distribution name, where they differ (pyproject lists distributions)
DIST_OF = {"PIL": "pillow", "yaml": "pyyaml", "swagger_ui_bundle": "swagger-ui-bundle", "multipart": "python-multipart"}
EXTRA_ONLY = {"pyiqa", "lpips", "matplotlib", "scipy", "tensorboard", "kornia", "fastapi", "uvicorn", "httpx"}


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib", reason="tomllib: Python >= 3.11")
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _third_party_imports() -> dict[str, set[str]]:
    """Top-level modules imported anywhere in the product packages (module-level or inside functions),
    minus the standard library and the packages themselves: {module: {files}}."""
    import ast

    own = {"gan_core", "sr_app", "translate_app", "serve_app"}
    found: dict[str, set[str]] = {}
    for pkg in sorted(own):
        for f in sorted((REPO / pkg).rglob("*.py")) if (REPO / pkg).is_dir() else []:
            for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for n in names:
                    top = n.split(".")[0]
                    if top not in own and top not in sys.stdlib_module_names:
                        found.setdefault(top, set()).add(str(f.relative_to(REPO)))
    return found


def test_core_dependencies_cover_every_import_outside_the_extras():
    """pyproject's core list holds what the product imports; the extras' packages are only in extras,
    and kornia (never imported) is gone. The extras' modules are exactly the blocked ones above."""
    import re

    project = _pyproject()["project"]
    dist = lambda spec: re.split(r"[\[<>=!~; ]", spec, maxsplit=1)[0].lower()  # noqa: E731
    core = {dist(s) for s in project["dependencies"]}
    extras = {name: {dist(s) for s in specs} for name, specs in project["optional-dependencies"].items()}
    assert not core & EXTRA_ONLY
    assert "kornia" not in core.union(*extras.values())
    assert {"pyiqa", "lpips", "matplotlib"} <= extras["metrics"]
    assert "san-gan" in extras["test"] and "scipy" in extras["test"]  # test pulls san-gan[metrics]
    optional_dists = set().union(*extras.values())
    imports = _third_party_imports()
    assert {"torch", "torchvision", "numpy", "PIL", "safetensors", "yaml"} <= set(imports)  # pyiqa, lpips: import_extra
    for module, files in imports.items():
        d = DIST_OF.get(module, module).lower()
        if d in core or module == "triton":  # triton comes with CUDA builds of torch; imported only there
            continue
        assert d in optional_dists, f"{module} imported by {sorted(files)} is in no dependency list"
