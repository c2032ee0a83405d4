"""Critic study: the same generator init trained by sr-train's own loop with each critic, under one budget.

    python benchmarks/critic_study.py --out runs/critic_study --minutes 60        # CPU: reduced sizes, ~1 hour
    python benchmarks/critic_study.py --out runs/critic_study --steps 3000 --seeds 3   # a fixed budget (GPU)
    python benchmarks/critic_study.py --out /tmp/smoke --smoke                    # seconds, what the test runs
    python benchmarks/critic_study.py --out runs/tune --critics "san r=1" --set loss.adv_weight=0.01

Critics (``--critics``, comma-separated): none, sn, bssn, san r=1 (g = 1), san r=0.25 (g auto, EMA 0.9),
wgan-gp (plain critic without BatchNorm, gradient penalty 10). All use circular padding (SAN needs it, so the
comparison holds the padding fixed). Each run is ``sr_app.train.train`` on ``configs/sr_gan_l1adv.yaml``
(1 * L1 + 0.005 * adversarial, no VGG) from ``--init`` (default: the shipped pixel model srresnet-l1-x4),
with constant learning rates (no milestones in a short run) and an EMA horizon of a tenth of the run.

Data: T91 + BSD200 (``--train-dir``); ``--holdout`` BSD200 images (every k-th of the sorted names, Set5's
302003 never used) are left out of training (``data.exclude``) and linked into ``OUT/val`` as the validation
set: the study never looks at Set5 / Set14. Caveat: the shipped pixel model was trained on all of BSD200.

Profiles: ``reduced`` (default on the CPU: LR patch 24 = HR 96, critic crop 64 = 4 blocks, batch 8, validation
images centre-cropped to 256 px), ``paper`` (default on CUDA: LR patch 40, crop 128, batch 16, whole validation
images), ``smoke`` (``--smoke``: 2 steps, tiny critic). Budget: ``--steps N`` per run, or ``--minutes M`` for the
whole study: every critic is first timed for a few steps (``OUT/calibration``), then the largest common step
count that fits M minutes (validation included) is chosen and the plan printed before anything long starts;
``--dry-run`` stops after the plan.

Per run, from the run's ``metrics.jsonl``: validation Y-PSNR / Y-SSIM / NIQE (LPIPS when the AlexNet weights
are present) at ``--evals`` points, the exact spectral norm of every critic conv on its grid (``log.critic_spectral``),
gradient norms of G and D (``log.grad_norms``), seconds per training step, divergence events (non-finite
steps, a stop after ``train.max_nonfinite`` of them in a row, Y-PSNR more than ``--collapse-db`` under the
init's). After each run its final EMA generator is exported as ``<run>/final_generator.safetensors`` (+ ``.json``,
float32: ``sr-infer -m`` / ``sr-eval -m`` take it) and evaluated with the pixel model on the WHOLE held-out images
(Y-PSNR, Y-SSIM, NIQE): the ship-decision table. Writes ``OUT/study.json``, ``OUT/study.md`` and ``OUT/curves.png``
/ ``OUT/perception_distortion.png``, rewritten after every run. A run folder with a ``summary.json`` is kept as
done; an interrupted run resumes from its last checkpoint (taken at every validation).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from gan_core.config import ConfigError, load_config  # noqa: E402
from sr_app.config import SRTrainConfig  # noqa: E402

PRESET = REPO / "configs" / "sr_gan_l1adv.yaml"
SHARED = Path(os.environ.get("SAN_SHARED_DIR", REPO.parent / "shared"))
CRITICS = {
    "none": ["model.critic_norm=none"],
    "sn": ["model.critic_norm=sn"],
    "bssn": ["model.critic_norm=bssn"],
    "san r=1": ["model.critic_norm=san", "model.san_ratio=1.0", "model.san_gain=1.0"],
    "san r=0.25": ["model.critic_norm=san", "model.san_ratio=0.25", "model.san_gain=auto", "model.san_momentum=0.9"],
    "wgan-gp": ["model.critic_norm=none", "model.critic_bn=false", "loss.adversarial=wgan-gp", "loss.gp_weight=10"],
}
PROFILES = {
    "reduced": [
        "data.lr_patch=24",
        "model.critic_blocks=4",
        "train.batch_size=8",
        "data.val_max_size=256",
        "log.critic_spectral_iters=50",
    ],  # the exact norms of the strided convs take minutes on a CPU
    "paper": ["data.lr_patch=40", "model.critic_blocks=5", "train.batch_size=16"],
    "smoke": ["data.lr_patch=8", "model.critic_blocks=2", "model.critic_width=8", "train.batch_size=2"],
}
NEVER_TRAIN = ("302003",)  # Set5 'woman' is a BSD200 image


# -- data ------------------------------------------------------------------------------------------------
def holdout_files(bsd_dir: Path, count: int) -> list[Path]:
    """``count`` images of ``bsd_dir`` spread over its sorted names (every k-th), never Set5's 302003."""
    from gan_core.image_io import list_images

    files = [f for f in sorted(list_images(bsd_dir)) if f.stem not in NEVER_TRAIN]
    if count < 1 or count >= len(files):
        raise ValueError(f"--holdout must be in [1, {len(files) - 1}] for {bsd_dir} ({len(files)} images)")
    step = len(files) // count
    return files[::step][:count]


