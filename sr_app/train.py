"""sr-train: SAN-SRGAN training (stage ``pretrain``: pixel loss; stage ``gan``: L1 + VGG + hinge).

Per iteration of stage gan (ALGORITHMS.md c.6, with one generator forward instead of the official two:
G does not change between the critic step and the generator step, so the output is the same):

1. ``fake = G(lr)``.
2. Critic step (``d_step``): hinge on ``D(hr)`` and ``D(fake.detach())`` in two calls (BatchNorm sees
   real-only and fake-only batches, as in the official code), Adam step, then one
   ``refresh_norm_constants(D)``: SAN / SN constants follow every critic update (the paper normalizes
   after each critic step).
3. Generator step (``g_step``): ``l_content * L1 + l_vgg * VGG19(conv5_4) + l_adv * (-D(fake))`` with D
   frozen, Adam step, EMA update.

Runs on CPU or CUDA, bf16 autocast where the hardware is fast at it (SAN's FFT stays float32),
channels_last, under torchrun with DDP. Checkpoints hold every state needed for an exact resume.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.nn.utils import parametrize
from torch.utils.data import DataLoader

from gan_core import distributed as gdist
from gan_core.checkpoint import CheckpointManager, load_checkpoint, resume_state, rng_state, set_rng_state
from gan_core.config import save_yaml, to_dict
from gan_core.ema import ema_model
from gan_core.losses import VGG19Features, all_finite, d_hinge_loss, g_hinge_loss, pixel_loss
from gan_core.metrics import psnr, ssim
from gan_core.norm import norm_constants, refresh_norm_constants
from gan_core.runlog import RunLogger, format_eta
from gan_core.runtime import Runtime, training_runtime

from .config import SRTrainConfig
from .data import SRTrainDataset, SRValDataset, TrainSampler
from .evaluate import bicubic_upscale
from .models import SRCritic, SRGenerator, generator_weights

__all__ = ["TrainResult", "TrainingDiverged", "d_step", "evaluate", "g_step", "pretrain_step", "train"]

CKPT_FORMAT = "san-gan/sr-train/1"
# keys that may change when resuming; everything else must match the checkpoint's config
RESUME_MUTABLE = ("train.steps", "train.device", "data.num_workers", "data.val_dirs", "log.")


class TrainingDiverged(RuntimeError):
    """Too many consecutive non-finite losses; a checkpoint was written before stopping."""


@dataclasses.dataclass
class TrainResult:
    """What ``train`` returns: the last step, the last validation results (rank 0) and the networks."""

    step: int
    val: dict
    G: torch.nn.Module
    G_ema: torch.nn.Module
    D: torch.nn.Module | None


# -- training steps: plain functions returning a dict of named losses ---------------------------------
def pretrain_step(G, lr, hr, opt_g, kind: str, rt: Runtime) -> dict:
    with rt.autocast():
        sr = G(lr)
    loss = pixel_loss(sr, hr, kind)
    opt_g.zero_grad(set_to_none=True)
    loss.backward()
    return {"pixel": loss.detach()}


def d_step(D, real, fake, opt_d, rt: Runtime) -> dict:
    """Hinge loss on real and (detached) fake HR images, backward; the caller steps the optimizer."""
    D.requires_grad_(True)
    with rt.autocast(), parametrize.cached():  # each normalized weight computed once for both calls
        real_logits = D(real)
        fake_logits = D(fake.detach())
    loss = d_hinge_loss(real_logits, fake_logits)
    opt_d.zero_grad(set_to_none=True)
    loss.backward()
    return {
        "d_hinge": loss.detach(),
        "d_real": real_logits.detach().float().mean(),
        "d_fake": fake_logits.detach().float().mean(),
    }


def g_step(D, fake, hr, opt_g, vgg, loss_cfg, rt: Runtime) -> dict:
    """Content (L1/MSE) + VGG conv5_4 + hinge adversarial terms on ``fake = G(lr)``, backward."""
    D.requires_grad_(False)
    out = {}
    total = torch.zeros((), device=fake.device)
    if loss_cfg.content_weight > 0:
        out["content"] = pixel_loss(fake, hr, loss_cfg.pixel)
        total = total + loss_cfg.content_weight * out["content"]
    with rt.autocast():
        if vgg is not None and loss_cfg.vgg_loss_weight > 0:
            out["vgg"] = vgg.loss(fake, hr)
            total = total + loss_cfg.vgg_loss_weight * out["vgg"]
        if loss_cfg.adv_weight > 0:
            with parametrize.cached():
                out["g_adv"] = g_hinge_loss(D(fake))
            total = total + loss_cfg.adv_weight * out["g_adv"]
    opt_g.zero_grad(set_to_none=True)
    total.backward()
    D.requires_grad_(True)
    out["g_total"] = total
    return {k: v.detach() for k, v in out.items()}


# -- evaluation ---------------------------------------------------------------------------------------
@torch.no_grad()
def bicubic_baseline(val_sets: list[SRValDataset], scale: int) -> dict[str, float]:
    """Mean Y-PSNR (crop = scale) of MATLAB-bicubic upscaling per validation set: fixed, computed once."""
    out = {}
    for ds in val_sets:
        vals = [float(psnr(bicubic_upscale(it["lr"][None], scale), it["hr"][None], scale)) for it in ds]
        out[ds.name] = sum(vals) / len(vals)
    return out


def evaluate(
    G, val_sets: list[SRValDataset], rt: Runtime, scale: int, bicubic: dict[str, float], niqe: bool = False
) -> dict:
    """Mean Y-PSNR / Y-SSIM (crop = scale) per validation set, beside ``bicubic`` (``bicubic_baseline``)."""
    G.eval()
    results = {}
    niqe_metric = None
    if niqe:
        from gan_core.metrics.niqe import NIQE

        niqe_metric = NIQE()
    for ds in val_sets:
        ps, ss, nq = [], [], []
        for item in ds:
            lr = rt.to_device(item["lr"][None])
            with rt.autocast():
                sr = G(lr).float()
            hr = item["hr"][None]
            sr = sr.cpu().clamp(0, 1)
            ps.append(float(psnr(sr, hr, scale)))
            ss.append(float(ssim(sr, hr, scale)))
            if niqe_metric is not None:
                nq.append(float(niqe_metric(sr, crop_border=scale)))
        res = {"psnr_y": sum(ps) / len(ps), "ssim_y": sum(ss) / len(ss), "bicubic_psnr_y": bicubic[ds.name]}
        if nq:
            res["niqe"] = sum(nq) / len(nq)
        results[ds.name] = res
    return results


@torch.no_grad()
def save_samples(G, val_sets, rt: Runtime, scale: int, path: Path, n: int = 4, size: int = 192) -> None:
    """PNG grid, one row per image: LR (nearest-upscaled) | SR | HR on centre crops of ``size`` HR pixels."""
    from torchvision.utils import save_image

    G.eval()
    tiles = []
    items = [it for ds in val_sets for it in ds][:n]
    m = min([size // scale] + [min(it["lr"].shape[1:]) for it in items])  # one tile size for the grid
    for it in items:
        lr, hr = it["lr"], it["hr"]
        t, left = (lr.shape[1] - m) // 2, (lr.shape[2] - m) // 2
        lr_c = lr[:, t : t + m, left : left + m]
        hr_c = hr[:, t * scale : (t + m) * scale, left * scale : (left + m) * scale]
        with rt.autocast():
            sr = G(rt.to_device(lr_c[None])).float().cpu().clamp(0, 1)[0]
        up = torch.nn.functional.interpolate(lr_c[None], scale_factor=scale, mode="nearest")[0]
        tiles += [up, sr, hr_c]
    if tiles:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(torch.stack(tiles), path, nrow=3, padding=2)


# -- state --------------------------------------------------------------------------------------------
def _milestones(cfg: SRTrainConfig) -> list[int]:
    return sorted({max(1, round(f * cfg.train.steps)) for f in cfg.optim.milestones})


def build_generator(cfg: SRTrainConfig) -> SRGenerator:
    m = cfg.model
    return SRGenerator(m.channels, m.num_blocks, cfg.data.scale, m.init_scale, m.residual_init_scale)


def build_critic(cfg: SRTrainConfig, crop_seed: int) -> SRCritic:
    return SRCritic(
        cfg.model.critic_norm,
        padding=cfg.model.critic_padding,
        batch_norm=cfg.model.critic_bn,
        num_blocks=cfg.model.critic_blocks,
        width=cfg.model.critic_width,
        crop_seed=crop_seed,
        norm_seed=cfg.train.seed,
        **cfg.model.critic_norm_options(),
    )


# -- the loop -----------------------------------------------------------------------------------------
def train(
    cfg: SRTrainConfig,
    run_dir: str | Path,
    resume: str | None = None,
    stop_after: int | None = None,
) -> TrainResult:
    """Train according to ``cfg`` in ``run_dir``.

    Args:
        resume: ``None`` (fresh run; refuses a run directory that already has checkpoints), ``"auto"``
            (newest valid checkpoint of ``run_dir``, or a fresh start when there is none) or a path.
        stop_after: stop (with a checkpoint) after this many steps of this invocation.

    Returns:
        ``TrainResult`` (unwrapped networks on their training device).
    """
    run_dir = Path(run_dir)
    rt = training_runtime(cfg.train.device, cfg.train.precision, cfg.train.channels_last)
    info = rt.info
    ckpts = CheckpointManager(run_dir / "ckpt", cfg.log.keep_last)
    ckpt_path, state = resume_state(ckpts, resume, CKPT_FORMAT, cfg, RESUME_MUTABLE)
    if info.world_size > 1 and cfg.train.batch_size % info.world_size:
        raise ValueError(f"train.batch_size {cfg.train.batch_size} is not divisible by {info.world_size} ranks")
    per_rank_batch = cfg.train.batch_size // info.world_size
    logger = RunLogger(run_dir, "sr_train", info.is_main, cfg.log.tensorboard, cfg.train.steps)
    finished = False
    try:
        if info.is_main:
            save_yaml(cfg, run_dir / "config.yaml")
        result = _train(cfg, run_dir, rt, state, ckpt_path, ckpts, logger, per_rank_batch, stop_after)
        finished = True
        return result
    finally:
        logger.close()
        gdist.cleanup(info, sync=finished)


def _train(cfg, run_dir, rt, state, ckpt_path, ckpts, logger, per_rank_batch, stop_after) -> TrainResult:
    info, log = rt.info, logger.log
    gan = cfg.train.stage == "gan"

    # Data.
    train_set = SRTrainDataset(
        cfg.data.train_dirs,
        cfg.data.scale,
        cfg.data.lr_patch,
        cfg.data.hflip,
        cfg.data.dequantize,
        seed=cfg.train.seed,
        cache=cfg.data.cache_images,
        exclude=cfg.data.exclude,
    )
    val_sets = (
        [SRValDataset(d, cfg.data.scale, cfg.data.val_max_size) for d in cfg.data.val_dirs] if info.is_main else []
    )
    bicubic = bicubic_baseline(val_sets, cfg.data.scale)
    start = int(state["step"]) if state else 0
    sampler = TrainSampler(len(train_set), info.rank, info.world_size, cfg.train.seed, start=start * per_rank_batch)
    loader = DataLoader(
        train_set,
        batch_size=per_rank_batch,
        sampler=sampler,
        num_workers=cfg.data.num_workers,
        persistent_workers=cfg.data.num_workers > 0,
        drop_last=True,
    )

    # Models: identical initial weights on every rank; per-rank randomness (critic crops) seeded by rank.
    gdist.seed_everything(cfg.train.seed)
    G = build_generator(cfg)
    D = build_critic(cfg, crop_seed=cfg.train.seed + 7919 * info.rank + 1) if gan else None
    crop_gen = D.crop_generator if D is not None else None  # per-rank critic crops: part of the RNG state
    if gan and cfg.train.init_from and state is None:
        weights, key = generator_weights(load_checkpoint(cfg.train.init_from))
        G.load_state_dict(weights)
        log.info("generator initialised from %s (%s)", cfg.train.init_from, key)
    elif gan and state is None:
        log.warning("stage gan without train.init_from: the generator starts from scratch, not from a pretrain run")
    fmt = torch.channels_last if rt.channels_last else torch.contiguous_format
    G = G.to(rt.device, memory_format=fmt)
    ema = ema_model(G, cfg.train.ema_decay)
    if D is not None:
        D = D.to(rt.device, memory_format=fmt)
    vgg = None
    if gan and cfg.loss.vgg_loss_weight > 0:
        vgg = VGG19Features(("conv5_4",), cfg.loss.vgg_weights_file).to(rt.device, memory_format=fmt)
    objective = (
        f"{cfg.loss.pretrain_pixel} pixel loss"
        if not gan
        else " + ".join(
            t
            for t, w in [
                (f"{cfg.loss.content_weight:g}*{cfg.loss.pixel}", cfg.loss.content_weight),
                (f"{cfg.loss.vgg_loss_weight:g}*VGG19(conv5_4)", cfg.loss.vgg_loss_weight),
                (f"{cfg.loss.adv_weight:g}*hinge", cfg.loss.adv_weight),
            ]
            if w > 0
        )
    )
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.optim.lr_g, betas=cfg.optim.betas_g)
    sched_g = torch.optim.lr_scheduler.MultiStepLR(opt_g, _milestones(cfg), cfg.optim.gamma)
    opt_d = sched_d = None
    if D is not None:
        opt_d = torch.optim.Adam(D.parameters(), lr=cfg.optim.lr_d, betas=cfg.optim.betas_d)
        sched_d = torch.optim.lr_scheduler.MultiStepLR(opt_d, _milestones(cfg), cfg.optim.gamma)
    best = float("-inf")
    streak = 0
    if state is not None:
        G.load_state_dict(state["G"])
        ema.load_state_dict(state["G_ema"])
        opt_g.load_state_dict(state["opt_g"])
        sched_g.load_state_dict(state["sched_g"])
        if D is not None:
            D.load_state_dict(state["D"])
            opt_d.load_state_dict(state["opt_d"])
            sched_d.load_state_dict(state["sched_d"])
        best = float(state.get("best", best))
        streak = int(state.get("nonfinite_streak", 0))
        ranks = state["rng"]
        if len(ranks) != info.world_size:
            log.warning("resuming with %d ranks from a %d-rank run: RNG streams differ", info.world_size, len(ranks))
        set_rng_state(ranks[min(info.rank, len(ranks) - 1)], crop_gen)
        log.info("resumed from %s at step %d", ckpt_path, start)
    if info.enabled:
        G = DDP(G, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
        if D is not None:
            D = DDP(D, device_ids=[rt.device.index] if rt.device.type == "cuda" else None, broadcast_buffers=False)

    log.info(
        "%s stage %s on %s (%s, %s), %d rank(s), batch %d, %d/%d steps; objective: %s; train images: %d "
        "(%d too small, %d unreadable); critic: %s",
        cfg.name,
        cfg.train.stage,
        rt.device,
        str(rt.amp).replace("torch.", "") if rt.amp else "fp32",
        "channels_last" if rt.channels_last else "contiguous",
        info.world_size,
        cfg.train.batch_size,
        start,
        cfg.train.steps,
        objective,
        len(train_set),
        len(train_set.too_small),
        len(train_set.unreadable),
        f"{cfg.model.critic_norm} ({cfg.model.critic_padding} padding)" if gan else "none (stage pretrain)",
    )

    def checkpoint(step: int, is_best: bool = False, step_file: bool = True) -> None:
        rng = [rng_state(crop_gen)]
        if info.enabled:
            rng = [None] * info.world_size
            torch.distributed.all_gather_object(rng, rng_state(crop_gen))
        if not info.is_main:
            return
        payload = {
            "format": CKPT_FORMAT,
            "config": to_dict(cfg),
            "step": step,
            "G": gdist.unwrap(G).state_dict(),
            "G_ema": ema.state_dict(),
            "opt_g": opt_g.state_dict(),
            "sched_g": sched_g.state_dict(),
            "rng": rng,
            "best": best,
            "nonfinite_streak": streak,
            "world_size": info.world_size,
        }
        if D is not None:
            payload.update(D=gdist.unwrap(D).state_dict(), opt_d=opt_d.state_dict(), sched_d=sched_d.state_dict())
        path = ckpts.save(payload, step, is_best, step_file)
        log.info("checkpoint %s%s", path, " (best)" if is_best else "")

    def validate(step: int) -> dict:
        nonlocal best
        res = {}
        if info.is_main and val_sets:
            res = evaluate(ema.module, val_sets, rt, cfg.data.scale, bicubic, cfg.log.niqe)
            for name, r in res.items():
                logger.metrics(step, "val", {"dataset": name, **r}, tb_prefix=f"val/{name}")
                log.info(
                    "step %d val %s: Y-PSNR %.3f dB (bicubic %.3f), Y-SSIM %.4f%s",
                    step,
                    name,
                    r["psnr_y"],
                    r["bicubic_psnr_y"],
                    r["ssim_y"],
                    f", NIQE {r['niqe']:.3f}" if "niqe" in r else "",
                )
            if step % cfg.log.sample_every == 0 or step == cfg.train.steps:
                save_samples(ema.module, val_sets, rt, cfg.data.scale, run_dir / "samples" / f"step_{step:08d}.png")
        first = next(iter(res.values()), None)
        improved = bool(first and first["psnr_y"] > best)
        if improved:
            best = first["psnr_y"]
        improved = gdist.all_reduce_flag(improved, rt.device)
        gdist.barrier()
        return {"results": res, "improved": improved}

    last_val: dict = {}
    step = start
    end = cfg.train.steps if stop_after is None else min(cfg.train.steps, start + stop_after)
    it = iter(loader)
    totals: dict[str, float] = {}
    n_logged = 0
    G.train()
    if D is not None:
        D.train()
    try:
        while step < end:
            batch = next(it)
            lr, hr = rt.to_device(batch["lr"]), rt.to_device(batch["hr"])
            if not gan:
                losses = pretrain_step(G, lr, hr, opt_g, cfg.loss.pretrain_pixel, rt)
                nonfinite = gdist.all_reduce_flag(not all_finite(losses), rt.device)
                if not nonfinite:
                    opt_g.step()
            else:
                with rt.autocast():
                    fake = G(lr)
                losses = d_step(D, hr, fake, opt_d, rt)
                nonfinite = gdist.all_reduce_flag(not all_finite(losses), rt.device)
                if not nonfinite:
                    opt_d.step()
                    refresh_norm_constants(D)  # constants follow every critic update
                g_losses = g_step(gdist.unwrap(D), fake, hr, opt_g, vgg, cfg.loss, rt)
                g_nonfinite = gdist.all_reduce_flag(not all_finite(g_losses), rt.device)
                losses.update(g_losses)
                if not (nonfinite or g_nonfinite):
                    opt_g.step()
                nonfinite = nonfinite or g_nonfinite
            step += 1
            values = {k: float(v) for k, v in losses.items()}  # the step's one conversion to Python numbers
            if nonfinite:
                streak += 1
                log.warning(
                    "step %d: non-finite loss (%s); step skipped (%d in a row)",
                    step,
                    ", ".join(f"{k}={v:.4g}" for k, v in values.items()),
                    streak,
                )
                if streak >= cfg.train.max_nonfinite:
                    checkpoint(step)
                    raise TrainingDiverged(
                        f"{streak} consecutive non-finite losses at step {step}; checkpoint written to {ckpts.folder}"
                    )
            else:
                streak = 0
                ema.update_parameters(gdist.unwrap(G))
            sched_g.step()
            if sched_d is not None:
                sched_d.step()
            for k, v in values.items():
                totals[k] = totals.get(k, 0.0) + v
            n_logged += 1
            logger.progress(step, {k: v for k, v in values.items() if k in ("pixel", "d_hinge", "g_total")})
            if step % cfg.log.log_every == 0 or step == end:
                ips, eta = logger.rate(step)
                means = {k: v / n_logged for k, v in totals.items()}
                extra = {"lr_g": opt_g.param_groups[0]["lr"], "it_per_s": ips}
                if D is not None:
                    extra.update({f"norm/{k}": v for k, v in norm_constants(gdist.unwrap(D)).items()})
                logger.metrics(step, "train", {**means, **extra})
                log.info(
                    "step %d/%d %s | %.2f it/s, ETA %s",
                    step,
                    cfg.train.steps,
                    " ".join(f"{k} {v:.4g}" for k, v in means.items()),
                    ips,
                    format_eta(eta),
                )
                totals, n_logged = {}, 0
            is_best = False
            if step % cfg.log.eval_every == 0 or step == cfg.train.steps:
                out = validate(step)
                last_val, is_best = out["results"], out["improved"]
            save_due = step % cfg.log.save_every == 0 or step == end
            if save_due or is_best:
                checkpoint(step, is_best=is_best, step_file=save_due)
    except KeyboardInterrupt:
        log.warning("interrupted at step %d; writing a checkpoint (resume with --resume auto)", step)
        checkpoint(step)
        raise
    log.info("done at step %d (%s)", step, "finished" if step >= cfg.train.steps else "stopped early")
    return TrainResult(step, last_val, gdist.unwrap(G), ema.module, gdist.unwrap(D) if D is not None else None)
