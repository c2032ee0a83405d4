"""``make demo``: upscale a test image of our own with the default model, offline, and compare to bicubic.

The test image is drawn here (gradients, edges at many angles, rings, text, a texture): no third-party
image is needed. It is reduced x4 with MATLAB-compatible bicubic, then enlarged back by bicubic and by
the model; the PNGs land in ``demo/`` and PSNR / SSIM / NIQE against the original are printed.

    python -m sr_app.demo [--out demo] [--model NAME_OR_PATH] [--size 384]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

__all__ = ["render_test_image"]


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("demo"))
    ap.add_argument("--model", help="model name or path (default: the default model in weights/)")
    ap.add_argument("--size", type=int, default=384, help="side of the test image (multiple of 4)")
    args = ap.parse_args(argv)

    from gan_core.image_io import write_image
    from gan_core.metrics import psnr, ssim
    from gan_core.metrics.niqe import NIQE
    from gan_core.runtime import tune_cpu_allocator

    from .data import bicubic_downscale
    from .evaluate import bicubic_upscale
    from .infer import Upscaler

    tune_cpu_allocator()
    size = args.size // 4 * 4
    hr = render_test_image(size)
    hr_t = torch.from_numpy(hr).permute(2, 0, 1).float()[None] / 255
    lr_t = bicubic_downscale(hr_t, 4).mul(255).round().clamp(0, 255) / 255
    up = Upscaler.from_pretrained(args.model, device="auto", precision="auto")
    sr = torch.from_numpy(up.upscale_array(lr_t[0].permute(1, 2, 0).numpy(), np.float32)).permute(2, 0, 1)[None]
    bic = bicubic_upscale(lr_t, 4)
    out = args.out
    files = {
        "reference_hr.png": hr_t,
        "input_lr.png": lr_t,
        "bicubic_x4.png": bic,
        f"model_x4_{up.name}.png": sr,
    }
    for name, t in files.items():
        write_image(out / name, t[0].permute(1, 2, 0).numpy(), overwrite=True)
    nearest = torch.nn.functional.interpolate(lr_t, scale_factor=4, mode="nearest")
    strip = torch.cat([nearest, bic, sr, hr_t], dim=3)[0]  # LR (nearest) | bicubic | model | original
    write_image(out / "side_by_side.png", strip.permute(1, 2, 0).numpy(), overwrite=True)
    niqe = NIQE()
    print(f"demo: {size}x{size} test image, x4 with {up.name} on {up.device} ({up.precision_name}); files in {out}/")
    print(f"{'method':<12}{'PSNR-Y':>9}{'SSIM-Y':>9}{'NIQE':>9}   (PSNR/SSIM: higher is better; NIQE: lower)")
    for label, img in (("bicubic", bic), ("model", sr)):
        p, q, n = float(psnr(img, hr_t, 4)), float(ssim(img, hr_t, 4)), float(niqe(img, crop_border=4)[0])
        print(f"{label:<12}{p:>9.3f}{q:>9.4f}{n:>9.3f}")
    print("side_by_side.png: LR (nearest) | bicubic | model | original")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
