"""translate-infer / Synthesizer.from_checkpoint on SPADE-format generator files (``latest_net_G.pth``).

The SPADE files are made here: a tiny SPADEGenerator of ours (ngf 4, at SPADE's Cityscapes size 256 x 512,
random weights moved by a train-mode forward), written in SPADE's key layout by the inverse mapping of
test_spade_checkpoint, in the pre-1.6 legacy torch format (SPADE's 2019 release) and in the zip format.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from translate_app.cli import eval_main, infer_main
from translate_app.data import label_tensor, load_label_pair, pair_instance_file
from translate_app.generator import SPADEGenerator
from translate_app.infer import Synthesizer
from translate_app.model_files import KIND_SPADE, load_model

from .conftest import write_frame
from .test_spade_checkpoint import to_spade_layout, trained_like

CITYSCAPES = {"ngf": 4, "upsampling": "more", "size": (256, 512), "spade_hidden": 8}  # SPADE's size, tiny width
FRAMES = ("frankfurt_000000_000019", "frankfurt_000001_000019")


@pytest.fixture(scope="module")
def spade(tmp_path_factory) -> tuple[dict[str, np.ndarray], Path, dict[str, Path], SPADEGenerator]:
    """({frame: our generator's image of it}, the folder of those 2 Cityscapes val frames (label ids, instance
    ids), {"legacy"|"zip": the generator in SPADE's layout}, the generator)."""
    tmp = tmp_path_factory.mktemp("spade")
    G = trained_like(SPADEGenerator(label_nc=36, **CITYSCAPES), seed=7)
    files = {}
    for fmt, use_zip in (("legacy", False), ("zip", True)):
        files[fmt] = tmp / fmt / "latest_net_G.pth"
        files[fmt].parent.mkdir()
        torch.save(to_spade_layout(G.state_dict()), files[fmt], _use_new_zipfile_serialization=use_zip)
    for k, frame in enumerate(FRAMES):
        write_frame(tmp / "city", "val", "frankfurt", frame, 30 + k)
    labels_dir = tmp / "city" / "gtFine" / "val" / "frankfurt"
    refs = {frame: reference(G, labels_dir / f"{frame}_gtFine_labelIds.png") for frame in FRAMES}
    return refs, labels_dir, files, G


def reference(G: SPADEGenerator, label_file: Path) -> np.ndarray:
    """Our generator on the file's labels + instances at 256 x 512: (H, W, 3) in [0, 1]."""
    labels, instances = load_label_pair(label_file, pair_instance_file(label_file), G.size)
    with torch.no_grad():
        y = G(label_tensor(labels, instances)[None])[0]
    return ((y + 1) / 2).clamp(0, 1).permute(1, 2, 0).numpy()


def infer(weights: Path, inputs: list, out: Path, *flags: str) -> int:
    return infer_main(["-i", *map(str, inputs), "-o", str(out), "--weights", str(weights), "--precision", "fp32",
                       "--device", "cpu", *flags])  # fmt: skip


@pytest.mark.parametrize("fmt", ["legacy", "zip"])
def test_translate_infer_runs_a_spade_file_as_our_generator(spade, tmp_path, capsys, fmt):
    refs, labels_dir, files, _ = spade
    assert (files["legacy"].read_bytes()[:2] == b"\x80\x02") and files["zip"].read_bytes()[:2] == b"PK"
    frames = FRAMES if fmt == "legacy" else FRAMES[:1]  # ~2 s per 512x256 image on 2 CPU cores
    assert infer(files[fmt], [labels_dir / f"{f}_gtFine_labelIds.png" for f in frames], tmp_path) == 0
    err = capsys.readouterr().err
    sha = hashlib.sha256(files[fmt].read_bytes()).hexdigest()
    stored = "legacy torch format" if fmt == "legacy" else "zip format"
    assert f"loaded SPADE checkpoint ({stored}): {files[fmt]}, " in err and f"sha256 {sha[:12]}" in err
    assert "generator 512x256, ngf 4, upsampling 'more'" in err and f"{len(frames)} written, 0 failed" in err
    for frame in frames:
        written = np.asarray(Image.open(tmp_path / f"{frame}.png"), dtype=np.float32) / 255
        ref = refs[frame]
        assert written.shape == (256, 512, 3) and float(ref.std()) > 0.02  # an image, not a constant
        assert np.abs(written - ref).max() <= 0.5 / 255 + 1e-6  # the same image up to 8-bit rounding


def test_synthesizer_api_loads_spade_files(spade):
    refs, labels_dir, files, G = spade
    syn = Synthesizer.from_checkpoint(files["legacy"], "cpu", "fp32")
    assert syn.size == (256, 512) and syn.config is None and syn.info.kind == KIND_SPADE
    assert syn.info.kwargs == {"label_nc": 36, **CITYSCAPES} and syn.info.nbytes == files["legacy"].stat().st_size
    lab = labels_dir / f"{FRAMES[0]}_gtFine_labelIds.png"
    labels, instances = load_label_pair(lab, pair_instance_file(lab), syn.size)
    np.testing.assert_allclose(syn.synthesize(labels, instances), refs[FRAMES[0]], rtol=0, atol=1e-6)
    G2, info = load_model(files["zip"])
    assert info.detail == "zip format" and not G2.training
    torch.testing.assert_close(G2.state_dict(), G.state_dict(), rtol=0, atol=0)


def spade_file(path: Path, label_nc: int, **kw) -> Path:
    G = SPADEGenerator(label_nc=label_nc, ngf=4, spade_hidden=8, **kw)
    torch.save(to_spade_layout(G.state_dict()), path, _use_new_zipfile_serialization=False)
    return path


class Payload:
    marker: Path

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_spade_files_we_cannot_run_are_one_line_exit_2(spade, tmp_path, capsys):
    labels_dir = spade[1]
    Payload.marker = tmp_path / "code_ran"
    bad = {
        "no_instance.pth": (spade_file(tmp_path / "no_instance.pth", 35, upsampling="more", size=(256, 512)),
                            "trained without instance maps (--no_instance: 35 channels"),
        "ade20k.pth": (spade_file(tmp_path / "ade20k.pth", 151, upsampling="normal", size=(256, 256)),
                       "is SPADE's ADE20K model"),
        "coco.pth": (spade_file(tmp_path / "coco.pth", 184, upsampling="normal", size=(256, 256)),
                     "is SPADE's COCO-Stuff model"),
        "other.pth": (spade_file(tmp_path / "other.pth", 20, upsampling="normal", size=(256, 256)),
                      "is a model for 20 input channels"),
    }  # fmt: skip
    for use_zip in (False, True):
        path = tmp_path / f"pickle_{'zip' if use_zip else 'legacy'}.pth"
        torch.save({"fc.weight": Payload(), "head_0.conv_0.weight_orig": torch.zeros(1)}, path,
                   _use_new_zipfile_serialization=use_zip)  # fmt: skip
        bad[path.name] = (path, "is not a safe checkpoint: it names")
    partial = to_spade_layout(SPADEGenerator(label_nc=36, **CITYSCAPES).state_dict())
    del partial["up_2.conv_1.weight_v"]
    torch.save(partial, tmp_path / "partial.pth", _use_new_zipfile_serialization=False)
    bad["partial.pth"] = (tmp_path / "partial.pth", "missing 1 key(s): up_2.conv_1.weight_v")
    legacy_list = tmp_path / "legacy_list.pth"
    torch.save([torch.zeros(1)], legacy_list, _use_new_zipfile_serialization=False)
    bad["legacy_list.pth"] = (legacy_list, "holds a list, not a checkpoint or a SPADE generator state dict")
    cut = tmp_path / "cut.pth"
    cut.write_bytes(spade[2]["legacy"].read_bytes()[:5000])  # an interrupted download
    bad["cut.pth"] = (cut, "cannot be read as a PyTorch file")
    torch.save({"conv1.weight": torch.zeros(2, 3, 3, 3)}, tmp_path / "resnet.pth")
    bad["resnet.pth"] = (tmp_path / "resnet.pth", "is neither a translate-train checkpoint")
    for name, (path, words) in bad.items():
        assert infer(path, [labels_dir], tmp_path / "out") == 2
        lines = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
        assert len(lines) == 1 and lines[0].startswith("translate-infer: cannot load the checkpoint: "), (name, lines)
        assert words in lines[0] and str(path) in lines[0], (name, lines[0])
    assert "only Cityscapes models with instance maps" in _message(bad["ade20k.pth"][0])
    assert not Payload.marker.exists() and not list((tmp_path / "out").iterdir())


def _message(path: Path) -> str:
    with pytest.raises(ValueError) as e:
        load_model(path)
    return str(e.value)


def test_translate_eval_generates_with_a_spade_file(spade, tmp_path, capsys):
    """The FID path takes the same files (here only up to the dataset check: no FID weights needed)."""
    files = spade[2]
    code = eval_main(["--weights", str(files["legacy"]), "--data-root", str(tmp_path / "absent")])
    assert code == 2
    err = capsys.readouterr().err
    assert f"translate-eval: loaded SPADE checkpoint (legacy torch format): {files['legacy']}" in err
    assert "cannot load" not in err and "absent" in err  # the checkpoint loaded; the missing root is reported
