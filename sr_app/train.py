"""sr-train: SAN-SRGAN training (stage ``pretrain``: pixel loss; stage ``gan``: L1 + VGG + hinge).

Per iteration of stage gan (docs/algorithms.md §3.6, with one generator forward instead of the official two:
G does not change between the critic step and the generator step, so the output is the same):

1. ``fake = G(lr)``.
2. Critic step (``d_step``): hinge on ``D(hr)`` and ``D(fake.detach())`` in two calls (BatchNorm sees
   real-only and fake-only batches, as in the official code), Adam step, then one
   ``refresh_norm_constants(D)``: SAN / SN constants follow every critic update (the paper normalizes
   after each critic step). With ``loss.adversarial=wgan-gp`` (a plain critic, for comparisons) the loss
   is ``D(fake) - D(real)`` plus the gradient penalty on real/fake interpolates instead.
3. Generator step (``g_step``): ``l_content * L1 + l_vgg * VGG19(conv5_4) + l_adv * (-D(fake))`` with D
   frozen, Adam step, EMA update.

``train.init_from`` starts the generator from an sr-train checkpoint or a released model (``.safetensors`` +
``.json``, or a model name), through ``sr_app.infer.load_generator``. Stage gan without a perceptual term
logs one warning when its weights make no sense without it (``objective_warning``).

Runs on CPU or CUDA, bf16 autocast where the hardware is fast at it (SAN's FFT stays float32),
channels_last, under torchrun with DDP. Checkpoints hold every state needed for an exact resume. With
``train.compile`` G, the critic's body and head and VGG-19 are compiled in place (``compile_networks``;
what stays eager and why: ``gan_core.compilation``).

Shape (nanoGPT / edm): ``train`` checks the files the run needs and sets up the process; ``_train`` builds
(``build_data``, ``build_networks``), restores (``restore``) and runs the loop, which reads top to bottom
(update, non-finite guard, log, validate, save, stop) with ``validate`` / ``save_checkpoint`` taking the
loop's state (``LoopState``) explicitly. SIGINT / SIGTERM stop every rank after the same step with a
checkpoint (``gan_core.stopping``); the pieces shared with translate-train are in ``gan_core.training``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

from gan_core import distributed as gdist
from gan_core.checkpoint import CheckpointManager, resume_state
from gan_core.compilation import compile_in_place, initialize_first_use_state
from gan_core.config import save_yaml, to_dict
from gan_core.ema import ema_model
from gan_core.losses import (
    VGG19Features,
    all_finite,
    d_hinge_loss,
    d_wgan_loss,
    g_hinge_loss,
    gradient_penalty,
    pixel_loss,
)
from gan_core.metrics import psnr, ssim
from gan_core.norm import conv_spectral_norm, norm_constants, refresh_norm_constants
from gan_core.runlog import RunLogger
from gan_core.runtime import Runtime, training_runtime
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

from .config import SRTrainConfig
from .data import SRTrainDataset, SRValDataset, TrainSampler
from .evaluate import bicubic_upscale
from .models import SRCritic, SRGenerator

__all__ = [
    "TrainResult",
    "TrainingDiverged",
    "TrainingStopped",
    "build_critic",
    "build_generator",
    "critic_spectral_norms",
    "d_step",
    "evaluate",
    "g_step",
    "load_init_from",
    "objective_warning",
    "pretrain_step",
    "required_files",
    "train",
]

CKPT_FORMAT = "san-gan/sr-train/1"
# keys that may change when resuming; everything else must match the checkpoint's config
RESUME_MUTABLE = ("train.steps", "train.device", "train.compile", "data.num_workers", "data.val_dirs", "log.")


@dataclasses.dataclass
class TrainResult:
    """What ``train`` returns: the last step, the last validation results (rank 0) and the networks."""

    step: int
    val: dict
    G: torch.nn.Module
    G_ema: torch.nn.Module
    D: torch.nn.Module | None


# -- training steps: plain functions returning a dict of named losses ---------------------------------
def grad_norm(module: torch.nn.Module) -> torch.Tensor:
    """L2 norm of all of ``module``'s gradients together (0-dim float32 tensor; 0 when none), no sync."""
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.nn.utils.get_total_norm(grads, 2.0).float()


