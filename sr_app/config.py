"""SAN-SRGAN training configuration (defaults = the paper preset, docs/algorithms.md §3.6-§3.7).

Sections: ``data``, ``model``, ``loss``, ``optim``, ``train``, ``log``. Presets live in ``configs/``;
any key can be overridden with ``--set section.key=value``. Rules that join two sections (WGAN-GP needs
a plain critic) are checked once, in ``SRTrainConfig.__post_init__``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from gan_core.config import require, require_betas, require_device
from gan_core.norm.config import CriticNormConfig

__all__ = ["DataConfig", "LogConfig", "LossConfig", "ModelConfig", "OptimConfig", "SRTrainConfig", "TrainConfig"]


@dataclass
class DataConfig:
    train_dirs: list[str] = field(default_factory=list)  # HR image folders (searched recursively)
    val_dirs: list[str] = field(default_factory=list)  # EDSR layout (HR/ + LR_bicubic/X4/) or HR-only
    scale: int = 4
    lr_patch: int = 40  # LR crop; HR crop = lr_patch * scale (160)
    hflip: bool = True
    dequantize: bool = True  # x <- (255 x + U[0, 1)) / 256 on LR and HR (official loader, docs/algorithms.md §3.4)
    cache_images: bool = True  # decode every image (and make its LR) once, keep them in memory
    exclude: list[str] = field(default_factory=list)  # file stems to leave out (e.g. 302003: Set5 'woman')
    num_workers: int = 0
    val_max_size: int = 0  # centre-crop validation HR images to at most this many pixels a side (0 = whole)

    def __post_init__(self) -> None:
        require(self.scale in (2, 4), "data.scale", f"must be 2 or 4, got {self.scale}")
        require(self.lr_patch >= 8, "data.lr_patch", f"must be >= 8, got {self.lr_patch}")
        require(self.num_workers >= 0, "data.num_workers", "must be >= 0")
        require(self.val_max_size >= 0, "data.val_max_size", "must be >= 0")


@dataclass
class ModelConfig(CriticNormConfig):  # + critic_norm, critic_padding, san_*, bssn_scale
    channels: int = 64
    num_blocks: int = 16
    init_scale: float = 0.1  # multiplies the generator's Kaiming init (official initialize_model's `scale`, 1.0
    # there, which starts ~100x outside the image range); 0.1 starts near the bilinear upsampling
    residual_init_scale: float = 1.0  # extra factor on residual-branch and output convs (0.1: ESRGAN-style)
    critic_bn: bool = True
    critic_blocks: int = 5  # crop = 4 * 2^blocks (128)
    critic_width: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.channels >= 4, "model.channels", "must be >= 4")
        require(self.num_blocks >= 0, "model.num_blocks", "must be >= 0")
        require(self.init_scale > 0, "model.init_scale", "must be > 0")
        require(self.residual_init_scale > 0, "model.residual_init_scale", "must be > 0")
        require(self.critic_blocks >= 1, "model.critic_blocks", "must be >= 1")
        require(self.critic_width >= 1, "model.critic_width", "must be >= 1")


@dataclass
class LossConfig:
    pretrain_pixel: Literal["mse", "l1"] = "mse"  # stage pretrain (paper: MSE; official code: L1)
    pixel: Literal["l1", "mse"] = "l1"  # content term of stage gan
    content_weight: float = 1e-2
    vgg_loss_weight: float = 1.0  # VGG-19 conv5_4 (pre-activation) L1; 0 trains without VGG
    adv_weight: float = 1e-1
    vgg_weights_file: str = "vgg19"  # manifest name or path of torchvision's vgg19-dcbb9e9d.pth
    # critic objective: "hinge" (the paper) or "wgan-gp" (Gulrajani et al. 2017: D(fake) - D(real) + gp_weight *
    # (||grad_x D(x_mix)|| - 1)^2 on real/fake interpolates; the generator term is -D(fake) for both)
    adversarial: Literal["hinge", "wgan-gp"] = "hinge"
    gp_weight: float = 10.0  # lambda of the gradient penalty (wgan-gp only)

    renamed_keys: ClassVar[dict[str, str]] = {"feature_weight": "vgg_loss_weight", "vgg_weights": "vgg_weights_file"}

    def __post_init__(self) -> None:
        for k in ("content_weight", "vgg_loss_weight", "adv_weight", "gp_weight"):
            require(getattr(self, k) >= 0, f"loss.{k}", "must be >= 0")
        if self.adversarial == "wgan-gp":
            require(self.gp_weight > 0, "loss.gp_weight", "must be > 0 with loss.adversarial=wgan-gp (the penalty "
                    "is what keeps a WGAN critic Lipschitz)")  # fmt: skip


@dataclass
class OptimConfig:
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    betas_g: tuple[float, float] = (0.5, 0.9)
    betas_d: tuple[float, float] = (0.5, 0.9)
    milestones: list[float] = field(default_factory=lambda: [0.125, 0.25, 0.5, 0.75])  # fractions of steps
    gamma: float = 0.5

    removed_keys: ClassVar[dict[str, str]] = {
        "d_steps_per_g": "it was never read (sr-train makes one critic step per generator step)"
    }

    def __post_init__(self) -> None:
        require(self.lr_g > 0 and self.lr_d > 0, "optim.lr_g", "learning rates must be > 0")
        for k in ("betas_g", "betas_d"):
            require_betas(getattr(self, k), f"optim.{k}")
        require(all(0 < m < 1 for m in self.milestones), "optim.milestones", "fractions in (0, 1)")
        require(0 < self.gamma <= 1, "optim.gamma", "must be in (0, 1]")


@dataclass
class TrainConfig:
    stage: Literal["pretrain", "gan"] = "gan"
    # stage gan: the generator to start from: an sr-train checkpoint (.pt, its EMA generator), a released model
    # (.safetensors with its .json, a folder holding model.safetensors) or a model name of weights/manifest.json
    init_from: str = ""
    steps: int = 400_000
    batch_size: int = 32  # global batch (divided over DDP ranks)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto = bf16 where the hardware runs it fast
    channels_last: bool = True
    ema_decay: float = 0.999
    max_nonfinite: int = 10  # consecutive non-finite losses before stopping with a checkpoint
    compile: bool = False  # torch.compile G, the critic body and VGG (CUDA: + CUDA graphs); gan_core.compilation

    def __post_init__(self) -> None:
        require(self.steps >= 1, "train.steps", "must be >= 1")
        require(self.batch_size >= 1, "train.batch_size", "must be >= 1")
        require(0 <= self.ema_decay < 1, "train.ema_decay", "must be in [0, 1)")
        require(self.max_nonfinite >= 1, "train.max_nonfinite", "must be >= 1")
        require_device(self.device, "train.device")
        require(isinstance(self.compile, bool), "train.compile", f"must be true or false, got {self.compile!r}")


@dataclass
class LogConfig:
    log_every: int = 100
    eval_every: int = 5000
    save_every: int = 5000
    sample_every: int = 5000
    keep_last: int = 3
    niqe: bool = False  # NIQE in validation (slower; needs pyiqa)
    lpips: bool = False  # LPIPS in validation (needs the AlexNet trunk, weights name "alexnet")
    grad_norms: bool = False  # log the L2 norms of G's and D's gradients (g_grad_norm, d_grad_norm) every step
    critic_spectral: bool = False  # at validation: exact spectral norm of every critic conv on its grid
    # 0: exact (conv_spectral_norm; minutes on a CPU for strided 4x4 convs); N > 0: N power iterations of the
    # same circular operator (a lower bound converging to the exact value; seconds on a CPU)
    critic_spectral_iters: int = 0
    tensorboard: bool = False

    def __post_init__(self) -> None:
        for k in ("log_every", "eval_every", "save_every", "sample_every", "keep_last"):
            require(getattr(self, k) >= 1, f"log.{k}", "must be >= 1")
        require(self.critic_spectral_iters >= 0, "log.critic_spectral_iters", "must be >= 0")


@dataclass
class SRTrainConfig:
    name: str = "sr_paper"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def __post_init__(self) -> None:
        if self.loss.adversarial == "wgan-gp":
            # the penalty is the critic's constraint: a normalized critic would be a second one, and BatchNorm
            # couples the samples whose input gradients the penalty constrains one by one (WGAN-GP paper, sec. 4)
            require(self.model.critic_norm == "none", "model.critic_norm",
                    f"must be none with loss.adversarial=wgan-gp, got {self.model.critic_norm!r}")  # fmt: skip
            require(not self.model.critic_bn, "model.critic_bn",
                    "must be false with loss.adversarial=wgan-gp (BatchNorm mixes the penalty's samples)")  # fmt: skip
            require(not self.train.compile, "train.compile",
                    "must be false with loss.adversarial=wgan-gp (its double backward does not compile)")  # fmt: skip
