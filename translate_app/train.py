"""translate-train: SAN-SPADE (and SPADE) on Cityscapes label maps.

Per iteration (SPADE's order, ALGORITHMS.md d.5):

1. Generator step (``g_step``): ``fake = G(seg)``; the critic scores concat(seg, fake) and concat(seg,
   real) in one call (fake and real stacked along the batch); loss = hinge (-D(fake), averaged over the
   scales) + ``feature_matching_weight`` * feature matching (L1 between the 4 intermediate critic features
   of fake and real, / num_D) + ``vgg_loss_weight`` * VGG-19 pyramid (relu1_1..relu5_1, weights 1/32..1);
   Adam step.
2. Critic step (``d_step``): ``fake`` regenerated without gradient by the updated G; hinge on real and
   fake averaged over the scales; Adam step; then one ``refresh_norm_constants(D)``.

TTUR (G 1e-4, D 4e-4), constant for ``niter`` epochs then linear decay to 0 over ``niter_decay`` (per
step). CPU or CUDA, bf16 autocast where fast (SAN's FFT stays float32), channels_last, DDP under torchrun
with SyncBatchNorm in the generator (CUDA), exact resume, periodic FID on a validation subset.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.nn.utils import parametrize
from torch.utils.data import DataLoader

from gan_core import distributed as gdist
from gan_core.checkpoint import CheckpointManager, resume_state, rng_state, set_rng_state
from gan_core.config import save_yaml, to_dict
from gan_core.losses import VGG19Features, all_finite, d_hinge_loss, feature_matching_loss, g_hinge_loss
from gan_core.norm import norm_constants, refresh_norm_constants
from gan_core.runlog import RunLogger, format_eta
from gan_core.runtime import Runtime, training_runtime
from gan_core.sampling import TrainSampler

from .config import SpadeTrainConfig
from .data import SEMANTIC_NC, CityscapesDataset, colorize_labels
from .discriminator import MultiscaleDiscriminator
from .generator import SPADEGenerator

__all__ = ["TrainResult", "TrainingDiverged", "build_critic", "build_generator", "d_step", "g_step", "train"]

CKPT_FORMAT = "san-gan/translate-train/1"
RESUME_MUTABLE = ("train.steps", "train.device", "data.num_workers", "log.")
VGG_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
VGG_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)


class TrainingDiverged(RuntimeError):
    """Too many consecutive non-finite losses; a checkpoint was written before stopping."""


@dataclasses.dataclass
class TrainResult:
    step: int
    fid: float | None
    G: nn.Module
    D: nn.Module


def build_generator(cfg: SpadeTrainConfig) -> SPADEGenerator:
    m = cfg.model
    return SPADEGenerator(SEMANTIC_NC, m.ngf, m.upsampling, tuple(cfg.data.size), m.spade_hidden)


def build_critic(cfg: SpadeTrainConfig) -> MultiscaleDiscriminator:
    m = cfg.model
    return MultiscaleDiscriminator(
        SEMANTIC_NC + 3,
        m.ndf,
        m.n_layers_d,
        m.num_d,
        critic_norm=m.critic_norm,
        padding=m.critic_padding,
        san_layers=m.san_layers,
        norm_seed=cfg.train.seed,
        **m.critic_norm_options(),
    )


def _split(preds: list[list[torch.Tensor]], n: int):
    """Critic outputs on stacked [fake; real] -> (fake outputs, real outputs), per scale and layer."""
    fake = [[t[:n] for t in scale] for scale in preds]
    real = [[t[n:] for t in scale] for scale in preds]
    return fake, real


def g_step(G, D, seg, real, opt_g, vgg, loss_cfg, rt: Runtime) -> dict:
    """Generator losses (hinge + feature matching + VGG), backward; the caller steps the optimizer."""
    D.requires_grad_(False)
    with rt.autocast():
        fake = G(seg)
        with parametrize.cached():
            preds = D(torch.cat([torch.cat([seg, fake], 1), torch.cat([seg, real], 1)], 0))
    p_fake, p_real = _split(preds, seg.shape[0])
    num_d = len(p_fake)
    out = {"g_adv": sum(g_hinge_loss(s[-1]) for s in p_fake) / num_d}
    total = out["g_adv"]
    if loss_cfg.feature_matching_weight > 0:
        fm = sum(feature_matching_loss(f[:-1], r[:-1]) for f, r in zip(p_fake, p_real, strict=True))
        out["g_feat"] = fm / num_d
        total = total + loss_cfg.feature_matching_weight * out["g_feat"]
    if vgg is not None and loss_cfg.vgg_loss_weight > 0:
        with rt.autocast():
            out["g_vgg"] = vgg.loss(fake, real, VGG_WEIGHTS)
        total = total + loss_cfg.vgg_loss_weight * out["g_vgg"]
    opt_g.zero_grad(set_to_none=True)
    total.backward()
    D.requires_grad_(True)
    out["g_total"] = total
    return {k: v.detach().float() for k, v in out.items()}


def d_step(G, D, seg, real, opt_d, rt: Runtime) -> dict:
    """Critic hinge loss on real and regenerated fake images, backward; the caller steps the optimizer."""
    with torch.no_grad(), rt.autocast():
        fake = G(seg)
    with rt.autocast(), parametrize.cached():
        preds = D(torch.cat([torch.cat([seg, fake], 1), torch.cat([seg, real], 1)], 0))
    p_fake, p_real = _split(preds, seg.shape[0])
    loss = sum(d_hinge_loss(r[-1], f[-1]) for f, r in zip(p_fake, p_real, strict=True)) / len(p_fake)
    opt_d.zero_grad(set_to_none=True)
    loss.backward()
    return {"d_hinge": loss.detach(), "d_real": sum(r[-1].detach().float().mean() for r in p_real) / len(p_real),
            "d_fake": sum(f[-1].detach().float().mean() for f in p_fake) / len(p_fake)}  # fmt: skip


def lr_factor(step: int, total: int, niter: int, niter_decay: int) -> float:
    """1 for the first niter / (niter + niter_decay) of the steps, then linearly down to 0 (SPADE)."""
    const = total * niter / (niter + niter_decay)
    if step < const:
        return 1.0
    return max(0.0, 1.0 - (step - const) / max(1.0, total - const))


@torch.no_grad()
def generate(G, items: list[dict], rt: Runtime) -> list[torch.Tensor]:
    """G in eval mode on each item's label -> (3, H, W) images in [0, 1] on the CPU."""
    was = G.training
    G.eval()
    out = []
    for it in items:
        with rt.autocast():
            img = G(rt.to_device(it["label"][None])).float()
        out.append(((img[0].cpu() + 1) / 2).clamp(0, 1))
    G.train(was)
    return out