def pretrain_step(G, lr, hr, opt_g, kind: str, rt: Runtime) -> dict:
    with rt.autocast():
        sr = G(lr)
    loss = pixel_loss(sr, hr, kind)
    opt_g.zero_grad(set_to_none=True)
    loss.backward()
    return {"pixel": loss.detach()}


def d_step(D, real, fake, opt_d, rt: Runtime, adversarial: str = "hinge", gp_weight: float = 10.0) -> dict:
    """Critic loss on real and (detached) fake HR images, backward; the caller steps the optimizer.

    ``adversarial``: ``"hinge"`` (``d_hinge``) or ``"wgan-gp"`` (``d_wgan`` = mean D(fake) - mean D(real), plus
    ``gp_weight`` times the gradient penalty ``gp`` on real/fake interpolates: a third critic call with double
    backward, through the unwrapped critic so that DDP sees one forward per batch).
    """
    D.requires_grad_(True)
    out = {}
    with rt.autocast(), rt.cached_weights():  # eager: each normalized weight computed once for both calls
        real_logits = D(real)
        fake_logits = D(fake.detach())
        if adversarial == "wgan-gp":
            out["gp"] = gradient_penalty(gdist.unwrap(D), real, fake)
    if adversarial == "wgan-gp":
        out["d_wgan"] = d_wgan_loss(real_logits, fake_logits)
        loss = out["d_wgan"] + gp_weight * out["gp"]
    elif adversarial == "hinge":
        loss = out["d_hinge"] = d_hinge_loss(real_logits, fake_logits)
    else:
        raise ValueError(f"adversarial must be 'hinge' or 'wgan-gp', got {adversarial!r}")
    opt_d.zero_grad(set_to_none=True)
    loss.backward()
    out = {k: v.detach() for k, v in out.items()}
    out.update(d_real=real_logits.detach().float().mean(), d_fake=fake_logits.detach().float().mean())
    return out


def g_step(D, fake, hr, opt_g, vgg, loss_cfg, rt: Runtime) -> dict:
    """Content (L1/MSE) + VGG conv5_4 + adversarial (-D(fake), for hinge and WGAN-GP alike) terms on
    ``fake = G(lr)``, backward."""
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
            with rt.cached_weights():
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
    G,
    val_sets: list[SRValDataset],
    rt: Runtime,
    scale: int,
    bicubic: dict[str, float],
    niqe: bool = False,
    lpips: bool = False,
) -> dict:
    """Mean Y-PSNR / Y-SSIM (crop = scale) per validation set, beside ``bicubic`` (``bicubic_baseline``);
    with ``niqe`` / ``lpips`` also their means (NIQE: over the images where it is defined; LPIPS: AlexNet,
    RGB, needs the ``alexnet`` weights)."""
    G.eval()
    results = {}
    niqe_metric = lpips_metric = None
    if niqe:
        from gan_core.metrics.niqe import NIQE

        niqe_metric = NIQE()
    if lpips:
        from gan_core.metrics.lpips import LPIPS

        lpips_metric = LPIPS()
    for ds in val_sets:
        ps, ss, nq, lp = [], [], [], []
        for item in ds:
            lr = rt.to_device(item["lr"][None])
            with rt.autocast():
                sr = G(lr).float()
            hr = item["hr"][None]
            sr = sr.cpu().clamp(0, 1)
            ps.append(float(psnr(sr, hr, scale)))
            ss.append(float(ssim(sr, hr, scale)))
            if niqe_metric is not None:
                value = float(niqe_metric(sr, crop_border=scale))
                if math.isfinite(value):  # NaN for an output without a complete 96x96 block
                    nq.append(value)
            if lpips_metric is not None:
                lp.append(float(lpips_metric(sr, hr)[0]))
        res = {"psnr_y": sum(ps) / len(ps), "ssim_y": sum(ss) / len(ss), "bicubic_psnr_y": bicubic[ds.name]}
        if nq:
            res["niqe"] = sum(nq) / len(nq)
        if lp:
            res["lpips"] = sum(lp) / len(lp)
        results[ds.name] = res
    return results


