"""One report of the GPU-first figures, on whatever device it finds (CUDA if present, else CPU).

    python benchmarks/gpu_report.py               # full sizes (meant for a GPU; minutes)
    python benchmarks/gpu_report.py --smoke       # tiny sizes on the CPU (what the test runs; seconds)
    python benchmarks/gpu_report.py --json out.json
    python benchmarks/gpu_report.py --compile     # also the critic and sr-train with train.compile (CUDA graphs)

Sections (medians of interleaved repeats after warm-up; ratios from the same run):

1. SR critic update (refresh + hinge on a real and a fake batch + backward + Adam) per normalization at
   batch 16 and 64, bf16 autocast + channels_last and fp32: none and SN with zero padding (as users compare),
   none with circular padding (the padding's own cost), BSSN, SAN r=1, SAN r=0.25 g auto, WGAN-GP.
2. One SAN refresh of the SR critic: milliseconds, and on CUDA the host-device synchronizations
   (``torch.cuda.set_sync_debug_mode``) and kernel launches (profiler) it makes.
3. SAN-SPADE multiscale critic update, batch 16, 256x512: none, SN, SAN r=0.25.
4. sr-train stage gan (no VGG term), batch 16: it/s with a SAN critic vs an SN critic.
5. sr-infer on a folder of 512x512 images: output MP/s of the command vs the raw network at batch 8.

Prints tables; asserts nothing. Targets (issue 9): SAN r=1 <= 1.10x SN, circular <= 1.10x zeros, SAN refresh
<= 1 ms with 0 syncs, SPADE SAN <= 1.15x SN, sr-train SAN within 5% of SN, sr-infer >= 50% of the network.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.nn.utils import parametrize

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gan_core.losses import d_hinge_loss  # noqa: E402
from gan_core.norm import refresh_norm_constants  # noqa: E402
from gan_core.runtime import autocast, tune_cpu_allocator  # noqa: E402

SR_VARIANTS = {
    "none": dict(critic_norm="none", padding="zeros"),
    "none (circular)": dict(critic_norm="none", padding="circular"),
    "sn": dict(critic_norm="sn", padding="zeros"),
    "bssn": dict(critic_norm="bssn", padding="zeros"),
    "san r=1": dict(critic_norm="san"),
    "san r=0.25": dict(critic_norm="san", ratio=0.25, gain="auto", momentum=0.9),
    "wgan-gp": dict(critic_norm="none", padding="zeros"),
}
COMPILED_VARIANTS = ("none", "none (circular)", "sn", "san r=1")
SPADE_VARIANTS = {
    "none": dict(critic_norm="none", padding="zeros"),
    "sn": dict(critic_norm="sn", padding="zeros"),
    "san r=0.25": dict(critic_norm="san", ratio=0.25, gain=1.3, momentum=0.9),
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_ms(fns: dict, device: torch.device, repeats: int, warmup: int) -> dict[str, float]:
    """Median milliseconds of each callable, one call of each per round (the others' state stays warm)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for rnd in range(warmup + repeats):
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            if rnd >= warmup:
                times[name].append(1e3 * (time.perf_counter() - t0))
    return {k: statistics.median(v) for k, v in times.items()}


# -- 1. SR critic update ----------------------------------------------------------------------------------
def sr_critic_update(D, opt, real, fake, device, amp, gp: bool) -> None:
    with autocast(device, amp):
        if gp:
            alpha = torch.rand(real.shape[0], 1, 1, 1, device=device)
            mix = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
            (grad,) = torch.autograd.grad(D(mix).sum(), mix, create_graph=True)
            penalty = (grad.float().flatten(1).norm(dim=1) - 1).square().mean()
            loss = D(fake).float().mean() - D(real).float().mean() + 10.0 * penalty
        else:
            refresh_norm_constants(D)
            with parametrize.cached():
                loss = d_hinge_loss(D(real), D(fake))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def sr_critic_table(device, batches, precisions, size, critic_kw, repeats, warmup, compiled=False) -> list[dict]:
    """Rows of section 1; ``compiled`` adds "(compiled)" rows: the critic's body compiled as sr-train's
    ``train.compile`` does (CUDA graphs on CUDA), its refresh beside it."""
    from gan_core.compilation import compile_in_place, initialize_first_use_state
    from gan_core.runtime import training_runtime
    from sr_app.models import SRCritic

    rows = []
    for precision in precisions:
        amp = torch.bfloat16 if precision == "bf16" else None
        fmt = torch.channels_last if amp is not None else torch.contiguous_format
        for batch in batches:
            real = torch.rand(batch, 3, size, size, device=device).contiguous(memory_format=fmt)
            fake = torch.rand(batch, 3, size, size, device=device).contiguous(memory_format=fmt)
            fns = {}
            variants = [(name, kw, False) for name, kw in SR_VARIANTS.items()]
            if compiled:
                variants += [(f"{name} (compiled)", SR_VARIANTS[name], True) for name in COMPILED_VARIANTS]
            for name, kw, compile_it in variants:
                torch.manual_seed(0)
                D = SRCritic(**kw, **critic_kw).to(device, memory_format=fmt).train()
                opt = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.9))
                if compile_it:
                    rt = training_runtime(str(device), precision, amp is not None)
                    initialize_first_use_state(D, real[:1], rt)
                    compile_in_place({"D.features": D.features, "D.head": D.head}, device)
                args = (D, opt, real, fake, device, amp, name.startswith("wgan-gp"))
                fns[name] = lambda args=args: sr_critic_update(*args)
            med = interleaved_ms(fns, device, repeats, warmup)
            for name, ms in med.items():
                rows.append({"precision": precision, "batch": batch, "variant": name, "ms": ms,
                             "x_sn": ms / med["sn"], "x_none": ms / med["none"]})  # fmt: skip
    return rows


