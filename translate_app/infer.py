"""Street scenes from Cityscapes label maps with a SPADE generator (a translate-train checkpoint, SPADE's released
Cityscapes model or a translate-export file; ``model_files``): model loading, label-file discovery and the
per-file batch loop behind ``translate-infer``.

    from translate_app.data import load_label_pair
    from translate_app.infer import Synthesizer
    syn = Synthesizer.from_checkpoint("runs/san_spade/ckpt/best.pt")       # device and precision: auto
    # also SPADE's released latest_net_G.pth (Cityscapes) or a translate-export model.safetensors (+ .json)
    labels, instances = load_label_pair("x_gtFine_labelIds.png", "x_gtFine_instanceIds.png", syn.size)
    rgb = syn.synthesize(labels, instances)      # (H, W, 3) float32 in [0, 1] at the model's size (H, W)

The batch loop (``run_batch``) treats every label map on its own: an unreadable file, a label id >= 35,
or an instance map whose size differs from its label map's is one error line naming the file, and the
batch goes on. Outputs (``<stem>.png``, ``<stem>_labels.png`` with ``colorize``) are written atomically
and never replace a file unless ``overwrite``: an output that exists when its input comes up, or that
another process creates while this one synthesizes, is a per-file error (or a skip with
``skip_existing``). Ctrl-C finishes the file in progress, then stops; the summary lists what was written.
"""

from __future__ import annotations

import glob
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from gan_core.distributed import pick_device
from gan_core.image_io import write_image
from gan_core.runtime import autocast, autocast_dtype

from .config import SpadeTrainConfig
from .data import LABEL_NC, colorize_labels, label_tensor, load_label_pair, pair_instance_file, resize_ids
from .model_files import ModelInfo, load_model

__all__ = [
    "InferOptions",
    "Summary",
    "Synthesizer",
    "appeared_meanwhile",
    "check_output_folder",
    "find_label_files",
    "load_generator",
    "output_stem",
    "run_batch",
    "synthesize_dataset",
]


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def load_generator(path: str | Path, device: str | torch.device = "cpu"):
    """(SPADE generator in eval mode on ``device``, its ``SpadeTrainConfig``) from a translate-train checkpoint.

    Raises FileNotFoundError for a missing file, else ValueError with a one-line reason: not a checkpoint,
    truncated, not a safe (tensors-only) file, another tool's checkpoint, a config or weights that do not
    build the generator, non-finite weights. Nothing in the file is executed (``weights_only`` load).
    Any generator file (SPADE's, exported): :func:`translate_app.model_files.load_model`.
    """
    from gan_core.checkpoint import load_checkpoint

    from .model_files import load_train_checkpoint

    path = Path(path)
    G, info = load_train_checkpoint(path, load_checkpoint(path))
    return G.to(device), info.train_config