@torch.no_grad()
def conv_power_norm(weight: torch.Tensor, grid: int, stride: int, iters: int, seed: int = 0) -> float:
    """Top singular value of the circular convolution with ``weight`` (m, n, k, k) on a ``grid`` x ``grid``
    input with ``stride`` (the operator ``conv_spectral_norm`` computes exactly), by ``iters`` power
    iterations on A^T A (A^T through autograd) from a seeded random start: a lower bound that converges to it."""
    w = weight.detach().float()
    lo = (w.shape[-1] - stride) // 2
    hi = w.shape[-1] - stride - lo
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, w.shape[1], grid, grid, generator=gen).to(w.device)

    def op(t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(torch.nn.functional.pad(t, (lo, hi, lo, hi), mode="circular"), w,
                                          stride=stride)  # fmt: skip

    with torch.enable_grad(), torch.autocast(w.device.type, enabled=False):
        for _ in range(iters):
            x = (x / x.norm()).requires_grad_(True)
            y = op(x)
            (x,) = torch.autograd.grad(y, x, grad_outputs=y)  # A^T A x
        with torch.no_grad():
            return float(op(x / x.norm()).norm())


def critic_spectral_norms(D: SRCritic, iters: int = 0) -> dict[str, float]:
    """Exact spectral norm (``gan_core.norm.conv_spectral_norm``, circular convolution) of each critic conv's
    effective weight (its normalization applied; BatchNorm and activations not included) on the grid that
    conv sees (the crop, halved after each stride-2 conv), and the top singular value of each linear layer.

    Returns ``{"spectral/<layer>": value, ..., "spectral/max_conv": max over the convs}`` (floats; one sync
    per layer: a diagnostic for validation time, not for every step). For zero-padded convs the circular
    operator is an approximation of the layer's norm. ``iters`` > 0: :func:`conv_power_norm` with that many
    power iterations instead of the exact value (much faster on a CPU; never above the exact value).
    """
    out = {}
    grid = D.crop
    for name, m in D.named_modules():
        if isinstance(m, torch.nn.Conv2d):
            stride = m.stride[0]
            if iters:
                out[f"spectral/{name}"] = conv_power_norm(m.weight, grid, stride, iters)
            else:
                out[f"spectral/{name}"] = float(conv_spectral_norm(m.weight, (grid, grid), m.stride))
            grid //= stride
        elif isinstance(m, torch.nn.Linear):
            out[f"spectral/{name}"] = float(torch.linalg.matrix_norm(m.weight.detach().float(), ord=2))
    convs = [v for k, v in out.items() if k.startswith("spectral/features.")]
    if convs:
        out["spectral/max_conv"] = max(convs)
    return out


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


# -- building a run -----------------------------------------------------------------------------------
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


def required_files(cfg: SRTrainConfig, fresh: bool = True) -> tuple[dict[str, str], dict[str, str]]:
    """(weights, checkpoints) a run of ``cfg`` reads, by config key, for ``check_run_files``: VGG-19 when
    stage gan has the VGG term, ``train.init_from`` when stage gan starts ``fresh`` (not resumed): a ``.pt``
    as a checkpoint, anything else (a released ``.safetensors``, a folder holding ``model.safetensors``, a
    model name of the manifest) as a weights file."""
    gan = cfg.train.stage == "gan"
    weights = {"loss.vgg_weights_file": cfg.loss.vgg_weights_file} if gan and cfg.loss.vgg_loss_weight > 0 else {}
    checkpoints = {}
    init = cfg.train.init_from
    if gan and fresh and init:
        if Path(init).suffix == ".pt":
            checkpoints["train.init_from"] = init
        else:
            weights["train.init_from"] = str(Path(init) / "model.safetensors") if Path(init).is_dir() else init
    return weights, checkpoints


def objective(cfg: SRTrainConfig) -> str:
    """The loss in words, e.g. ``0.01*l1 + 1*VGG19(conv5_4) + 0.1*hinge``."""
    if cfg.train.stage != "gan":
        return f"{cfg.loss.pretrain_pixel} pixel loss"
    loss = cfg.loss
    adv = "hinge" if loss.adversarial == "hinge" else f"wgan(gp {loss.gp_weight:g})"
    terms = [
        (f"{loss.content_weight:g}*{loss.pixel}", loss.content_weight),
        (f"{loss.vgg_loss_weight:g}*VGG19(conv5_4)", loss.vgg_loss_weight),
        (f"{loss.adv_weight:g}*{adv}", loss.adv_weight),
    ]
    return " + ".join(t for t, w in terms if w > 0)


# Without a perceptual term the pixel term alone must hold the generator near the image: the adversarial weight
# may be at most this fraction of the content weight (configs/sr_gan_l1adv.yaml: 0.005 of it; the
# paper's weights minus VGG: 10x the content weight, which diverges within a few hundred steps).
MAX_ADV_TO_CONTENT_WITHOUT_VGG = 0.1


def objective_warning(cfg: SRTrainConfig) -> str | None:
    """The one warning line for a stage-gan objective whose weights need the perceptual term it lacks, else None.

    Rule: stage gan, ``loss.vgg_loss_weight == 0`` and ``loss.adv_weight > MAX_ADV_TO_CONTENT_WITHOUT_VGG *
    loss.content_weight`` (the paper's 0.01 * L1 + 0.1 * hinge is 100x over; configs/sr_gan_l1adv.yaml's
    1 * L1 + 0.005 * hinge is under).
    """
    loss = cfg.loss
    if cfg.train.stage != "gan" or loss.vgg_loss_weight > 0 or loss.adv_weight == 0:
        return None
    limit = MAX_ADV_TO_CONTENT_WITHOUT_VGG * loss.content_weight
    if loss.adv_weight <= limit:
        return None
    return (
        f"stage gan without a perceptual term (loss.vgg_loss_weight=0) and loss.adv_weight {loss.adv_weight:g} > "
        f"{MAX_ADV_TO_CONTENT_WITHOUT_VGG:g} x loss.content_weight {loss.content_weight:g}: nothing but the pixel "
        "term holds the generator to the image, and this adversarial weight pulls it away (the paper's weights "
        "without VGG fall to ~7 dB in 300 steps); use configs/sr_gan_l1adv.yaml (1 * L1 + 0.005 * hinge) or the "
        "VGG-19 term"
    )


def load_init_from(cfg: SRTrainConfig) -> tuple[dict[str, torch.Tensor], str]:
    """(generator state dict, description for the log) of ``train.init_from``, loaded by
    ``sr_app.infer.load_generator``: an sr-train checkpoint (.pt, its EMA generator), a released model
    (``.safetensors`` + ``.json``, a folder holding ``model.safetensors``) or a manifest model name.

    Raises:
        FileNotFoundError: the file or its JSON config is missing.
        ValueError: one line: not a generator file, non-finite weights, or a generator of another
            architecture than ``model.channels`` / ``model.num_blocks`` / ``data.scale``.
    """
    from .infer import load_generator

    init = cfg.train.init_from
    try:
        G0, meta = load_generator(init)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"train.init_from: {e}") from None
    except ValueError as e:
        raise ValueError(f"train.init_from: {e}") from None
    have = (G0.image_to_features.out_channels, len(G0.features), G0.scale)
    want = (cfg.model.channels, cfg.model.num_blocks, cfg.data.scale)
    if have != want:
        raise ValueError(
            f"train.init_from: {init} is a {have[0]}-channel {have[1]}-block x{have[2]} generator; this config "
            f"builds {want[0]} channels, {want[1]} blocks, x{want[2]} (model.channels, model.num_blocks, data.scale)"
        )
    kind = "EMA generator of an sr-train checkpoint" if str(meta["source"]).endswith(".pt") else "released model"
    return G0.state_dict(), f"{kind}, sha256 {meta['sha256'][:12]}"