def make_val_folder(files: list[Path], folder: Path) -> Path:
    """``folder`` holding links to ``files`` (copies where links fail): an HR-only validation set."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    for stale in set(folder.iterdir()) - {folder / f.name for f in files}:  # from a run with another --holdout
        stale.unlink()
    for f in files:
        dest = folder / f.name
        if not dest.exists():
            try:
                dest.symlink_to(f.resolve())
            except OSError:
                shutil.copyfile(f, dest)
    return folder


# -- one run ---------------------------------------------------------------------------------------------
def run_config(critic: str, seed: int, steps: int, evals: int, common: list[str],
               log_every: int | None = None) -> SRTrainConfig:  # fmt: skip
    """The sr-train config of one run: the preset, the study's common overrides, the critic's, the budget
    (validation and a checkpoint ``evals`` times, about 25 log rows, samples at the end)."""
    every = max(1, math.ceil(steps / max(1, evals)))
    sets = [*common, *CRITICS[critic], f"train.steps={steps}", f"train.seed={seed}",
            f"train.ema_decay={min(0.999, max(0.0, 1 - 10 / steps)):.6g}", f"log.eval_every={every}",
            f"log.save_every={every}", f"log.sample_every={steps}",
            f"log.log_every={log_every or max(1, steps // 25)}"]  # fmt: skip
    return load_config(SRTrainConfig, PRESET, sets)


def read_metrics(run_dir: Path) -> dict[str, list[dict]]:
    """Rows of ``metrics.jsonl`` by kind, the last row per (kind, step, dataset) (a resumed run repeats some)."""
    rows: dict[tuple, dict] = {}
    path = run_dir / "metrics.jsonl"
    for line in path.read_text().splitlines() if path.is_file() else []:
        r = json.loads(line)
        rows[(r["kind"], r["step"], r.get("dataset"))] = r
    out: dict[str, list[dict]] = {}
    for (kind, _, _), r in sorted(rows.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        out.setdefault(kind, []).append(r)
    return out


def _median(values: list[float]) -> float:
    vals = [v for v in values if isinstance(v, int | float) and math.isfinite(v)]
    return statistics.median(vals) if vals else float("nan")


def summarize(metrics: dict[str, list[dict]], init: dict, collapse_db: float, outcome: str) -> dict:
    """One run's figures: the last validation, medians of the step time and gradient norms, the critic's
    largest conv spectral norm (last and over the run), and the divergence events."""
    train, val, critic = metrics.get("train", []), metrics.get("val", []), metrics.get("critic", [])
    last = val[-1] if val else {}
    events = [{"step": r["step"], "kind": "nonfinite"} for r in metrics.get("nonfinite", [])]
    events += [{"step": r["step"], "kind": "psnr_collapse", "psnr_y": r["psnr_y"]} for r in val
               if not r["psnr_y"] >= init["psnr_y"] - collapse_db]  # fmt: skip
    if outcome == "diverged":
        events.append({"step": train[-1]["step"] if train else 0, "kind": "diverged"})
    spectral = [r.get("spectral/max_conv", float("nan")) for r in critic]
    return {
        "outcome": outcome,
        "steps": train[-1]["step"] if train else 0,
        **{k: last[k] for k in ("psnr_y", "ssim_y", "niqe", "lpips") if k in last},
        "s_per_step": _median([r.get("step_s") for r in train[1:] or train]),  # the first window warms up
        "d_grad_norm": _median([r.get("d_grad_norm") for r in train]),
        "g_grad_norm": _median([r.get("g_grad_norm") for r in train]),
        "spectral_max_conv": spectral[-1] if spectral else float("nan"),
        "spectral_max_conv_peak": max(spectral) if spectral else float("nan"),
        "events": events,
    }


def train_run(cfg: SRTrainConfig, run_dir: Path, quiet: bool) -> str:
    """``sr_app.train.train`` in ``run_dir`` (resuming its last checkpoint): ``finished``, ``diverged`` or the
    error's first line (the study goes on)."""
    from sr_app.train import TrainingDiverged, train

    sink = io.StringIO()
    with contextlib.redirect_stderr(sink) if quiet else contextlib.nullcontext():
        try:
            train(cfg, run_dir, resume="auto")
        except TrainingDiverged:
            return "diverged"
        except (ValueError, RuntimeError, OSError) as e:
            return f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
    return "finished"


