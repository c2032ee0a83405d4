"""Command-line entry points of SAN-SRGAN: ``sr-train`` (and, later, ``sr-infer`` / ``sr-eval``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gan_core.config import ConfigError, load_config, to_dict

from .config import SRTrainConfig

__all__ = ["train_main"]


def _train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sr-train",
        description="Train SAN-SRGAN (stage pretrain: pixel loss; stage gan: L1 + VGG19 + hinge with a SAN critic). "
        "Single process, or DDP under `torchrun --nproc_per_node K sr-train ...`.",
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
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and the data summary, then exit")
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
        return _dry_run(cfg, run_dir)
    from .train import TrainingDiverged, train

    try:
        train(cfg, run_dir, resume=args.resume, stop_after=args.stop_after)
    except (TrainingDiverged, FileExistsError, ValueError, RuntimeError) as e:
        print(f"sr-train: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def _dry_run(cfg: SRTrainConfig, run_dir: Path) -> int:
    import yaml

    from .data import SRTrainDataset, SRValDataset

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
    return 0


if __name__ == "__main__":
    raise SystemExit(train_main())
