"""translate-train: SAN-SPADE (and SPADE) on Cityscapes label maps.

Per iteration (SPADE's order, docs/algorithms.md §4.5):

1. Generator step (``g_step``): ``fake = G(seg)``; the critic scores concat(seg, fake) and concat(seg,
   real) in one call (fake and real stacked along the batch); loss = hinge (-D(fake), averaged over the
   scales) + ``feature_matching_weight`` * feature matching (L1 between the 4 intermediate critic features
   of fake and real, / num_D) + ``vgg_loss_weight`` * VGG-19 pyramid (relu1_1..relu5_1, weights 1/32..1);
   Adam step.
2. Critic step (``d_step``): ``fake`` regenerated without gradient by the updated G; hinge on real and
   fake averaged over the scales; Adam step; then one ``refresh_norm_constants(D)``.

TTUR (G 1e-4, D 4e-4), constant for ``niter`` epochs then linear decay to 0 over ``niter_decay`` (per
step). CPU or CUDA, bf16 autocast where fast (SAN's FFT stays float32), channels_last, DDP under torchrun
with SyncBatchNorm in the generator (CUDA), exact resume, periodic FID on a validation subset;
``train.compile`` compiles G, D and VGG-19 in place (``compile_networks``, ``gan_core.compilation``).

The same shape as sr-train (``sr_app.train``): build, restore, then one loop with explicit state; SIGINT /
SIGTERM stop every rank after the same step with a checkpoint.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

from gan_core import distributed as gdist
from gan_core.checkpoint import CheckpointManager, resume_state
from gan_core.compilation import compile_in_place, eager_calls, initialize_first_use_state
from gan_core.config import save_yaml, to_dict
from gan_core.losses import VGG19Features, all_finite, d_hinge_loss, feature_matching_loss, g_hinge_loss
from gan_core.norm import norm_constants, refresh_norm_constants
from gan_core.runlog import RunLogger
from gan_core.runtime import Runtime, training_runtime
from gan_core.sampling import TrainSampler
from gan_core.stopping import LoaderBatches, StopSignals, TrainingStopped, ignore_stop_signals
from gan_core.training import (
    NonFiniteStreak,
    TrainingDiverged,
    all_ranks_max,
    check_run_files,
    checkpoint_payload,
    gather_rng_states,
    load_parts,
    restore_rng_state,
    stopped_at,
)

from .config import SpadeTrainConfig
from .data import SEMANTIC_NC, CityscapesDataset, colorize_labels
from .discriminator import MultiscaleDiscriminator
from .generator import SPADEGenerator

__all__ = [
    "TrainResult",
    "TrainingDiverged",
    "TrainingStopped",
    "build_critic",
    "build_generator",
    "d_step",
    "g_step",
    "required_files",
    "train",
]

CKPT_FORMAT = "san-gan/translate-train/1"
RESUME_MUTABLE = ("train.steps", "train.device", "train.compile", "data.num_workers", "log.")
VGG_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
VGG_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)


@dataclasses.dataclass
class TrainResult:
    """What ``train`` returns: the last step, the last FID (rank 0, None without periodic FID), the networks."""

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
        with rt.cached_weights():
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
    with rt.autocast(), rt.cached_weights():
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
    """G in eval mode on each item's label -> (3, H, W) images in [0, 1] on the CPU (eager code also when G
    is compiled: one image at a time in eval mode is not what its compiled graphs are for)."""
    was = G.training
    G.eval()
    out = []
    with eager_calls():
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


# -- building a run -----------------------------------------------------------------------------------
def required_files(cfg: SpadeTrainConfig) -> tuple[dict[str, str], dict[str, str]]:
    """(weights, checkpoints) a run of ``cfg`` reads, by config key, for ``check_run_files``: VGG-19 when
    the VGG term is on, the FID Inception when periodic FID is on."""
    weights = {"loss.vgg_weights_file": cfg.loss.vgg_weights_file} if cfg.loss.vgg_loss_weight > 0 else {}
    if cfg.log.fid_every:
        weights["log.fid_weights_file"] = cfg.log.fid_weights_file
    return weights, {}


@dataclasses.dataclass
class Data:
    """This rank's endless loader of training frames, the run's length, and (rank 0) validation items."""

    train_set: CityscapesDataset
    loader: DataLoader
    steps_per_epoch: int
    total: int  # train.steps, or (niter + niter_decay) epochs
    val_items: list[dict]  # rank 0: the FID subset (else 4 frames) for sample grids and periodic FID


def build_data(cfg: SpadeTrainConfig, info: gdist.DistInfo, start: int, log: logging.Logger) -> Data:
    """The data of this rank, its sampler positioned after ``start`` steps (exact resume)."""
    per_rank_batch = cfg.train.batch_size // info.world_size
    size = tuple(cfg.data.size)
    train_set = CityscapesDataset(cfg.data.root, cfg.data.train_split, size, flip=cfg.data.flip,
                                  require_images=True, seed=cfg.train.seed, max_items=cfg.data.max_items)  # fmt: skip
    if len(train_set) < per_rank_batch * info.world_size:
        raise ValueError(f"{len(train_set)} training frames: fewer than one batch of {cfg.train.batch_size}")
    steps_per_epoch = max(1, (len(train_set) // info.world_size) // per_rank_batch)
    total = cfg.train.steps or (cfg.optim.niter + cfg.optim.niter_decay) * steps_per_epoch
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
    sampler = TrainSampler(len(train_set), info.rank, info.world_size, cfg.train.seed, start=start * per_rank_batch)
    loader = DataLoader(train_set, batch_size=per_rank_batch, sampler=sampler, num_workers=cfg.data.num_workers,
                        drop_last=True, worker_init_fn=ignore_stop_signals)  # fmt: skip
    return Data(train_set, loader, steps_per_epoch, total, val_items)


@dataclasses.dataclass
class Networks:
    """What is trained (DDP-wrapped under torchrun after ``wrap_for_ddp``) and the VGG-19 of the loss."""

    G: nn.Module
    D: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    sched_g: torch.optim.lr_scheduler.LambdaLR
    sched_d: torch.optim.lr_scheduler.LambdaLR
    vgg: VGG19Features | None = None

    def parts(self) -> dict:
        """Checkpoint key -> object with a ``state_dict``."""
        return {"G": self.G, "D": self.D, "opt_g": self.opt_g, "opt_d": self.opt_d, "sched_g": self.sched_g,
                "sched_d": self.sched_d}  # fmt: skip


def build_networks(cfg: SpadeTrainConfig, rt: Runtime, total: int) -> Networks:
    """G, D (identical initial weights on every rank), VGG-19 when its term is on, TTUR Adam optimizers and
    SPADE's constant-then-linear schedule over ``total`` steps."""
    gdist.seed_everything(cfg.train.seed)
    G, D = build_generator(cfg), build_critic(cfg)
    fmt = torch.channels_last if rt.channels_last else torch.contiguous_format
    G, D = G.to(rt.device, memory_format=fmt), D.to(rt.device, memory_format=fmt)
    vgg = None
    if cfg.loss.vgg_loss_weight > 0:
        vgg = VGG19Features(VGG_LAYERS, cfg.loss.vgg_weights_file, imagenet_normalize=False)
        vgg = vgg.to(rt.device, memory_format=fmt)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.optim.lr_g, betas=cfg.optim.betas_g)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.optim.lr_d, betas=cfg.optim.betas_d)
    factor = functools.partial(lr_factor, total=total, niter=cfg.optim.niter, niter_decay=cfg.optim.niter_decay)
    LambdaLR = torch.optim.lr_scheduler.LambdaLR
    return Networks(G, D, opt_g, opt_d, LambdaLR(opt_g, factor), LambdaLR(opt_d, factor), vgg)


