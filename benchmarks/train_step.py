"""Seconds per ``gan`` training step of the paper architecture (SRGenerator + SAN SRCritic + VGG-19 loss) on
CPU, fp32 vs bf16 autocast + channels_last, and the peak RSS of each. Prints a table; asserts nothing.

    python benchmarks/train_step.py                  # batch 16, LR 40x40 -> HR 160x160, 7 interleaved repeats

One step = the sr-train gan step: G forward, critic step (two critic calls, Adam, SAN refresh), generator
step (L1 + VGG-19 conv5_4 + hinge, Adam). The VGG-19 here has random weights of the right shape (the
ImageNet file is not needed to time it; sr-train itself never runs without the real file).
Each precision runs in its own process (so peak RSS is per configuration); rounds alternate between them.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def worker(precision: str, batch: int, rounds: int, vgg_path: str) -> None:
    from gan_core import distributed as gdist
    from gan_core.config import load_config
    from gan_core.losses import VGG19Features
    from gan_core.norm import refresh_norm_constants
    from gan_core.runtime import tune_cpu_allocator
    from sr_app.config import SRTrainConfig
    from sr_app.train import Runtime, build_critic, build_generator, d_step, g_step

    tune_cpu_allocator()
    torch.manual_seed(0)
    cfg = load_config(SRTrainConfig, None, [f"loss.vgg_weights_file={vgg_path}"])
    bf16 = precision == "bf16"
    rt = Runtime(torch.device("cpu"), torch.bfloat16 if bf16 else None, bf16, gdist.DistInfo())
    fmt = torch.channels_last if bf16 else torch.contiguous_format
    G = build_generator(cfg).to(memory_format=fmt).train()
    D = build_critic(cfg, crop_seed=1).to(memory_format=fmt).train()
    vgg = VGG19Features(("conv5_4",), vgg_path).to(memory_format=fmt)
    opt_g = torch.optim.Adam(G.parameters(), 2e-4, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.9))
    lr = rt.to_device(torch.rand(batch, 3, 40, 40))
    hr = rt.to_device(torch.rand(batch, 3, 160, 160))

    def step():
        with rt.autocast():
            fake = G(lr)
        d_step(D, hr, fake, opt_d, rt)
        opt_d.step()
        refresh_norm_constants(D)
        g_step(D, fake, hr, opt_g, vgg, cfg.loss, rt)
        opt_g.step()

    step()  # warm-up (SAN constants, oneDNN kernel selection)
    for _ in range(rounds):
        line = sys.stdin.readline()  # the parent says when (interleaving the two processes)
        if not line:
            break
        t0 = time.perf_counter()
        step()
        print(json.dumps({"seconds": time.perf_counter() - t0}), flush=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_rss_mib": rss}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--vgg", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, args.batch, args.repeats, args.vgg)
    from torchvision.models import vgg19

    with tempfile.TemporaryDirectory() as tmp:
        vgg_path = Path(tmp) / "vgg19-random.pth"
        torch.save({f"features.{k}": v for k, v in vgg19(weights=None).features.state_dict().items()}, vgg_path)
        procs = {
            p: subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--worker",
                    p,
                    "--batch",
                    str(args.batch),
                    "--repeats",
                    str(args.repeats),
                    "--vgg",
                    str(vgg_path),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for p in ("fp32", "bf16")
        }
        times: dict[str, list[float]] = {p: [] for p in procs}
        for _ in range(args.repeats):
            for p, proc in procs.items():  # one step at a time, never two processes computing at once
                proc.stdin.write("go\n")
                proc.stdin.flush()
                times[p].append(json.loads(proc.stdout.readline())["seconds"])
        rss = {}
        for p, proc in procs.items():
            proc.stdin.close()
            rss[p] = json.loads(proc.stdout.readline())["peak_rss_mib"]
            proc.wait()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; sr-train gan step, batch {args.batch}, "
        f"LR 40x40 -> HR 160x160, SRGenerator + SAN critic + VGG-19 (median of {args.repeats}, interleaved)"
    )
    print(f"{'precision':<30}{'s/step':>9}{'min':>8}{'max':>8}{'peak RSS MiB':>15}")
    for p, label in (("fp32", "fp32"), ("bf16", "bf16 autocast + channels_last")):
        t = times[p]
        print(f"{label:<30}{statistics.median(t):>9.3f}{min(t):>8.3f}{max(t):>8.3f}{rss[p]:>15.0f}")
    print(f"speed-up bf16 vs fp32: {statistics.median(times['fp32']) / statistics.median(times['bf16']):.2f}x")


if __name__ == "__main__":
    main()
