"""sr-eval: the SR benchmark protocol on EDSR-layout (or HR-only) folders, model beside bicubic.

Per dataset and method: mean Y-PSNR / Y-SSIM (8-bit outputs, BT.601 studio-range Y, crop = scale; see
``gan_core.metrics.psnr_ssim``), NIQE (same Y, crop = scale, LIVE parameters) and LPIPS (AlexNet, when
its trunk is present locally). The bicubic row is MATLAB's ``imresize(lr, scale, 'bicubic')``. Results go
to JSON (with the protocol written inside) and a perception-distortion plot (NIQE vs SSIM, as in the SAN
paper's Fig. 9).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from gan_core.metrics import psnr, ssim

from .data import SRValDataset

__all__ = [
    "PROTOCOL",
    "bicubic_upscale",
    "evaluate_datasets",
    "plot_perception_distortion",
    "print_eval_table",
    "save_json",
]

PROTOCOL = {
    "psnr_ssim": "8-bit outputs; Y of ITU-R BT.601 studio-range YCbCr (MATLAB rgb2ycbcr, float); crop = scale; "
    "SSIM 11x11 Gaussian sigma 1.5 (valid); mean over images",
    "niqe": "pyiqa NIQE, LIVE modelparameters.mat, same Y channel, crop = scale; left out where undefined (an "
    "output without a complete 96x96 block), means over the images that have it",
    "lpips": "lpips 0.1, AlexNet trunk, RGB in [0, 1] (skipped when the trunk is not available)",
    "lr": "EDSR layout LR_bicubic/X{scale} when present, else MATLAB-compatible bicubic of the HR (mod-cropped)",
    "bicubic": "MATLAB-compatible imresize(lr, scale, 'bicubic')",
}


def bicubic_upscale(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """MATLAB ``imresize(lr, scale, 'bicubic')`` (``gan_core.matlab_resize``), (B, C, h, w) in [0, 1] -> clamped."""
    from gan_core.matlab_resize import imresize

    return imresize(lr, scale=scale).clamp(0, 1)


def evaluate_datasets(upscaler, folders: list[Path], niqe: bool = True, lpips: bool | None = None,
                      save_dir: Path | None = None, log=print, overwrite: bool = False) -> dict:  # fmt: skip
    """Model beside bicubic on each folder, image by image.

    Returns ``{"protocol", "model", "model_file", "model_sha256" (first 12 hex digits), "model_card"
    (architecture, scale, parameters, ...: ``Upscaler.card``), "scale", "precision",
    "device", "datasets": {name: {"model": means, "bicubic": means, "images": [...], "count"}},
    "failed": [{"dataset", "file", "error"}]}``. A file that cannot be evaluated (unreadable, empty, too
    small for the scale, an error while upscaling or writing it) is listed in ``failed`` (and logged) and
    the others are evaluated; a folder with no usable file is left out of ``datasets``. A NIQE that is not
    defined (outputs too small for its 96x96 blocks) is left out of that image's row; means are over the
    images that have the metric. ``save_dir``: SR images as ``<save_dir>/<dataset>/<stem>_x<scale>.png``,
    never replacing a file unless ``overwrite``.
    """
    from gan_core.extras import MissingExtraError
    from gan_core.metrics.lpips import LPIPS, lpips_unavailable_reason

    niqe_fn = None
    if niqe:
        from gan_core.metrics.niqe import NIQE

        try:
            niqe_fn = NIQE()
        except MissingExtraError as e:
            log(f"note: {e.skipped}")
    if lpips is None:
        why = lpips_unavailable_reason()
        lpips = why is None
        if not lpips:
            log(f"note: LPIPS skipped: {why}")
    lpips_fn = LPIPS() if lpips else None
    s = upscaler.scale
    out = {"protocol": PROTOCOL, "model": upscaler.name, "model_file": getattr(upscaler, "source", ""),
           "model_sha256": getattr(upscaler, "sha256", "")[:12], "model_card": getattr(upscaler, "card", {}),
           "scale": s, "precision": upscaler.precision_name,
           "device": str(upscaler.device), "datasets": {}, "failed": []}  # fmt: skip

    def fail(dataset: str, file, error: str) -> None:
        out["failed"].append({"dataset": dataset, "file": str(file), "error": error})
        log(f"failed: {file}: {error}")

    for folder in folders:
        ds = SRValDataset(folder, s, allow_empty=True)
        for f, reason in ds.failed:
            fail(ds.name, f, reason)
        if not ds.files:
            fail(ds.name, folder, "no image files in this folder")
        images = []
        for item in ds:
            try:
                row = _evaluate_image(upscaler, item, s, niqe_fn, lpips_fn)
                if save_dir is not None:
                    from gan_core.image_io import write_image

                    path = save_dir / ds.name / f"{item['name']}_x{s}.png"
                    write_image(path, row.pop("_sr")[0].permute(1, 2, 0).numpy(), overwrite=overwrite)
            except (ValueError, RuntimeError, OSError) as e:
                fail(ds.name, item["file"], str(e).splitlines()[0] if str(e) else type(e).__name__)
                continue
            row.pop("_sr", None)
            images.append(row)
        if not images:
            continue
        res = {"images": images, "count": len(images)}
        for method in ("model", "bicubic"):
            keys = dict.fromkeys(k for r in images for k in r[method])  # in first-seen order
            res[method] = {k: float(np.mean([r[method][k] for r in images if k in r[method]])) for k in keys}
        if niqe_fn is not None:
            undefined = sum("niqe" not in r["model"] for r in images)
            if undefined:
                log(f"note: {ds.name}: NIQE undefined for {undefined} of {len(images)} image(s) (too small for its "
                    "96x96 blocks): left out of the NIQE mean")  # fmt: skip
        out["datasets"][ds.name] = res
        log(_format_row(ds.name, res))
    return out


def _evaluate_image(upscaler, item: dict, s: int, niqe_fn, lpips_fn) -> dict:
    """{"name", "model": metrics, "bicubic": metrics, "_sr": (1, 3, H, W) output} of one validation item."""
    hr = item["hr"][None]
    sr = upscaler.upscale_array(item["lr"].permute(1, 2, 0).numpy(), np.float32)
    sr = torch.from_numpy(sr).permute(2, 0, 1)[None]
    bic = bicubic_upscale(item["lr"][None], s)
    row = {"name": item["name"]}
    for method, img in (("model", sr), ("bicubic", bic)):
        m = {"psnr_y": float(psnr(img, hr, s)), "ssim_y": float(ssim(img, hr, s))}
        if niqe_fn is not None:
            value = float(niqe_fn(img, crop_border=s)[0])
            if math.isfinite(value):  # NaN when the output has no complete 96x96 block
                m["niqe"] = value
        if lpips_fn is not None:
            m["lpips"] = float(lpips_fn(img, hr)[0])
        row[method] = m
    row["_sr"] = sr
    return row


def _format_row(name: str, res: dict) -> str:
    def cells(m):
        return "  ".join(f"{k} {v:.4f}" for k, v in m.items())

    return f"{name} ({res['count']} images)\n  model:   {cells(res['model'])}\n  bicubic: {cells(res['bicubic'])}"


def print_eval_table(result: dict) -> str:
    cols = [
        c for c in ("psnr_y", "ssim_y", "niqe", "lpips") if any(c in d["model"] for d in result["datasets"].values())
    ]
    head = {"psnr_y": "PSNR-Y", "ssim_y": "SSIM-Y", "niqe": "NIQE", "lpips": "LPIPS"}
    lines = [f"| dataset | method | {' | '.join(head[c] for c in cols)} |", "|---|---|" + "---|" * len(cols)]
    for name, d in result["datasets"].items():
        for method in ("bicubic", "model"):
            vals = " | ".join(f"{d[method][c]:.4f}" if c in d[method] else "-" for c in cols)
            label = result["model"] if method == "model" else "bicubic"
            lines.append(f"| {name} | {label} | {vals} |")
    return "\n".join(lines)


def plot_perception_distortion(result: dict, path: Path, overwrite: bool = False) -> Path | None:
    """NIQE (perception, lower is better) vs SSIM (distortion, higher is better) per dataset and method.

    Datasets without a NIQE mean for both methods are left out; None (nothing written) when none has one.
    Written through ``gan_core.atomic`` (never replacing a file unless ``overwrite``)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gan_core.atomic import atomic_write

    shown = {n: d for n, d in result["datasets"].items() if "niqe" in d["model"] and "niqe" in d["bicubic"]}
    if not shown:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 4.2), dpi=120)
    markers = {"model": "o", "bicubic": "s"}
    for i, (name, d) in enumerate(shown.items()):
        color = f"C{i}"
        for method in ("bicubic", "model"):
            m = d[method]
            label = f"{name}: {result['model'] if method == 'model' else 'bicubic'}"
            ax.scatter(m["ssim_y"], m["niqe"], marker=markers[method], color=color, s=60, label=label)
        ax.annotate("", xy=(d["model"]["ssim_y"], d["model"]["niqe"]),
                    xytext=(d["bicubic"]["ssim_y"], d["bicubic"]["niqe"]),
                    arrowprops={"arrowstyle": "->", "color": color, "alpha": 0.6})  # fmt: skip
    ax.set_xlabel("SSIM (Y)  - higher is better")
    ax.set_ylabel("NIQE  - lower is better")
    ax.set_title(f"Perception-distortion, x{result['scale']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lstrip(".").lower() or "png")
    plt.close(fig)
    with atomic_write(path, overwrite=overwrite) as f:
        f.write(buf.getvalue())
    return path


def save_json(result: dict, path: Path, overwrite: bool = False) -> None:
    """``result`` as indented JSON, through ``gan_core.atomic`` (never replacing a file unless ``overwrite``)."""
    from gan_core.atomic import write_text

    write_text(path, json.dumps(result, indent=2) + "\n", overwrite=overwrite)