def compile_networks(cfg: SpadeTrainConfig, nets: Networks, rt: Runtime) -> str:
    """``train.compile``: G, the multiscale critic and VGG-19 compiled in place (``gan_core.compilation``),
    after the critic's first-use norm state was created on a batch of the training shape. Returns the log
    line."""
    D = gdist.unwrap(nets.D)
    h, w = cfg.data.size
    initialize_first_use_state(D, rt.to_device(torch.zeros(1, SEMANTIC_NC + 3, h, w)), rt)
    return compile_in_place({"G": gdist.unwrap(nets.G), "D": D, "VGG-19": nets.vgg}, rt.device)


def wrap_for_ddp(nets: Networks, rt: Runtime, log: logging.Logger) -> None:
    """Under torchrun: G (SyncBatchNorm on CUDA) and D in DistributedDataParallel."""
    if not rt.info.enabled:
        return
    ids = [rt.device.index] if rt.device.type == "cuda" else None
    if rt.device.type == "cuda":
        nets.G = nn.SyncBatchNorm.convert_sync_batchnorm(nets.G)
    else:  # PyTorch's SyncBatchNorm runs on CUDA only
        log.warning("CPU DDP: SPADE's BatchNorm uses each rank's own batch statistics (no SyncBatchNorm on CPU)")
    nets.G = DDP(nets.G, device_ids=ids)  # broadcast_buffers: running statistics follow rank 0
    nets.D = DDP(nets.D, device_ids=ids, broadcast_buffers=False)


