"""Cost of one critic update of the SR critic layout (docs/algorithms.md §3.2) per normalization, and the memory
of one ``san_constant`` call on SPADE's first critic conv. Prints tables; asserts nothing.

    python benchmarks/norm_overhead.py                      # bf16+channels_last and fp32, batch 16, 128x128
    python benchmarks/norm_overhead.py --precision bf16 --repeats 9

One update = ``refresh_norm_constants`` + hinge loss on a real and a fake batch (two critic calls under
``parametrize.cached()``, so each normalized weight is computed once per step) + backward + Adam step;
WGAN-GP = the unnormalized critic with the gradient penalty (lambda 10, one extra critic call with
double backward) instead. Variants run interleaved (one update of each per round) after
warm-up rounds, and the table gives medians and ratios. Padding: SN, BSSN, none and WGAN-GP use zeros as
in their papers, SAN circular; the "(circular)" rows give SN and none with SAN's padding, for a
same-padding comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

import torch
from torch.nn.utils import parametrize

from gan_core.norm import refresh_norm_constants, san_constant
from gan_core.runtime import tune_cpu_allocator
from sr_app.models import SRCritic

VARIANTS = {
    "none": dict(critic_norm="none", padding="zeros"),
    "sn": dict(critic_norm="sn", padding="zeros"),
    "bssn": dict(critic_norm="bssn", padding="zeros"),
    "san r=1": dict(critic_norm="san"),
    "san r=0.25": dict(critic_norm="san", ratio=0.25, gain="auto", momentum=0.9),
    "wgan-gp": dict(critic_norm="none", padding="zeros"),
    "none (circular)": dict(critic_norm="none", padding="circular"),
    "sn (circular)": dict(critic_norm="sn", padding="circular"),
}


def critic_update(D, opt, real, fake, gp: bool, autocast: bool) -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        if gp:
            alpha = torch.rand(real.shape[0], 1, 1, 1)
            mix = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
            (grad,) = torch.autograd.grad(D(mix).sum(), mix, create_graph=True)
            penalty = (grad.float().flatten(1).norm(dim=1) - 1).square().mean()
            loss = D(fake).float().mean() - D(real).float().mean() + 10.0 * penalty
        else:
            refresh_norm_constants(D)
            with parametrize.cached():  # normalized weights computed once per step, as the training loops do
                loss = torch.relu(1 - D(real).float()).mean() + torch.relu(1 + D(fake).float()).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def time_updates(precision: str, batch: int, size: int, repeats: int, warmup: int) -> dict[str, list[float]]:
    bf16 = precision == "bf16"
    fmt = torch.channels_last if bf16 else torch.contiguous_format
    real = torch.rand(batch, 3, size, size).contiguous(memory_format=fmt)
    fake = torch.rand(batch, 3, size, size).contiguous(memory_format=fmt)
    nets = {}
    for name, kw in VARIANTS.items():
        torch.manual_seed(0)
        D = SRCritic(**kw).to(memory_format=fmt).train()
        nets[name] = (D, torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.9)))
    times: dict[str, list[float]] = {name: [] for name in nets}
    for rnd in range(warmup + repeats):
        for name, (D, opt) in nets.items():
            t0 = time.perf_counter()
            critic_update(D, opt, real, fake, gp=name == "wgan-gp", autocast=bf16)
            if rnd >= warmup:
                times[name].append(time.perf_counter() - t0)
    return times


def time_refresh(precision: str, batch: int, size: int, repeats: int) -> tuple[float, float, float]:
    """Median warm SAN refresh of the whole critic during training, its cold (first) computation, and a
    plain full-grid rfft2 of every kernel (what a naive implementation does at every refresh)."""
    torch.manual_seed(0)
    D = SRCritic("san").train()
    opt = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.9))
    real, fake = torch.rand(batch, 3, size, size), torch.rand(batch, 3, size, size)
    warm = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        refresh_norm_constants(D)
        warm.append(time.perf_counter() - t0)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = torch.relu(1 - D(real)).mean() + torch.relu(1 + D(fake)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    convs = [m for m in D.modules() if isinstance(m, torch.nn.Conv2d)]
    weights = [(c.parametrizations.weight.original.detach(), c.parametrizations.weight[0]._size) for c in convs]
    t0 = time.perf_counter()
    for w, hw in weights:
        san_constant(w, hw)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    for w, hw in weights:
        torch.fft.rfft2(w, s=hw).abs().amax()
    naive = time.perf_counter() - t0
    return statistics.median(warm[1:]), cold, naive


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_extra_memory(fn) -> tuple[float, float]:
    """(peak RSS above the level before the call in MiB, seconds), RSS polled every 0.2 ms in a thread.

    Meaningful in a fresh process with glibc's dynamic mmap threshold disabled (see memory_table), so
    that freed buffers go back to the OS and RSS follows the live allocations."""
    base, peak, done = _rss(), [0], threading.Event()

    def poll():
        while not done.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.0002)

    t = threading.Thread(target=poll)
    t.start()
    t0 = time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    done.set()
    t.join()
    return max(0, max(peak[0], _rss()) - base) / 2**20, dt


def memory_probe(what: str) -> None:
    """Child process: one cold call on SPADE D0 conv0 (39 -> 64, 4x4, input 256x512); prints MiB and s."""
    torch.manual_seed(0)
    w = torch.randn(64, 39, 4, 4) * (2 / (39 * 16)) ** 0.5
    if what == "rfft2":
        fn = lambda: torch.fft.rfft2(w, s=(256, 512)).abs().amax()  # noqa: E731
    else:
        fn = lambda: san_constant(w, (256, 512), ratio=float(what), generator=torch.Generator().manual_seed(0))  # noqa: E731
    mib, dt = peak_extra_memory(fn)
    print(json.dumps({"mib": mib, "seconds": dt}))


def memory_table() -> list[tuple[str, float, float]]:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="65536")
    rows = []
    for what, label in [
        ("1.0", "san_constant 39->64 4x4 @ 256x512, r=1"),
        ("0.25", "san_constant 39->64 4x4 @ 256x512, r=0.25"),
        ("rfft2", "reference: one rfft2 of all kernels, r=1"),
    ]:
        out = subprocess.run(
            [sys.executable, __file__, "--memory-probe", what], env=env, capture_output=True, text=True, check=True
        )
        res = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append((label, res["mib"], res["seconds"]))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--precision", choices=["bf16", "fp32", "both"], default="both")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--no-malloc-tuning", action="store_true", help="leave glibc's allocator at its defaults")
    ap.add_argument("--memory-probe", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_probe:
        return memory_probe(args.memory_probe)
    tuned = False if args.no_malloc_tuning else tune_cpu_allocator()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, cpu capability "
        f"{torch.backends.cpu.get_cpu_capability()}; SR critic layout, batch {args.batch}, {args.size}x{args.size}; "
        f"glibc allocator tuning {'on' if tuned else 'off'} (gan_core.runtime)"
    )
    for precision in ["bf16", "fp32"] if args.precision == "both" else [args.precision]:
        label = "bf16 autocast + channels_last" if precision == "bf16" else "fp32"
        times = time_updates(precision, args.batch, args.size, args.repeats, args.warmup)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"\n== one critic update, {label} (median of {args.repeats}, interleaved) ==")
        print(f"{'variant':<18}{'seconds':>9}{'x none':>9}{'x sn':>8}   spread (min-max)")
        for name, m in med.items():
            print(
                f"{name:<18}{m:>9.3f}{m / med['none']:>9.3f}{m / med['sn']:>8.3f}   "
                f"{min(times[name]):.3f}-{max(times[name]):.3f}"
            )
        print(
            f"san r=1 vs sn (circular), same padding: {med['san r=1'] / med['sn (circular)']:.3f}x; "
            f"san r=1 vs wgan-gp: {med['san r=1'] / med['wgan-gp']:.3f}x "
            f"({100 * (1 - med['san r=1'] / med['wgan-gp']):.0f}% cheaper)"
        )
        warm, cold, naive = time_refresh(precision, args.batch, args.size, args.repeats)
        print(
            f"SAN refresh of the 10 convs: {1e3 * warm:.1f} ms warm (median, during training), "
            f"{1e3 * cold:.0f} ms cold san_constant, {1e3 * naive:.0f} ms plain rfft2 of every kernel"
        )
    print("\n== peak extra memory of one cold call (fresh process, RSS above the level before the call) ==")
    for name, mib, dt in memory_table():
        print(f"{name:<48}{mib:>9.1f} MiB{dt:>9.3f} s")


if __name__ == "__main__":
    main()
