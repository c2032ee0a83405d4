"""Command-line entry points of SAN-SPADE: ``translate-train``, ``translate-infer``, ``translate-eval``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gan_core.config import ConfigError, load_config, to_dict

from .config import SpadeTrainConfig

__all__ = ["eval_main", "infer_main", "train_main"]


# -- translate-train ---------------------------------------------------------------------------------
def train_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="translate-train",
        description="Train SAN-SPADE (or SPADE) on Cityscapes label maps. Single process, or DDP under "
        "`torchrun --nproc_per_node K translate-train ...`.",
    )
    p.add_argument("--config", "-c", type=Path, help="YAML preset (configs/san_spade_paper.yaml, spade_paper.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--data-root", metavar="DIR", help="Cityscapes root with gtFine/ and leftImg8bit/ (data.root)")
    p.add_argument("--steps", type=int, help="total steps (default: the preset's epochs)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--out", type=Path, help="run directory (default: runs/<name>)")
    p.add_argument("--resume", metavar="PATH|auto")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--stop-after", type=int, metavar="N", help="stop with a checkpoint after N steps of this run")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and data summary, then exit")
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

        from .data import CityscapesDataset

        print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
        try:
            ds = CityscapesDataset(cfg.data.root, cfg.data.train_split, tuple(cfg.data.size), require_images=True)
        except ValueError as e:
            print(f"translate-train: {e}", file=sys.stderr)
            return 2
        print(f"# run directory: {run_dir}\n# training frames: {len(ds)}")
        return 0
    from .train import TrainingDiverged, train

    try:
        train(cfg, run_dir, resume=args.resume, stop_after=args.stop_after)
    except (TrainingDiverged, FileExistsError, ValueError, RuntimeError) as e:
        print(f"translate-train: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def load_generator(path: str | Path, device: str = "cpu"):
    """(generator in eval mode, config) from a translate-train checkpoint."""
    from gan_core.checkpoint import load_checkpoint
    from gan_core.config import from_dict, migrate_config

    from .train import CKPT_FORMAT, build_generator

    ck = load_checkpoint(path)
    if ck.get("format") != CKPT_FORMAT:
        raise ValueError(f"{path} is not a translate-train checkpoint")
    cfg = from_dict(SpadeTrainConfig, migrate_config(SpadeTrainConfig, ck["config"]))  # older key names too
    G = build_generator(cfg)
    G.load_state_dict(ck["G"])
    return G.eval().to(device), cfg


def _label_files(inputs: list[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    import glob

    files, missing, seen = [], [], set()
    for arg in inputs:
        p = Path(arg)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*labelIds.png")) or sorted(p.glob("*.png"))
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


# -- translate-infer ---------------------------------------------------------------------------------
def infer_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="translate-infer",
        description="Synthesize street scenes from Cityscapes label-id PNGs with a trained SAN-SPADE generator. "
        "Instance maps (*_instanceIds.png beside *_labelIds.png) are used when present.",
    )
    p.add_argument("-i", "--input", nargs="+", required=True, metavar="LABELS", help="label PNGs, folders, globs")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUTDIR")
    p.add_argument("--weights", type=Path, required=True, metavar="CKPT", help="translate-train checkpoint (.pt)")
    p.add_argument("--colorize", action="store_true", help="also write the Cityscapes-palette label preview")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    args = p.parse_args(argv)

    import numpy as np
    import torch

    from gan_core.distributed import pick_device
    from gan_core.image_io import ImageError, write_image
    from gan_core.runtime import autocast, autocast_dtype, tune_cpu_allocator

    from .data import colorize_labels, label_tensor, load_instance_map, load_label_map, pair_instance_file

    tune_cpu_allocator()
    try:
        device = pick_device(args.device)
    except RuntimeError as e:
        print(f"{p.prog}: {e}", file=sys.stderr)
        return 2
    try:
        G, cfg = load_generator(args.weights, str(device))
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as e:
        print(f"translate-infer: cannot load {args.weights}: {e}", file=sys.stderr)
        return 2
    amp = autocast_dtype(args.precision, device, allow_fp16=False)
    size = tuple(cfg.data.size)
    files, failed = _label_files(args.input)
    for arg, why in failed:
        print(f"error: {arg}: {why}", file=sys.stderr)
    done = 0
    for f in files:
        try:
            stem = f.stem.replace("_gtFine_labelIds", "").replace("_labelIds", "")
            out = args.output / f"{stem}.png"
            if out.exists() and not args.overwrite:
                raise ImageError(f"{f}: {out} exists (use --overwrite to replace it)")
            labels = load_label_map(f, size)
            inst_path = pair_instance_file(f)
            inst = load_instance_map(inst_path, size) if inst_path is not None else None
            seg = label_tensor(labels, inst)[None].to(device)
            with torch.inference_mode(), autocast(device, amp):
                img = G(seg).float()[0]
            img = ((img + 1) / 2).clamp(0, 1).permute(1, 2, 0).cpu().numpy()
            write_image(out, img, overwrite=args.overwrite)
            if args.colorize:
                write_image(
                    args.output / f"{stem}_labels.png",
                    colorize_labels(labels).astype(np.float32) / 255,
                    overwrite=args.overwrite,
                )
            done += 1
        except (ValueError, ImageError) as e:
            failed.append((str(f), str(e)))
            print(f"error: {e}", file=sys.stderr)
    print(f"translate-infer: {done} written, {len(failed)} failed ({size[1]}x{size[0]}, {G.__class__.__name__})",
          file=sys.stderr)  # fmt: skip
    return 1 if failed else 0


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
        "checkpoint's images generated from Cityscapes labels vs the real photos (statistics cached).",
    )
    p.add_argument("--fake", type=Path, help="folder of generated images")
    p.add_argument("--real", type=Path, help="folder of real images")
    p.add_argument("--real-stats", type=Path, help="cached real statistics (.npz written by --save-stats)")
    p.add_argument("--save-stats", type=Path, help="write the statistics of --real (or of the real photos) here")
    p.add_argument("--weights", type=Path, help="translate-train checkpoint: generate from --data-root labels")
    p.add_argument("--data-root", type=Path, help="Cityscapes root (with --weights)")
    p.add_argument("--split", default="val")
    p.add_argument("--out", type=Path, help="write generated images here (with --weights)")
    p.add_argument("--fid-weights", default="fid_inception", help="FID Inception weights (name or path)")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--json", type=Path, help="write the result as JSON")
    args = p.parse_args(argv)

    from gan_core.distributed import pick_device
    from gan_core.metrics.fid import PROTOCOL, FIDInception, FIDStats, fid_from_stats, load_stats, save_stats
    from gan_core.weights import WeightsError

    try:
        device = pick_device(args.device)
    except RuntimeError as e:
        print(f"{p.prog}: {e}", file=sys.stderr)
        return 2
    try:
        net = FIDInception(args.fid_weights)
    except WeightsError as e:
        print(f"translate-eval: {e}", file=sys.stderr)
        return 2
    try:
        fake_stats = real_stats = None
        if args.weights is not None:
            fake_stats, real_imgs, source = _generate_for_eval(args, net, device)
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
        if args.save_stats is not None and real_stats is not None:
            save_stats(args.save_stats, real_stats)
            print(f"statistics of {real_stats.n} real images: {args.save_stats}", file=sys.stderr)
        if fake_stats is None or real_stats is None:
            if args.save_stats is not None and real_stats is not None:
                return 0
            p.error("give --fake DIR (or --weights + --data-root) and --real DIR or --real-stats FILE")
        fid = fid_from_stats(fake_stats, real_stats)
    except ValueError as e:
        print(f"translate-eval: {e}", file=sys.stderr)
        return 1
    result = {"fid": fid, "n_fake": fake_stats.n, "n_real": real_stats.n, "protocol": PROTOCOL,
              "fake": fake_stats.source, "real": real_stats.source}  # fmt: skip
    print(f"FID {fid:.4f} ({fake_stats.n} generated vs {real_stats.n} real images)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


def _generate_for_eval(args, net, device):
    """Generate from every label map of the split; returns (fake stats, real photo iterator, source)."""
    import torch

    from gan_core.image_io import write_image
    from gan_core.metrics.fid import PROTOCOL, FIDStats

    from .data import CityscapesDataset

    if args.data_root is None:
        raise ValueError("--weights needs --data-root (Cityscapes root with the label maps)")
    G, cfg = load_generator(args.weights, str(device))
    size = tuple(cfg.data.size)
    ds = CityscapesDataset(args.data_root, args.split, size)

    def fakes():  # streamed: generated, written if asked, and scored one at a time
        with torch.inference_mode():
            for i in range(len(ds)):
                item = ds[i]
                img = ((G(item["label"][None].to(device)).float()[0] + 1) / 2).clamp(0, 1).cpu()
                if args.out is not None:
                    stem = Path(item["path"]).name.replace("_gtFine_labelIds.png", "")
                    write_image(args.out / f"{stem}.png", img.permute(1, 2, 0).numpy(), overwrite=True)
                yield img

    def reals():  # consumed only when the real statistics are not cached
        for i in range(len(ds)):
            item = ds[i]
            if "image" in item:
                yield (item["image"] + 1) / 2

    source = f"{args.weights} on {args.split}"
    fake_stats = FIDStats.from_images(fakes(), net, args.batch_size, device, PROTOCOL, source)
    return fake_stats, reals(), f"Cityscapes {args.split} photos, bicubic to {size[1]}x{size[0]}"


if __name__ == "__main__":
    raise SystemExit(train_main())