class Synthesizer:
    """A SAN-SPADE generator ready for inference on a device and precision.

    Args:
        generator: maps (B, 36, H, W) one-hot labels + instance edges to (B, 3, H, W) in [-1, 1].
        config: its training config, or None (SPADE's or an exported generator); the (H, W) the generator
            was built for is ``config.data.size``, else the generator's ``size``.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or a torch.device.
        precision: ``auto`` (bf16 where it is native, else fp32), ``fp32`` or ``bf16``.
        name: shown in banners (the checkpoint path for ``from_checkpoint``).
        info: what ``from_checkpoint`` loaded (kind, file, size, sha256), else None.
    """

    def __init__(
        self,
        generator: torch.nn.Module,
        config: SpadeTrainConfig | None = None,
        device: str | torch.device = "auto",
        precision: str = "auto",
        name: str = "",
        info: ModelInfo | None = None,
    ) -> None:
        self.device = device if isinstance(device, torch.device) else pick_device(str(device))
        self.amp = autocast_dtype(precision, self.device, allow_fp16=False)
        self.generator = generator.eval().to(self.device)
        self.config = config
        size = config.data.size if config is not None else generator.size
        self.size: tuple[int, int] = (int(size[0]), int(size[1]))
        self.name = name
        self.info = info

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str | torch.device = "auto", precision: str = "auto"
    ) -> Synthesizer:
        """Load a translate-train checkpoint, SPADE's released ``latest_net_G.pth`` (Cityscapes) or an
        exported ``<name>.safetensors`` (with its ``<name>.json``); see ``model_files.load_model``."""
        generator, info = load_model(path)
        return cls(generator, info.train_config, device, precision, name=str(path), info=info)

    @property
    def precision_name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16"}[self.amp]

    @torch.inference_mode()
    def generate(self, semantics: torch.Tensor, fp32: bool = False) -> torch.Tensor:
        """(B, 36, H, W) from ``data.label_tensor`` at ``self.size`` -> (B, 3, H, W) float32 CPU in [0, 1].

        A non-finite output under bf16 is recomputed in fp32; one that stays non-finite is a ValueError.
        """
        amp = None if fp32 else self.amp
        with autocast(self.device, amp):
            y = self.generator(semantics.to(self.device)).float()
        if not bool(torch.isfinite(y).all()):
            if amp is not None:
                return self.generate(semantics, fp32=True)
            raise ValueError("the generator produced non-finite values (NaN/Inf) even in fp32")
        return ((y + 1) / 2).clamp_(0, 1).cpu()

    def synthesize(self, labels: np.ndarray, instances: np.ndarray | None = None) -> np.ndarray:
        """(h, w) integer Cityscapes label ids 0..34 [+ (h, w) instance ids] -> (H, W, 3) float32 in [0, 1]
        at ``self.size``; other sizes are resized (nearest). ValueError for bad ids or differing sizes."""
        labels = np.asarray(labels)
        if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must be a 2-D array of integer ids, got {labels.dtype} {labels.shape}")
        if instances is not None:
            instances = np.asarray(instances)
            if instances.shape != labels.shape:
                (h, w), shape = labels.shape, "x".join(map(str, instances.shape[::-1]))
                raise ValueError(f"the label map is {w}x{h} but the instance map is {shape}; they must match")
        if labels.size and (labels.min() < 0 or labels.max() >= LABEL_NC):
            raise ValueError(f"label ids must be in 0..{LABEL_NC - 1}, got {labels.min()}..{labels.max()}")
        labels = resize_ids(labels, self.size)
        instances = None if instances is None else resize_ids(instances, self.size)
        return self.generate(label_tensor(labels, instances)[None])[0].permute(1, 2, 0).numpy()


def output_stem(label_path: Path) -> str:
    """Output name stem of a label map: ``x_gtFine_labelIds.png`` -> ``x``."""
    return label_path.stem.replace("_gtFine_labelIds", "").replace("_labelIds", "")