@dataclasses.dataclass
class Data:
    """Training images (an endless loader of this rank's batches) and, on rank 0, the validation sets."""

    train_set: SRTrainDataset
    loader: DataLoader
    val_sets: list[SRValDataset]
    bicubic: dict[str, float]  # bicubic Y-PSNR per validation set


def build_data(cfg: SRTrainConfig, info: gdist.DistInfo, start: int) -> Data:
    """The data of this rank, its sampler positioned after ``start`` steps (exact resume)."""
    per_rank_batch = cfg.train.batch_size // info.world_size
    train_set = SRTrainDataset(cfg.data.train_dirs, cfg.data.scale, cfg.data.lr_patch, cfg.data.hflip,
                               cfg.data.dequantize, seed=cfg.train.seed, cache=cfg.data.cache_images,
                               exclude=cfg.data.exclude)  # fmt: skip
    val_sets = (
        [SRValDataset(d, cfg.data.scale, cfg.data.val_max_size) for d in cfg.data.val_dirs] if info.is_main else []
    )
    sampler = TrainSampler(len(train_set), info.rank, info.world_size, cfg.train.seed, start=start * per_rank_batch)
    loader = DataLoader(train_set, batch_size=per_rank_batch, sampler=sampler, num_workers=cfg.data.num_workers,
                        drop_last=True, worker_init_fn=ignore_stop_signals)  # fmt: skip
    return Data(train_set, loader, val_sets, bicubic_baseline(val_sets, cfg.data.scale))