@dataclasses.dataclass
class FIDProbe:
    """Periodic FID (rank 0): the FID Inception, the real statistics and the label items to generate from."""

    net: nn.Module
    real: object  # gan_core.metrics.fid.FIDStats
    items: list[dict]


def build_fid_probe(cfg: SpadeTrainConfig, data: Data, rt: Runtime, log: logging.Logger) -> FIDProbe | None:
    """Rank 0 with ``log.fid_every``: the probe on the first ``log.fid_images`` validation photos (None when
    there are fewer than 2)."""
    if not (cfg.log.fid_every and rt.info.is_main):
        return None
    from gan_core.metrics.fid import PROTOCOL, FIDInception, FIDStats

    items = [it for it in data.val_items if "image" in it][: cfg.log.fid_images]
    if len(items) < 2:
        log.warning("log.fid_every is set but the validation split has fewer than 2 photos: no periodic FID")
        return None
    net = FIDInception(cfg.log.fid_weights_file).to(rt.device)
    h, w = cfg.data.size
    source = f"{cfg.data.val_split} photos, first {len(items)}, bicubic to {w}x{h}"
    real = FIDStats.from_images([(it["image"] + 1) / 2 for it in items], net, device=rt.device, protocol=PROTOCOL,
                                source=source)  # fmt: skip
    return FIDProbe(net, real, items)


@dataclasses.dataclass
class LoopState:
    """What the loop changes besides the networks: saved in every checkpoint."""

    step: int
    streak: NonFiniteStreak
    best_fid: float = float("inf")
    last_fid: float | None = None


def restore(
    cfg: SpadeTrainConfig, nets: Networks, state: dict | None, info: gdist.DistInfo, log: logging.Logger
) -> LoopState:
    """The loop's starting state: step 0, or ``state``'s step with networks, optimizers, schedulers, RNG
    streams, best FID and non-finite streak loaded from it."""
    run = LoopState(0, NonFiniteStreak(cfg.train.max_nonfinite))
    if state is not None:
        load_parts(state, nets.parts())
        restore_rng_state(state["rng"], info, log=log)
        run.step, run.best_fid = int(state["step"]), float(state.get("best_fid", run.best_fid))
        run.streak.count = int(state.get("nonfinite_streak", 0))
    return run


def describe_run(cfg: SpadeTrainConfig, rt: Runtime, data: Data, nets: Networks, start: int) -> str:
    """The run's first log line: what trains, where, on what, from which step."""
    amp = str(rt.amp).replace("torch.", "") if rt.amp else "fp32"
    g_params = sum(p.numel() for p in nets.G.parameters()) / 1e6
    d_params = sum(p.numel() for p in nets.D.parameters()) / 1e6
    return (
        f"{cfg.name} on {rt.device} ({amp}), {rt.info.world_size} rank(s), batch {cfg.train.batch_size}, "
        f"{len(data.train_set)} train frames ({data.steps_per_epoch} steps/epoch), {start}/{data.total} steps; "
        f"critic {cfg.model.critic_norm} ({cfg.model.critic_padding}), G {g_params:.1f}M params, "
        f"D {d_params:.2f}M params"
    )


