"""One SAN refresh of a whole critic, side by side: the certified and the dense algorithm (and, on CUDA,
the dense path's Triton and plain-PyTorch backends). Prints medians and ratios; asserts nothing.

    python benchmarks/san_refresh.py                          # SR critic, batch 16, 128x128, on the CPU
    python benchmarks/san_refresh.py --critic spade --repeats 5
    python benchmarks/san_refresh.py --device cuda --checks   # + sync / graph-capture / launch checks

Each round makes one Adam step on the critic (so the certified path sees moved weights, as in training,
where its incremental cache pays) and then times one ``refresh_norm_constants`` per variant, interleaved;
every variant refreshes its own copy of the same weights. The first ``--warmup`` rounds are not timed.
On CUDA every timing is bracketed by ``torch.cuda.synchronize()``.

``--checks`` (CUDA only) runs the refresh of the dense path (a) under ``torch.cuda.set_sync_debug_mode
("error")`` (any synchronizing call raises), (b) captured in a CUDA graph and replayed against eager
refreshes of a twin critic (same ``s`` bits expected, fresh r < 1 draws at every replay), (c) under the
profiler to count kernel launches, and (d) compares the Triton and torch backends and the device draw
keys with the CPU ones.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn
from torch.nn.utils import parametrize

from gan_core.norm import norm_constants, refresh_norm_constants
from gan_core.norm.san_layer import SparsityAwareNorm
from gan_core.runtime import tune_cpu_allocator


def build_critic(kind: str, algorithm: str, device: torch.device) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    if kind == "sr":
        from sr_app.models import SRCritic

        D, x = SRCritic("san", algorithm=algorithm), torch.rand(16, 3, 128, 128)
    else:
        from translate_app.discriminator import MultiscaleDiscriminator

        D = MultiscaleDiscriminator(critic_norm="san", ratio=0.25, gain=1.3, momentum=0.9, algorithm=algorithm)
        x = torch.rand(1, 39, 256, 512)
    D = D.to(device).train()
    with torch.no_grad():
        D(x.to(device))  # records every layer's grid
    return D, x.to(device)


def san_norms(D: nn.Module) -> list[SparsityAwareNorm]:
    return [m for m in D.modules() if isinstance(m, SparsityAwareNorm)]


def san_layers(D: nn.Module) -> list[tuple[nn.Module, SparsityAwareNorm]]:
    """(conv, its SAN parametrization) pairs."""
    pairs = []
    for layer in D.modules():
        if parametrize.is_parametrized(layer, "weight"):
            pairs += [(layer, p) for p in layer.parametrizations.weight if isinstance(p, SparsityAwareNorm)]
    return pairs


def dense_work(D: nn.Module) -> float:
    """Multiply-adds of one dense refresh (Re and Im of every sampled kernel at every one-sided frequency)."""
    from gan_core.norm.san_draws import block_shape

    total = 0
    for layer, norm in san_layers(D):
        m, n, kh, kw = layer.parametrizations.weight.original.shape
        k_out, k_in = block_shape(m, n, norm.ratio)
        H, W = norm._size
        total += k_out * k_in * kh * kw * H * (W // 2 + 1) * 2
    return float(total)


def recompute_all(pairs) -> None:
    for layer, norm in pairs:
        norm.recompute(layer.parametrizations.weight.original)


def set_variant(D: nn.Module, algorithm: str, backend: str) -> None:
    for norm in san_norms(D):
        norm.algorithm, norm.dense_backend = algorithm, backend


def loss_of(out) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out.float().mean()
    return sum(o[-1].float().mean() for o in out)  # multiscale: last output of every scale


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_refreshes(args, device: torch.device) -> None:
    variants = {"certified": ("certified", "auto"), "dense": ("dense", "auto")}
    if device.type == "cuda":
        variants = {"certified": ("certified", "auto"), "dense triton": ("dense", "triton")}
        variants["dense torch"] = ("dense", "torch")
    base, x = build_critic(args.critic, "auto", device)
    nets = {}
    for name, (algorithm, backend) in variants.items():
        D = copy.deepcopy(base)
        set_variant(D, algorithm, backend)
        nets[name] = (D, torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.9)))
    times: dict[str, list[float]] = {name: [] for name in nets}
    for rnd in range(args.warmup + args.repeats):
        for name, (D, opt) in nets.items():
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss = loss_of(D(x))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sync(device)
            t0 = time.perf_counter()
            refresh_norm_constants(D)
            sync(device)
            if rnd >= args.warmup:
                times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    layers, gfma = len(san_norms(base)), dense_work(base) / 1e9
    print(f"\n== one SAN refresh of the {args.critic} critic ({layers} SAN convs), median of {args.repeats} ==")
    print(f"dense transform: {gfma:.2f} G multiply-adds per refresh (stride-1 bound; x2 flops)")
    print(f"{'variant':<16}{'ms':>9}{'x certified':>13}   spread (min-max ms)")
    for name, m in med.items():
        lo, hi = 1e3 * min(times[name]), 1e3 * max(times[name])
        rate = f"   {2 * gfma / m / 1e3:.2f} TFLOP/s" if name.startswith("dense") else ""
        print(f"{name:<16}{1e3 * m:>9.2f}{m / med['certified']:>13.3f}   {lo:.2f}-{hi:.2f}{rate}")
    if any(norm.ratio < 1 for norm in san_norms(base)):
        print("r < 1: the dense path draws other blocks than the certified one (san_draws); constants not compared")
        return
    consts = {name: norm_constants(D) for name, (D, _) in nets.items()}
    first = consts["certified"]
    for name, c in consts.items():  # each copy trained on its own: float32 differences grow through Adam steps
        worst = max(abs(c[k] - first[k]) / first[k] for k in c)
        print(f"max relative difference of the constants after the run, {name} vs certified: {worst:.2e}")


def run_checks(args, device: torch.device) -> None:
    """CUDA: no synchronization, CUDA-graph capture, launch counts, backend and draw agreement."""
    from gan_core.norm.san_dense import dense_san_constant, draw_block

    D, _ = build_critic(args.critic, "dense", device)
    pairs = san_layers(D)
    refresh_norm_constants(D)  # warm: bases built, Triton kernels compiled
    sync(device)
    for what, fn in [
        ("SAN layers' dense recompute", lambda: recompute_all(pairs)),
        ("refresh_norm_constants", lambda: refresh_norm_constants(D)),
    ]:
        torch.cuda.set_sync_debug_mode("error")
        try:
            fn()
            print(f"sync debug mode 'error': {what} ran without any synchronizing call")
        except RuntimeError as e:
            print(f"SYNC FOUND in {what}: {e}")
        finally:
            torch.cuda.set_sync_debug_mode(0)
    twin = copy.deepcopy(D)
    twin_pairs = san_layers(twin)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up on a side stream, as torch.cuda.graphs recommends
        for _ in range(2):
            recompute_all(pairs)
            recompute_all(twin_pairs)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        recompute_all(pairs)
    same = True
    for _ in range(3):
        graph.replay()
        recompute_all(twin_pairs)
        sync(device)
        same &= norm_constants(D) == norm_constants(twin)
        same &= all(torch.equal(a.draws, b.draws) for (_, a), (_, b) in zip(pairs, twin_pairs, strict=True))
    print(f"CUDA graph of the dense refresh: 3 replays {'==' if same else '!='} 3 eager refreshes (s and draws)")
    replays = []
    for _ in range(20):
        sync(device)
        t0 = time.perf_counter()
        graph.replay()
        sync(device)
        replays.append(time.perf_counter() - t0)
    print(f"one replay of the captured SAN refresh: {1e3 * statistics.median(replays):.3f} ms (median of 20)")
    refresh_norm_constants(D)
    sync(device)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        refresh_norm_constants(D)
        sync(device)
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    print(f"kernels launched by one refresh_norm_constants ({len(pairs)} SAN layers + SN linears): {len(kernels)}")
    worst, keys_equal = 0.0, True
    for layer, norm in pairs:
        w = layer.parametrizations.weight.original
        kw = dict(stride=norm.stride, dilation=norm.dilation, strided=norm.strided)
        a = dense_san_constant(w, norm._size, backend="triton", **kw)
        b = dense_san_constant(w, norm._size, backend="torch", **kw)
        c = dense_san_constant(w.cpu(), norm._size, backend="torch", **kw)
        worst = max(worst, abs(float(a) - float(c)) / float(c), abs(float(b) - float(c)) / float(c))
        if norm.ratio < 1:
            m, n = w.shape[:2]
            got = draw_block(m, n, norm.ratio, norm.seed, norm.draws, "triton")
            ref = draw_block(m, n, norm.ratio, norm.seed.cpu(), norm.draws.cpu(), "torch")
            keys_equal &= all(torch.equal(g.cpu(), r) for g, r in zip(got, ref, strict=True))
    print(f"dense constants, triton and torch on CUDA vs torch on CPU: max relative difference {worst:.2e}")
    print(f"device draws (triton keys on CUDA) == CPU torch draws: {keys_equal}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--critic", choices=["sr", "spade"], default="sr")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--checks", action="store_true", help="CUDA: sync, graph capture, launch and agreement checks")
    args = ap.parse_args()
    device = torch.device(args.device)
    tune_cpu_allocator()  # as the training loops do (gan_core.runtime)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, device {device} ({where})")
    time_refreshes(args, device)
    if args.checks:
        if device.type != "cuda":
            print("--checks needs a CUDA device; skipped")
        else:
            run_checks(args, device)


if __name__ == "__main__":
    main()