@dataclasses.dataclass
class Networks:
    """What is trained (G and D are DDP-wrapped under torchrun after ``wrap_for_ddp``) and what it uses."""

    G: torch.nn.Module
    ema: torch.optim.swa_utils.AveragedModel  # EMA of G (``ema.module``: the generator that is validated)
    opt_g: torch.optim.Optimizer
    sched_g: torch.optim.lr_scheduler.LRScheduler
    D: torch.nn.Module | None = None  # stage gan only, with everything below
    opt_d: torch.optim.Optimizer | None = None
    sched_d: torch.optim.lr_scheduler.LRScheduler | None = None
    vgg: VGG19Features | None = None
    crop_gen: torch.Generator | None = None  # the critic's per-rank random crops: part of the RNG state

    def parts(self) -> dict:
        """Checkpoint key -> object with a ``state_dict``."""
        parts = {"G": self.G, "G_ema": self.ema, "opt_g": self.opt_g, "sched_g": self.sched_g}
        if self.D is not None:
            parts.update(D=self.D, opt_d=self.opt_d, sched_d=self.sched_d)
        return parts


def build_networks(
    cfg: SRTrainConfig,
    rt: Runtime,
    log: logging.Logger,
    fresh: bool,
    init: tuple[dict[str, torch.Tensor], str] | None = None,
) -> Networks:
    """G (from ``train.init_from`` when stage gan starts ``fresh``: ``init`` as ``load_init_from`` returns it,
    loaded here when None), its EMA, the critic and VGG-19 (stage gan) and the optimizers: identical initial
    weights on every rank; the critic's crops seeded per rank."""
    gan = cfg.train.stage == "gan"
    gdist.seed_everything(cfg.train.seed)
    G = build_generator(cfg)
    D = build_critic(cfg, crop_seed=cfg.train.seed + 7919 * rt.info.rank + 1) if gan else None
    if gan and fresh and cfg.train.init_from:
        weights, what = init if init is not None else load_init_from(cfg)
        G.load_state_dict(weights)
        log.info("generator initialised from %s (%s)", cfg.train.init_from, what)
    elif gan and fresh:
        log.warning("stage gan without train.init_from: the generator starts from scratch, not from a pretrain run")
    fmt = torch.channels_last if rt.channels_last else torch.contiguous_format
    G = G.to(rt.device, memory_format=fmt)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.optim.lr_g, betas=cfg.optim.betas_g)
    nets = Networks(G, ema_model(G, cfg.train.ema_decay), opt_g,
                    torch.optim.lr_scheduler.MultiStepLR(opt_g, _milestones(cfg), cfg.optim.gamma))  # fmt: skip
    if D is not None:
        nets.D = D.to(rt.device, memory_format=fmt)
        nets.opt_d = torch.optim.Adam(nets.D.parameters(), lr=cfg.optim.lr_d, betas=cfg.optim.betas_d)
        nets.sched_d = torch.optim.lr_scheduler.MultiStepLR(nets.opt_d, _milestones(cfg), cfg.optim.gamma)
        nets.crop_gen = D.crop_generator
    if gan and cfg.loss.vgg_loss_weight > 0:
        nets.vgg = VGG19Features(("conv5_4",), cfg.loss.vgg_weights_file).to(rt.device, memory_format=fmt)
    return nets


def compile_networks(cfg: SRTrainConfig, nets: Networks, rt: Runtime) -> str:
    """``train.compile``: G, the critic's ``features`` and ``head`` (its random crop stays eager) and VGG-19,
    compiled in place (``gan_core.compilation``), after the critic's first-use norm state was created on an
    HR-patch-shaped batch. Returns the log line."""
    G, D = gdist.unwrap(nets.G), gdist.unwrap(nets.D) if nets.D is not None else None
    if D is not None:
        hr = cfg.data.lr_patch * cfg.data.scale
        initialize_first_use_state(D, rt.to_device(torch.zeros(1, 3, hr, hr)), rt)
    return compile_in_place({"G": G, "D.features": D.features if D is not None else None,
                             "D.head": D.head if D is not None else None, "VGG-19": nets.vgg}, rt.device)  # fmt: skip


