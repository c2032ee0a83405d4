"""Upscaling with an SR network: the Python API (``Upscaler``), tiling, precision, alpha.

    from sr_app import Upscaler
    up = Upscaler.from_pretrained()                  # the default model in weights/
    up = Upscaler.from_pretrained("4x-model.pth")    # a community model (ESRGAN, Compact, SwinIR, ...)
    big = up(Image.open("photo.jpg"))                # PIL in, PIL out (numpy and tensors too: sr_app.api_io)

Models (:mod:`sr_app.model_files`): a manifest name, a released ``.safetensors`` + ``.json``, an
``sr-train`` checkpoint, or any SR / restoration state dict spandrel recognises (:mod:`sr_app.community`);
``Upscaler.source``, ``Upscaler.sha256`` and ``Upscaler.model_card`` say which file and what network was
loaded. Precision ``auto``: bf16 + channels_last on CPUs with native bf16 and on CUDA GPUs that have it,
fp16 on older CUDA GPUs, fp32 otherwise; a precision the model does not support (spandrel's flags) falls
back to fp32 (``precision_note`` says so). Large images are tiled with the image kept on the CPU; on CUDA
out-of-memory the tile is halved and the image retried. A tile whose output is not finite in reduced
precision is recomputed in fp32; still not finite in fp32 raises ``NonFiniteOutputError`` (never an
all-black image).
"""

from __future__ import annotations

import logging
import math
import numbers
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gan_core.buffers import large_empty
from gan_core.distributed import pick_device
from gan_core.runtime import autocast, autocast_dtype
from gan_core.tiling import HostCopier, quantize, quantize_into, upscale_tiled

from .api_io import api_inputs, api_outputs
from .model_files import (
    check_finite,
    export_generator,
    export_paths,
    load_generator,
    load_manifest_default,
    load_sr_checkpoint,
)
from .models import count_parameters, luma

__all__ = [
    "DEFAULT_TILE_PAD",
    "NonFiniteOutputError",
    "Upscaler",
    "check_finite",
    "check_outscale",
    "export_generator",
    "export_paths",
    "load_generator",
    "load_manifest_default",
    "load_sr_checkpoint",
]

log = logging.getLogger(__name__)
DEFAULT_TILE_PAD = 24  # input pixels of context per tile side; the generator's receptive field is ~36
DEFAULT_OVERLAP = 8
MIN_TILE = 32
CPU_TILE_BUDGET = 384 * 2**20  # bytes of activations per tile on CPU
MAX_BATCH = 16  # images or tiles per forward on CUDA


class NonFiniteOutputError(RuntimeError):
    """The network produced NaN or Inf even in fp32: its weights are broken or overflow."""


def check_outscale(outscale: float | None) -> float | None:
    """``outscale`` if it is None (the network's own scale) or a finite number > 0, else ValueError."""
    if outscale is None:
        return None
    if isinstance(outscale, bool) or not isinstance(outscale, numbers.Real) or not 0 < outscale < math.inf:
        raise ValueError(f"outscale must be a finite number > 0, got {outscale!r}")
    return float(outscale)


def _resized(length: int, factor: float) -> int:
    """Length of an axis of ``length`` pixels resized by ``factor`` (``resize_pixels``' rule)."""
    return max(1, round(length * factor))