# -- budget ------------------------------------------------------------------------------------------------
def calibrate(critics: list[str], common: list[str], folder: Path, steps: int = 4) -> dict[str, dict]:
    """Per critic, from a ``steps``-step run without validation images: median seconds per training step
    (steps 2..n), the seconds a validation adds besides the images (critic spectral norms) and the rest of a
    run's fixed cost (data, networks, checkpoint). Kept in ``folder/<critic>/calibration.json``."""
    out = {}
    for critic in critics:
        run_dir = folder / _slug(critic)
        saved = run_dir / "calibration.json"
        if saved.is_file():
            out[critic] = json.loads(saved.read_text())
        else:
            cfg = run_config(critic, 0, steps, 1, [*common, "data.val_dirs=[]"], log_every=1)
            t0 = time.perf_counter()
            outcome = train_run(cfg, run_dir, quiet=True)
            wall = time.perf_counter() - t0
            m = read_metrics(run_dir)
            train, critic_rows = m.get("train", []), m.get("critic", [])
            extra = critic_rows[-1]["time"] - train[-1]["time"] if critic_rows and train else 0.0
            setup = max(0.0, wall - sum(r["step_s"] for r in train) - extra)
            out[critic] = {"s_per_step": _median([r["step_s"] for r in train[1:]]), "eval_extra_s": extra,
                           "setup_s": setup, "outcome": outcome}  # fmt: skip
            saved.parent.mkdir(parents=True, exist_ok=True)
            saved.write_text(json.dumps(out[critic]) + "\n")
        c = out[critic]
        print(f"  calibration {critic:<11} {c['s_per_step']:6.2f} s/step, set-up {c['setup_s']:.0f} s, spectral "
              f"norms {c['eval_extra_s']:.1f} s ({c['outcome']})", flush=True)  # fmt: skip
    return out


def run_seconds(c: dict, steps: int, evals: int, eval_s: float) -> float:
    """Estimated wall seconds of one run from its critic's calibration."""
    return c["setup_s"] + steps * c["s_per_step"] + evals * (eval_s + c["eval_extra_s"])


def steps_for_minutes(minutes: float, calib: dict[str, dict], seeds: int, evals: int, eval_s: float) -> int:
    """The largest common step count whose study (steps, ``evals`` validations and set-up per run) fits."""
    fixed = seeds * sum(run_seconds(c, 0, evals, eval_s) for c in calib.values())
    per_step = seeds * sum(c["s_per_step"] for c in calib.values())
    return max(1, int((60 * minutes - fixed) / per_step))


