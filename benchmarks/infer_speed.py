"""sr-infer speed on CPU: output megapixels per second, fp32 vs --precision auto, untiled vs tiled; and the
peak RSS of ``sr-infer`` on a 4000x3000 photo with the default tile. Prints tables; asserts nothing.

    python benchmarks/infer_speed.py                 # default model (random weights if none is shipped)
    python benchmarks/infer_speed.py --size 384 --repeats 5 --skip-large

Speed: a 512x512 input (2048x2048 output) upscaled in-process, configurations interleaved, medians.
Memory: the full command (JPEG decode, tiled x4, JPEG encode of the 16000x12000 result) in a child
process; peak RSS = the child's VmHWM (Linux).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def load_upscaler(precision: str, tile):
    from sr_app.infer import Upscaler
    from sr_app.models import SRGenerator

    try:
        return Upscaler.from_pretrained(None, "cpu", precision, tile)
    except FileNotFoundError:
        torch.manual_seed(0)
        return Upscaler(SRGenerator(init_scale=0.1), {"name": "random-weights"}, "cpu", precision, tile)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=512, help="input side for the speed table")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--skip-large", action="store_true", help="skip the 4000x3000 memory run")
    args = ap.parse_args()
    from gan_core.runtime import tune_cpu_allocator

    tune_cpu_allocator()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0 : args.size, 0 : args.size] / args.size
    img = np.stack([np.sin(20 * xx + 3 * c) * np.cos(15 * yy) * 0.4 + 0.5 for c in range(3)], axis=2)
    img = np.clip(img + 0.05 * rng.standard_normal(img.shape), 0, 1).astype(np.float32)
    configs = {
        "fp32, untiled": load_upscaler("fp32", 0),
        "auto, untiled": load_upscaler("auto", 0),
        "fp32, tiled 128": load_upscaler("fp32", 128),
        "auto, tiled 128": load_upscaler("auto", 128),
    }
    for prec in ("fp32", "auto"):  # what sr-infer does by default: the automatic tile of that precision
        up = load_upscaler(prec, "auto")
        configs[f"{prec}, tile auto={up.auto_tile(args.size, args.size)}"] = up
    for up in configs.values():  # warm-up
        up.upscale_array(img[:64, :64], np.uint8)
    times: dict[str, list[float]] = {k: [] for k in configs}
    for _ in range(args.repeats):
        for k, up in configs.items():
            t0 = time.perf_counter()
            up.upscale_array(img, np.uint8)
            times[k].append(time.perf_counter() - t0)
    mp = (args.size * 4) ** 2 / 1e6
    first = next(iter(configs.values()))
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; model {first.name}; "
        f"input {args.size}x{args.size} -> output {mp:.1f} MP (median of {args.repeats}, interleaved)"
    )
    print(f"{'configuration':<22}{'precision':>10}{'s':>9}{'MP/s':>9}{'x fp32':>9}")
    base = statistics.median(times["fp32, untiled"])
    for k, up in configs.items():
        m = statistics.median(times[k])
        print(f"{k:<22}{up.precision_name:>10}{m:>9.2f}{mp / m:>9.3f}{base / m:>9.2f}")
    if args.skip_large:
        return
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "photo_4000x3000.jpg"
        yy, xx = np.mgrid[0:3000, 0:4000] / 1000.0
        big = np.stack([np.sin(7 * xx + c) * np.cos(5 * yy) * 0.4 + 0.5 for c in range(3)], axis=2)
        Image.fromarray((big * 255).astype(np.uint8)).save(src, quality=92)
        del big, yy, xx
        # The child reports its own high-water mark (VmHWM: this process image only). ru_maxrss of a
        # child would include the RSS of this (large) parent inherited by fork before exec.
        run = (
            "import sys; from sr_app.cli import infer_main; rc = infer_main(); "
            "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')]; "
            "print(hwm[0].split()[1] if hwm else -1, file=sys.stderr); raise SystemExit(rc)"
        )
        cmd = [sys.executable, "-c", run, "-i", str(src), "-o", str(Path(tmp) / "out"), "--no-niqe"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        dt = time.perf_counter() - t0
        if proc.returncode != 0:
            print(proc.stderr[-2000:])
            return
        peak = int(proc.stderr.strip().splitlines()[-1])  # KiB
        print("\nsr-infer on a 4000x3000 JPEG (output 16000x12000 JPEG), default tile, --precision auto:")
        print(f"  wall {dt:.0f} s ({192 / dt:.2f} output MP/s incl. decode + encode), peak RSS {peak / 1024:.0f} MiB")
        print("  " + proc.stderr.strip().splitlines()[0])


if __name__ == "__main__":
    main()
