"""Circular vs zero padding in the SR critic's update, per ``circular_pad2d`` implementation, side by side.
Prints tables of medians and ratios; asserts nothing.

    python benchmarks/circular_pad.py                         # the device it finds; CUDA: batch 16 and 32
    python benchmarks/circular_pad.py --batch 16 32 --precision both --compile --repeats 20

One update = hinge loss on a real and a fake batch (two critic calls) + backward + Adam step, of the SR
critic (docs/algorithms.md §3.2; crop 128) without normalization, so that only the padding differs (the norms'
costs are benchmarks/norm_overhead.py's). Variants run interleaved (one update of each per round) after
warm-up rounds:

    zeros              padding="zeros" (the convolution library pads implicitly)
    circular           circular_pad2d as dispatched: CPU "slices", CUDA "triton" (gan_core.norm.padding)
    circular slices    forced: the strip-copy autograd function (on CUDA: the path issue 9 measured)
    circular triton    forced: one Triton kernel each way (CUDA only)
    circular concat    forced: torch.cat of slices, eager (the form compiled code uses)
    circular torch     nn.Conv2d's own padding_mode="circular" (F.pad)
    --compile:         zeros / circular with features and head compiled as train.compile does
                       (CUDA: mode reduce-overhead, i.e. CUDA graphs)

A second table times one pad alone (forward + backward) on a (batch, 64, 128, 128) activation. On CUDA each
timed call ends with a synchronization. CPU figures are noisy on a shared machine: compare ratios of one run.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch

from gan_core import distributed as gdist
from gan_core.compilation import compile_in_place
from gan_core.norm.padding import circular_pad2d, circular_pad_backend
from gan_core.runtime import Runtime, tune_cpu_allocator
from sr_app.models import SRCritic


def build(padding: str, torch_circular: bool, fmt, device) -> SRCritic:
    torch.manual_seed(0)
    D = SRCritic("none", padding=padding).to(device, memory_format=fmt).train()
    if torch_circular:  # PyTorch's own circular convolution: F.pad inside nn.Conv2d._conv_forward
        for m in D.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.padding_mode = "circular"
    return D


def variants(device: torch.device, compiled: bool) -> dict[str, tuple[str, str, bool, bool]]:
    """name -> (padding, forced backend or "auto", PyTorch's circular, compiled)."""
    out = {
        "zeros": ("zeros", "auto", False, False),
        "circular": ("circular", "auto", False, False),
        "circular slices": ("circular", "slices", False, False),
        "circular concat": ("circular", "concat", False, False),
        "circular torch": ("zeros", "auto", True, False),
    }
    if device.type == "cuda":
        out["circular triton"] = ("circular", "triton", False, False)
    if compiled:
        out["zeros compiled"] = ("zeros", "auto", False, True)
        out["circular compiled"] = ("circular", "auto", False, True)
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def critic_updates(rt: Runtime, batch: int, repeats: int, warmup: int, compiled: bool) -> dict[str, list[float]]:
    fmt = torch.channels_last if rt.channels_last else torch.contiguous_format
    real = torch.rand(batch, 3, 128, 128, device=rt.device).contiguous(memory_format=fmt)
    fake = torch.rand(batch, 3, 128, 128, device=rt.device).contiguous(memory_format=fmt)
    runs = {}
    for name, (padding, backend, torch_circular, comp) in variants(rt.device, compiled).items():
        D = build(padding, torch_circular, fmt, rt.device)
        if comp:
            compile_in_place({"D.features": D.features, "D.head": D.head}, rt.device)
        opt = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.9))
        runs[name] = (D, opt, backend, comp)

    def update(D, opt, comp):
        if comp and rt.device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()
        with rt.autocast():
            loss = torch.relu(1 - D(real).float()).mean() + torch.relu(1 + D(fake).float()).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    times: dict[str, list[float]] = {name: [] for name in runs}
    for rnd in range(warmup + repeats):
        for name, (D, opt, backend, comp) in runs.items():
            with circular_pad_backend(backend):
                sync(rt.device)
                t0 = time.perf_counter()
                update(D, opt, comp)
                sync(rt.device)
            if rnd >= warmup:
                times[name].append(time.perf_counter() - t0)
    return times


