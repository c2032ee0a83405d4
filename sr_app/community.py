"""Community SR models (ESRGAN / Real-ESRGAN, Real-ESRGAN Compact, SwinIR, HAT, DAT, SPAN, ...) through spandrel.

The architecture code is spandrel's (chaiNNer's loader, MIT, a dependency): it recognises an architecture
and its hyper-parameters from the keys and shapes of a state dict. This module never lets spandrel read a
file (it could unpickle): ``sr_app.model_files`` reads the file itself, safely (safetensors, or
``torch.load(weights_only=True)``), and hands the tensors to :func:`load_state_dict_model`.

What the network of an :class:`CommunityNet` promises (the metadata spandrel gives, honoured):

- **range**: input and output in [0, 1] (a model's own range, e.g. SwinIR's 0-255 JPEG models, is handled
  inside spandrel's architecture code); the output is clamped to [0, 1] (NaN stays NaN and is caught by
  the Upscaler's finiteness check).
- **channels**: the Upscaler gives 1 (gray) or 3 (RGB) channels and gets as many back. A 3-channel model
  upscales a gray image as RGB and returns the luma; a 1-channel model upscales each colour channel on its
  own (one batch of C single-channel images); a 4-channel (RGBA) model gets the colour with an opaque alpha
  and its colour output is kept, while the alpha of the image is resized as for every model (bicubic).
- **size requirements** (minimum side, multiple of, square): every call of the network, hence every tile,
  is padded (reflect, then replicate) to satisfy them and the output cropped back (spandrel's call API).
- **precision**: ``supports_half`` / ``supports_bfloat16`` say whether fp16 / bf16 work; the Upscaler falls
  back to fp32 where the model does not support the requested precision.
- **tiling**: ``tiling`` is spandrel's advice: "supported", "discouraged" (tiled only when memory requires
  it), "internal" (never tiled automatically).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import torch
from torch import nn

from .models import check_finite, count_parameters, luma

__all__ = ["SUPPORTED_PURPOSES", "CommunityNet", "load_state_dict_model", "spandrel_version"]

SUPPORTED_PURPOSES = ("SR", "Restoration")  # not FaceSR (needs face alignment) nor Inpainting (needs a mask)
MEMORY_FACTOR = 4.0  # activation memory relative to SRGenerator's estimate: deeper / attention models need more


def spandrel_version() -> str:
    import spandrel

    return spandrel.__version__


class CommunityNet(nn.Module):
    """A spandrel ``ImageModelDescriptor`` as the Upscaler's network (see the module docstring).

    ``forward``: (N, C, h, w) float in [0, 1] on the model's device, C = 1 (gray) or 3 (RGB) -> (N, C,
    h * scale, w * scale) float in [0, 1]. Attributes: ``scale``, ``in_channels``, ``out_channels``,
    ``architecture`` (spandrel's name, e.g. "ESRGAN"), ``arch_id``, ``tags`` (e.g. ["64nf", "23nb"]),
    ``purpose``, ``supports_half``, ``supports_bfloat16``, ``size_requirements`` (minimum, multiple_of,
    square), ``tiling``, ``memory_factor`` (the Upscaler's activation-memory estimate multiplier) and
    ``align`` (tiles start at multiples of it: the size requirement's multiple and the attention window).
    """

    takes_gray = True  # forward handles C = 1 itself (the Upscaler does not expand gray images to RGB)

    def __init__(self, descriptor) -> None:
        super().__init__()
        self.net = descriptor.model  # a submodule: .to() / .eval() of this module move and switch it
        self._call = descriptor  # spandrel's call API: pads to the size requirements, crops, clamps
        self.scale = int(descriptor.scale)
        self.in_channels = int(descriptor.input_channels)
        self.out_channels = int(descriptor.output_channels)
        self.architecture = descriptor.architecture.name
        self.arch_id = str(descriptor.architecture.id)
        self.tags = list(descriptor.tags)
        self.purpose = descriptor.purpose
        self.supports_half = bool(descriptor.supports_half)
        self.supports_bfloat16 = bool(descriptor.supports_bfloat16)
        req = descriptor.size_requirements
        self.size_requirements = {"minimum": req.minimum, "multiple_of": req.multiple_of, "square": req.square}
        self.tiling = descriptor.tiling.name.lower()
        self.memory_factor = MEMORY_FACTOR
        window = getattr(self.net, "window_size", 1)  # SwinIR, HAT, ...: attention windows of this many pixels
        window = window if isinstance(window, int) and window > 0 else 1
        self.align = math.lcm(req.multiple_of, window)  # tiles start at multiples of it (Upscaler.upscale_array)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"torch\.meshgrid")  # SwinIR-family masks: noise
            return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        N, C, h, w = x.shape
        if self.in_channels == 1:  # each channel on its own: (N * C, 1, h, w)
            y = self._to_channels(self._call(x.reshape(N * C, 1, h, w)), 1)
            return y.reshape(N, C, *y.shape[-2:])
        inp = x.expand(-1, 3, -1, -1).contiguous() if C == 1 else x
        if self.in_channels == 4:  # an RGBA model: the colour with an opaque alpha
            inp = torch.cat([inp, torch.ones_like(inp[:, :1])], dim=1)
        return self._to_channels(self._call(inp), C)

    @staticmethod
    def _to_channels(y: torch.Tensor, channels: int) -> torch.Tensor:
        """A model output (N, K, H, W) as ``channels`` (1 or 3) channels: colour (K >= 3) keeps its first three
        (drops a model's alpha) or becomes luma for a gray image; one channel is repeated for colour."""
        if y.shape[1] >= 3:
            return luma(y[:, :3]) if channels == 1 else y[:, :3]
        return y[:, :1].expand(-1, channels, -1, -1) if channels == 3 else y[:, :1]


def load_state_dict_model(state: dict, where: str | Path) -> tuple[CommunityNet, dict]:
    """(network in eval mode on the CPU, its config) of a state dict spandrel recognises.

    ``state``: what the file held (a plain state dict, or one wrapped in ``params_ema`` / ``params`` /
    ``state_dict`` / ``model``..., keys perhaps prefixed ``module.``: spandrel's canonicalisation unwraps them).
    The config: ``architecture``, ``arch_id``, ``tags``, ``purpose``, ``scale``, ``input_channels``,
    ``output_channels``, ``parameters``, ``size_requirements``, ``tiling``, ``supports_half``,
    ``supports_bfloat16``, ``loader`` ("spandrel <version>").

    Raises:
        ValueError: one line naming ``where``: no tensors, non-finite weights, an architecture spandrel does
            not recognise, one it recognises but cannot build from these tensors, a purpose other than SR /
            restoration (face SR, inpainting), input channels other than 1, 3 or 4.
    """
    import spandrel

    if not isinstance(state, dict):
        raise ValueError(f"{where} holds a {type(state).__name__}, not a state dict of tensors")
    state = spandrel.canonicalize_state_dict(state)
    tensors = {k: v for k, v in state.items() if isinstance(k, str) and torch.is_tensor(v)}
    if not tensors:
        keys = ", ".join(map(str, list(state)[:4])) or "none"
        raise ValueError(f"{where} holds no tensors at its top level (keys: {keys}): not a model state dict")
    check_finite(tensors, str(where))
    tensors = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"torch\.meshgrid")  # SwinIR-family construction noise
            desc = spandrel.ModelLoader(device="cpu").load_from_state_dict(dict(tensors))
    except spandrel.UnsupportedModelError:
        example = next(iter(tensors))
        raise ValueError(
            f"{where}: unknown model: neither a san-gan SRGenerator nor one of the {len(spandrel.MAIN_REGISTRY)} "
            f"architectures spandrel {spandrel.__version__} recognises ({len(tensors)} tensors, e.g. {example!r})"
        ) from None
    except Exception as e:  # detected, but the tensors do not build it (a damaged or edited file)
        arch = _detected_architecture(tensors)
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise ValueError(
            f"{where}: spandrel detects {arch} but cannot build it from these tensors ({type(e).__name__}: {first})"
        ) from None
    arch = desc.architecture.name
    if not isinstance(desc, spandrel.ImageModelDescriptor) or desc.purpose not in SUPPORTED_PURPOSES:
        raise ValueError(
            f"{where} is a {arch} model for {desc.purpose} (spandrel): sr-infer runs super-resolution and "
            "restoration models only"
        )
    if desc.input_channels not in (1, 3, 4):
        raise ValueError(f"{where}: the {arch} model takes {desc.input_channels} input channels; 1, 3 or 4 needed")
    net = CommunityNet(desc).eval()
    config = {
        "architecture": arch,
        "arch_id": net.arch_id,
        "tags": net.tags,
        "purpose": net.purpose,
        "scale": net.scale,
        "input_channels": net.in_channels,
        "output_channels": net.out_channels,
        "parameters": count_parameters(net),
        "size_requirements": net.size_requirements,
        "tiling": net.tiling,
        "supports_half": net.supports_half,
        "supports_bfloat16": net.supports_bfloat16,
        "loader": f"spandrel {spandrel.__version__}",
    }
    return net, config


def _detected_architecture(tensors: dict) -> str:
    import spandrel

    for support in spandrel.MAIN_REGISTRY.architectures("detection"):
        try:
            if support.detect(tensors):
                return support.architecture.name
        except Exception:
            continue
    return "an architecture"