def _slug(critic: str) -> str:
    return critic.replace(" ", "_").replace("=", "")


# -- outputs ---------------------------------------------------------------------------------------------------
def _fmt(v, spec: str) -> str:
    return format(v, spec) if isinstance(v, int | float) and math.isfinite(v) else "-"


def markdown(study: dict) -> str:
    init, bic = study["init"], study["bicubic"]
    lines = [f"# Critic study ({study['profile']}, {study['steps']} steps x {study['seeds']} seed(s), "
             f"{study['device']})", "", f"Command: `{study['command']}`", "",
             f"Validation during training: {study.get('curve_count', study['val_count'])} of the "
             f"{study['val_count']} held-out BSD200 training images (`{study.get('curve_dir', study['val_dir'])}`"
             + (f", centre crops of at most {study['val_max_size']} px" if study.get("val_max_size") else "")
             + "); Y channel, border 4; NIQE / LPIPS lower is better. Init: "
             f"{study['init_from']} (Y-PSNR {_fmt(init['psnr_y'], '.2f')}, NIQE {_fmt(init.get('niqe'), '.2f')}); "
             f"bicubic {_fmt(bic['psnr_y'], '.2f')} dB.", "",
             "| critic | seed | steps | s/step | Y-PSNR | SSIM | NIQE | LPIPS | max conv sigma (last / peak) "
             "| median grad norm D / G | events |", "|---|---|---|---|---|---|---|---|---|---|---|",
             f"| (init) | - | 0 | - | {_fmt(init['psnr_y'], '.2f')} | {_fmt(init['ssim_y'], '.4f')} | "
             f"{_fmt(init.get('niqe'), '.2f')} | {_fmt(init.get('lpips'), '.4f')} | - | - | - |"]  # fmt: skip
    for r in study["runs"]:
        s = r["summary"]
        ev = {}
        for e in s["events"]:
            ev[e["kind"]] = ev.get(e["kind"], 0) + 1
        events = ", ".join(f"{k} x{n}" for k, n in ev.items()) or ("none" if s["outcome"] == "finished" else "")
        if s["outcome"] not in ("finished", "diverged"):
            events = s["outcome"]
        lines.append(f"| {r['critic']} | {r['seed']} | {s['steps']} | {_fmt(s['s_per_step'], '.2f')} | "
                     f"{_fmt(s.get('psnr_y'), '.2f')} | {_fmt(s.get('ssim_y'), '.4f')} | {_fmt(s.get('niqe'), '.2f')} "
                     f"| {_fmt(s.get('lpips'), '.4f')} | {_fmt(s['spectral_max_conv'], '.2f')} / "
                     f"{_fmt(s['spectral_max_conv_peak'], '.2f')} | {_fmt(s['d_grad_norm'], '.3g')} / "
                     f"{_fmt(s['g_grad_norm'], '.3g')} | {events} |")  # fmt: skip
    ship = study.get("ship_init")
    if ship:
        lines += ["", f"## Ship decision: the final generators on the {study['val_count']} whole held-out images", "",
                  "Each run's final EMA generator (`<run>/final_generator.safetensors`) against the pixel model on "
                  "the whole held-out images (not cropped). Ship rule (issue 12): NIQE clearly lower while Y-PSNR "
                  "drops by at most 1 dB, and it looks better.", "",
                  "| model | Y-PSNR | dY-PSNR | SSIM | NIQE | dNIQE | LPIPS | file |",
                  "|---|---|---|---|---|---|---|---|",
                  f"| pixel model ({study['init_from']}) | {_fmt(ship['psnr_y'], '.2f')} | 0 | "
                  f"{_fmt(ship['ssim_y'], '.4f')} | {_fmt(ship.get('niqe'), '.2f')} | 0 | "
                  f"{_fmt(ship.get('lpips'), '.4f')} | - |"]  # fmt: skip
        for r in study["runs"]:
            f = r["summary"].get("ship") or {}
            if "psnr_y" not in f:
                continue
            d_niqe = f["niqe"] - ship["niqe"] if "niqe" in f and "niqe" in ship else float("nan")
            lines.append(f"| {r['critic']} s{r['seed']} | {_fmt(f['psnr_y'], '.2f')} | "
                         f"{_fmt(f['psnr_y'] - ship['psnr_y'], '+.2f')} | {_fmt(f['ssim_y'], '.4f')} | "
                         f"{_fmt(f.get('niqe'), '.2f')} | {_fmt(d_niqe, '+.2f')} | {_fmt(f.get('lpips'), '.4f')} | "
                         f"`{f['generator']}` |")  # fmt: skip
    lines += ["", "Events: nonfinite = a skipped step with a non-finite loss or gradient; diverged = the run stopped "
              f"after train.max_nonfinite of them in a row; psnr_collapse = a validation more than "
              f"{study['collapse_db']:g} dB under the init. Spectral norms: of the normalized conv weights as circular "
              "operators on their grids (BatchNorm not included), exact (`conv_spectral_norm`) or, where the run "
              "config sets log.critic_spectral_iters, by that many power iterations of the same operator."]  # fmt: skip
    return "\n".join(lines) + "\n"


