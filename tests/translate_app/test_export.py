"""translate-export: a translate-train checkpoint (1 step of the tiny preset, made here) or a SPADE-layout file
(a tiny generator of ours written in SPADE's keys, made here) as safetensors + JSON, loaded back by
translate-infer; refusals leave every file as it was."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from gan_core.checkpoint import atomic_torch_save
from translate_app.cli import export_main, infer_main, train_main
from translate_app.generator import SPADEGenerator
from translate_app.infer import Synthesizer
from translate_app.model_files import EXPORT_FORMAT, KIND_EXPORT, load_model

from .conftest import write_frame
from .test_spade_checkpoint import to_spade_layout, trained_like

REPO = Path(__file__).resolve().parents[2]
FRAME = "frankfurt_000000_000019"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(a Cityscapes label map, translate-train checkpoint of 1 step on the tiny preset: 64x128, ngf 8).

    One step from the init (gain 0.02) leaves a nearly grey image; the generator weights are then redrawn
    at unit gain (BatchNorm statistics and u, v moved by a train-mode forward) so that images have contrast.
    """
    root = tmp_path_factory.mktemp("city")
    write_frame(root, "train", "aachen", "aachen_000000_000019", 0)
    write_frame(root, "val", "frankfurt", FRAME, 10)
    run = tmp_path_factory.mktemp("run")
    code = train_main(["-c", str(REPO / "configs" / "spade_tiny.yaml"), "--data-root", str(root), "--set",
                       "loss.vgg_loss_weight=0", "--steps", "1", "--batch-size", "1", "--device", "cpu",
                       "--out", str(run)])  # fmt: skip
    assert code == 0
    ck = torch.load(run / "ckpt" / "step_00000001.pt", weights_only=True)
    G = SPADEGenerator(label_nc=36, ngf=8, upsampling="normal", size=(64, 128), spade_hidden=16)
    G.load_state_dict(ck["G"])
    atomic_torch_save({**ck, "G": trained_like(G, seed=2).state_dict()}, run / "ckpt" / "step_00000001.pt")
    return root / "gtFine" / "val" / "frankfurt" / f"{FRAME}_gtFine_labelIds.png", run / "ckpt" / "step_00000001.pt"


def infer(weights: Path, label: Path, out: Path) -> np.ndarray:
    """translate-infer's image (H, W, 3) in [0, 1] of ``label`` with ``weights``."""
    code = infer_main(["-i", str(label), "-o", str(out), "--weights", str(weights), "--precision", "fp32",
                       "--device", "cpu"])  # fmt: skip
    assert code == 0
    return np.asarray(Image.open(out / f"{FRAME}.png"), dtype=np.float32) / 255


def synthesize(weights: Path, label: Path) -> np.ndarray:
    from translate_app.data import load_label_pair, pair_instance_file

    syn = Synthesizer.from_checkpoint(weights, "cpu", "fp32")
    return syn.synthesize(*load_label_pair(label, pair_instance_file(label), syn.size))


def test_round_trip_fp16_and_fp32(trained, tmp_path, capsys):
    label, ckpt = trained
    assert export_main([str(ckpt), str(tmp_path / "m16.safetensors")]) == 0
    assert export_main([str(ckpt), str(tmp_path / "m32"), "--fp32", "--name", "tiny-cityscapes"]) == 0  # no suffix
    out = capsys.readouterr().out
    assert "translate-export: read translate-train checkpoint, step 1: " in out and "sha256 " in out
    assert f"wrote {tmp_path / 'm32.safetensors'} and {tmp_path / 'm32.json'} (128x64, ngf 8, upsampling 'normal', " \
           "float32)" in out  # fmt: skip
    ref = synthesize(ckpt, label)
    fp32 = synthesize(tmp_path / "m32.safetensors", label)
    fp16 = synthesize(tmp_path / "m16.safetensors", label)
    assert float(ref.std()) > 0.05
    np.testing.assert_array_equal(fp32, ref)  # float32 export: the same weights, the same image
    assert 0 < np.abs(fp16 - ref).max() < 2e-3  # float16 weights: their rounding only (~3e-4 here, std 0.09)
    # translate-infer on the exported file: the checkpoint's image (8-bit), banner with the export's kind
    assert np.array_equal(infer(tmp_path / "m32.safetensors", label, tmp_path / "o32"),
                          infer(ckpt, label, tmp_path / "ock"))  # fmt: skip
    err = capsys.readouterr().err
    assert f"loaded exported generator (float32), step 1: {tmp_path / 'm32.safetensors'}" in err
    # what was written
    G, info = load_model(ckpt)
    with safe_open(tmp_path / "m16.safetensors", "pt") as f:
        assert f.metadata() == {"format": EXPORT_FORMAT} and set(f.keys()) == set(G.state_dict())
        dtypes = {f.get_tensor(k).dtype for k in f.keys()}
    assert dtypes == {torch.float16, torch.int64}  # BatchNorm's num_batches_tracked stays an integer
    cfg = json.loads((tmp_path / "m32.json").read_text())
    assert cfg["format"] == EXPORT_FORMAT and cfg["architecture"] == "SPADEGenerator" and cfg["dtype"] == "float32"
    assert cfg["kwargs"] == {"label_nc": 36, "ngf": 8, "upsampling": "normal", "size": [64, 128], "spade_hidden": 16}
    assert cfg["output_size"] == {"height": 64, "width": 128} and cfg["label_encoding"]["channels"] == 36
    assert cfg["name"] == "tiny-cityscapes" and json.loads((tmp_path / "m16.json").read_text())["name"] == "m16"
    assert cfg["source"] == {"kind": "translate-train checkpoint", "file": ckpt.name, "sha256": info.sha256,
                             "stored_as": None}  # fmt: skip
    assert cfg["training"]["step"] == 1 and cfg["training"]["config"]["name"] == "spade_tiny"
    # re-export (float32 -> float16): the source and training records are kept
    assert export_main([str(tmp_path / "m32.safetensors"), str(tmp_path / "again.safetensors")]) == 0
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["source"] == cfg["source"] and again["training"] == cfg["training"] and again["name"] == cfg["name"]
    assert again["dtype"] == "float16"


