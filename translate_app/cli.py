"""Command-line entry points of SAN-SPADE: ``translate-train``, ``translate-infer``, ``translate-eval``,
``translate-export``."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

from gan_core.config import ConfigError, load_config, to_dict
from gan_core.version import add_version_argument

from .config import SpadeTrainConfig

__all__ = ["eval_main", "export_main", "infer_main", "train_main"]


# -- translate-train ---------------------------------------------------------------------------------
def train_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="translate-train",
        description="Train SAN-SPADE (or SPADE) on Cityscapes label maps. Single process, or DDP under "
        "`torchrun --nproc_per_node K translate-train ...`.",
        epilog="Ctrl-C or SIGTERM: the step in progress finishes, a checkpoint is written and the run exits 130 "
        "(SIGINT) or 143 (SIGTERM); continue with --resume auto. A second signal stops at once.",
    )
    add_version_argument(p)
    p.add_argument("--config", "-c", type=Path, help="YAML preset (configs/san_spade_paper.yaml, spade_paper.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--data-root", metavar="DIR", help="Cityscapes root with gtFine/ and leftImg8bit/ (data.root)")
    p.add_argument("--steps", type=int, help="total steps (default: the preset's epochs)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--out", type=Path, help="run directory (default: runs/<name>)")
    p.add_argument("--resume", metavar="PATH|auto")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--stop-after", type=int, metavar="N", help="stop with a checkpoint after N steps of this run")
    p.add_argument("--dry-run", action="store_true",
                   help="print the resolved config and data summary, check the weight files the run needs, then "
                   "exit (2 if any is missing)")  # fmt: skip
    args = p.parse_args(argv)
    overrides = list(args.overrides)
    for flag, key in (("data_root", "data.root"), ("steps", "train.steps"), ("batch_size", "train.batch_size"),
                      ("device", "train.device")):  # fmt: skip
        if getattr(args, flag) is not None:
            overrides.append(f"{key}={getattr(args, flag)}")
    try:
        cfg = load_config(SpadeTrainConfig, args.config, overrides)
    except ConfigError as e:
        print(f"translate-train: config error: {e}", file=sys.stderr)
        return 2
    if not cfg.data.root or not Path(cfg.data.root).is_dir():
        print(f"translate-train: Cityscapes root not found: {cfg.data.root!r} (--data-root DIR)", file=sys.stderr)
        return 2
    run_dir = args.out or Path("runs") / cfg.name
    if args.dry_run:
        import yaml

        from gan_core.training import check_run_files
        from gan_core.weights import WeightsError

        from .data import CityscapesDataset
        from .train import required_files

        print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
        try:
            ds = CityscapesDataset(cfg.data.root, cfg.data.train_split, tuple(cfg.data.size), require_images=True)
        except ValueError as e:
            print(f"translate-train: {e}", file=sys.stderr)
            return 2
        print(f"# run directory: {run_dir}\n# training frames: {len(ds)}")
        try:
            for line in check_run_files(*required_files(cfg), dry_run=True):
                print(f"# needs {line}")
        except WeightsError as e:
            print(f"translate-train: {e}", file=sys.stderr)
            return 2
        return 0
    from gan_core.stopping import TrainingStopped

    from .train import TrainingDiverged, train

    try:
        train(cfg, run_dir, resume=args.resume, stop_after=args.stop_after)
    except FileNotFoundError as e:  # files the run needs (all listed), a --resume path: before any work
        print(f"translate-train: {e}", file=sys.stderr)
        return 2
    except (TrainingDiverged, FileExistsError, ValueError, RuntimeError) as e:
        print(f"translate-train: {e}", file=sys.stderr)
        return 1
    except TrainingStopped as e:  # SIGINT / SIGTERM: the run logged where it stopped and its checkpoint
        if e.step is None:
            print(f"translate-train: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    return 0


# -- translate-infer ---------------------------------------------------------------------------------
def infer_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="translate-infer",
        description="Synthesize street scenes from Cityscapes label-id PNGs with a SAN-SPADE generator: a "
        "translate-train checkpoint, SPADE's released Cityscapes latest_net_G.pth or a translate-export "
        "model. Instance maps (*_instanceIds.png beside *_labelIds.png) are used when present. Bad files are "
        "reported and skipped; outputs are written atomically and never replace a file without --overwrite.",
    )
    add_version_argument(p)
    p.add_argument("-i", "--input", nargs="+", required=True, metavar="LABELS", help="label PNGs, folders, globs")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUTDIR")
    p.add_argument("--weights", type=Path, required=True, metavar="CKPT",
                   help="translate-train checkpoint (.pt), SPADE's Cityscapes latest_net_G.pth, or a "
                   "translate-export NAME.safetensors (with NAME.json beside it)")  # fmt: skip
    p.add_argument("--colorize", action="store_true", help="also write the Cityscapes-palette label preview")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--skip-existing", action="store_true", help="leave label maps whose output exists alone")
    args = p.parse_args(argv)
    if args.overwrite and args.skip_existing:
        p.error("--overwrite and --skip-existing exclude each other")
    started = time.time()
    try:
        return _infer(args, started)
    except KeyboardInterrupt:
        print(f"{p.prog}: interrupted before any label map was processed", file=sys.stderr)
        return 130


def _infer(args: argparse.Namespace, started: float) -> int:
    from tqdm import tqdm

    from gan_core.atomic import remove_stale_temporaries
    from gan_core.runtime import tune_cpu_allocator

    from .infer import InferOptions, Synthesizer, check_output_folder, find_label_files, run_batch

    prog = "translate-infer"
    try:
        check_output_folder(args.output)
    except ValueError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    stale = remove_stale_temporaries(args.output, started)
    if stale:
        print(f"{prog}: removed {len(stale)} unfinished temporary file(s) of an earlier run in {args.output}",
              file=sys.stderr)  # fmt: skip
    tune_cpu_allocator()
    try:
        synth = Synthesizer.from_checkpoint(args.weights, args.device, args.precision)
    except (OSError, ValueError, RuntimeError) as e:
        print(f"{prog}: cannot load the checkpoint: {e}", file=sys.stderr)
        return 2

    def log(msg: str) -> None:
        tqdm.write(msg, file=sys.stderr)

    files, missing = find_label_files(args.input)
    for arg, why in missing:
        log(f"error: {arg}: {why}")
    H, W = synth.size
    log(f"{prog}: loaded {synth.info.describe()}")
    log(f"{prog}: generator {synth.info.network()}, device {synth.device}, precision {synth.precision_name}, "
        f"{len(files)} label map(s)")  # fmt: skip
    opts = InferOptions(args.output, args.colorize, args.overwrite, args.skip_existing)
    summary = run_batch(files, synth, opts, log)
    summary.failed[:0] = missing
    counts = f"{len(summary.written)} written, {len(summary.failed)} failed"
    counts += f", {summary.skipped} skipped" if summary.skipped else ""
    if summary.interrupted:
        why = signal.Signals(summary.stop_signal or signal.SIGINT).name
        log(f"{prog}: interrupted ({why}): {counts}, {len(summary.not_processed)} not processed")
        for src, out in summary.written:
            log(f"  done: {src} -> {out}")
    else:
        log(f"{prog}: {counts} ({W}x{H}, {synth.generator.__class__.__name__})")
    return summary.exit_code


# -- translate-eval ----------------------------------------------------------------------------------
def _folder_images(folder: Path):
    import numpy as np
    import torch

    from gan_core.image_io import list_images, read_image

    files = list_images(folder)
    if len(files) < 2:
        raise ValueError(f"{folder}: FID needs at least 2 images, found {len(files)}")
    for f in files:
        px = read_image(f).pixels
        px = np.repeat(px[..., :1], 3, axis=2) if px.shape[2] in (1, 2) else px[..., :3]
        yield torch.from_numpy(np.ascontiguousarray(px.transpose(2, 0, 1)))


def eval_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="translate-eval",
        description="FID with the pytorch-fid protocol: folder vs folder, folder vs cached statistics, or a "
        "checkpoint's images generated from Cityscapes labels vs the real photos (statistics cached). "
        "Output files (--json, --save-stats, --out images) never replace a file without --overwrite.",
    )
    add_version_argument(p)
    p.add_argument("--fake", type=Path, help="folder of generated images")
    p.add_argument("--real", type=Path, help="folder of real images")
    p.add_argument("--real-stats", type=Path, help="cached real statistics (.npz written by --save-stats)")
    p.add_argument("--save-stats", type=Path, help="write the statistics of --real (or of the real photos) here")
    p.add_argument("--weights", type=Path, help="generator (translate-train .pt, SPADE's Cityscapes latest_net_G.pth, "
                   "translate-export .safetensors): generate from --data-root labels")  # fmt: skip
    p.add_argument("--data-root", type=Path, help="Cityscapes root (with --weights)")
    p.add_argument("--split", default="val")
    p.add_argument("--out", type=Path, help="write generated images here (with --weights)")
    p.add_argument("--fid-weights", default="fid_inception", help="FID Inception weights (name or path)")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--json", type=Path, help="write the result as JSON")
    p.add_argument("--overwrite", action="store_true", help="replace existing --json, --save-stats, --out files")
    args = p.parse_args(argv)
    if args.weights is not None and args.fake is not None:
        p.error("--weights and --fake exclude each other (--weights generates the fake images)")
    if args.weights is not None and args.data_root is None:
        p.error("--weights needs --data-root (Cityscapes root with the label maps)")
    if args.out is not None and args.weights is None:
        p.error("--out is where --weights writes its generated images; give --weights")
    has_real = args.real is not None or args.real_stats is not None or args.weights is not None
    if not has_real or (args.fake is None and args.weights is None and args.save_stats is None):
        p.error("give --fake DIR (or --weights + --data-root) and --real DIR or --real-stats FILE")
    started = time.time()
    try:
        return _evaluate(args, started)
    except KeyboardInterrupt:
        where = f"; the images generated so far are in {args.out}" if args.out is not None else ""
        print(f"translate-eval: interrupted (Ctrl-C); no FID computed{where}", file=sys.stderr)
        return 130


def _evaluate(args: argparse.Namespace, started: float) -> int:
    from gan_core.atomic import check_output_path, remove_stale_temporaries, write_text
    from gan_core.distributed import pick_device
    from gan_core.extras import MissingExtraError
    from gan_core.metrics.fid import PROTOCOL, FIDInception, FIDStats, fid_from_stats, load_stats, save_stats
    from gan_core.weights import WeightsError

    from .infer import appeared_meanwhile, check_output_folder

    prog = "translate-eval"
    try:  # every output is checked before any work
        for path in (args.json, args.save_stats):
            if path is not None:
                check_output_path(path, args.overwrite)
        if args.out is not None:
            check_output_folder(args.out)
        device = pick_device(args.device)
    except (ValueError, RuntimeError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    folders = {Path(x).parent for x in (args.json, args.save_stats) if x is not None} | {args.out} - {None}
    for folder in folders:
        stale = remove_stale_temporaries(folder, started)
        if stale:
            print(f"{prog}: removed {len(stale)} unfinished temporary file(s) of an earlier run in {folder}",
                  file=sys.stderr)  # fmt: skip
    generation = None
    if args.weights is not None:
        generation = _prepare_generation(args, device)
        if isinstance(generation, int):
            return generation
    try:
        net = FIDInception(args.fid_weights)
    except (WeightsError, MissingExtraError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    errors: list[str] = []

    def on_error(msg: str) -> None:
        errors.append(msg)
        print(f"error: {msg}", file=sys.stderr)

    try:
        fake_stats = real_stats = None
        if generation is not None:
            fake_stats, real_imgs, source = _generate_for_eval(args, generation, net, device, on_error)
            if args.real_stats is None and args.real is None:
                real_stats = FIDStats.from_images(real_imgs, net, args.batch_size, device, PROTOCOL, source)
        elif args.fake is not None:
            fake_stats = FIDStats.from_images(_folder_images(args.fake), net, args.batch_size, device, PROTOCOL,
                                              f"folder {args.fake}")  # fmt: skip
        if args.real_stats is not None:
            real_stats = load_stats(args.real_stats)
        elif args.real is not None:
            real_stats = FIDStats.from_images(_folder_images(args.real), net, args.batch_size, device, PROTOCOL,
                                              f"folder {args.real}")  # fmt: skip
        if args.save_stats is not None:
            save_stats(args.save_stats, real_stats, overwrite=args.overwrite)
            print(f"statistics of {real_stats.n} real images: {args.save_stats}", file=sys.stderr)
        if fake_stats is None:  # statistics only
            return 0
        fid = fid_from_stats(fake_stats, real_stats)
        result = {"fid": fid, "n_fake": fake_stats.n, "n_real": real_stats.n, "protocol": PROTOCOL,
                  "fake": fake_stats.source, "real": real_stats.source}  # fmt: skip
        print(f"FID {fid:.4f} ({fake_stats.n} generated vs {real_stats.n} real images)")
        if args.json:
            write_text(args.json, json.dumps(result, indent=2) + "\n", overwrite=args.overwrite)
    except FileExistsError as e:
        print(f"{prog}: {appeared_meanwhile(Path(e.filename))}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 1
    return 1 if errors else 0


def _prepare_generation(args: argparse.Namespace, device):
    """(Synthesizer, dataset) for --weights, or an exit code after a one-line error."""
    from .data import CityscapesDataset
    from .infer import Synthesizer, output_stem

    prog = "translate-eval"
    try:
        synth = Synthesizer.from_checkpoint(args.weights, device, "fp32")
    except (OSError, ValueError, RuntimeError) as e:
        print(f"{prog}: cannot load the checkpoint: {e}", file=sys.stderr)
        return 2
    print(f"{prog}: loaded {synth.info.describe()} ({synth.info.network()})", file=sys.stderr)
    try:
        ds = CityscapesDataset(args.data_root, args.split, synth.size)
    except ValueError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    if args.out is not None and not args.overwrite:
        existing = [o for lab, _, _ in ds.items if (o := args.out / f"{output_stem(lab)}.png").exists()]
        if existing:
            more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
            print(f"{prog}: {existing[0]} exists{more}; use --overwrite to replace or another --out", file=sys.stderr)
            return 2
    return synth, ds


def _generate_for_eval(args, generation, net, device, on_error):
    """Generate from every label map of the split; returns (fake stats, real photo iterator, source)."""
    from gan_core.metrics.fid import PROTOCOL, FIDStats

    from .infer import synthesize_dataset

    synth, ds = generation

    def reals():  # consumed only when the real statistics are not cached
        for i in range(len(ds)):
            item = ds[i]
            if "image" in item:
                yield (item["image"] + 1) / 2

    fakes = synthesize_dataset(synth, ds, args.out, args.overwrite, on_error)  # streamed, written if asked
    source = f"{args.weights} on {args.split}"
    fake_stats = FIDStats.from_images(fakes, net, args.batch_size, device, PROTOCOL, source)
    H, W = synth.size
    return fake_stats, reals(), f"Cityscapes {args.split} photos, bicubic to {W}x{H}"


# -- translate-export ---------------------------------------------------------------------------------
def export_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="translate-export",
        description="Release a SPADE generator (of a translate-train checkpoint, SPADE's Cityscapes "
        "latest_net_G.pth, or an earlier export) as safetensors + JSON config, which translate-infer --weights "
        "loads. Both outputs are checked before either is written; existing files are kept unless --overwrite.",
    )
    add_version_argument(p)
    p.add_argument("checkpoint", type=Path, help="translate-train checkpoint (.pt), latest_net_G.pth or .safetensors")
    p.add_argument("out", type=Path, help="output path: NAME.safetensors or NAME (NAME.json is written beside it)")
    p.add_argument("--fp32", action="store_true", help="keep float32 weights (default float16, half the size)")
    p.add_argument("--name", help="model name recorded in the config (default: NAME)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    args = p.parse_args(argv)
    from .export import export_generator

    prog = "translate-export"
    try:
        path, info = export_generator(args.checkpoint, args.out, not args.fp32, args.name, args.overwrite)
    except FileExistsError as e:  # appeared between the check and the write: nothing of ours is left
        print(f"{prog}: {e.filename}: exists (written by someone else meanwhile?); nothing written", file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"{prog}: cannot write {e.filename or args.out}: {e.strerror or e}", file=sys.stderr)
        return 1
    print(f"{prog}: read {info.describe()}")
    print(f"wrote {path} and {path.with_suffix('.json')} ({info.network()}, {'float32' if args.fp32 else 'float16'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(train_main())
