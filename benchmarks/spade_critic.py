"""SAN-SPADE critic cost on CPU: one critic update of SPADE's multi-scale critic at 512x256 (batch 1) with
none / sn / san r=0.25 / san r=1, and the peak extra memory of a SAN refresh. Prints tables; asserts nothing.

    python benchmarks/spade_critic.py [--repeats 9] [--precision bf16|fp32]

One update = ``refresh_norm_constants`` + the critic on concat(label, fake) and concat(label, real)
stacked along the batch (SPADE's single call; batch 1 -> 2 images) + hinge + backward + Adam, under
``parametrize.cached()``. Variants interleaved, medians after
warm-up updates (``--warmup``). Padding as in the papers: none and SN zero
padding (SN on convs 1-3, SPADE's layout), SAN circular on all five convs of both scales (g 1.3, EMA 0.9
at r = 0.25; g 1, no EMA at r = 1). Memory: in a fresh process per ratio (glibc's mmap threshold fixed so
RSS follows live allocations), RSS above the level before the call, for a refresh that computes every
constant from scratch (per-kernel peak caches emptied) and for a refresh after an Adam step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch
from torch.nn.utils import parametrize

from gan_core.losses import d_hinge_loss
from gan_core.norm import refresh_norm_constants
from gan_core.runtime import tune_cpu_allocator
from translate_app.discriminator import MultiscaleDiscriminator

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from norm_overhead import peak_extra_memory

VARIANTS = {
    "none": dict(critic_norm="none", padding="zeros"),
    "sn": dict(critic_norm="sn", padding="zeros"),
    "san r=0.25": dict(critic_norm="san", ratio=0.25, gain=1.3, momentum=0.9),
    "san r=1": dict(critic_norm="san", ratio=1.0, gain=1.0, momentum=0.0),
}


def make(kw):
    torch.manual_seed(0)
    return MultiscaleDiscriminator(**kw)


def update(D, opt, x, amp: bool) -> float:
    """One critic update; returns the seconds spent in the SAN / SN refresh."""
    t0 = time.perf_counter()
    refresh_norm_constants(D)
    t_refresh = time.perf_counter() - t0
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp), parametrize.cached():
        preds = D(x)
    loss = sum(d_hinge_loss(p[-1][1:], p[-1][:1]) for p in preds) / len(preds)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return t_refresh


def memory_probe(variant: str) -> None:
    from gan_core.norm.san_layer import SparsityAwareNorm, _PeakCache

    D = make(VARIANTS[variant])
    x = torch.rand(2, 39, 256, 512)
    with torch.no_grad():
        D(x)  # records every conv's input grid (and computes the constants once)
    for m in D.modules():  # forget every per-kernel peak: the next refresh starts from scratch
        if isinstance(m, SparsityAwareNorm):
            m._cache = _PeakCache()
    cold, _ = peak_extra_memory(lambda: refresh_norm_constants(D))
    D.train()
    opt = torch.optim.Adam(D.parameters(), 4e-4, betas=(0.5, 0.9))
    loss = sum(p[-1].mean() for p in D(x))
    loss.backward()
    opt.step()  # weights move as in training
    warm, _ = peak_extra_memory(lambda: refresh_norm_constants(D))
    print(json.dumps({"cold": cold, "warm": warm}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--warmup", type=int, default=20, help="updates before timing (fills the SAN peak caches)")
    ap.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    ap.add_argument("--memory-probe", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_probe:
        return memory_probe(args.memory_probe)
    tune_cpu_allocator()
    amp = args.precision == "bf16"
    fmt = torch.channels_last if amp else torch.contiguous_format
    x = torch.rand(2, 39, 256, 512).contiguous(memory_format=fmt)
    nets = {}
    for name, kw in VARIANTS.items():
        D = make(kw).to(memory_format=fmt).train()
        nets[name] = (D, torch.optim.Adam(D.parameters(), 4e-4, betas=(0.5, 0.9)))
    times: dict[str, list[float]] = {k: [] for k in nets}
    refresh: dict[str, list[float]] = {k: [] for k in nets}
    first: dict[str, list[float]] = {k: [] for k in nets}
    for rnd in range(args.warmup + args.repeats):
        for name, (D, opt) in nets.items():
            t0 = time.perf_counter()
            t_ref = update(D, opt, x, amp)
            if rnd >= args.warmup:
                times[name].append(time.perf_counter() - t0)
                refresh[name].append(t_ref)
            elif rnd < 5:
                first[name].append(t_ref)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; SPADE multi-scale critic, 512x256, batch 1 "
        f"(fake + real stacked), {'bf16 autocast + channels_last' if amp else 'fp32'}, median of {args.repeats}"
    )
    print(f"after {args.warmup} warm-up updates (the steady state of training)")
    print(f"{'critic':<14}{'seconds':>9}{'x none':>9}{'x sn':>8}{'refresh ms':>12}   spread")
    for k, m in med.items():
        print(
            f"{k:<14}{m:>9.3f}{m / med['none']:>9.3f}{m / med['sn']:>8.3f}"
            f"{statistics.median(refresh[k]) * 1e3:>12.1f}   {min(times[k]):.3f}-{max(times[k]):.3f}"
        )
    print("refresh ms of the first 5 updates (peak caches filling; at r < 1 new kernels are drawn):")
    for k in nets:
        if k.startswith("san"):
            print(f"  {k:<12}" + " ".join(f"{v * 1e3:.0f}" for v in first[k]))
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="65536", SAN_GAN_NO_MALLOC_TUNING="1")
    print("\npeak extra memory of the SAN constants (fresh process, RSS above the level before the call):")
    print(f"{'critic':<14}{'from scratch MiB':>24}{'refresh after a step MiB':>27}")
    res = {}
    for k in ("san r=0.25", "san r=1"):
        out = subprocess.run(
            [sys.executable, __file__, "--memory-probe", k], env=env, capture_output=True, text=True, check=True
        )
        res[k] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{k:<14}{res[k]['cold']:>24.1f}{res[k]['warm']:>27.1f}")
    r = {kind: res["san r=0.25"][kind] / max(res["san r=1"][kind], 1e-9) for kind in ("cold", "warm")}
    print(f"r=0.25 / r=1: {r['cold']:.2f} (from scratch), {r['warm']:.2f} (refresh)")


if __name__ == "__main__":
    main()