# -- FID and checkpoints --------------------------------------------------------------------------------
def measure_fid(fid: FIDProbe, G: nn.Module, rt: Runtime, run: LoopState, logger: RunLogger) -> bool:
    """FID of G's images for the probe's labels (logged); True when it is a new best (``run.best_fid``)."""
    from gan_core.metrics.fid import FIDStats, fid_from_stats

    fake_stats = FIDStats.from_images(generate(G, fid.items, rt), fid.net, device=rt.device)
    run.last_fid = fid_from_stats(fake_stats, fid.real)
    logger.metrics(run.step, "val", {"fid": run.last_fid, "fid_images": len(fid.items)})
    logger.log.info("step %d FID %.3f on %d validation images", run.step, run.last_fid, len(fid.items))
    improved = run.last_fid < run.best_fid
    run.best_fid = min(run.best_fid, run.last_fid)
    return improved


def save_checkpoint(cfg: SpadeTrainConfig, nets: Networks, run: LoopState, rt: Runtime, ckpts: CheckpointManager,
                    log: logging.Logger, is_best: bool = False, step_file: bool = True) -> Path | None:  # fmt: skip
    """Write the state at ``run.step`` (rank 0); returns its path on rank 0, None elsewhere. Gathers every
    rank's RNG states: every rank must call it at the same step."""
    rng = gather_rng_states(rt.info)
    if not rt.info.is_main:
        return None
    payload = checkpoint_payload(CKPT_FORMAT, to_dict(cfg), run.step, nets.parts(), rng, rt.info.world_size,
                                 best_fid=run.best_fid, nonfinite_streak=run.streak.count)  # fmt: skip
    path = ckpts.save(payload, run.step, is_best, step_file)
    log.info("checkpoint %s%s", path, " (best FID)" if is_best else "")
    return path


# -- the loop -------------------------------------------------------------------------------------------
def train(
    cfg: SpadeTrainConfig, run_dir: str | Path, resume: str | None = None, stop_after: int | None = None
) -> TrainResult:
    """Train in ``run_dir``.

    Args:
        resume: ``None`` (fresh run; refuses a run directory that already has checkpoints), ``"auto"``
            (newest valid checkpoint of ``run_dir``, or a fresh start when there is none) or a path.
        stop_after: stop (with a checkpoint) after this many steps of this invocation.

    Raises:
        WeightsError: files the run needs are missing (all listed), before any work.
        TrainingDiverged: ``train.max_nonfinite`` non-finite steps in a row (a checkpoint was written).
        TrainingStopped: SIGINT / SIGTERM; every rank stopped after the same step and a checkpoint was
            written (a second signal interrupts at once, without one).
    """
    run_dir = Path(run_dir)
    ckpts = CheckpointManager(run_dir / "ckpt", cfg.log.keep_last)
    ckpt_path, state = resume_state(ckpts, resume, CKPT_FORMAT, cfg, RESUME_MUTABLE)
    check_run_files(*required_files(cfg))
    rt = training_runtime(cfg.train.device, cfg.train.precision, cfg.train.channels_last, cfg.train.compile)
    if cfg.train.batch_size % rt.info.world_size:
        raise ValueError(f"train.batch_size {cfg.train.batch_size} is not divisible by {rt.info.world_size} ranks")
    start = int(state["step"]) if state else 0
    logger = RunLogger(run_dir, "translate_train", rt.info.is_main, cfg.log.tensorboard, start_step=start)
    finished = False
    with StopSignals(announce=rt.info.is_main) as stop:
        try:
            if rt.info.is_main:
                save_yaml(cfg, run_dir / "config.yaml")
            result = _train(cfg, run_dir, rt, ckpts, state, ckpt_path, logger, stop, stop_after)
            finished = True
            return result
        finally:
            logger.close()
            gdist.cleanup(rt.info, sync=finished)