def save_samples(G, items: list[dict], rt: Runtime, path: Path) -> None:
    """PNG grid, one row per item: colourised label | generated | real (if any)."""
    from torchvision.utils import save_image

    fakes = generate(G, items, rt)
    tiles = []
    for it, fake in zip(items, fakes, strict=True):
        labels = it["label"][:-1].argmax(0).numpy()
        tiles.append(torch.from_numpy(colorize_labels(labels)).permute(2, 0, 1).float() / 255)
        tiles.append(fake)
        tiles.append((it["image"] + 1) / 2 if "image" in it else torch.zeros_like(fake))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(torch.stack(tiles), path, nrow=3, padding=2)


def train(cfg: SpadeTrainConfig, run_dir: str | Path, resume: str | None = None, stop_after: int | None = None):
    """Train in ``run_dir`` (``resume``: None, ``"auto"`` or a checkpoint path). Returns TrainResult."""
    run_dir = Path(run_dir)
    rt = training_runtime(cfg.train.device, cfg.train.precision, cfg.train.channels_last)
    info = rt.info
    ckpts = CheckpointManager(run_dir / "ckpt", cfg.log.keep_last)
    ckpt_path, state = resume_state(ckpts, resume, CKPT_FORMAT, cfg, RESUME_MUTABLE)
    if cfg.train.batch_size % info.world_size:
        raise ValueError(f"train.batch_size {cfg.train.batch_size} is not divisible by {info.world_size} ranks")
    logger = RunLogger(run_dir, "translate_train", info.is_main, cfg.log.tensorboard)
    finished = False
    try:
        if info.is_main:
            save_yaml(cfg, run_dir / "config.yaml")
        result = _train(cfg, run_dir, rt, state, ckpt_path, ckpts, logger, stop_after)
        finished = True
        return result
    finally:
        logger.close()
        gdist.cleanup(info, sync=finished)


