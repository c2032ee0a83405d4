"""``make demo``: upscale a real photograph and a drawn test chart with the default model, offline.

Two images, both in the repository: ``photo``, a 384x384 crop of NASA's public-domain portrait of
astronaut Eileen Collins (``sr_app/demo_images/``, source and licence in its README), and ``chart``,
drawn here (gradients, edges at many angles, rings, text, a texture). Each is reduced x4 with
MATLAB-compatible bicubic (``gan_core.matlab_resize``), then enlarged back by bicubic and by the model;
the PNGs land in ``<out>/<image>/`` and PSNR-Y / SSIM-Y (and NIQE with the ``metrics`` extra) against
the original are printed, with the model's gain over bicubic. ``--image`` adds photos of your own.

    python -m sr_app.demo [--out demo] [--model NAME_OR_PATH] [--size 384] [--image PHOTO ...]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

PHOTO = Path(__file__).with_name("demo_images") / "astronaut.png"

__all__ = ["PHOTO", "demo_images", "render_test_image"]


def render_test_image(size: int = 384, seed: int = 0) -> np.ndarray:
    """(size, size, 3) uint8 RGB scene with fine structure (drawn, deterministic)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    sky = np.stack([0.35 + 0.4 * yy, 0.55 + 0.3 * yy, 0.9 - 0.2 * yy], axis=2)
    tex = sum(
        np.sin(2 * math.pi * (rng.uniform(8, 30) * xx + rng.uniform(8, 30) * yy) + rng.uniform(0, 6)) for _ in range(6)
    )
    ground = (yy > 0.62)[..., None]
    grass = np.stack([0.25 + 0.05 * tex, 0.45 + 0.08 * tex, 0.2 + 0.04 * tex], axis=2)
    img = np.where(ground, grass, sky)
    im = Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8))
    d = ImageDraw.Draw(im)
    s = size / 384
    d.ellipse([290 * s, 30 * s, 350 * s, 90 * s], fill=(250, 220, 90))
    for r in range(6, 60, 6):  # rings: aliasing-prone curves
        d.ellipse([90 * s - r * s, 110 * s - r * s, 90 * s + r * s, 110 * s + r * s], outline=(30, 30, 60), width=1)
    for k in range(24):  # a fan of thin lines at many angles
        a = math.pi * k / 24
        d.line([200 * s, 150 * s, 200 * s + 70 * s * math.cos(a), 150 * s - 70 * s * math.sin(a)], fill=(20, 20, 20))
    d.polygon([(40 * s, 230 * s), (120 * s, 170 * s), (170 * s, 235 * s)], fill=(180, 60, 50), outline=(60, 20, 20))
    d.rectangle([230 * s, 170 * s, 350 * s, 235 * s], fill=(235, 235, 225), outline=(40, 40, 40), width=2)
    for i in range(0, int(110 * s), max(2, int(6 * s))):  # window grid
        d.line([(240 * s + i, 180 * s), (240 * s + i, 228 * s)], fill=(90, 100, 120), width=1)
    try:
        font = ImageFont.load_default(size=max(10, int(15 * s)))
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    d.text((20 * s, 300 * s), "SAN-SRGAN demo 0123456789", fill=(255, 255, 255), font=font)
    d.text((20 * s, 330 * s), "sharp edges, thin lines & text", fill=(20, 20, 20), font=font)
    checker = ((np.indices((int(40 * s), int(40 * s))) // max(1, int(4 * s))).sum(0) % 2 * 200 + 30).astype(np.uint8)
    im.paste(Image.fromarray(checker).convert("RGB"), (int(330 * s), int(300 * s)))
    return np.array(im)


def demo_images(size: int = 384, extra: list[Path] | None = None) -> dict[str, np.ndarray]:
    """{name: (H, W, 3) uint8 RGB}: the bundled photo, the drawn chart, then ``extra`` photos (by stem),
    each cropped to a multiple of 4 (top-left kept)."""
    from .data import load_rgb

    images = {"photo": load_rgb(PHOTO), "chart": render_test_image(size)}
    for path in extra or []:
        images[path.stem] = load_rgb(path)
    return {name: img[: img.shape[0] // 4 * 4, : img.shape[1] // 4 * 4] for name, img in images.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("demo"))
    ap.add_argument("--model", help="model name or path (default: the default model in weights/)")
    ap.add_argument("--size", type=int, default=384, help="side of the drawn chart (multiple of 4, >= 64)")
    ap.add_argument("--image", type=Path, action="append", default=[], help="also run on this photo (repeatable)")
    args = ap.parse_args(argv)
    if args.size < 64:
        ap.error(f"--size must be >= 64, got {args.size}")

    from gan_core.extras import MissingExtraError
    from gan_core.image_io import write_image
    from gan_core.metrics import psnr, ssim
    from gan_core.metrics.niqe import NIQE
    from gan_core.runtime import tune_cpu_allocator

    from .data import bicubic_downscale
    from .evaluate import bicubic_upscale
    from .infer import Upscaler

    try:
        images = demo_images(args.size // 4 * 4, args.image)
    except (OSError, ValueError) as e:  # an unreadable --image
        print(f"demo: {e}", file=sys.stderr)
        return 2
    small = [n for n, img in images.items() if min(img.shape[:2]) < 64]
    if small:
        print(f"demo: {small[0]} is smaller than 64 px", file=sys.stderr)
        return 2
    tune_cpu_allocator()
    up = Upscaler.from_pretrained(args.model, device="auto", precision="auto")
    try:
        niqe = NIQE()
    except MissingExtraError as e:
        niqe = None
        print(f"note: {e.skipped}", file=sys.stderr)
    print(f"demo: x4 with {up.name} on {up.device} ({up.precision_name}); files in {args.out}/<image>/")
    print(f"{'image':<10}{'method':<10}{'PSNR-Y':>9}{'SSIM-Y':>9}{'NIQE':>8}{'gain':>10}")
    for name, hr in images.items():
        hr_t = torch.from_numpy(hr).permute(2, 0, 1).float()[None] / 255
        lr_t = bicubic_downscale(hr_t, 4).mul(255).round().clamp(0, 255) / 255
        sr = torch.from_numpy(up.upscale_array(lr_t[0].permute(1, 2, 0).numpy(), np.float32)).permute(2, 0, 1)[None]
        bic = bicubic_upscale(lr_t, 4)
        out = args.out / name
        files = {"reference_hr.png": hr_t, "input_lr.png": lr_t, "bicubic_x4.png": bic, f"model_x4_{up.name}.png": sr}
        nearest = torch.nn.functional.interpolate(lr_t, scale_factor=4, mode="nearest")
        files["side_by_side.png"] = torch.cat([nearest, bic, sr, hr_t], dim=3)  # LR | bicubic | model | original
        for file, t in files.items():
            write_image(out / file, t[0].permute(1, 2, 0).numpy(), overwrite=True)
        base = float(psnr(bic, hr_t, 4))
        for label, img in (("bicubic", bic), ("model", sr)):
            p, q = float(psnr(img, hr_t, 4)), float(ssim(img, hr_t, 4))
            n = f"{float(niqe(img, crop_border=4)[0]):>8.3f}" if niqe is not None else f"{'-':>8}"
            gain = f"{p - base:>+7.2f} dB" if label == "model" else ""
            print(f"{name:<10}{label:<10}{p:>9.3f}{q:>9.4f}{n}{gain}")
    print("side_by_side.png: LR (nearest) | bicubic | model | original; PSNR/SSIM higher is better, NIQE lower")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