def test_a_spade_file_exports_to_the_same_network(tmp_path):
    G = trained_like(SPADEGenerator(label_nc=36, ngf=4, upsampling="more", size=(256, 512), spade_hidden=8))
    spade = tmp_path / "latest_net_G.pth"
    torch.save(to_spade_layout(G.state_dict()), spade, _use_new_zipfile_serialization=False)  # SPADE's 2019 format
    assert export_main([str(spade), str(tmp_path / "spade_cityscapes.safetensors"), "--fp32"]) == 0
    G2, info = load_model(tmp_path / "spade_cityscapes.safetensors")
    assert info.kind == KIND_EXPORT and info.kwargs == {"label_nc": 36, "ngf": 4, "upsampling": "more",
                                                        "size": (256, 512), "spade_hidden": 8}  # fmt: skip
    torch.testing.assert_close(G2.state_dict(), G.state_dict(), rtol=0, atol=0)  # bit for bit: same output
    cfg = json.loads((tmp_path / "spade_cityscapes.json").read_text())
    assert cfg["source"]["kind"] == "SPADE checkpoint" and cfg["source"]["stored_as"] == "legacy torch format"
    assert cfg["source"]["file"] == "latest_net_G.pth" and cfg["training"] == {"step": None, "config": None}


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_refusals_leave_everything_as_it_was(trained, tmp_path, capsys):
    ckpt = trained[1]
    out = tmp_path / "out"
    out.mkdir()
    (out / "m.json").write_text("mine\n")  # only the config exists: the weights are not written either
    (out / "w.safetensors").write_bytes(b"mine")
    marker = tmp_path / "code_ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"format": "san-gan/translate-train/1", "G": Payload()}, tmp_path / "pickle.pt")
    huge = torch.load(ckpt, weights_only=True)
    huge["G"]["fc.bias"][0] = 1e5  # finite in float32, Inf in float16
    torch.save(huge, tmp_path / "huge.pt")
    before = snapshot(out)
    cases = [
        ([str(ckpt), str(out / "m.safetensors")], f"{out / 'm.json'} exists (use --overwrite to replace it)"),
        ([str(ckpt), str(out / "w")], f"{out / 'w.safetensors'} exists (use --overwrite to replace it)"),
        ([str(ckpt), str(out / "m.pt")], "writes a .safetensors file (and its .json config beside it)"),
        ([str(tmp_path / "absent.pt"), str(out / "a.safetensors")], "not found"),
        ([str(tmp_path / "pickle.pt"), str(out / "p.safetensors")], "is not a safe checkpoint"),
        ([str(tmp_path / "huge.pt"), str(out / "h.safetensors")], "fc.bias (max |w| 1e+05) does not fit in float16"),
        ([str(out / "w.safetensors"), str(out / "w.safetensors"), "--overwrite"], "is the source model itself"),
    ]
    for argv, words in cases:
        assert export_main(argv) == 2, argv
        err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
        assert len(err) == 1 and err[0].startswith("translate-export: ") and words in err[0], (argv, err)
    assert snapshot(out) == before and not marker.exists()
    assert export_main([str(tmp_path / "huge.pt"), str(out / "h.safetensors"), "--fp32"]) == 0  # float32 holds it
    assert export_main([str(ckpt), str(out / "m.safetensors"), "--overwrite"]) == 0
    assert json.loads((out / "m.json").read_text())["format"] == EXPORT_FORMAT


def test_exported_files_translate_infer_refuses(trained, tmp_path, capsys):
    label, ckpt = trained
    assert export_main([str(ckpt), str(tmp_path / "m.safetensors")]) == 0
    weights = (tmp_path / "m.safetensors").read_bytes()
    cfg = json.loads((tmp_path / "m.json").read_text())
    cases = {
        "noconfig": (None, "its config", "is missing"),
        "sr": ({"architecture": "SRGenerator", "kwargs": {"scale": 4}}, "not a translate-export config",
               "an sr-export model? use sr-infer"),
        "ade": ({**cfg, "kwargs": {**cfg["kwargs"], "label_nc": 151}}, "cannot build the generator",
                "only Cityscapes generators (36 channels)"),
        "wider": ({**cfg, "kwargs": {**cfg["kwargs"], "ngf": 16}}, "the weights do not fit the network",
                  "wider.json describes", "shape"),
    }  # fmt: skip
    for name, (config, *words) in cases.items():
        (tmp_path / f"{name}.safetensors").write_bytes(weights)
        if config is not None:
            (tmp_path / f"{name}.json").write_text(json.dumps(config))
        code = infer_main(["-i", str(label), "-o", str(tmp_path / "out"), "--weights",
                           str(tmp_path / f"{name}.safetensors")])  # fmt: skip
        err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
        assert code == 2 and len(err) == 1 and "cannot load the checkpoint" in err[0], (name, err)
        assert all(w in err[0] for w in words), (name, err)
    (tmp_path / "cut.safetensors").write_bytes(weights[: len(weights) // 2])
    (tmp_path / "cut.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"cut\.safetensors is not a readable safetensors file"):
        load_model(tmp_path / "cut.safetensors")
