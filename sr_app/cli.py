"""Command-line entry points of SAN-SRGAN: ``sr-train``, ``sr-infer``, ``sr-eval``, ``sr-export``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gan_core.config import ConfigError, load_config, to_dict
from gan_core.version import add_version_argument

from .cli_args import (
    MODEL_LOAD_ERRORS,
    add_model_arguments,
    add_real_esrgan_answers,
    apply_weights_dir,
    check_report_argument,
    number,
    quality,
    tile_size,
)
from .config import SRTrainConfig

__all__ = ["eval_main", "export_main", "infer_main", "train_main"]


def _train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sr-train",
        description="Train SAN-SRGAN (stage pretrain: pixel loss; stage gan: L1 + VGG19 + hinge with a SAN critic). "
        "Single process, or DDP under `torchrun --nproc_per_node K sr-train ...`.",
        epilog="Ctrl-C or SIGTERM: the step in progress finishes, a checkpoint is written and the run exits 130 "
        "(SIGINT) or 143 (SIGTERM); continue with --resume auto. A second signal stops at once.",
    )
    add_version_argument(p)
    p.add_argument("--config", "-c", type=Path, help="YAML preset (configs/sr_paper.yaml, sr_pretrain.yaml, ...)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set loss.adv_weight=0.01 (repeatable)")  # fmt: skip
    p.add_argument("--train-dir", action="append", default=None, metavar="DIR", help="HR training folder (repeatable)")
    p.add_argument("--val-dir", action="append", default=None, metavar="DIR", help="validation folder (repeatable)")
    p.add_argument("--steps", type=int, help="total training steps (train.steps)")
    p.add_argument("--batch-size", type=int, help="global batch size (train.batch_size)")
    p.add_argument("--out", type=Path, help="run directory (default: runs/<name>)")
    p.add_argument("--resume", metavar="PATH|auto", help="checkpoint to resume from, or 'auto' for the newest in --out")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N (train.device)")
    p.add_argument("--stop-after", type=int, metavar="N", help="stop with a checkpoint after N steps of this run")
    p.add_argument("--dry-run", action="store_true",
                   help="print the resolved config and the data summary, check the weight files and checkpoint "
                   "the run needs, then exit (2 if any is missing)")  # fmt: skip
    return p


def resolve_train_config(args: argparse.Namespace) -> SRTrainConfig:
    overrides = list(args.overrides)
    if args.train_dir is not None:
        overrides.append("data.train_dirs=" + _yaml_list(args.train_dir))
    if args.val_dir is not None:
        overrides.append("data.val_dirs=" + _yaml_list(args.val_dir))
    for flag, key in (("steps", "train.steps"), ("batch_size", "train.batch_size"), ("device", "train.device")):
        if getattr(args, flag) is not None:
            overrides.append(f"{key}={getattr(args, flag)}")
    return load_config(SRTrainConfig, args.config, overrides)


def _yaml_list(items: list[str]) -> str:
    import json

    return json.dumps([str(i) for i in items])


def train_main(argv: list[str] | None = None) -> int:
    args = _train_parser().parse_args(argv)
    try:
        cfg = resolve_train_config(args)
    except ConfigError as e:
        print(f"sr-train: config error: {e}", file=sys.stderr)
        return 2
    run_dir = args.out or Path("runs") / cfg.name
    if not cfg.data.train_dirs:
        print("sr-train: no training data: give --train-dir DIR or set data.train_dirs", file=sys.stderr)
        return 2
    missing = [d for d in [*cfg.data.train_dirs, *cfg.data.val_dirs] if not Path(d).is_dir()]
    if missing:
        print(f"sr-train: folder not found: {missing[0]}", file=sys.stderr)
        return 2
    if args.dry_run:
        return _dry_run(cfg, run_dir, args.resume)
    from gan_core.stopping import TrainingStopped

    from .train import TrainingDiverged, train

    try:
        train(cfg, run_dir, resume=args.resume, stop_after=args.stop_after)
    except FileNotFoundError as e:  # files the run needs (all listed), a --resume path: before any work
        print(f"sr-train: {e}", file=sys.stderr)
        return 2
    except (TrainingDiverged, FileExistsError, ValueError, RuntimeError) as e:
        print(f"sr-train: {e}", file=sys.stderr)
        return 1
    except TrainingStopped as e:  # SIGINT / SIGTERM: the run logged where it stopped and its checkpoint
        if e.step is None:
            print(f"sr-train: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    return 0


def _dry_run(cfg: SRTrainConfig, run_dir: Path, resume: str | None = None) -> int:
    import yaml

    from gan_core.checkpoint import find_latest_checkpoint
    from gan_core.training import check_run_files
    from gan_core.weights import WeightsError

    from .data import SRTrainDataset, SRValDataset
    from .train import required_files

    print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
    print(f"# run directory: {run_dir}")
    try:
        ds = SRTrainDataset(
            cfg.data.train_dirs, cfg.data.scale, cfg.data.lr_patch, cache=False, exclude=cfg.data.exclude
        )
        print(f"# training images: {len(ds)} usable, {len(ds.too_small)} too small, {len(ds.unreadable)} unreadable")
        for d in cfg.data.val_dirs:
            print(f"# validation {d}: {len(SRValDataset(d, cfg.data.scale, cfg.data.val_max_size))} images")
    except ValueError as e:
        print(f"sr-train: {e}", file=sys.stderr)
        return 2
    fresh = resume is None or (resume == "auto" and find_latest_checkpoint(run_dir / "ckpt") is None)
    try:
        for line in check_run_files(*required_files(cfg, fresh=fresh), dry_run=True):
            print(f"# needs {line}")
    except WeightsError as e:
        print(f"sr-train: {e}", file=sys.stderr)
        return 2
    return 0


# -- sr-infer --------------------------------------------------------------------------------------
def _infer_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sr-infer",
        description="Upscale images with a san-gan model (default: the model in weights/) or a community SR "
        "model (.pth / .safetensors of any architecture spandrel recognises: ESRGAN, Real-ESRGAN Compact, "
        "SwinIR, HAT, ...). Bad files are reported and skipped; outputs are written atomically.",
    )
    add_version_argument(p)
    p.add_argument("-i", "--input", nargs="+", metavar="INPUT", help="image files, folders or globs")
    p.add_argument("-o", "--output", type=Path, default=Path("results"), metavar="OUTDIR",
                   help="output folder (default: results)")  # fmt: skip
    add_model_arguments(p)
    p.add_argument(
        "-s",
        "--outscale",
        type=number(0, False),
        help="final scale > 0: an extra high-quality resize after the network (default: its scale)",
    )
    p.add_argument("-t", "--tile", type=tile_size, default="auto",
                   help="tile size in input pixels: auto (default), 0 = no tiling, or >= 32")  # fmt: skip
    p.add_argument("--tile-pad", "--tile_pad", dest="tile_pad", type=number(0, True, integer=True), default=None,
                   help="context pixels around each tile (default 24)")  # fmt: skip
    p.add_argument("--fp32", action="store_true", help="same as --precision fp32")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("-g", "--gpu-id", type=int, help="alias of --device cuda:N")
    p.add_argument("--ext", choices=["auto", "png", "jpg", "webp"], default="auto", help="output format")
    p.add_argument("--quality", type=quality, default=95, metavar="1-100",
                   help="JPEG / WebP quality of the outputs (default 95; PNG is lossless)")  # fmt: skip
    p.add_argument("--suffix", default="out", help="output name <stem>_<suffix>.<ext> (default: out)")
    p.add_argument("--recursive", action="store_true", help="recurse into folders and mirror their tree")
    p.add_argument("--skip-existing", action="store_true",
                   help="leave existing outputs alone (no error), also those another run writes meanwhile")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (and an existing --report)")
    p.add_argument("--max-pixels", type=number(1, True), default=100e6,
                   help="refuse inputs above this many pixels (1e8), and outputs above it x scale^2")  # fmt: skip
    p.add_argument("--ref", type=Path, metavar="DIR", help="reference images (matched by stem): PSNR/SSIM/LPIPS")
    p.add_argument("--no-niqe", action="store_true", help="do not compute NIQE")
    p.add_argument("--niqe-max-mp", type=number(0, True), default=4.0,
                   help="skip NIQE for outputs above this many megapixels (default 4; ~400 bytes/pixel)")  # fmt: skip
    p.add_argument("--report", type=Path, metavar="FILE", help="write per-image results to FILE.json or FILE.csv")
    p.add_argument("--list-models", action="store_true",
                   help="list the models of the weights folders (manifest entries and NAME.safetensors / NAME.pth "
                   "files) and exit")  # fmt: skip
    add_real_esrgan_answers(p)
    return p


def _list_models() -> int:
    from gan_core.weights import load_manifest, weights_status

    from .model_files import load_manifest_default, unlisted_model_files

    try:
        default = load_manifest_default()
    except FileNotFoundError:
        default = ""
    models = [s for s in load_manifest().values() if s.kind == "model"]
    unlisted = unlisted_model_files()
    if not models and not unlisted:
        print("no models in the weights folders")
        return 1
    status = {r["name"]: r for r in weights_status(s.name for s in models)}  # hashes the models only
    for spec in models:
        st = status.get(spec.name, {})
        mark = "*" if spec.name == default else " "
        print(f"{mark} {spec.name:<32} {st.get('status', '?'):<8} {spec.file}  {spec.description}")
    for path in unlisted:
        print(f"  {path.stem:<32} {'unlisted':<8} {path}  (no manifest entry: not hash-checked; -n {path.stem})")
    print("(* = default)")
    return 0


def infer_main(argv: list[str] | None = None) -> int:
    try:
        return _infer_main(argv)
    except KeyboardInterrupt:  # a second Ctrl-C outside a file, or one before the handler is in place
        print("sr-infer: interrupted", file=sys.stderr)
        return 130


def _infer_main(argv: list[str] | None) -> int:
    import time

    started = time.time()  # temporaries older than this in our output folders are leftovers
    parser = _infer_parser()
    args = parser.parse_args(argv)
    apply_weights_dir(parser, args.weights_dir)
    if args.list_models:
        return _list_models()
    if not args.input:
        parser.error("-i/--input is required (image files, folders or globs)")
    if args.weights is not None and args.model is not None:
        parser.error("give --weights or -n/--model, not both")
    if args.overwrite and args.skip_existing:
        parser.error("--overwrite and --skip-existing exclude each other")
    tile = args.tile
    device = f"cuda:{args.gpu_id}" if args.gpu_id is not None else args.device
    precision = "fp32" if args.fp32 else args.precision
    if args.ref is not None and not args.ref.is_dir():
        parser.error(f"--ref folder not found: {args.ref}")
    check_report_argument(parser, args.report, args.overwrite)

    from gan_core.stopping import StopSignals

    with StopSignals("sr-infer: {name}: stopping after the current file(s) ({name} again: abandon them)") as stop:
        code = _infer_run(args, device, precision, tile, started, lambda: stop.requested)
        return stop.exit_code if code == 130 and stop.requested else code


def _infer_run(args: argparse.Namespace, device: str, precision: str, tile, started: float, stop_requested) -> int:
    from gan_core.runtime import tune_cpu_allocator

    from .batch import BatchOptions, collect_inputs, print_table, remove_leftover_temporaries, write_report
    from .infer import DEFAULT_TILE_PAD, Upscaler
    from .pipeline import run_batch

    tune_cpu_allocator()
    try:
        up = Upscaler.from_pretrained(
            args.weights or args.model, device, precision, tile,
            DEFAULT_TILE_PAD if args.tile_pad is None else args.tile_pad,
        )  # fmt: skip
    except MODEL_LOAD_ERRORS as e:
        print(f"sr-infer: cannot load the model: {e}", file=sys.stderr)
        return 2

    def log(msg: str) -> None:
        from tqdm import tqdm

        tqdm.write(msg, file=sys.stderr)

    files, missing, notes = collect_inputs(args.input, args.recursive)
    for arg, reason in missing:
        log(f"error: {arg}: {reason}")
    for note in notes:
        log(note)
    log(
        f"sr-infer: model {up.name} (x{up.scale}) from {up.provenance}, device {up.device}, "
        f"precision {up.precision_name}{' + channels_last' if up.channels_last else ''}"
        f"{f' ({up.precision_note})' if up.precision_note else ''}, tile {tile}, {len(files)} input(s), "
        f"output folder {args.output}"
    )
    log(f"sr-infer: model card: {up.model_card}")
    opts = BatchOptions(
        outdir=args.output, suffix=args.suffix, ext=args.ext, quality=args.quality,
        skip_existing=args.skip_existing, overwrite=args.overwrite, outscale=args.outscale,
        max_pixels=int(args.max_pixels), ref_dir=args.ref, niqe=not args.no_niqe,
        niqe_max_pixels=int(args.niqe_max_mp * 1e6),
    )  # fmt: skip
    folders = {args.output / rel for _, rel in files} | {args.output}
    remove_leftover_temporaries(folders | ({args.report.parent} if args.report else set()), started, log)
    summary = run_batch(files, up, opts, log, stop_requested)
    summary.failed[:0] = missing
    means = print_table(summary.rows) if summary.rows else {}
    code = summary.exit_code
    if args.report is not None:
        meta = {"model": up.name, "model_file": up.source, "model_sha256": up.sha256[:12], "scale": up.scale,
                "model_card": up.card, "device": str(up.device), "precision": up.precision_name,
                "protocol": {"psnr_ssim": "8-bit, BT.601 studio-range Y, crop = scale, SSIM 11x11 sigma 1.5",
                             "niqe": "pyiqa NIQE, LIVE parameters, same Y, crop = scale"}}  # fmt: skip
        try:
            write_report(args.report, summary, means, meta, overwrite=args.overwrite)
        except (OSError, ValueError) as e:  # e.g. created by someone else since the check at the start
            log(f"error: report {args.report} not written: {e}")
            code = code or 1
    counts = f"{summary.done} written, {summary.skipped} skipped, {len(summary.failed)} failed"
    if summary.interrupted:
        counts += f", {len(summary.not_processed)} not processed (interrupted)"
    log(f"sr-infer: {counts}")
    for src, err in summary.failed:
        log(f"  failed: {src}: {err.split(': ', 1)[-1] if err.startswith(src) else err}")
    if summary.interrupted:
        finished = [str(src) for src, _ in files[: len(files) - len(summary.not_processed)]]
        if finished:
            span = finished[0] if len(finished) == 1 else f"{finished[0]} ... {finished[-1]}"
            log(f"  processed: {len(finished)} input(s) in order, {span}")
        if summary.not_processed:
            log(f"  not processed: {len(summary.not_processed)} input(s), from {summary.not_processed[0]}; "
                "run again with --skip-existing to finish")  # fmt: skip
    return code


# -- sr-eval ----------------------------------------------------------------------------------------
PLOT_SUFFIXES = (".png", ".pdf", ".svg", ".jpg")


def _eval_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sr-eval",
        description="Benchmark protocol (Y-PSNR/SSIM, NIQE, LPIPS) of a model (san-gan or community) and of "
        "bicubic on SR datasets. "
        "Images that cannot be evaluated are listed (results.json 'failed') and the rest evaluated; exit 1 if any "
        "failed. Outputs never replace existing files unless --overwrite.",
    )
    add_version_argument(p)
    add_model_arguments(p)
    p.add_argument("--data", nargs="+", type=Path, required=True, help="EDSR-layout or HR-only folders")
    p.add_argument("--out", type=Path, default=Path("eval"), help="folder for results.json and the plot")
    p.add_argument("--json", type=Path, help="results file (default OUT/results.json)")
    p.add_argument("--plot", type=Path, help="perception-distortion plot (default OUT/perception_distortion.png)")
    p.add_argument("--save-images", action="store_true", help="also write the SR images under OUT/images/")
    p.add_argument("--overwrite", action="store_true", help="replace existing results, plot and images")
    p.add_argument("--no-niqe", action="store_true")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto")
    p.add_argument("--device", default="auto")
    p.add_argument("-t", "--tile", type=tile_size, default="auto",
                   help="tile size in input pixels: auto (default), 0 = no tiling, or >= 32")  # fmt: skip
    return p


def _eval_outputs(args: argparse.Namespace) -> tuple[Path, Path | None]:
    """(results file, plot file or None): checked before any work; ValueError with the reason."""
    from gan_core.atomic import check_output_path
    from gan_core.extras import has_module

    json_path = args.json or args.out / "results.json"
    plot_path = None if args.no_niqe else args.plot or args.out / "perception_distortion.png"
    if plot_path is not None and not has_module("matplotlib"):
        print("note: perception-distortion plot skipped: pip install 'san-gan[metrics]'", file=sys.stderr)
        plot_path = None
    if plot_path is not None and plot_path.suffix.lower() not in PLOT_SUFFIXES:
        raise ValueError(f"--plot must end in {', '.join(PLOT_SUFFIXES)}: {plot_path}")
    if plot_path is not None and plot_path.absolute() == json_path.absolute():
        raise ValueError(f"the results and the plot would both be {json_path}")
    for path in (json_path, plot_path):
        if path is not None:
            check_output_path(path, args.overwrite)
    return json_path, plot_path


def _check_saved_images(args: argparse.Namespace, scale: int, start: float) -> None:
    """--save-images: none of OUT/images/<dataset>/<stem>_x<scale>.png may exist (unless --overwrite)."""
    from gan_core.atomic import check_output_path, remove_stale_temporaries

    from .data import SRValDataset

    for folder in args.data:
        target = args.out / "images" / folder.name
        remove_stale_temporaries(target, older_than=start)
        for f in SRValDataset.hr_files(folder):
            check_output_path(target / f"{f.stem}_x{scale}.png", args.overwrite)


def eval_main(argv: list[str] | None = None) -> int:
    import time

    start = time.time()
    p = _eval_parser()
    args = p.parse_args(argv)
    apply_weights_dir(p, args.weights_dir)
    if args.weights is not None and args.model is not None:
        p.error("give --weights or -n/--model, not both")
    missing = [d for d in args.data if not d.is_dir()]
    if missing:
        p.error(f"dataset folder not found: {missing[0]}")
    names = [d.name for d in args.data]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        p.error(f"two --data folders are named {twice[0]}: their results would collide")
    from gan_core.atomic import remove_stale_temporaries

    try:
        json_path, plot_path = _eval_outputs(args)
    except ValueError as e:
        print(f"sr-eval: {e}", file=sys.stderr)
        return 2
    for folder in {json_path.parent, *([plot_path.parent] if plot_path else [])}:
        remove_stale_temporaries(folder, older_than=start)

    from gan_core.runtime import tune_cpu_allocator

    from .evaluate import evaluate_datasets, plot_perception_distortion, print_eval_table, save_json
    from .infer import Upscaler

    tune_cpu_allocator()
    try:
        up = Upscaler.from_pretrained(args.weights or args.model, args.device, args.precision, args.tile)
    except MODEL_LOAD_ERRORS as e:
        print(f"sr-eval: cannot load the model: {e}", file=sys.stderr)
        return 2
    if args.save_images:
        try:
            _check_saved_images(args, up.scale, start)
        except ValueError as e:
            print(f"sr-eval: {e}", file=sys.stderr)
            return 2
    note = f" ({up.precision_note})" if up.precision_note else ""
    print(f"sr-eval: model {up.name} (x{up.scale}) from {up.provenance}, {up.device}, {up.precision_name}{note}",
          file=sys.stderr)  # fmt: skip
    print(f"sr-eval: model card: {up.model_card}", file=sys.stderr)
    try:
        result = evaluate_datasets(up, args.data, niqe=not args.no_niqe,
                                   save_dir=args.out / "images" if args.save_images else None,
                                   log=lambda m: print(m, file=sys.stderr), overwrite=args.overwrite)  # fmt: skip
    except KeyboardInterrupt:
        print("sr-eval: interrupted; results not written", file=sys.stderr)
        return 130
    failed = result["failed"]
    if not result["datasets"]:
        print(f"sr-eval: nothing to evaluate: all {len(failed)} file(s) failed; no results written", file=sys.stderr)
        return 1
    print(print_eval_table(result))
    try:
        save_json(result, json_path, overwrite=args.overwrite)
        plot = plot_perception_distortion(result, plot_path, overwrite=args.overwrite) if plot_path else None
    except OSError as e:  # FileExistsError: written by someone else since the check
        print(f"sr-eval: cannot write {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 1
    print(f"results: {json_path}" + (f", plot: {plot}" if plot else ""), file=sys.stderr)
    if failed:
        print(f"sr-eval: {len(failed)} file(s) failed:", file=sys.stderr)
        for row in failed:
            print(f"  failed: {row['file']}: {row['error']}", file=sys.stderr)
        return 1
    return 0


# -- sr-export --------------------------------------------------------------------------------------
def export_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="sr-export",
        description="Release the EMA generator of an sr-train checkpoint as safetensors + JSON config. Both "
        "outputs are checked before either is written; existing files are kept unless --overwrite. Written into "
        "a weights folder (weights/, --weights-dir or $SAN_WEIGHTS_DIR of sr-infer), it runs with -n NAME.",
    )
    add_version_argument(p)
    p.add_argument("checkpoint", type=Path, help="sr-train checkpoint (.pt), e.g. runs/x/ckpt/best.pt")
    p.add_argument("out", type=Path, help="output path: NAME.safetensors or NAME (NAME.json is written beside it)")
    p.add_argument("--fp32", action="store_true", help="keep float32 weights (default float16, half the size)")
    p.add_argument("--name", help="model name recorded in the config")
    p.add_argument("--command", help="training command recorded in the config")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    args = p.parse_args(argv)
    from .model_files import export_generator

    extra = {k: v for k, v in (("name", args.name), ("training_command", args.command)) if v}
    try:
        path = export_generator(args.checkpoint, args.out, fp16=not args.fp32, extra=extra, overwrite=args.overwrite)
    except FileExistsError as e:  # appeared between the check and the write: nothing of ours is left
        print(f"sr-export: {e.filename}: exists (written by someone else meanwhile?); nothing written", file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError) as e:
        print(f"sr-export: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"sr-export: cannot write {e.filename or args.out}: {e.strerror or e}", file=sys.stderr)
        return 1
    print(f"wrote {path} and {path.with_suffix('.json')}")
    print(_export_usage_hint(path))
    return 0


def _export_usage_hint(path: Path) -> str:
    """How to run an exported model: ``-n NAME`` when it landed in a weights folder, else the two other ways."""
    from gan_core.weights import weights_dirs

    name = path.stem
    if any(path.parent.resolve() == d.resolve() for d in weights_dirs()):
        return f"use it with: sr-infer -n {name} -i INPUT (found in {path.parent})"
    return (f"use it with: sr-infer --weights {path} -i INPUT, or sr-infer --weights-dir {path.parent} -n {name} "
            "-i INPUT (or set SAN_WEIGHTS_DIR)")  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(train_main())