def plots(study: dict, out: Path) -> list[Path]:
    """``curves.png`` (Y-PSNR, NIQE, max conv spectral norm, D gradient norm over steps) and
    ``perception_distortion.png`` (NIQE vs Y-PSNR of the last validation per run, init and bicubic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {c: f"C{i}" for i, c in enumerate(CRITICS)}
    init = study["init"]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), dpi=110)
    panels = [("val", "psnr_y", "Y-PSNR (dB)"), ("val", "niqe", "NIQE (lower is better)"),
              ("critic", "spectral/max_conv", "max conv spectral norm"),
              ("train", "d_grad_norm", "|grad D|")]  # fmt: skip
    for ax, (kind, key, label) in zip(axes.flat, panels, strict=True):
        for r in study["runs"]:
            rows = [x for x in r["curves"].get(kind, []) if key in x]
            pts = ([(0, init[key])] if kind == "val" and key in init else []) + [(x["step"], x[key]) for x in rows]
            if pts:
                ax.plot(*zip(*pts, strict=True), "-o", ms=3, color=colors[r["critic"]],
                        label=f"{r['critic']} s{r['seed']}", alpha=0.85)  # fmt: skip
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    written = [out / "curves.png"]
    fig.savefig(written[0])
    plt.close(fig)
    if "niqe" in init:
        fig, ax = plt.subplots(figsize=(6, 4.5), dpi=110)
        for r in study["runs"]:
            s = r["summary"]
            if "niqe" in s:
                ax.scatter(s["psnr_y"], s["niqe"], color=colors[r["critic"]], s=40, label=f"{r['critic']} s{r['seed']}")
        ax.scatter(init["psnr_y"], init["niqe"], marker="s", color="k", s=50, label="init (pixel model)")
        if "niqe" in study["bicubic"]:
            ax.scatter(study["bicubic"]["psnr_y"], study["bicubic"]["niqe"], marker="x", color="gray", s=50,
                       label="bicubic")  # fmt: skip
        ax.set_xlabel("Y-PSNR (dB), higher is better")
        ax.set_ylabel("NIQE, lower is better")
        ax.set_title(f"Perception vs distortion after {study['steps']} steps")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        written.append(out / "perception_distortion.png")
        fig.savefig(written[-1])
        plt.close(fig)
    return written


def write_outputs(study: dict, out: Path) -> None:
    (out / "study.json").write_text(json.dumps(study, indent=1) + "\n")
    (out / "study.md").write_text(markdown(study))
    plots(study, out)


# -- the study ----------------------------------------------------------------------------------------------------
def evaluate_generator(G: torch.nn.Module, val_dir: Path, device: str, niqe: bool, lpips: bool,
                       max_size: int = 0) -> tuple[dict, float]:  # fmt: skip
    """(metrics of ``G`` on ``val_dir`` -- Y-PSNR, Y-SSIM, NIQE / LPIPS when asked --, seconds it took); HR
    images centre-cropped to ``max_size`` pixels a side (0 = whole images)."""
    from gan_core.runtime import training_runtime
    from sr_app.data import SRValDataset
    from sr_app.train import bicubic_baseline, evaluate

    rt = training_runtime(device, "auto", True)
    G = G.to(rt.device, memory_format=torch.channels_last if rt.channels_last else torch.contiguous_format)
    ds = SRValDataset(val_dir, G.scale, max_size)
    t0 = time.perf_counter()
    res = evaluate(G, [ds], rt, G.scale, bicubic_baseline([ds], G.scale), niqe=niqe, lpips=lpips)[ds.name]
    return {k: v for k, v in res.items() if k in ("psnr_y", "ssim_y", "niqe", "lpips")}, time.perf_counter() - t0


def evaluate_bicubic(val_dir: Path, scale: int, niqe: bool, max_size: int = 0) -> dict:
    """Bicubic upscaling's Y-PSNR (and mean NIQE) on ``val_dir``."""
    from sr_app.data import SRValDataset
    from sr_app.evaluate import bicubic_upscale
    from sr_app.train import bicubic_baseline

    ds = SRValDataset(val_dir, scale, max_size)
    out = {"psnr_y": bicubic_baseline([ds], scale)[ds.name]}
    if niqe:
        from gan_core.metrics.niqe import NIQE

        q = [float(NIQE()(bicubic_upscale(it["lr"][None], scale), crop_border=scale)) for it in ds]
        q = [v for v in q if math.isfinite(v)]
        if q:
            out["niqe"] = sum(q) / len(q)
    return out