def wrap_for_ddp(nets: Networks, rt: Runtime) -> None:
    """Under torchrun: G and D in DistributedDataParallel (the critic's buffers stay per rank)."""
    if rt.info.enabled:
        ids = [rt.device.index] if rt.device.type == "cuda" else None
        nets.G = DDP(nets.G, device_ids=ids)
        if nets.D is not None:
            nets.D = DDP(nets.D, device_ids=ids, broadcast_buffers=False)


@dataclasses.dataclass
class LoopState:
    """What the loop changes besides the networks: saved in every checkpoint."""

    step: int
    streak: NonFiniteStreak
    best: float = float("-inf")  # best Y-PSNR of the first validation set
    last_val: dict = dataclasses.field(default_factory=dict)  # the last validation results (rank 0)


def restore(
    cfg: SRTrainConfig, nets: Networks, state: dict | None, info: gdist.DistInfo, log: logging.Logger
) -> LoopState:
    """The loop's starting state: step 0, or ``state``'s step with networks, optimizers, schedulers, RNG
    streams, best score and non-finite streak loaded from it."""
    run = LoopState(0, NonFiniteStreak(cfg.train.max_nonfinite))
    if state is not None:
        load_parts(state, nets.parts())
        restore_rng_state(state["rng"], info, nets.crop_gen, log)
        run.step, run.best = int(state["step"]), float(state.get("best", run.best))
        run.streak.count = int(state.get("nonfinite_streak", 0))
    return run


def describe_run(cfg: SRTrainConfig, rt: Runtime, data: Data, start: int) -> str:
    """The run's first log line: what trains, where, on what, from which step."""
    critic = f"{cfg.model.critic_norm} ({cfg.model.critic_padding} padding)" if cfg.train.stage == "gan" else None
    amp = str(rt.amp).replace("torch.", "") if rt.amp else "fp32"
    return (
        f"{cfg.name} stage {cfg.train.stage} on {rt.device} ({amp}, "
        f"{'channels_last' if rt.channels_last else 'contiguous'}), {rt.info.world_size} rank(s), batch "
        f"{cfg.train.batch_size}, {start}/{cfg.train.steps} steps; objective: {objective(cfg)}; train images: "
        f"{len(data.train_set)} ({len(data.train_set.too_small)} too small, {len(data.train_set.unreadable)} "
        f"unreadable); critic: {critic or 'none (stage pretrain)'}"
    )


# -- validation and checkpoints -------------------------------------------------------------------------
def validate(cfg: SRTrainConfig, nets: Networks, data: Data, rt: Runtime, run: LoopState, logger: RunLogger,
             run_dir: Path) -> bool:  # fmt: skip
    """Rank 0: Y-PSNR / Y-SSIM (NIQE, LPIPS) of the EMA generator per validation set, logged (and a sample grid
    every ``sample_every`` steps); with ``log.critic_spectral`` a ``critic`` row of the critic's spectral norms.
    Every rank: True when the first set's PSNR is a new best (``run.best``)."""
    res = {}
    if rt.info.is_main and data.val_sets:
        res = evaluate(nets.ema.module, data.val_sets, rt, cfg.data.scale, data.bicubic, cfg.log.niqe, cfg.log.lpips)
        for name, r in res.items():
            logger.metrics(run.step, "val", {"dataset": name, **r}, tb_prefix=f"val/{name}")
            niqe = f", NIQE {r['niqe']:.3f}" if "niqe" in r else ""
            niqe += f", LPIPS {r['lpips']:.4f}" if "lpips" in r else ""
            logger.log.info("step %d val %s: Y-PSNR %.3f dB (bicubic %.3f), Y-SSIM %.4f%s", run.step, name,
                            r["psnr_y"], r["bicubic_psnr_y"], r["ssim_y"], niqe)  # fmt: skip
        if run.step % cfg.log.sample_every == 0 or run.step == cfg.train.steps:
            samples = run_dir / "samples" / f"step_{run.step:08d}.png"
            save_samples(nets.ema.module, data.val_sets, rt, cfg.data.scale, samples)
    if rt.info.is_main and cfg.log.critic_spectral and nets.D is not None:
        logger.metrics(run.step, "critic", critic_spectral_norms(gdist.unwrap(nets.D), cfg.log.critic_spectral_iters),
                       tb_prefix="critic")  # fmt: skip
    first = next(iter(res.values()), None)
    improved = bool(first and first["psnr_y"] > run.best)
    if improved:
        run.best = first["psnr_y"]
    run.last_val = res
    improved = gdist.all_reduce_flag(improved, rt.device)
    gdist.barrier()
    return improved


