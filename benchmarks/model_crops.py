"""Side-by-side crops of x4 models on one photo: bicubic | each model | original, with each crop's numbers.

    python benchmarks/model_crops.py --models srresnet-l1-x4 runs/study/san_r1/final_generator.safetensors \
        --out docs/crops.png                                   # the bundled public-domain photo
    python benchmarks/model_crops.py --image my_photo.png --box 120 40 96 --models ... --out crops.png

The photo (default: ``sr_app/demo_images/astronaut.png``, public domain) is the reference; its x1/4 MATLAB bicubic
downscale (rounded to 8 bits) is the input every model gets, as in ``make demo``. ``--box X Y S`` picks an S x S
region of the reference (default: a centred square of a third of the short side); every panel is that region,
enlarged by ``--zoom`` with nearest neighbour so the pixels stay visible. Printed per panel: Y-PSNR, SSIM-Y
(border 4) and NIQE of the whole output (lower is better), so the picture and the numbers come from one run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw


def _panel(img: torch.Tensor, box: tuple[int, int, int], zoom: int, label: str) -> Image.Image:
    """(1, 3, H, W) in [0, 1] -> the labelled, enlarged crop as a PIL image."""
    x, y, s = box
    crop = img[0, :, y : y + s, x : x + s].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
    panel = Image.fromarray(crop).resize((s * zoom, s * zoom), Image.NEAREST)
    canvas = Image.new("RGB", (panel.width, panel.height + 18), "white")
    canvas.paste(panel, (0, 18))
    ImageDraw.Draw(canvas).text((4, 3), label, fill="black")
    return canvas


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", required=True, help="model names or files (as sr-infer -n / --weights)")
    ap.add_argument("--image", type=Path, help="reference photo (default: the bundled astronaut portrait)")
    ap.add_argument("--box", type=int, nargs=3, metavar=("X", "Y", "S"), help="crop of the reference")
    ap.add_argument("--zoom", type=int, default=3)
    ap.add_argument("--out", type=Path, required=True, help="PNG to write (replaced)")
    args = ap.parse_args(argv)

    from gan_core.metrics import psnr, ssim
    from gan_core.metrics.niqe import NIQE
    from sr_app.data import bicubic_downscale, load_rgb
    from sr_app.demo import PHOTO
    from sr_app.evaluate import bicubic_upscale
    from sr_app.infer import Upscaler

    hr = load_rgb(args.image or PHOTO)
    hr = hr[: hr.shape[0] // 4 * 4, : hr.shape[1] // 4 * 4]
    hr_t = torch.from_numpy(hr).permute(2, 0, 1).float()[None] / 255
    lr_t = bicubic_downscale(hr_t, 4).mul(255).round().clamp(0, 255) / 255
    H, W = hr.shape[:2]
    s = min(H, W) // 3
    box = tuple(args.box) if args.box else ((W - s) // 2, (H - s) // 2, s)
    niqe = NIQE()
    outputs = {"bicubic": bicubic_upscale(lr_t, 4)}
    for model in args.models:
        up = Upscaler.from_pretrained(model, device="auto", precision="fp32")
        array = up.upscale_array(lr_t[0].permute(1, 2, 0).numpy(), np.float32)
        outputs[up.name] = torch.from_numpy(array).permute(2, 0, 1)[None]
    panels = []
    for name, img in outputs.items():
        p, q, n = float(psnr(img, hr_t, 4)), float(ssim(img, hr_t, 4)), float(niqe(img, crop_border=4)[0])
        print(f"{name:<40} Y-PSNR {p:7.3f} dB  SSIM-Y {q:.4f}  NIQE {n:6.3f}")
        panels.append(_panel(img, box, args.zoom, f"{name}: {p:.2f} dB, NIQE {n:.2f}"))
    panels.append(_panel(hr_t, box, args.zoom, "original"))
    strip = Image.new("RGB", (sum(p.width for p in panels) + 6 * (len(panels) - 1), panels[0].height), "white")
    x = 0
    for p in panels:
        strip.paste(p, (x, 0))
        x += p.width + 6
    args.out.parent.mkdir(parents=True, exist_ok=True)
    strip.save(args.out, optimize=True)
    print(f"wrote {args.out}: crop x={box[0]} y={box[1]} size {box[2]} x{args.zoom}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