def pad_alone(device, dtype, fmt, batch: int, repeats: int) -> dict[str, float]:
    """Median seconds of one pad (1 on every side) forward + backward, per implementation."""
    x = torch.randn(batch, 64, 128, 128, device=device, dtype=dtype).contiguous(memory_format=fmt)
    x.requires_grad_(True)
    g = torch.randn(batch, 64, 130, 130, device=device, dtype=dtype).contiguous(memory_format=fmt)
    impls = {
        "slices": lambda: circular_pad_backend("slices"),
        "concat": lambda: circular_pad_backend("concat"),
        "F.pad": contextlib.nullcontext,
    }
    if device.type == "cuda":
        impls["triton"] = lambda: circular_pad_backend("triton")
    times: dict[str, list[float]] = {k: [] for k in impls}
    for rnd in range(repeats + 2):
        for name, ctx in impls.items():
            with ctx():
                sync(device)
                t0 = time.perf_counter()
                if name == "F.pad":
                    y = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="circular")
                else:
                    y = circular_pad2d(x, 1)
                y.backward(g)
                sync(device)
            x.grad = None
            if rnd >= 2:
                times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    ap.add_argument("--batch", type=int, nargs="+", help="default: 16 32 on CUDA, 2 on the CPU")
    ap.add_argument("--precision", choices=["bf16", "fp32", "both"], default="both")
    ap.add_argument("--repeats", type=int, default=None, help="default: 20 on CUDA, 5 on the CPU")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="also the compiled critic (slow to compile on a CPU)")
    ap.add_argument("--cudnn-benchmark", action="store_true")
    args = ap.parse_args()
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    cuda = device.type == "cuda"
    batches = args.batch or ([16, 32] if cuda else [2])
    repeats = args.repeats or (20 if cuda else 5)
    if cuda:
        torch.backends.cudnn.benchmark = args.cudnn_benchmark
        where = torch.cuda.get_device_name(device)
    else:
        tune_cpu_allocator()
        where = f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__} on {where}; SR critic (no norm) update, 128x128 crops; medians of {repeats}")
    for precision in ["bf16", "fp32"] if args.precision == "both" else [args.precision]:
        bf16 = precision == "bf16"
        rt = Runtime(device, torch.bfloat16 if bf16 else None, bf16, gdist.DistInfo())
        label = "bf16 autocast + channels_last" if bf16 else "fp32, contiguous"
        for batch in batches:
            times = critic_updates(rt, batch, repeats, args.warmup, args.compile)
            med = {k: statistics.median(v) for k, v in times.items()}
            print(f"\n== critic update, batch {batch}, {label} ==")
            print(f"{'variant':<20}{'ms':>10}{'x zeros':>9}   spread (min-max ms)")
            for name, m in med.items():
                base = med["zeros compiled"] if name.endswith("compiled") else med["zeros"]
                print(f"{name:<20}{1e3 * m:>10.2f}{m / base:>9.3f}   "
                      f"{1e3 * min(times[name]):.2f}-{1e3 * max(times[name]):.2f}")  # fmt: skip
        dtype = torch.bfloat16 if bf16 else torch.float32
        fmt = torch.channels_last if bf16 else torch.contiguous_format
        pads = pad_alone(device, dtype, fmt, batches[0], repeats)
        print(f"\n== one pad (1 each side), forward + backward, ({batches[0]}, 64, 128, 128) {dtype} ==")
        for name, m in pads.items():
            print(f"{name:<20}{1e3 * m:>10.3f} ms{m / pads['F.pad']:>9.3f} x F.pad")
    if args.compile:
        print("\n(the compiled rows are relative to zeros compiled)")


if __name__ == "__main__":
    main()