def save_checkpoint(cfg: SRTrainConfig, nets: Networks, run: LoopState, rt: Runtime, ckpts: CheckpointManager,
                    log: logging.Logger, is_best: bool = False, step_file: bool = True) -> Path | None:  # fmt: skip
    """Write the state at ``run.step`` (rank 0); returns its path on rank 0, None elsewhere. Gathers every
    rank's RNG states: every rank must call it at the same step."""
    rng = gather_rng_states(rt.info, nets.crop_gen)
    if not rt.info.is_main:
        return None
    payload = checkpoint_payload(CKPT_FORMAT, to_dict(cfg), run.step, nets.parts(), rng, rt.info.world_size,
                                 best=run.best, nonfinite_streak=run.streak.count)  # fmt: skip
    path = ckpts.save(payload, run.step, is_best, step_file)
    log.info("checkpoint %s%s", path, " (best)" if is_best else "")
    return path


# -- the loop -------------------------------------------------------------------------------------------
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

    Raises:
        WeightsError: files the run needs are missing (all listed), before any work.
        TrainingDiverged: ``train.max_nonfinite`` non-finite steps in a row (a checkpoint was written).
        TrainingStopped: SIGINT / SIGTERM; every rank stopped after the same step and a checkpoint was
            written (a second signal interrupts at once, without one).
    """
    run_dir = Path(run_dir)
    ckpts = CheckpointManager(run_dir / "ckpt", cfg.log.keep_last)
    ckpt_path, state = resume_state(ckpts, resume, CKPT_FORMAT, cfg, RESUME_MUTABLE)
    check_run_files(*required_files(cfg, fresh=state is None))
    gan_init = state is None and cfg.train.stage == "gan" and cfg.train.init_from
    init = load_init_from(cfg) if gan_init else None  # before any work: a file that does not fit stops here
    rt = training_runtime(cfg.train.device, cfg.train.precision, cfg.train.channels_last, cfg.train.compile)
    if rt.info.world_size > 1 and cfg.train.batch_size % rt.info.world_size:
        raise ValueError(f"train.batch_size {cfg.train.batch_size} is not divisible by {rt.info.world_size} ranks")
    start = int(state["step"]) if state else 0
    logger = RunLogger(run_dir, "sr_train", rt.info.is_main, cfg.log.tensorboard, cfg.train.steps, start)
    finished = False
    with StopSignals(announce=rt.info.is_main) as stop:
        try:
            if rt.info.is_main:
                save_yaml(cfg, run_dir / "config.yaml")
            result = _train(cfg, run_dir, rt, ckpts, state, ckpt_path, logger, stop, stop_after, init)
            finished = True
            return result
        finally:
            logger.close()
            gdist.cleanup(rt.info, sync=finished)


def _train(cfg, run_dir, rt, ckpts, state, ckpt_path, logger, stop, stop_after, init=None) -> TrainResult:
    log, gan = logger.log, cfg.train.stage == "gan"

    # Build the data and the networks; restore a checkpoint's state; wrap for DDP.
    start = int(state["step"]) if state else 0
    data = build_data(cfg, rt.info, start)
    nets = build_networks(cfg, rt, log, fresh=state is None, init=init)
    run = restore(cfg, nets, state, rt.info, log)
    if state is not None:
        log.info("resumed from %s at step %d", ckpt_path, start)
    wrap_for_ddp(nets, rt)
    log.info(describe_run(cfg, rt, data, start))
    warning = objective_warning(cfg)
    if warning:
        log.warning(warning)
    if rt.compiled:
        log.info("compiled: %s", compile_networks(cfg, nets, rt))

    end = cfg.train.steps if stop_after is None else min(cfg.train.steps, start + stop_after)
    logger.start_loop(start, cfg.train.steps)
    nets.G.train()
    if nets.D is not None:
        nets.D.train()
    with LoaderBatches(data.loader) as batches:  # its worker processes end with the loop
        while run.step < end:
            t_step = time.perf_counter()
            batch = next(batches)
            rt.begin_step()
            lr, hr = rt.to_device(batch["lr"]), rt.to_device(batch["hr"])

            # Update: the pixel loss (pretrain), or the critic then the generator on one G(lr) (gan). Every rank
            # skips the update when a loss is not finite on any rank, and stops after this step when any rank
            # got a stop signal: both are agreed on in the step's last all-reduce.
            if not gan:
                losses = pretrain_step(nets.G, lr, hr, nets.opt_g, cfg.loss.pretrain_pixel, rt)
            else:
                with rt.autocast():
                    fake = nets.G(lr)
                losses = d_step(nets.D, hr, fake, nets.opt_d, rt, cfg.loss.adversarial, cfg.loss.gp_weight)
                if cfg.log.grad_norms:
                    losses["d_grad_norm"] = grad_norm(nets.D)
                (d_nonfinite,) = all_ranks_max(not all_finite(losses), device=rt.device)
                if not d_nonfinite:
                    nets.opt_d.step()
                    refresh_norm_constants(nets.D)  # constants follow every critic update
                losses.update(g_step(gdist.unwrap(nets.D), fake, hr, nets.opt_g, nets.vgg, cfg.loss, rt))
            if cfg.log.grad_norms:
                losses["g_grad_norm"] = grad_norm(nets.G)
            nonfinite, stop_signal = all_ranks_max(not all_finite(losses), stop.signum, device=rt.device)
            if not nonfinite:
                nets.opt_g.step()
            run.step += 1
            values = {k: float(v) for k, v in losses.items()}  # the step's one conversion to Python numbers

            # Non-finite losses: the step was skipped; train.max_nonfinite in a row end the run with a checkpoint.
            diverged = run.streak.update(bool(nonfinite))
            if nonfinite:
                log.warning(run.streak.warning(run.step, values))
                logger.metrics(run.step, "nonfinite", {**values, "streak": run.streak.count})
            if diverged:
                save_checkpoint(cfg, nets, run, rt, ckpts, log)
                gdist.barrier()  # no rank exits (and has its launcher end the others) before the file is written
                raise run.streak.error(run.step, ckpts.folder)
            if not nonfinite:
                nets.ema.update_parameters(gdist.unwrap(nets.G))
            nets.sched_g.step()
            if nets.sched_d is not None:
                nets.sched_d.step()
            values["step_s"] = time.perf_counter() - t_step  # this step's wall time: data, updates, EMA

            # Log: the progress bar every step; mean losses, lr, critic constants and speed every log_every steps.
            logger.record(run.step, values, show=("pixel", "d_hinge", "d_wgan", "g_total"))
            if run.step % cfg.log.log_every == 0 or run.step == end:
                extra = {"lr_g": nets.opt_g.param_groups[0]["lr"]}
                if nets.D is not None:
                    extra.update({f"norm/{k}": v for k, v in norm_constants(gdist.unwrap(nets.D)).items()})
                logger.log_means(run.step, extra)

            # Validate the EMA generator; save every save_every steps, at the end and on a new best.
            is_best = False
            if run.step % cfg.log.eval_every == 0 or run.step == cfg.train.steps:
                is_best = validate(cfg, nets, data, rt, run, logger, run_dir)
            saved = run.step % cfg.log.save_every == 0 or run.step == end
            path = save_checkpoint(cfg, nets, run, rt, ckpts, log, is_best, saved) if saved or is_best else None

            # Stop on SIGINT / SIGTERM: every rank after this same step, with a step checkpoint.
            if stop_signal:
                if not saved:
                    path = save_checkpoint(cfg, nets, run, rt, ckpts, log)
                raise stopped_at(stop_signal, run.step, path, log)

    log.info("done at step %d (%s)", run.step, "finished" if run.step >= cfg.train.steps else "stopped early")
    return TrainResult(run.step, run.last_val, gdist.unwrap(nets.G), nets.ema.module,
                       gdist.unwrap(nets.D) if nets.D is not None else None)  # fmt: skip
