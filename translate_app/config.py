"""SAN-SPADE training configuration (defaults = the SAN-SPADE paper preset, docs/algorithms.md §4).

Sections: ``data``, ``model``, ``loss``, ``optim``, ``train``, ``log``; presets in ``configs/``
(``san_spade_paper.yaml``, ``spade_paper.yaml``, ``spade_tiny.yaml``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from gan_core.config import require, require_betas, require_device
from gan_core.norm.config import CriticNormConfig

__all__ = ["SpadeTrainConfig"]


@dataclass
class DataConfig:
    root: str = ""  # Cityscapes root (gtFine/ + leftImg8bit/); --data-root
    train_split: str = "train"
    val_split: str = "val"
    size: tuple[int, int] = (256, 512)  # (H, W)
    flip: bool = True
    num_workers: int = 0
    max_items: int = 0  # use only the first N training frames (0 = all)

    def __post_init__(self) -> None:
        require(self.size[0] > 0 and self.size[1] > 0, "data.size", "must be positive")
        require(self.num_workers >= 0, "data.num_workers", "must be >= 0")


@dataclass
class ModelConfig(CriticNormConfig):  # + critic_norm, critic_padding, san_*, bssn_scale
    ngf: int = 64
    spade_hidden: int = 128  # width of the SPADE modulation convs
    upsampling: Literal["normal", "more", "most"] = "more"
    ndf: int = 64
    n_layers_d: int = 4
    num_d: int = 2
    san_layers: Literal["all", "sn_layers_only"] = "all"
    san_ratio: float = 0.25  # SAN-SPADE: 25% of the kernel pairs, g = 1.3, EMA 0.9
    san_gain: float | Literal["auto"] = 1.3
    san_momentum: float = 0.9

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.ngf >= 4 and self.ndf >= 4, "model.ngf", "ngf and ndf must be >= 4")
        require(self.num_d >= 1 and self.n_layers_d >= 2, "model.num_d", "num_d >= 1 and n_layers_d >= 2")


@dataclass
class LossConfig:
    feature_matching_weight: float = 10.0  # L1 between the critic's intermediate features of fake and real
    vgg_loss_weight: float = 10.0  # VGG-19 relu*_1 pyramid, weights 1/32 .. 1, unnormalized [-1, 1] input (SPADE)
    vgg_weights_file: str = "vgg19"  # manifest name or path of torchvision's vgg19-dcbb9e9d.pth

    renamed_keys: ClassVar[dict[str, str]] = {
        "feat_weight": "feature_matching_weight",
        "vgg_weight": "vgg_loss_weight",
        "vgg_weights": "vgg_weights_file",
    }

    def __post_init__(self) -> None:
        for k in ("feature_matching_weight", "vgg_loss_weight"):
            require(getattr(self, k) >= 0, f"loss.{k}", "must be >= 0")


@dataclass
class OptimConfig:
    lr_g: float = 1e-4  # TTUR: G at half, D at twice the base rate 2e-4
    lr_d: float = 4e-4
    betas_g: tuple[float, float] = (0.5, 0.9)  # SAN-SPADE: beta1 0.5; SPADE: 0.0
    betas_d: tuple[float, float] = (0.5, 0.9)
    niter: int = 100  # epochs at constant learning rate
    niter_decay: int = 100  # epochs of linear decay to 0

    def __post_init__(self) -> None:
        require(self.lr_g > 0 and self.lr_d > 0, "optim.lr_g", "learning rates must be > 0")
        for k in ("betas_g", "betas_d"):
            require_betas(getattr(self, k), f"optim.{k}")
        require(self.niter >= 0 and self.niter_decay >= 0 and self.niter + self.niter_decay > 0, "optim.niter",
                "niter and niter_decay must be >= 0 with a positive sum")  # fmt: skip


@dataclass
class TrainConfig:
    steps: int = 0  # 0 = (niter + niter_decay) epochs of the training set
    batch_size: int = 16
    seed: int = 0
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    channels_last: bool = True
    max_nonfinite: int = 10
    compile: bool = False  # torch.compile G, the critic body and VGG (CUDA: + CUDA graphs); gan_core.compilation

    def __post_init__(self) -> None:
        require(self.steps >= 0, "train.steps", "must be >= 0")
        require(self.batch_size >= 1, "train.batch_size", "must be >= 1")
        require(self.max_nonfinite >= 1, "train.max_nonfinite", "must be >= 1")
        require_device(self.device, "train.device")
        require(isinstance(self.compile, bool), "train.compile", f"must be true or false, got {self.compile!r}")


@dataclass
class LogConfig:
    log_every: int = 100
    save_every: int = 2000
    sample_every: int = 2000
    keep_last: int = 3
    fid_every: int = 0  # periodic FID on a validation subset (0 = off); needs the FID Inception weights
    fid_images: int = 100
    fid_weights_file: str = "fid_inception"  # manifest name or path of the FID Inception weights
    tensorboard: bool = False

    renamed_keys: ClassVar[dict[str, str]] = {"fid_weights": "fid_weights_file"}

    def __post_init__(self) -> None:
        for k in ("log_every", "save_every", "sample_every", "keep_last"):
            require(getattr(self, k) >= 1, f"log.{k}", "must be >= 1")
        require(self.fid_every >= 0 and self.fid_images >= 2, "log.fid_every", "fid_every >= 0, fid_images >= 2")


@dataclass
class SpadeTrainConfig:
    name: str = "san_spade_paper"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    log: LogConfig = field(default_factory=LogConfig)