# -- 2. SAN refresh: time, synchronizations, kernel launches -------------------------------------------
def san_refresh(device, size, critic_kw, repeats) -> dict:
    from sr_app.models import SRCritic

    torch.manual_seed(0)
    D = SRCritic("san", **critic_kw).to(device).train()
    opt = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.9))
    x = torch.rand(2, 3, size, size, device=device)
    times = []
    for _ in range(repeats + 1):  # refresh after an optimizer step, as in training
        D(x).mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)
        t0 = time.perf_counter()
        refresh_norm_constants(D)
        sync(device)
        times.append(1e3 * (time.perf_counter() - t0))
    out = {"ms": statistics.median(times[1:]), "syncs": None, "kernels": None}
    if device.type == "cuda":
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                refresh_norm_constants(D)
                sync(device)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        out["syncs"] = sum("synchroniz" in str(w.message).lower() for w in caught)
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            refresh_norm_constants(D)
            sync(device)
        out["kernels"] = sum(e.count for e in prof.key_averages() if e.device_type.name == "CUDA")
    return out


# -- 3. SPADE critic ------------------------------------------------------------------------------------
def spade_critic_table(device, batch, size, spade_kw, precision, repeats, warmup) -> dict[str, float]:
    from translate_app.discriminator import MultiscaleDiscriminator

    amp = torch.bfloat16 if precision == "bf16" else None
    fmt = torch.channels_last if amp is not None else torch.contiguous_format
    x = torch.rand(2 * batch, 39, *size, device=device).contiguous(memory_format=fmt)
    fns = {}
    for name, kw in SPADE_VARIANTS.items():
        torch.manual_seed(0)
        D = MultiscaleDiscriminator(**kw, **spade_kw).to(device, memory_format=fmt).train()
        opt = torch.optim.Adam(D.parameters(), lr=4e-4, betas=(0.5, 0.9))

        def update(D=D, opt=opt):
            refresh_norm_constants(D)
            with autocast(device, amp), parametrize.cached():
                preds = D(x)
            loss = sum(d_hinge_loss(p[-1][batch:], p[-1][:batch]) for p in preds) / len(preds)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        fns[name] = update
    return interleaved_ms(fns, device, repeats, warmup)


