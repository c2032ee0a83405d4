"""Model files: which file is loaded (and said so), what is refused in one line, and sr-export's outputs."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from gan_core.checkpoint import atomic_torch_save
from gan_core.config import load_config, to_dict
from gan_core.weights import REPO_WEIGHTS
from sr_app.cli import eval_main, export_main, infer_main
from sr_app.config import SRTrainConfig
from sr_app.models import SRGenerator

from .conftest import smooth_image, write_images

REPO = Path(__file__).resolve().parents[2]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _one_line_error(err: str) -> str:
    """The error output of a CLI, asserted to be a single line without a traceback."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def sr_checkpoint(tmp_path) -> Path:
    """An sr-train checkpoint of the tiny preset (the same dict sr-train saves: format, config, step, G, G_ema)."""
    cfg = load_config(SRTrainConfig, REPO / "configs" / "sr_tiny.yaml", ["train.device=cpu"])
    torch.manual_seed(3)
    G = SRGenerator(channels=cfg.model.channels, num_blocks=cfg.model.num_blocks, scale=cfg.data.scale)
    ema = {k: v + 0.01 for k, v in G.state_dict().items()}  # the EMA differs from G: export must pick it
    from sr_app.train import CKPT_FORMAT

    path = tmp_path / "run" / "ckpt" / "best.pt"
    atomic_torch_save({"format": CKPT_FORMAT, "config": to_dict(cfg), "step": 4, "G": G.state_dict(), "G_ema": ema},
                      path)  # fmt: skip
    return path