def _train(cfg, run_dir, rt, ckpts, state, ckpt_path, logger, stop, stop_after) -> TrainResult:
    log = logger.log

    # Build the data, the networks and the FID probe; restore a checkpoint's state; wrap for DDP.
    start = int(state["step"]) if state else 0
    data = build_data(cfg, rt.info, start, log)
    nets = build_networks(cfg, rt, data.total)
    fid = build_fid_probe(cfg, data, rt, log)
    run = restore(cfg, nets, state, rt.info, log)
    if state is not None:
        log.info("resumed from %s at step %d", ckpt_path, start)
    wrap_for_ddp(nets, rt, log)
    log.info(describe_run(cfg, rt, data, nets, start))
    if rt.compiled:
        log.info("compiled: %s", compile_networks(cfg, nets, rt))

    end = data.total if stop_after is None else min(data.total, start + stop_after)
    logger.start_loop(start, data.total)
    nets.G.train(), nets.D.train()
    with LoaderBatches(data.loader) as batches:  # its worker processes end with the loop
        while run.step < end:
            batch = next(batches)
            rt.begin_step()
            seg, real = rt.to_device(batch["label"]), rt.to_device(batch["image"])

            # Update: the generator, then the critic on images of the updated generator (SPADE's order). Every
            # rank skips an update when a loss is not finite on any rank, and stops after this step when any rank
            # got a stop signal: agreed on in each update's all-reduce (the stop in the step's last one).
            losses = g_step(nets.G, gdist.unwrap(nets.D), seg, real, nets.opt_g, nets.vgg, cfg.loss, rt)
            (g_nonfinite,) = all_ranks_max(not all_finite(losses), device=rt.device)
            if not g_nonfinite:
                nets.opt_g.step()
            d_losses = d_step(nets.G, nets.D, seg, real, nets.opt_d, rt)
            d_nonfinite, stop_signal = all_ranks_max(not all_finite(d_losses), stop.signum, device=rt.device)
            if not d_nonfinite:
                nets.opt_d.step()
                refresh_norm_constants(nets.D)  # constants follow every critic update
            losses.update(d_losses)
            run.step += 1
            nets.sched_g.step()
            nets.sched_d.step()
            values = {k: float(v) for k, v in losses.items()}  # the step's one conversion to Python numbers

            # Non-finite losses: the update was skipped; train.max_nonfinite in a row end the run with a checkpoint.
            nonfinite = bool(g_nonfinite or d_nonfinite)
            diverged = run.streak.update(nonfinite)
            if nonfinite:
                log.warning(run.streak.warning(run.step, values))
            if diverged:
                save_checkpoint(cfg, nets, run, rt, ckpts, log)
                gdist.barrier()  # no rank exits (and has its launcher end the others) before the file is written
                raise run.streak.error(run.step, ckpts.folder)

            # Log: the progress bar every step; mean losses, lr, critic constants and speed every log_every steps.
            logger.record(run.step, values, show=("g_total", "d_hinge"))
            if run.step % cfg.log.log_every == 0 or run.step == end:
                norm = {f"norm/{k}": v for k, v in norm_constants(gdist.unwrap(nets.D)).items()}
                logger.log_means(run.step, {"lr_g": nets.opt_g.param_groups[0]["lr"], **norm})

            # Samples and FID (rank 0; every rank learns whether the FID improved); save every save_every steps,
            # at the end and on a new best FID.
            if rt.info.is_main and (run.step % cfg.log.sample_every == 0 or run.step == end):
                samples = run_dir / "samples" / f"step_{run.step:08d}.png"
                save_samples(gdist.unwrap(nets.G), data.val_items[:4], rt, samples)
            is_best = False
            if cfg.log.fid_every and (run.step % cfg.log.fid_every == 0 or run.step == data.total):  # same on all ranks
                is_best = fid is not None and measure_fid(fid, gdist.unwrap(nets.G), rt, run, logger)
                is_best = gdist.all_reduce_flag(is_best, rt.device)
            saved = run.step % cfg.log.save_every == 0 or run.step == end
            path = save_checkpoint(cfg, nets, run, rt, ckpts, log, is_best, saved) if saved or is_best else None

            # Stop on SIGINT / SIGTERM: every rank after this same step, with a step checkpoint.
            if stop_signal:
                if not saved:
                    path = save_checkpoint(cfg, nets, run, rt, ckpts, log)
                raise stopped_at(stop_signal, run.step, path, log)

    gdist.barrier()
    log.info("done at step %d (%s)", run.step, "finished" if run.step >= data.total else "stopped early")
    return TrainResult(run.step, run.last_fid, gdist.unwrap(nets.G), gdist.unwrap(nets.D))