# -- 4. sr-train stage gan -----------------------------------------------------------------------------
def sr_train_its(device, tmp: Path, preset: str, batch: int, steps: int, warmup: int, extra: list[str]) -> dict:
    from PIL import Image

    from gan_core.config import load_config
    from sr_app.config import SRTrainConfig
    from sr_app.train import train

    data = tmp / "hr"
    data.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for k in range(8):
        yy, xx = np.mgrid[0:192, 0:192] / 192
        img = np.stack([np.sin(rng.uniform(3, 20) * xx + rng.uniform(3, 20) * yy + c) for c in range(3)], axis=2)
        Image.fromarray(((img * 0.5 + 0.5) * 255).astype(np.uint8)).save(data / f"{k}.png")
    out = {}
    for name, sets in {"san": ["model.critic_norm=san"],
                       "sn": ["model.critic_norm=sn", "model.critic_padding=zeros"]}.items():  # fmt: skip
        cfg = load_config(SRTrainConfig, REPO / "configs" / preset, [
            f"data.train_dirs=[{data}]", "data.val_dirs=[]", f"train.device={device}", "train.stage=gan",
            "loss.vgg_loss_weight=0", f"train.batch_size={batch}", f"train.steps={warmup + steps}",
            "log.log_every=1", "log.eval_every=1000000", "log.save_every=1000000", "log.sample_every=1000000",
            *sets, *extra])  # fmt: skip
        run = tmp / f"run_{name}_{len(list(tmp.glob('run_*')))}"
        with contextlib.redirect_stderr(io.StringIO()):
            train(cfg, run)
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        stamps = [r["time"] for r in rows if r.get("kind") == "train"][warmup:]
        gaps = np.diff(stamps)
        out[name] = 1.0 / float(np.median(gaps)) if len(gaps) else float("nan")
    return out