@pytest.fixture
def clean_weights_env(monkeypatch, tmp_path):
    """A fresh current directory and no $SAN_WEIGHTS_DIR (restored after the test, --weights-dir sets it)."""
    monkeypatch.setenv("SAN_WEIGHTS_DIR", "")
    monkeypatch.setenv("SAN_GAN_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    return tmp_path


# -- case 3: ./weights never replaces the default model implicitly ------------------------------------------
def test_cwd_weights_folder_does_not_replace_the_default_model(clean_weights_env, tiny_model, capsys):
    cwd = clean_weights_env
    wdir = cwd / "weights"
    wdir.mkdir()
    shutil.copy(tiny_model, wdir / "srresnet-l1-x4.safetensors")  # a stranger's model under the default's name
    shutil.copy(tiny_model.with_suffix(".json"), wdir / "srresnet-l1-x4.json")
    entry = {"file": "srresnet-l1-x4.safetensors", "sha256": _sha(tiny_model), "size": tiny_model.stat().st_size,
             "kind": "model", "config": "srresnet-l1-x4.json"}  # fmt: skip
    (wdir / "manifest.json").write_text(json.dumps({"default_sr_model": "srresnet-l1-x4",
                                                    "weights": {"srresnet-l1-x4": entry}}))  # fmt: skip
    Image.fromarray(smooth_image(8, 8, 0)).save(cwd / "in.png")
    repo_model = REPO_WEIGHTS / "srresnet-l1-x4.safetensors"

    assert infer_main(["-i", "in.png", "-o", "a", "--no-niqe", "--report", "a.json"]) == 0
    banner = next(line for line in capsys.readouterr().err.splitlines() if line.startswith("sr-infer: model"))
    assert f"from {repo_model.resolve()} (sha256 {_sha(repo_model)[:12]})" in banner
    meta = json.loads((cwd / "a.json").read_text())  # the report metadata sits at its top level
    assert meta["model_file"] == str(repo_model.resolve()) and meta["model_sha256"] == _sha(repo_model)[:12]

    args = ["-i", "in.png", "-o", "b", "--no-niqe", "--report", "b.json", "--weights-dir", "weights"]
    assert infer_main(args) == 0
    banner = next(line for line in capsys.readouterr().err.splitlines() if line.startswith("sr-infer: model"))
    assert f"from {(wdir / 'srresnet-l1-x4.safetensors').resolve()} (sha256 {_sha(tiny_model)[:12]})" in banner
    assert json.loads((cwd / "b.json").read_text())["model_sha256"] == _sha(tiny_model)[:12]


def test_sr_eval_reports_the_model_file_and_hash(clean_weights_env, tiny_model, capsys):
    data = clean_weights_env / "val"
    write_images(data, [(40, 40)], seed=3)
    args = ["--weights", str(tiny_model), "--data", str(data), "--out", "ev", "--no-niqe", "--precision", "fp32"]
    assert eval_main(args) == 0
    res = json.loads(Path("ev/results.json").read_text())
    assert res["model_file"] == str(tiny_model.resolve()) and res["model_sha256"] == _sha(tiny_model)[:12]
    assert f"from {tiny_model.resolve()} (sha256 {_sha(tiny_model)[:12]})" in capsys.readouterr().err


# -- case 4 and 14: every model-loading failure is one line, exit 2 -------------------------------------------
class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def _broken_models(tmp_path: Path, tiny_model: Path) -> dict[str, tuple[Path, str]]:
    """name -> (model path, text its one-line error must contain)."""
    d = tmp_path / "broken"
    d.mkdir()
    out = {}
    (d / "garbage.safetensors").write_bytes(b"\x00garbage" * 64)
    shutil.copy(tiny_model.with_suffix(".json"), d / "garbage.json")
    out["garbage"] = (d / "garbage.safetensors", "is not a readable safetensors file")
    shutil.copy(tiny_model, d / "nosidecar.safetensors")
    out["no sidecar"] = (d / "nosidecar.safetensors", f"looked for {d / 'nosidecar.json'} or {d / 'config.json'}")
    shutil.copy(tiny_model, d / "badjson.safetensors")
    (d / "badjson.json").write_text("{not json")
    out["bad json"] = (d / "badjson.safetensors", "is not readable JSON")
    shutil.copy(tiny_model, d / "wrongarch.safetensors")
    (d / "wrongarch.json").write_text(json.dumps({"kwargs": {"channels": 16, "num_blocks": 1, "scale": 4}}))
    out["wrong architecture"] = (d / "wrongarch.safetensors", "does not fit the architecture in wrongarch.json")
    from safetensors.torch import load_file, save_file

    state = load_file(str(tiny_model))
    state[next(iter(state))][0] = float("nan")
    save_file(state, str(d / "nan.safetensors"))
    shutil.copy(tiny_model.with_suffix(".json"), d / "nan.json")
    out["NaN weights"] = (d / "nan.safetensors", "has non-finite weights (NaN/Inf)")
    torch.save({"format": "san-gan/sr-train/1", "G_ema": _RunsCode(tmp_path / "code-ran")}, d / "evil.pt")
    out["malicious pickle"] = (d / "evil.pt", f"{d / 'evil.pt'} is not a safe checkpoint: it names ")
    torch.save({"format": "san-gan/translate-train/1", "config": {}, "step": 1, "G": {}}, d / "spade.pt")
    out["translate checkpoint"] = (d / "spade.pt", "is a translate-train (SAN-SPADE label-to-image) checkpoint")
    return out


def test_model_loading_failures_are_one_line_exit_2(tmp_path, tiny_model, capsys):
    Image.fromarray(smooth_image(8, 8, 0)).save(tmp_path / "in.png")
    write_images(tmp_path / "val", [(40, 40)], seed=3)
    for what, (model, expected) in _broken_models(tmp_path, tiny_model).items():
        code = infer_main(["-i", str(tmp_path / "in.png"), "-o", str(tmp_path / "o"), "--weights", str(model)])
        line = _one_line_error(capsys.readouterr().err)
        assert code == 2 and line.startswith("sr-infer: cannot load the model: ") and expected in line, (what, line)
        assert "weights_only" not in line
        code = eval_main(["--weights", str(model), "--data", str(tmp_path / "val"), "--out", str(tmp_path / "ev")])
        line = _one_line_error(capsys.readouterr().err)
        assert code == 2 and expected in line, (what, line)
    assert not (tmp_path / "o").exists() and not (tmp_path / "code-ran").exists()


def test_sr_eval_tile_is_validated_like_sr_infer(tmp_path, tiny_model, capsys):
    write_images(tmp_path / "val", [(40, 40)], seed=3)
    base = ["--weights", str(tiny_model), "--data", str(tmp_path / "val"), "--out", str(tmp_path / "ev"), "--no-niqe"]
    for bad in ("abc", "16", "-1"):
        with pytest.raises(SystemExit) as info:
            eval_main([*base, "-t", bad])
        assert info.value.code == 2 and "-t/--tile: must be auto, 0 (no tiling) or an integer >= 32" in (
            capsys.readouterr().err
        )
    assert not (tmp_path / "ev").exists()
    assert eval_main([*base, "-t", "32"]) == 0


# -- case 2: sr-export checks both outputs first, never replaces, writes only .safetensors ------------------
def test_export_round_trip_and_never_replaces(tmp_path, sr_checkpoint, capsys):
    from sr_app.infer import load_generator

    out = tmp_path / "rel" / "m.safetensors"
    assert export_main([str(sr_checkpoint), str(out), "--fp32", "--name", "tiny-export"]) == 0
    config = json.loads(out.with_suffix(".json").read_text())
    assert config["name"] == "tiny-export" and config["training"]["step"] == 4
    G, _ = load_generator(out)
    ema = torch.load(sr_checkpoint, weights_only=True)["G_ema"]
    assert all(torch.equal(G.state_dict()[k], ema[k]) for k in ema)  # the EMA generator, exactly (fp32)
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.parent.iterdir()}

    capsys.readouterr()
    assert export_main([str(sr_checkpoint), str(out)]) == 2
    assert "m.safetensors exists (use --overwrite to replace it)" in _one_line_error(capsys.readouterr().err)
    out.unlink()  # only the .json is left: it alone must stop the export, before the weights are written
    assert export_main([str(sr_checkpoint), str(out)]) == 2
    assert "m.json exists (use --overwrite" in _one_line_error(capsys.readouterr().err) and not out.exists()
    assert {p.name for p in out.parent.iterdir()} == {"m.json"}
    assert out.with_suffix(".json").read_bytes() == before["m.json"][0]

    assert export_main([str(sr_checkpoint), str(out), "--overwrite"]) == 0  # fp16 now: a different file
    assert out.stat().st_size < len(before["m.safetensors"][0])
    assert json.loads(out.with_suffix(".json").read_text())["dtype"] == "float16"
    assert load_generator(out)[1]["sha256"] == _sha(out)


def test_export_refuses_other_suffixes_and_other_checkpoints(tmp_path, sr_checkpoint, tiny_model, capsys):
    assert export_main([str(sr_checkpoint), str(tmp_path / "m.pt")]) == 2
    assert "sr-export writes a .safetensors file" in _one_line_error(capsys.readouterr().err)
    assert not list(tmp_path.glob("m.*"))
    assert export_main([str(sr_checkpoint), str(tmp_path / "plain")]) == 0  # no suffix: .safetensors added
    assert (tmp_path / "plain.safetensors").is_file() and (tmp_path / "plain.json").is_file()
    capsys.readouterr()
    for model, expected in _broken_models(tmp_path, tiny_model).values():
        if model.suffix != ".pt":
            continue
        assert export_main([str(model), str(tmp_path / "x.safetensors")]) == 2
        assert expected in _one_line_error(capsys.readouterr().err)
    assert export_main([str(tiny_model), str(tmp_path / "x.safetensors")]) == 2
    assert "is a released model (.safetensors), not an sr-train checkpoint" in capsys.readouterr().err
    assert not list(tmp_path.glob("x.*")) and not (tmp_path / "code-ran").exists()
