"""Command-line entry points of SAN-SRGAN: ``sr-train``, ``sr-infer``, ``sr-eval``, ``sr-export``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gan_core.config import ConfigError, load_config, to_dict

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
        description="Upscale images x4 with a SAN-SRGAN / SRResNet-style generator (default: the model in "
        "weights/). Bad files are reported and skipped; outputs are written atomically.",
    )
    p.add_argument("-i", "--input", nargs="+", metavar="INPUT", help="image files, folders or globs")
    p.add_argument("-o", "--output", type=Path, metavar="OUTDIR", help="output folder")
    p.add_argument("-n", "--model", metavar="NAME", help="model name from weights/manifest.json (default model)")
    p.add_argument("--weights", type=Path, metavar="PATH", help="model file: .safetensors (+ .json) or sr-train .pt")
    p.add_argument("-s", "--outscale", type=float, help="final scale: extra high-quality resize after the x4 net")
    p.add_argument("-t", "--tile", default="auto", help="tile size in input pixels; 0 = no tiling; auto (default)")
    p.add_argument("--tile-pad", type=int, default=None, help="context pixels around each tile (default 24)")
    p.add_argument("--fp32", action="store_true", help="same as --precision fp32")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("-g", "--gpu-id", type=int, help="alias of --device cuda:N")
    p.add_argument("--ext", choices=["auto", "png", "jpg", "webp"], default="auto", help="output format")
    p.add_argument("--suffix", default="out", help="output name <stem>_<suffix>.<ext> (default: out)")
    p.add_argument("--recursive", action="store_true", help="recurse into folders and mirror their tree")
    p.add_argument("--skip-existing", action="store_true", help="leave existing outputs alone (no error)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--max-pixels", type=float, default=100e6, help="refuse inputs above this many pixels (1e8)")
    p.add_argument("--ref", type=Path, metavar="DIR", help="reference images (matched by stem): PSNR/SSIM/LPIPS")
    p.add_argument("--no-niqe", action="store_true", help="do not compute NIQE")
    p.add_argument("--niqe-max-mp", type=float, default=4.0,
                   help="skip NIQE for outputs above this many megapixels (default 4; ~400 bytes/pixel)")  # fmt: skip
    p.add_argument("--report", type=Path, metavar="FILE", help="write per-image results to FILE.json or FILE.csv")
    p.add_argument("--list-models", action="store_true", help="list the models in weights/ and exit")
    return p


def _list_models() -> int:
    from gan_core.weights import load_manifest, weights_status

    from .infer import load_manifest_default

    try:
        default = load_manifest_default()
    except FileNotFoundError:
        default = ""
    models = [s for s in load_manifest().values() if s.kind == "model"]
    if not models:
        print("no models in weights/manifest.json")
        return 1
    status = {r["name"]: r for r in weights_status(s.name for s in models)}  # hashes the models only
    for spec in models:
        st = status.get(spec.name, {})
        mark = "*" if spec.name == default else " "
        print(f"{mark} {spec.name:<32} {st.get('status', '?'):<8} {spec.file}  {spec.description}")
    print("(* = default)")
    return 0


def infer_main(argv: list[str] | None = None) -> int:
    parser = _infer_parser()
    args = parser.parse_args(argv)
    if args.list_models:
        return _list_models()
    if not args.input or args.output is None:
        parser.error("-i/--input and -o/--output are required")
    if args.overwrite and args.skip_existing:
        parser.error("--overwrite and --skip-existing exclude each other")
    tile = args.tile
    if tile != "auto":
        try:
            tile = int(tile)
        except ValueError:
            parser.error(f"--tile must be auto or an integer, got {tile!r}")
        if tile < 0 or 0 < tile < 32:
            parser.error("--tile must be 0 (no tiling) or at least 32")
    device = f"cuda:{args.gpu_id}" if args.gpu_id is not None else args.device
    precision = "fp32" if args.fp32 else args.precision
    if args.ref is not None and not args.ref.is_dir():
        parser.error(f"--ref folder not found: {args.ref}")
    if args.report is not None and args.report.suffix.lower() not in (".json", ".csv"):
        parser.error("--report must end in .json or .csv")

    from gan_core.runtime import tune_cpu_allocator

    from .batch import BatchOptions, collect_inputs, print_table, run_batch, write_report
    from .infer import DEFAULT_TILE_PAD, Upscaler

    tune_cpu_allocator()
    try:
        up = Upscaler.from_pretrained(
            args.weights or args.model, device, precision, tile, args.tile_pad or DEFAULT_TILE_PAD
        )
    except (FileNotFoundError, ValueError, RuntimeError, KeyError) as e:
        print(f"sr-infer: cannot load the model: {e}", file=sys.stderr)
        return 2

    def log(msg: str) -> None:
        from tqdm import tqdm

        tqdm.write(msg, file=sys.stderr)

    files, missing = collect_inputs(args.input, args.recursive)
    for arg, reason in missing:
        log(f"error: {arg}: {reason}")
    log(
        f"sr-infer: model {up.name} (x{up.scale}), device {up.device}, precision {up.precision_name}"
        f"{' + channels_last' if up.channels_last else ''}, tile {tile}, {len(files)} input(s)"
    )
    opts = BatchOptions(
        outdir=args.output, suffix=args.suffix, ext=args.ext,
        skip_existing=args.skip_existing, overwrite=args.overwrite, outscale=args.outscale,
        max_pixels=int(args.max_pixels), ref_dir=args.ref, niqe=not args.no_niqe,
        niqe_max_pixels=int(args.niqe_max_mp * 1e6),
    )  # fmt: skip
    summary = run_batch(files, up, opts, log)
    summary.failed[:0] = missing
    means = print_table(summary.rows) if summary.rows else {}
    if args.report is not None:
        meta = {"model": up.name, "scale": up.scale, "device": str(up.device), "precision": up.precision_name,
                "protocol": {"psnr_ssim": "8-bit, BT.601 studio-range Y, crop = scale, SSIM 11x11 sigma 1.5",
                             "niqe": "pyiqa NIQE, LIVE parameters, same Y, crop = scale"}}  # fmt: skip
        write_report(args.report, summary, means, meta)
    log(f"sr-infer: {summary.done} written, {summary.skipped} skipped, {len(summary.failed)} failed")
    for src, err in summary.failed:
        log(f"  failed: {src}: {err.split(': ', 1)[-1] if err.startswith(src) else err}")
    return summary.exit_code


# -- sr-eval ----------------------------------------------------------------------------------------
def eval_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="sr-eval",
        description="Benchmark protocol (Y-PSNR/SSIM, NIQE, LPIPS) of a model and of bicubic on SR datasets.",
    )
    p.add_argument("--weights", type=Path, help="model file (.safetensors + .json, or sr-train .pt)")
    p.add_argument("-n", "--model", help="model name from weights/manifest.json (default model)")
    p.add_argument("--data", nargs="+", type=Path, required=True, help="EDSR-layout or HR-only folders")
    p.add_argument("--out", type=Path, default=Path("eval"), help="folder for results.json and the plot")
    p.add_argument("--json", type=Path, help="results file (default OUT/results.json)")
    p.add_argument("--plot", type=Path, help="perception-distortion plot (default OUT/perception_distortion.png)")
    p.add_argument("--save-images", action="store_true", help="also write the SR images under OUT/")
    p.add_argument("--no-niqe", action="store_true")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto")
    p.add_argument("--device", default="auto")
    p.add_argument("-t", "--tile", default="auto")
    args = p.parse_args(argv)
    missing = [d for d in args.data if not d.is_dir()]
    if missing:
        p.error(f"dataset folder not found: {missing[0]}")

    from gan_core.runtime import tune_cpu_allocator

    from .evaluate import evaluate_datasets, plot_perception_distortion, print_eval_table, save_json
    from .infer import Upscaler

    tune_cpu_allocator()
    tile = int(args.tile) if str(args.tile).isdigit() else "auto"
    try:
        up = Upscaler.from_pretrained(args.weights or args.model, args.device, args.precision, tile)
    except (FileNotFoundError, ValueError, RuntimeError, KeyError) as e:
        print(f"sr-eval: cannot load the model: {e}", file=sys.stderr)
        return 2
    print(f"sr-eval: model {up.name} (x{up.scale}) on {up.device}, {up.precision_name}", file=sys.stderr)
    result = evaluate_datasets(up, args.data, niqe=not args.no_niqe,
                               save_dir=args.out / "images" if args.save_images else None,
                               log=lambda m: print(m, file=sys.stderr))  # fmt: skip
    json_path = args.json or args.out / "results.json"
    save_json(result, json_path)
    plot = plot_perception_distortion(result, args.plot or args.out / "perception_distortion.png")
    print(print_eval_table(result))
    print(f"results: {json_path}" + (f", plot: {plot}" if plot else ""), file=sys.stderr)
    return 0


# -- sr-export --------------------------------------------------------------------------------------
def export_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="sr-export",
        description="Release the EMA generator of an sr-train checkpoint as safetensors + JSON config.",
    )
    p.add_argument("checkpoint", type=Path, help="sr-train checkpoint (.pt), e.g. runs/x/ckpt/best.pt")
    p.add_argument("out", type=Path, help="output path (.safetensors; the .json config is written beside it)")
    p.add_argument("--fp32", action="store_true", help="keep float32 weights (default float16, half the size)")
    p.add_argument("--name", help="model name recorded in the config")
    p.add_argument("--command", help="training command recorded in the config")
    args = p.parse_args(argv)
    from .infer import export_generator

    extra = {k: v for k, v in (("name", args.name), ("training_command", args.command)) if v}
    path = export_generator(args.checkpoint, args.out, fp16=not args.fp32, extra=extra)
    print(f"wrote {path} and {path.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(train_main())