# -- 5. sr-infer throughput ------------------------------------------------------------------------------
def sr_infer_throughput(device, tmp: Path, side: int, count: int, weights: str | None, repeats: int) -> dict:
    from PIL import Image

    from sr_app.cli import infer_main
    from sr_app.infer import Upscaler

    folder = tmp / "in"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(1)
    for k in range(count):
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(folder / f"{k:03d}.png")
    up = Upscaler.from_pretrained(weights, device=str(device))
    out_mp = count * (side * up.scale) ** 2 / 1e6
    walls = []
    for r in range(repeats):
        args = ["-i", str(folder), "-o", str(tmp / f"out{r}"), "--no-niqe", "--device", str(device)]
        args += ["--weights", weights] if weights else []
        sync(device)
        t0 = time.perf_counter()
        with contextlib.redirect_stderr(io.StringIO()):
            code = infer_main(args)
        walls.append(time.perf_counter() - t0)
        if code != 0:
            raise RuntimeError(f"sr-infer exited {code}")
    batch = 8
    x = torch.rand(batch, 3, side, side, device=device)
    raw = interleaved_ms({"net": lambda: up._forward(x)}, device, repeats=max(3, repeats), warmup=1)["net"]
    app = out_mp / statistics.median(walls)
    network = batch * (side * up.scale) ** 2 / 1e6 / (raw / 1e3)
    return {"app_mp_s": app, "network_mp_s": network, "ratio": app / network, "precision": up.precision_name}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat: checks that every section runs")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--json", type=Path, help="also write the figures as JSON")
    ap.add_argument("--compile", action="store_true", help="add compiled critic rows and a compiled sr-train run")
    args = ap.parse_args(argv)
    from gan_core.distributed import pick_device

    device = pick_device(args.device)
    tune_cpu_allocator()
    smoke = args.smoke
    repeats = args.repeats or (1 if smoke else 20)
    warmup = 1 if smoke else 5
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    critic_kw = dict(num_blocks=2, width=8) if smoke else {}
    size = 16 if smoke else 128
    report: dict = {"device": str(device), "torch": torch.__version__, "smoke": smoke}
    if device.type == "cuda":
        report["gpu"] = torch.cuda.get_device_name(device)
    print(f"device {report.get('gpu', device)}, torch {torch.__version__}{' (smoke sizes)' if smoke else ''}")

    batches = (2,) if smoke else (16, 64)
    rows = sr_critic_table(device, batches, ("bf16", "fp32"), size, critic_kw, repeats, warmup, args.compile)
    report["sr_critic"] = rows
    print(f"\n1. SR critic update (ms, median of {repeats}); x sn = vs SN with zero padding")
    print(f"{'precision':<10}{'batch':>6}  {'variant':<27}{'ms':>9}{'x sn':>8}{'x none':>8}")
    for r in rows:
        cells = f"{r['ms']:>9.2f}{r['x_sn']:>8.2f}{r['x_none']:>8.2f}"
        print(f"{r['precision']:<10}{r['batch']:>6}  {r['variant']:<27}{cells}")

    ref = san_refresh(device, size, critic_kw, repeats)
    report["san_refresh"] = ref
    extra = "" if ref["syncs"] is None else f", {ref['syncs']} host syncs, {ref['kernels']} kernel launches"
    print(f"\n2. one SAN refresh of the SR critic: {ref['ms']:.3f} ms{extra}")

    spade_kw = dict(ndf=8, n_layers=3) if smoke else {}
    spade_size = (32, 64) if smoke else (256, 512)
    med = spade_critic_table(device, 1 if smoke else 16, spade_size, spade_kw, "bf16", repeats, warmup)
    report["spade_critic"] = med
    print(
        f"\n3. SAN-SPADE critic update, {spade_size[0]}x{spade_size[1]}, bf16 (ms): "
        + ", ".join(f"{k} {v:.2f}" for k, v in med.items())
        + f"; SAN/SN {med['san r=0.25'] / med['sn']:.2f}x"
    )

    with tempfile.TemporaryDirectory() as tmp:
        preset, batch = ("sr_tiny.yaml", 2) if smoke else ("sr_paper.yaml", 16)
        for compiled in (False, True) if args.compile else (False,):
            sets = ["train.compile=true"] if compiled else []
            its = sr_train_its(device, Path(tmp), preset, batch, 2 if smoke else 30, 1 if smoke else 5, sets)
            report["sr_train_it_s" + ("_compiled" if compiled else "")] = its
            slower = 100 * (1 - its["san"] / its["sn"])
            print(f"\n4. sr-train stage gan, batch {batch}, no VGG{', train.compile' if compiled else ''}: "
                  f"SAN {its['san']:.2f} it/s, SN {its['sn']:.2f} it/s (SAN {slower:+.1f}% slower)")  # fmt: skip

        weights = None
        if smoke:  # a tiny random generator released like a model
            from safetensors.torch import save_file

            from sr_app.models import SRGenerator

            G = SRGenerator(channels=8, num_blocks=1, init_scale=0.1)
            save_file(G.state_dict(), f"{tmp}/tiny.safetensors")
            config = {"architecture": "SRGenerator", "scale": 4, "name": "tiny-random",
                      "kwargs": {"channels": 8, "num_blocks": 1, "scale": 4}}  # fmt: skip
            Path(f"{tmp}/tiny.json").write_text(json.dumps(config))
            weights = f"{tmp}/tiny.safetensors"
        inf = sr_infer_throughput(device, Path(tmp), 32 if smoke else 512, 2 if smoke else 32, weights,
                                  1 if smoke else 3)  # fmt: skip
        report["sr_infer"] = inf
        print(
            f"\n5. sr-infer folder of {'32' if smoke else '512'}px images ({inf['precision']}): {inf['app_mp_s']:.1f} "
            f"output MP/s; the network at batch 8: {inf['network_mp_s']:.1f} MP/s ({100 * inf['ratio']:.0f}%)"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