class Upscaler:
    """A network ready for inference on a device and precision, with tiling (see module docstring).

    ``model``: an SRGenerator, a :class:`sr_app.community.CommunityNet` (a spandrel model), or any module
    mapping (N, 3, h, w) RGB in [0, 1] to (N, 3, h * scale, w * scale) with a ``scale`` attribute. Calling
    the Upscaler is :meth:`upscale`; ``repr`` names the model, scale, device, precision and tile.
    """

    def __init__(
        self,
        model: nn.Module,
        config: dict | None = None,
        device: str | torch.device = "auto",
        precision: str = "auto",
        tile: int | str = "auto",
        tile_pad: int = DEFAULT_TILE_PAD,
        max_batch: int | None = None,
    ) -> None:
        self.config = config or {}
        self.architecture = str(getattr(model, "architecture", self.config.get("architecture", type(model).__name__)))
        self.device = device if isinstance(device, torch.device) else pick_device(str(device))
        self.amp = autocast_dtype(precision, self.device, allow_fp16=True)
        self.precision_note = ""  # why the precision asked for is not used (the model does not support it)
        for dtype, flag, label in ((torch.float16, "supports_half", "fp16"), (torch.bfloat16, "supports_bfloat16",
                                                                              "bf16")):  # fmt: skip
            if self.amp == dtype and not getattr(model, flag, True):
                self.precision_note = f"{label} is not supported by {self.architecture}: fp32"
                log.warning("%s", self.precision_note)
                self.amp = None
        self.channels_last = self.amp is not None
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        self.model = model.eval().to(self.device, memory_format=fmt)
        self.scale = int(getattr(model, "scale", self.config.get("scale", 4)))
        self.parameters = count_parameters(model)
        self.tile = tile
        if isinstance(tile_pad, bool) or not isinstance(tile_pad, numbers.Integral) or tile_pad < 0:
            raise ValueError(f"tile_pad must be an integer >= 0, got {tile_pad!r}")
        self.tile_pad = int(tile_pad)
        if max_batch is not None and (isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1):
            raise ValueError(f"max_batch must be an integer >= 1 or None (automatic), got {max_batch!r}")
        self.max_batch = max_batch  # inputs per forward; None: 1 on the CPU, what memory allows on CUDA
        self.name = self.config.get("name", "")
        self.source = str(self.config.get("source", ""))  # the model file actually loaded ("" if in memory)
        self.sha256 = str(self.config.get("sha256", ""))  # its full SHA-256 (hex)

    @property
    def provenance(self) -> str:
        """``<file> (sha256 <first 12 hex digits>)`` of the loaded model, for banners and reports."""
        return f"{self.source} (sha256 {self.sha256[:12]})" if self.source else "(model given in memory)"

    @property
    def card(self) -> dict:
        """The model card of reports: ``architecture``, ``tags`` (e.g. ["64nf", "23nb"]), ``scale``,
        ``parameters``, ``input_channels`` / ``output_channels`` of the network, ``sha256`` (first 12 hex
        digits, "" in memory), ``loader`` ("san-gan" or "spandrel <version>")."""
        return {
            "architecture": self.architecture,
            "tags": _tags(self.model, self.config),
            "scale": self.scale,
            "parameters": self.parameters,
            "input_channels": int(getattr(self.model, "in_channels", 3)),
            "output_channels": int(getattr(self.model, "out_channels", 3)),
            "sha256": self.sha256[:12],
            "loader": self.config.get("loader", "san-gan"),
        }

    @property
    def model_card(self) -> str:
        """One line for banners: ``ESRGAN [64nf 23nb] x4, 16,697,987 parameters, sha256 4fa0d38905f7 (spandrel
        0.4.2)``."""
        c = self.card
        tags = f" [{' '.join(c['tags'])}]" if c["tags"] else ""
        return (f"{c['architecture']}{tags} x{c['scale']}, {c['parameters']:,} parameters, "
                f"sha256 {c['sha256'] or '- (in memory)'} ({c['loader']})")  # fmt: skip

    def __repr__(self) -> str:
        return (f"Upscaler(model={self.name or '(in memory)'!r}, architecture={self.architecture!r}, "
                f"scale={self.scale}, device={str(self.device)!r}, precision={self.precision_name!r}, "
                f"tile={self.tile!r}, tile_pad={self.tile_pad})")  # fmt: skip

    def __call__(self, image, outscale: float | None = None, channel_order: str = "rgb"):
        """Same as :meth:`upscale`."""
        return self.upscale(image, outscale, channel_order)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path | None = None,
        device: str = "auto",
        precision: str = "auto",
        tile: int | str = "auto",
        tile_pad: int = DEFAULT_TILE_PAD,
        max_batch: int | None = None,
    ) -> Upscaler:
        """Load a model (None = the default model: ``$SAN_WEIGHTS_DIR``'s manifest, else the repository's
        weights/) for ``device`` and ``precision``. ``source`` / ``sha256`` say which file was loaded;
        load errors are :func:`load_generator`'s (one line)."""
        if name_or_path is None:
            name_or_path = load_manifest_default()
        model, config = load_generator(name_or_path)
        config.setdefault("name", str(name_or_path))
        return cls(model, config, device, precision, tile, tile_pad, max_batch)

    @property
    def precision_name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.amp]

    def output_size(self, h: int, w: int, outscale: float | None = None) -> tuple[int, int]:
        """(height, width) of the output for an (h, w) input at ``outscale`` (None: the network's scale)."""
        outscale = check_outscale(outscale)
        if not outscale or outscale == self.scale:
            return h * self.scale, w * self.scale
        factor = outscale / self.scale
        return _resized(h * self.scale, factor), _resized(w * self.scale, factor)

    def _activation_bytes(self, h: int, w: int) -> int:
        """Memory (bytes) the network needs for an h x w input: ~3 HR-resolution 64-channel activations alive
        at once (measured 5.5 KB/px in bf16 on CPU for the default model, benchmarks/infer_speed.py), times the
        model's ``memory_factor`` (community models: 4, a conservative guess for deeper and attention nets)."""
        factor = float(getattr(self.model, "memory_factor", 1.0))
        return int(64 * self.scale * self.scale * (2 if self.amp is not None else 4) * 3 * h * w * factor)

    def _memory_budget(self) -> float:
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            return free * 0.5
        return CPU_TILE_BUDGET  # CPU: a 4000x3000 photo stays near 2 GB in all (image + output + one tile)

    def auto_tile(self, h: int, w: int) -> int:
        """Tile size (input pixels): whole image when small, else bounded by (free) memory; never automatic
        tiling for a model that tiles internally (spandrel's ``tiling`` "internal")."""
        if isinstance(self.tile, int) or (isinstance(self.tile, str) and self.tile.isdigit()):
            return int(self.tile)
        if getattr(self.model, "tiling", "supported") == "internal":
            return 0
        t = int(math.sqrt(self._memory_budget() / max(1, self._activation_bytes(1, 1)))) - 2 * self.tile_pad
        t = max(MIN_TILE, min(1024, t // 8 * 8))
        return 0 if h * w <= t * t else t

    def batch_size(self, h: int, w: int) -> int:
        """Inputs of h x w pixels (whole images or tiles) per forward: ``max_batch`` when set; else 1 on the CPU
        (batching gains nothing there and costs memory) and on CUDA as many as half the free memory holds, at
        most ``MAX_BATCH``."""
        if self.max_batch is not None:
            return self.max_batch
        if self.device.type != "cuda":
            return 1
        return int(max(1, min(MAX_BATCH, self._memory_budget() // max(1, self._activation_bytes(h, w)))))

    @torch.inference_mode()
    def _forward(self, x: torch.Tensor, fp32: bool = False) -> torch.Tensor:
        """(N, C, h, w) float32 in [0, 1] on ``self.device``, C in (1, 3) -> (N, C, h*s, w*s) float32 in [0, 1]
        on ``self.device``. Gray inputs go through the network as RGB and come back as the luma of the result.
        Raises NonFiniteOutputError when the output is not finite even in fp32."""
        gray = x.shape[1] == 1 and not getattr(self.model, "takes_gray", False)
        inp = x.expand(-1, 3, -1, -1) if gray else x
        inp = inp.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
        amp = None if fp32 else self.amp
        with autocast(self.device, amp):
            y = self.model(inp)
        y = y.float()
        if not torch.isfinite(y).all():
            if amp is None:
                raise NonFiniteOutputError(
                    "the model's output is not finite (NaN or Inf) even in fp32: its weights are broken or overflow"
                )
            log.warning("non-finite output in %s; this batch is recomputed in fp32", self.precision_name)
            return self._forward(x, fp32=True)
        if gray:  # the three outputs of a gray input are nearly equal: keep their luma
            y = luma(y)
        return y.clamp_(0, 1)

    def upscale_array(
        self, pixels: np.ndarray, out_dtype=np.float32, on_tile=None, tile: int | None = None
    ) -> np.ndarray:
        """(H, W, C) float32 in [0, 1], C = 1 or 3 -> (sH, sW, C) array of ``out_dtype`` (uint8, uint16 or
        float32), tiled as configured (several tiles per forward on CUDA); CUDA out-of-memory halves the
        tile and retries. Raises NonFiniteOutputError when the network's output is not finite even in fp32.

        A network whose output depends on the phase of the pixel grid (``model.align`` > 1: pixel-unshuffle
        models, window attention) is tiled with windows at multiples of ``align``, the image padded at the
        bottom and right (reflect) to a multiple of it as its whole-image call would be."""
        H, W, C = pixels.shape
        # a (C, H, W) view of the HWC pixels (no copy): upscale_tiled stacks channels_last tiles from it
        image = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)).permute(2, 0, 1)
        t = self.auto_tile(H, W) if tile is None else tile
        align = int(getattr(self.model, "align", 1))
        if H % align or W % align:
            image = _pad_bottom_right(image, -H % align, -W % align)
        Hp, Wp = image.shape[1:]
        full = large_empty((Hp * self.scale, Wp * self.scale, C), out_dtype)
        out = full[: H * self.scale, : W * self.scale]  # a view (of all of it unless the image was padded)
        while True:
            span = t if t > 0 else max(H, W)
            batch = self.batch_size(min(H, span + 2 * self.tile_pad), min(W, span + 2 * self.tile_pad))
            try:
                upscale_tiled(self._forward, image, self.scale, full, tile=t, pad=self.tile_pad,
                              overlap=DEFAULT_OVERLAP, on_tile=on_tile, batch=batch, device=self.device,
                              align=align)  # fmt: skip
                return out
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                t = (t or max(H, W)) // 2
                if t < MIN_TILE:
                    raise RuntimeError(
                        f"out of GPU memory even with {MIN_TILE}px tiles; use --device cpu or free GPU memory"
                    ) from None
                log.warning("CUDA out of memory: retrying with %dpx tiles", t)

    @torch.inference_mode()
    def upscale_images(self, images: list[np.ndarray], out_dtype=np.uint8, outscale: float | None = None) -> list:
        """Whole images, all of one shape (H, W, C) float32 in [0, 1] (C = 1 gray, 2 gray + alpha, 3 RGB,
        4 RGBA) -> their outputs, arrays of ``out_dtype`` (uint8, uint16 or float32) of ``output_size``.

        Everything after decoding runs on the device: ``batch_size(H, W)`` images per forward, alpha resized
        (bicubic), the ``outscale`` resize, the rounding to ``out_dtype``; on CUDA only the rounded pixels
        come back, through a pinned buffer. Same values as :meth:`upscale_array` with the whole image as
        one tile. Raises NonFiniteOutputError when the network's output is not finite even in fp32."""
        outscale = check_outscale(outscale)
        if not images:
            return []
        H, W, C = images[0].shape
        if any(im.shape != (H, W, C) for im in images):
            raise ValueError("upscale_images needs images of one shape")
        ncolor = 3 if C in (3, 4) else 1
        copy_to_host = HostCopier(self.device)
        step = self.batch_size(H, W)
        outs = []
        for first in range(0, len(images), step):
            group = images[first : first + step]
            colors = [im[..., :ncolor] for im in group]
            if C in (2, 4):
                colors = [bleed_transparent(c, im[..., C - 1 :]) for c, im in zip(colors, group, strict=True)]
            x = torch.from_numpy(np.stack(colors).astype(np.float32, copy=False)).permute(0, 3, 1, 2)
            y = self._forward(x.to(self.device))
            if C in (2, 4):
                a = torch.from_numpy(np.stack([im[..., C - 1] for im in group]).astype(np.float32, copy=False))
                a = F.interpolate(a[:, None].to(self.device), scale_factor=self.scale, mode="bicubic",
                                  align_corners=False).clamp_(0, 1)  # fmt: skip
                y = torch.cat([y, a], dim=1)
            if outscale and outscale != self.scale:
                y = resize_tensor(y, outscale / self.scale)
            q = quantize(y.permute(0, 2, 3, 1), out_dtype)
            for k in range(q.shape[0]):
                out = large_empty(tuple(q.shape[1:]), out_dtype)
                copy_to_host(out, q[k].contiguous())
                outs.append(out)
            del x, y, q
        return outs

    def upscale(self, image, outscale: float | None = None, channel_order: str = "rgb"):
        """Upscale one image (or a batch of tensors); the result has the input's type, layout and dtype.

        ``image``: a PIL image; a numpy array (H, W) or (H, W, C); a tensor (C, H, W), (B, C, H, W) or
        (H, W) on any device; C = 1 gray, 2 gray + alpha, 3 colour, 4 colour + alpha. Values are read by
        dtype: uint8 0-255, uint16 0-65535, floats in [0, 1] (outside is a ValueError saying how to scale);
        other dtypes are refused (TypeError). ``channel_order="bgr"``: arrays and tensors from OpenCV, BGR(A)
        in and out. Returned: same type and dtype (float64 in -> float64 out, uint8 -> uint8), a tensor on
        its device; (H * s, W * s) with s = ``outscale`` (a finite number > 0, else ValueError; an extra
        antialiased bicubic resize) or the network's scale. Alpha is resized with bicubic interpolation.
        The full rules: :mod:`sr_app.api_io`. Raises NonFiniteOutputError when the network's output is not
        finite even in fp32.
        """
        outscale = check_outscale(outscale)
        images, how = api_inputs(image, channel_order)
        outs = [self._upscale_pixels(px, how.compute_dtype, outscale) for px in images]
        return api_outputs(outs, how)

    def _upscale_pixels(
        self, pixels: np.ndarray, out_dtype, outscale: float | None, on_tile=None, tile: int | None = None
    ) -> np.ndarray:
        """One image (H, W, C) float32 in [0, 1], C = 1..4 -> its output of ``out_dtype``: whole on the device
        (:meth:`upscale_images`) when it fits one tile, else tiled with alpha and ``outscale`` on the CPU."""
        outscale = check_outscale(outscale)
        H, W, C = pixels.shape
        if (self.auto_tile(H, W) if tile is None else tile) == 0:
            out = self.upscale_images([pixels], out_dtype, outscale)[0]
            if on_tile is not None:
                on_tile()
            return out
        color = pixels[..., :3] if C in (3, 4) else pixels[..., :1]
        alpha = pixels[..., C - 1 :] if C in (2, 4) else None
        if alpha is not None:
            color = bleed_transparent(color, alpha)
        up = self.upscale_array(color, np.float32 if (outscale or alpha is not None) else out_dtype, on_tile, tile)
        if alpha is not None:
            a = torch.from_numpy(np.ascontiguousarray(alpha.transpose(2, 0, 1)))[None]
            a = F.interpolate(a, scale_factor=self.scale, mode="bicubic", align_corners=False).clamp_(0, 1)
            up = np.concatenate([up, a[0].permute(1, 2, 0).numpy()], axis=2)
        if outscale and outscale != self.scale:
            up = resize_pixels(up, outscale / self.scale)
        if up.dtype == out_dtype:
            return up
        out = large_empty(up.shape, out_dtype)
        quantize_into(out, up)  # in place on the float result: no output-sized temporaries
        return out


def _pad_bottom_right(image: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """(C, H, W) padded with ``rows`` more rows and ``cols`` more columns: reflected, then replicated where the
    image is too small to reflect (the padding spandrel's call API applies to one call)."""
    x = image[None]
    _, _, H, W = x.shape
    r, c = min(rows, H - 1), min(cols, W - 1)
    x = F.pad(x, (0, c, 0, r), mode="reflect") if r or c else x
    if rows - r or cols - c:
        x = F.pad(x, (0, cols - c, 0, rows - r), mode="replicate")
    return x[0]


def _tags(model: nn.Module, config: dict) -> list[str]:
    """Short hyper-parameter tags of the card: spandrel's, or an SRGenerator's width and depth."""
    if hasattr(model, "tags"):
        return list(model.tags)
    kwargs = config.get("kwargs") if isinstance(config.get("kwargs"), dict) else {}
    return [f"{kwargs[k]}{unit}" for k, unit in (("channels", "ch"), ("num_blocks", "blocks")) if k in kwargs]


def bleed_transparent(color: np.ndarray, alpha: np.ndarray, iterations: int = 8) -> np.ndarray:
    """Replace the (meaningless) colour of fully transparent pixels by the alpha-weighted average colour of
    nearby visible pixels, so the upscaler does not drag dark or random colours into soft edges (the dark
    halos users see with other tools). Visible pixels are unchanged."""
    a = torch.from_numpy(np.ascontiguousarray(alpha.transpose(2, 0, 1)))[None]
    if bool((a > 0).all()):
        return color
    c = torch.from_numpy(np.ascontiguousarray(color.transpose(2, 0, 1)))[None]
    num, den = c * a, a.clone()
    for _ in range(iterations):  # diffuse alpha-weighted colour outwards (radius ~ iterations)
        num = F.avg_pool2d(num, 3, 1, 1, count_include_pad=False)
        den = F.avg_pool2d(den, 3, 1, 1, count_include_pad=False)
    fill = torch.where(den > 1e-8, num / den.clamp_min(1e-8), c)
    out = torch.where(a > 0, c, fill)
    return out[0].permute(1, 2, 0).numpy()


def resize_tensor(x: torch.Tensor, factor: float) -> torch.Tensor:
    """High-quality resize of (N, C, H, W) float [0, 1] by ``factor`` (bicubic, antialiased when shrinking,
    clamped), on x's device; each side becomes ``max(1, round(side * factor))``."""
    H, W = x.shape[-2:]
    size = (_resized(H, factor), _resized(W, factor))
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=factor < 1).clamp_(0, 1)


def resize_pixels(pixels: np.ndarray, factor: float) -> np.ndarray:
    """:func:`resize_tensor` of (H, W, C) float pixels (on the CPU)."""
    t = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))[None]
    return resize_tensor(t, factor)[0].permute(1, 2, 0).numpy()