def find_label_files(inputs: list[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Label maps from files, folders (``*labelIds.png`` below them, else the ``*.png`` in them) and globs,
    without instance maps or duplicates; plus (argument, reason) for arguments that match nothing."""
    files: list[Path] = []
    missing: list[tuple[str, str]] = []
    seen: set[Path] = set()
    for arg in inputs:
        p = Path(arg)
        if p.is_dir():
            found = sorted(p.rglob("*labelIds.png")) or sorted(p.glob("*.png"))
        elif p.is_file():
            found = [p]
        elif any(c in arg for c in "*?["):
            found = [Path(m) for m in sorted(glob.glob(arg, recursive=True)) if Path(m).is_file()]
        else:
            found = []
        if not found:
            missing.append((arg, "no label map found"))
        for f in found:
            if f.resolve() not in seen and "instanceIds" not in f.name:
                seen.add(f.resolve())
                files.append(f)
    return files, missing


def check_output_folder(folder: str | Path) -> Path:
    """Create ``folder`` if needed and check that files can be written in it: ValueError with the reason."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"cannot create the folder {folder}: {e.strerror or e}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write in {folder}: permission denied")
    return folder


@dataclass
class InferOptions:
    outdir: Path
    colorize: bool = False  # also write <stem>_labels.png, the Cityscapes-palette preview
    overwrite: bool = False  # replace existing outputs
    skip_existing: bool = False  # leave label maps whose <stem>.png exists alone


@dataclass
class Summary:
    written: list[tuple[Path, Path]] = field(default_factory=list)  # (input, output image)
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (input, one-line reason)
    not_processed: list[Path] = field(default_factory=list)  # inputs left when interrupted
    interrupted: bool = False
    stop_signal: int = 0  # the signal that interrupted the run (SIGINT, SIGTERM)

    @property
    def exit_code(self) -> int:
        """128 + the stop signal when interrupted (130 Ctrl-C, 143 SIGTERM), else 1 if any file failed."""
        if self.interrupted:
            return 128 + (self.stop_signal or signal.SIGINT)
        return 1 if self.failed else 0


def appeared_meanwhile(path: Path) -> str:
    """The message for an output that another process created while this one worked."""
    return f"{path} appeared while this run was working (another run?); nothing replaced"


def run_batch(files: list[Path], synth: Synthesizer, opts: InferOptions, log=print) -> Summary:
    """Synthesize every label map into ``opts.outdir`` (see module docstring); never raises for a bad file.
    Ctrl-C or SIGTERM: the file in progress is finished, the rest is listed in ``not_processed`` and
    ``interrupted`` / ``stop_signal`` are set (a second signal stops at once, the file in progress then
    leaves nothing behind)."""
    from tqdm import tqdm

    from gan_core.stopping import StopSignals

    summary = Summary()
    inputs = {f.resolve() for f in files}
    claimed: dict[Path, Path] = {}  # output -> the input that writes it in this run
    processed = 0
    try:
        announce = "translate-infer: {name}: stopping after the current file ({name} again: at once)"
        with StopSignals(announce) as stop:
            for src in tqdm(files, desc="label maps", unit="img", disable=None if len(files) > 1 else True):
                if stop.requested:
                    break
                try:
                    _one(src, synth, opts, inputs, claimed, summary, log)
                except FileExistsError as e:
                    if opts.skip_existing:
                        summary.skipped += 1
                        log(f"skip: {appeared_meanwhile(Path(e.filename))}")
                    else:
                        summary.failed.append((str(src), f"{src}: {appeared_meanwhile(Path(e.filename))}"))
                        log(f"error: {src}: {appeared_meanwhile(Path(e.filename))}")
                except (ValueError, OSError) as e:
                    msg = str(e) if str(src) in str(e) else f"{src}: {e}"
                    summary.failed.append((str(src), msg))
                    log(f"error: {msg}")
                except RuntimeError as e:  # e.g. out of memory on a device
                    summary.failed.append((str(src), f"{src}: {type(e).__name__}: {_first_line(e)}"))
                    log(f"error: {src}: {type(e).__name__}: {_first_line(e)}")
                processed += 1
            summary.interrupted, summary.stop_signal = stop.requested, stop.signum
    except KeyboardInterrupt as e:
        summary.interrupted, summary.stop_signal = True, int(getattr(e, "signum", 0) or signal.SIGINT)
    if summary.interrupted:
        done = {s for s, _ in summary.written}
        summary.not_processed = [f for f in files[processed:] if f not in done]
    return summary


def _one(src: Path, synth: Synthesizer, opts: InferOptions, inputs: set, claimed: dict, summary: Summary, log):
    stem = output_stem(src)
    outs = [opts.outdir / f"{stem}.png"] + ([opts.outdir / f"{stem}_labels.png"] if opts.colorize else [])
    for out in outs:
        key = out.resolve()
        if key in inputs:
            raise ValueError(f"{src}: output {out} would replace an input; choose another -o")
        if key in claimed:
            raise ValueError(f"{src}: output {out} is also the output of {claimed[key]}; rename one of them")
    if outs[0].exists() and opts.skip_existing:
        summary.skipped += 1
        log(f"skip: {outs[0]} exists")
        return
    existing = [out for out in outs if out.exists()]
    if existing and not opts.overwrite:
        raise ValueError(f"{src}: {existing[0]} exists (use --overwrite to replace it, or --skip-existing)")
    for out in outs:
        claimed[out.resolve()] = src
    labels, instances = load_label_pair(src, pair_instance_file(src), synth.size)
    rgb = synth.synthesize(labels, instances)
    write_image(outs[0], rgb, overwrite=opts.overwrite)
    if opts.colorize:
        try:
            write_image(outs[1], colorize_labels(labels).astype(np.float32) / 255, overwrite=opts.overwrite)
        except FileExistsError:
            raise ValueError(f"{src}: {outs[0]} written, but {appeared_meanwhile(outs[1])}") from None
    summary.written.append((src, outs[0]))


def synthesize_dataset(
    synth: Synthesizer, dataset, outdir: Path | None = None, overwrite: bool = False, on_error=print
):
    """Yield (3, H, W) float32 images in [0, 1], one per item of a ``CityscapesDataset``, in order. With
    ``outdir`` each is also written as ``<frame>.png``, never replacing a file unless ``overwrite``: an
    output that appeared meanwhile is kept and reported through ``on_error(message)``."""
    for i in range(len(dataset)):
        item = dataset[i]
        img = synth.generate(item["label"][None])[0]
        if outdir is not None:
            out = outdir / f"{output_stem(Path(item['path']))}.png"
            try:
                write_image(out, img.permute(1, 2, 0).numpy(), overwrite=overwrite)
            except FileExistsError:
                on_error(appeared_meanwhile(out))
        yield img