def export_final(run_dir: Path, critic: str) -> Path | None:
    """The EMA generator of ``run_dir``'s last checkpoint as ``run_dir/final_generator.safetensors`` + ``.json``
    (float32; ``sr-infer -m`` / ``sr-eval -m`` take it; ``sr-export`` from ``ckpt/`` gives the float16 release),
    or None when the run left no checkpoint."""
    from gan_core.checkpoint import CheckpointManager
    from sr_app.infer import export_generator

    ckpt = CheckpointManager(run_dir / "ckpt").latest()
    if ckpt is None:
        return None
    extra = {"name": f"critic-study-{_slug(critic)}", "training_command": f"benchmarks/critic_study.py ({critic})"}
    return export_generator(ckpt, run_dir / "final_generator.safetensors", fp16=False, extra=extra, overwrite=True)


def ship_eval(run_dir: Path, critic: str, val_dir: Path, device: str, niqe: bool, lpips: bool) -> dict:
    """The run's final generator (exported first) on the whole held-out images: the ship-decision numbers."""
    from sr_app.infer import load_generator

    path = run_dir / "final_generator.safetensors"
    if not path.is_file() and export_final(run_dir, critic) is None:
        return {}
    G, _ = load_generator(path)
    res, _ = evaluate_generator(G, val_dir, device, niqe, lpips)
    return {"generator": str(path), **res}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="output folder (runs, study.json/.md, plots)")
    budget = ap.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, help="training steps per run")
    budget.add_argument("--minutes", type=float, help="wall-clock budget of the whole study (calibrated first)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, 2 steps, 2 held-out images: seconds on a CPU")
    ap.add_argument("--dry-run", action="store_true", help="calibrate (with --minutes), print the plan and stop")
    ap.add_argument("--profile", choices=sorted(PROFILES), help="sizes (default: reduced on CPU, paper on CUDA)")
    ap.add_argument("--critics", default=",".join(CRITICS), help=f"comma-separated subset of: {', '.join(CRITICS)}")
    ap.add_argument("--seeds", type=int, default=1, help="seeds per critic (0..N-1; the critic init and the data)")
    ap.add_argument("--evals", type=int, default=4, help="validations per run (the last at its end)")
    ap.add_argument("--train-dir", type=Path, nargs="+", help="HR folders (default: shared T91 + BSD200)")
    ap.add_argument("--holdout-dir", type=Path, help="folder the validation images are held out of (default: BSD200)")
    ap.add_argument("--holdout", type=int, help="held-out validation images (default 20; smoke 2)")
    ap.add_argument("--curve-images", type=int, help="the first N held-out images validate during training "
                    "(the curves; default: all); the ship-decision evaluation always takes all of them")  # fmt: skip
    ap.add_argument("--init", default="srresnet-l1-x4", help="generator init: model name, .safetensors or sr-train .pt")
    ap.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    ap.add_argument("--collapse-db", type=float, default=2.0, help="Y-PSNR drop under the init counted as a collapse")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="extra sr-train config override for every run (e.g. loss.adv_weight=0.01)")  # fmt: skip
    args = ap.parse_args(argv)
    args.critics = [c.strip() for c in args.critics.split(",") if c.strip()]
    unknown = [c for c in args.critics if c not in CRITICS]
    if unknown or not args.critics:
        ap.error(f"unknown critic {unknown[0] if unknown else '(none)'!r}; choose from {', '.join(CRITICS)}")
    for name in ("steps", "seeds", "evals", "holdout", "curve_images"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            ap.error(f"--{name} must be >= 1")
    if args.minutes is not None and args.minutes <= 0:
        ap.error("--minutes must be > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    t_start = time.perf_counter()
    args = parse_args(argv)
    from gan_core.distributed import pick_device
    from gan_core.metrics.lpips import lpips_available

    device = pick_device(args.device)
    profile = "smoke" if args.smoke else args.profile or ("paper" if device.type == "cuda" else "reduced")
    train_dirs = args.train_dir or [SHARED / "data" / "sr_train" / "T91", SHARED / "data" / "sr_train" / "BSD200"]
    holdout_dir = args.holdout_dir or train_dirs[-1]
    missing = [d for d in [*train_dirs, holdout_dir] if not Path(d).is_dir()]
    if missing:
        print(f"critic_study: folder not found: {missing[0]}", file=sys.stderr)
        return 2
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    try:
        held = holdout_files(holdout_dir, args.holdout or (2 if args.smoke else 20))
    except ValueError as e:
        print(f"critic_study: {e}", file=sys.stderr)
        return 2
    val_dir = make_val_folder(held, out / "val")
    curve_dir = val_dir
    if args.curve_images and args.curve_images < len(held):
        curve_dir = make_val_folder(held[: args.curve_images], out / "val_curves")
    niqe = profile != "smoke"
    lpips = lpips_available()
    exclude = json.dumps([*NEVER_TRAIN, *(f.stem for f in held)])
    common = [f"data.train_dirs={json.dumps([str(d) for d in train_dirs])}", f"data.exclude={exclude}",
              f"data.val_dirs=[{json.dumps(str(curve_dir))}]", f"train.init_from={args.init}",
              f"train.device={args.device}", "optim.milestones=[]", "model.critic_padding=circular",
              f"log.niqe={str(niqe).lower()}", f"log.lpips={str(lpips).lower()}", "log.grad_norms=true",
              "log.critic_spectral=true", "log.keep_last=1", *PROFILES[profile], *args.overrides]  # fmt: skip
    try:
        for critic in args.critics:
            run_config(critic, 0, 10, 1, common)  # every run's config is valid before anything runs
    except ConfigError as e:
        print(f"critic_study: config error: {e}", file=sys.stderr)
        return 2

    print(f"critic study: {len(args.critics)} critic(s) x {args.seeds} seed(s), profile {profile} "
          f"({' '.join(PROFILES[profile])}), device {device}; {len(held)} held-out images (curves on "
          f"{len(list(curve_dir.iterdir()))})",
          flush=True)  # fmt: skip
    from sr_app.infer import load_generator

    G0, _ = load_generator(args.init)
    val_max = run_config(args.critics[0], 0, 10, 1, common).data.val_max_size
    init, eval_s = evaluate_generator(G0, curve_dir, args.device, niqe, lpips, val_max)
    bicubic = evaluate_bicubic(curve_dir, G0.scale, niqe, val_max)
    print(f"  init {args.init}: Y-PSNR {init['psnr_y']:.3f} dB (bicubic {bicubic['psnr_y']:.3f}), NIQE "
          f"{_fmt(init.get('niqe'), '.3f')}; one validation {eval_s:.1f} s", flush=True)  # fmt: skip
    ship_init, ship_s = init, eval_s
    if val_max or curve_dir != val_dir:  # the ship decision looks at all the held-out images, whole
        ship_init, ship_s = evaluate_generator(G0, val_dir, args.device, niqe, lpips)
        print(f"  init on the whole held-out images: Y-PSNR {ship_init['psnr_y']:.3f} dB, SSIM "
              f"{ship_init['ssim_y']:.4f}, NIQE {_fmt(ship_init.get('niqe'), '.3f')} ({ship_s:.1f} s)",
              flush=True)  # fmt: skip
    del G0
    steps = args.steps or (2 if args.smoke and args.minutes is None else None)
    calib = {}
    if steps is None:
        calib = calibrate(args.critics, common, out / "calibration")
        # --minutes counts from the start: what the init's evaluation and the calibration took is spent
        spent = (time.perf_counter() - t_start) / 60
        minutes = (args.minutes or 60.0) - spent - len(args.critics) * args.seeds * ship_s / 60  # final evals
        steps = steps_for_minutes(minutes, calib, args.seeds, args.evals, eval_s)
    print(f"plan: {steps} steps per run, {args.evals} validations, {len(args.critics) * args.seeds} runs", flush=True)
    for critic in args.critics:
        if critic in calib:
            c = calib[critic]
            est = args.seeds * (run_seconds(c, steps, args.evals, eval_s) + ship_s) / 60
            print(f"  {critic:<11} {c['s_per_step']:.2f} s/step -> about {est:.1f} min", flush=True)
    if calib:
        total = args.seeds * sum(run_seconds(c, steps, args.evals, eval_s) + ship_s for c in calib.values())
        end = time.strftime("%H:%M", time.localtime(time.time() + total))
        print(f"  estimated total: {total / 60:.1f} min from now (until about {end} local time)", flush=True)
    if args.dry_run:
        return 0

    study = {"command": "python benchmarks/critic_study.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
             "profile": profile, "device": str(device), "steps": steps, "seeds": args.seeds, "init_from": args.init,
             "val_dir": str(val_dir), "val_count": len(held), "val_images": [f.stem for f in held],
             "curve_dir": str(curve_dir), "curve_count": len(list(curve_dir.iterdir())),
             "overrides": common, "collapse_db": args.collapse_db, "calibration": calib, "init": init,
             "bicubic": bicubic, "val_max_size": val_max, "ship_init": ship_init, "runs": []}  # fmt: skip
    for seed in range(args.seeds):
        for critic in args.critics:
            run_dir = out / "runs" / f"{_slug(critic)}_seed{seed}"
            done = run_dir / "summary.json"
            if done.is_file():
                outcome = json.loads(done.read_text())["outcome"]
            else:
                t0 = time.perf_counter()
                outcome = train_run(run_config(critic, seed, steps, args.evals, common), run_dir, quiet=args.smoke)
                print(f"  {critic} seed {seed}: {outcome} in {(time.perf_counter() - t0) / 60:.1f} min", flush=True)
            metrics = read_metrics(run_dir)
            if done.is_file():
                summary = json.loads(done.read_text())
            else:
                summary = summarize(metrics, init, args.collapse_db, outcome)
                summary["ship"] = ship_eval(run_dir, critic, val_dir, args.device, niqe, lpips)
            if not outcome.startswith("error"):
                done.write_text(json.dumps(summary, indent=1) + "\n")
            study["runs"].append({"critic": critic, "seed": seed, "run_dir": str(run_dir), "summary": summary,
                                  "curves": metrics})  # fmt: skip
            write_outputs(study, out)
    print(markdown(study))
    return 0


if __name__ == "__main__":
    sys.exit(main())