def _train(cfg, run_dir, rt, state, ckpt_path, ckpts, logger, stop_after) -> TrainResult:
    info, log = rt.info, logger.log
    per_rank_batch = cfg.train.batch_size // info.world_size
    size = tuple(cfg.data.size)
    train_set = CityscapesDataset(cfg.data.root, cfg.data.train_split, size, flip=cfg.data.flip,
                                  require_images=True, seed=cfg.train.seed, max_items=cfg.data.max_items)  # fmt: skip
    if len(train_set) < per_rank_batch * info.world_size:
        raise ValueError(f"{len(train_set)} training frames: fewer than one batch of {cfg.train.batch_size}")
    steps_per_epoch = max(1, (len(train_set) // info.world_size) // per_rank_batch)
    total = cfg.train.steps or (cfg.optim.niter + cfg.optim.niter_decay) * steps_per_epoch
    logger.total = total
    logger.bar.total = total
    val_items: list[dict] = []
    if info.is_main:
        try:
            val = CityscapesDataset(cfg.data.root, cfg.data.val_split, size)
            n_val = max(4, cfg.log.fid_images) if cfg.log.fid_every else 4  # FID subset, else sample rows only
            val_items = [val[i] for i in range(min(len(val), n_val))]
        except ValueError as e:
            log.warning("no validation split (%s): samples use training frames, no periodic FID", e)
        if not val_items:
            plain = CityscapesDataset(cfg.data.root, cfg.data.train_split, size)
            val_items = [plain[i] for i in range(min(4, len(plain)))]
    start = int(state["step"]) if state else 0
    sampler = TrainSampler(len(train_set), info.rank, info.world_size, cfg.train.seed, start=start * per_rank_batch)
    loader = DataLoader(train_set, batch_size=per_rank_batch, sampler=sampler, num_workers=cfg.data.num_workers,
                        persistent_workers=cfg.data.num_workers > 0, drop_last=True)  # fmt: skip

    gdist.seed_everything(cfg.train.seed)  # identical initial weights on every rank
    G, D = build_generator(cfg), build_critic(cfg)
    fmt = torch.channels_last if rt.channels_last else torch.contiguous_format
    G, D = G.to(rt.device, memory_format=fmt), D.to(rt.device, memory_format=fmt)
    vgg = None
    if cfg.loss.vgg_loss_weight > 0:
        vgg = VGG19Features(VGG_LAYERS, cfg.loss.vgg_weights_file, imagenet_normalize=False)
        vgg = vgg.to(rt.device, memory_format=fmt)
    fid_net, fid_real = None, None
    fid_items = [it for it in val_items if "image" in it][: cfg.log.fid_images]
    if cfg.log.fid_every and info.is_main:
        from gan_core.metrics.fid import PROTOCOL, FIDInception, FIDStats

        if len(fid_items) < 2:
            log.warning("log.fid_every is set but the validation split has fewer than 2 photos: no periodic FID")
        else:
            fid_net = FIDInception(cfg.log.fid_weights_file).to(rt.device)
            source = f"{cfg.data.val_split} photos, first {len(fid_items)}, bicubic to {size[1]}x{size[0]}"
            fid_real = FIDStats.from_images([(it["image"] + 1) / 2 for it in fid_items], fid_net, device=rt.device,
                                            protocol=PROTOCOL, source=source)  # fmt: skip
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.optim.lr_g, betas=cfg.optim.betas_g)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.optim.lr_d, betas=cfg.optim.betas_d)

    def factor(s):
        return lr_factor(s, total, cfg.optim.niter, cfg.optim.niter_decay)

    sched_g = torch.optim.lr_scheduler.LambdaLR(opt_g, factor)
    sched_d = torch.optim.lr_scheduler.LambdaLR(opt_d, factor)
    best_fid, streak = float("inf"), 0
    if state is not None:
        G.load_state_dict(state["G"])
        D.load_state_dict(state["D"])
        for obj, key in ((opt_g, "opt_g"), (opt_d, "opt_d"), (sched_g, "sched_g"), (sched_d, "sched_d")):
            obj.load_state_dict(state[key])
        best_fid, streak = float(state.get("best_fid", best_fid)), int(state.get("nonfinite_streak", 0))
        ranks = state["rng"]
        set_rng_state(ranks[min(info.rank, len(ranks) - 1)])
        log.info("resumed from %s at step %d", ckpt_path, start)
    if info.enabled:
        ids = [rt.device.index] if rt.device.type == "cuda" else None
        if rt.device.type == "cuda":
            G = nn.SyncBatchNorm.convert_sync_batchnorm(G)
        else:  # PyTorch's SyncBatchNorm runs on CUDA only
            log.warning("CPU DDP: SPADE's BatchNorm uses each rank's own batch statistics (no SyncBatchNorm on CPU)")
        G = DDP(G, device_ids=ids)  # broadcast_buffers: running statistics follow rank 0
        D = DDP(D, device_ids=ids, broadcast_buffers=False)
    log.info(
        "%s on %s (%s), %d rank(s), batch %d, %d train frames (%d steps/epoch), %d/%d steps; critic %s (%s), "
        "G %.1fM params, D %.2fM params",
        cfg.name, rt.device, str(rt.amp).replace("torch.", "") if rt.amp else "fp32", info.world_size,
        cfg.train.batch_size, len(train_set), steps_per_epoch, start, total, cfg.model.critic_norm,
        cfg.model.critic_padding, sum(p.numel() for p in G.parameters()) / 1e6,
        sum(p.numel() for p in D.parameters()) / 1e6,
    )  # fmt: skip

    def checkpoint(step: int, is_best: bool = False, step_file: bool = True) -> None:
        rng = [rng_state()]
        if info.enabled:
            rng = [None] * info.world_size
            torch.distributed.all_gather_object(rng, rng_state())
        if not info.is_main:
            return
        payload = {"format": CKPT_FORMAT, "config": to_dict(cfg), "step": step, "G": gdist.unwrap(G).state_dict(),
                   "D": gdist.unwrap(D).state_dict(), "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
                   "sched_g": sched_g.state_dict(), "sched_d": sched_d.state_dict(), "rng": rng,
                   "best_fid": best_fid, "nonfinite_streak": streak, "world_size": info.world_size}  # fmt: skip
        log.info("checkpoint %s%s", ckpts.save(payload, step, is_best, step_file), " (best FID)" if is_best else "")

    step, end = start, total if stop_after is None else min(total, start + stop_after)
    it = iter(loader)
    totals: dict[str, float] = {}
    n_logged = 0
    last_fid = None
    G.train(), D.train()
    try:
        while step < end:
            batch = next(it)
            seg, real = rt.to_device(batch["label"]), rt.to_device(batch["image"])
            losses = g_step(G, gdist.unwrap(D), seg, real, opt_g, vgg, cfg.loss, rt)
            bad_g = gdist.all_reduce_flag(not all_finite(losses), rt.device)
            if not bad_g:
                opt_g.step()
            d_losses = d_step(G, D, seg, real, opt_d, rt)
            bad_d = gdist.all_reduce_flag(not all_finite(d_losses), rt.device)
            if not bad_d:
                opt_d.step()
                refresh_norm_constants(D)  # constants follow every critic update
            losses.update(d_losses)
            step += 1
            sched_g.step()
            sched_d.step()
            values = {k: float(v) for k, v in losses.items()}  # the step's one conversion to Python numbers
            if bad_g or bad_d:
                streak += 1
                log.warning("step %d: non-finite loss (%s); update skipped (%d in a row)", step,
                            ", ".join(f"{k}={v:.4g}" for k, v in values.items()), streak)  # fmt: skip
                if streak >= cfg.train.max_nonfinite:
                    checkpoint(step)
                    raise TrainingDiverged(f"{streak} consecutive non-finite losses at step {step}; see {ckpts.folder}")
            else:
                streak = 0
            for k, v in values.items():
                totals[k] = totals.get(k, 0.0) + v
            n_logged += 1
            logger.progress(step, {k: values[k] for k in ("g_total", "d_hinge")})
            if step % cfg.log.log_every == 0 or step == end:
                ips, eta = logger.rate(step)
                means = {k: v / n_logged for k, v in totals.items()}
                san = {f"norm/{k}": v for k, v in norm_constants(gdist.unwrap(D)).items()}
                logger.metrics(step, "train", {**means, "lr_g": opt_g.param_groups[0]["lr"], "it_per_s": ips, **san})
                log.info("step %d/%d %s | %.2f it/s, ETA %s", step, total,
                         " ".join(f"{k} {v:.4g}" for k, v in means.items()), ips, format_eta(eta))  # fmt: skip
                totals, n_logged = {}, 0
            if info.is_main and (step % cfg.log.sample_every == 0 or step == end):
                save_samples(gdist.unwrap(G), val_items[:4], rt, run_dir / "samples" / f"step_{step:08d}.png")
            is_best = False
            fid_due = bool(cfg.log.fid_every) and (step % cfg.log.fid_every == 0 or step == total)  # same on all ranks
            if fid_net is not None and fid_due:
                from gan_core.metrics.fid import FIDStats, fid_from_stats

                fakes = generate(gdist.unwrap(G), fid_items, rt)
                fake_stats = FIDStats.from_images(fakes, fid_net, device=rt.device)
                last_fid = fid_from_stats(fake_stats, fid_real)
                logger.metrics(step, "val", {"fid": last_fid, "fid_images": len(fid_items)})
                log.info("step %d FID %.3f on %d validation images", step, last_fid, len(fid_items))
                is_best = last_fid < best_fid
                best_fid = min(best_fid, last_fid)
            if fid_due:  # only rank 0 computes FID: share its verdict (a collective only on FID steps)
                is_best = gdist.all_reduce_flag(is_best, rt.device)
            save_due = step % cfg.log.save_every == 0 or step == end
            if save_due or is_best:
                checkpoint(step, is_best, save_due)
    except KeyboardInterrupt:
        log.warning("interrupted at step %d; writing a checkpoint (resume with --resume auto)", step)
        checkpoint(step)
        raise
    gdist.barrier()
    log.info("done at step %d (%s)", step, "finished" if step >= total else "stopped early")
    return TrainResult(step, last_fid, gdist.unwrap(G), gdist.unwrap(D))
