"""Upscaling with a trained SAN-SRGAN / SRResNet-style generator: model loading and the Python API.

    from sr_app import Upscaler
    up = Upscaler.from_pretrained()                  # the default model in weights/
    big = up.upscale(Image.open("photo.jpg"))        # PIL in, PIL out (numpy and tensors too)

Released weights are a safetensors file plus a JSON config beside it that rebuilds the network
(``{"architecture": "SRGenerator", "kwargs": {...}, "scale": 4, ...}``); ``from_pretrained`` also takes
a manifest name or an ``sr-train`` checkpoint (its EMA generator); ``Upscaler.source`` and
``Upscaler.sha256`` say which file was loaded. Precision ``auto``: bf16 +
channels_last on CPUs with native bf16, fp16 on CUDA, fp32 otherwise. Large images are tiled with the
image kept on the CPU; on CUDA out-of-memory the tile is halved and the image retried. A tile whose
output is not finite in reduced precision is recomputed in fp32; still not finite in fp32 raises
``NonFiniteOutputError`` (never an all-black image).
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gan_core.buffers import large_empty
from gan_core.distributed import pick_device
from gan_core.runtime import autocast, autocast_dtype
from gan_core.tiling import HostCopier, quantize, quantize_into, upscale_tiled
from gan_core.weights import default_model_name, load_manifest, resolve_weights, sha256_file

from .models import SRGenerator, generator_weights, strip_prefixes

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


def _build(config: dict, where: Path) -> SRGenerator:
    arch = config.get("architecture", "SRGenerator")
    if arch != "SRGenerator":
        raise ValueError(f"{where}: unknown architecture {arch!r} (expected SRGenerator)")
    kwargs = config.get("kwargs", {})
    try:
        if not isinstance(kwargs, dict):
            raise TypeError(f"'kwargs' must be an object, got {type(kwargs).__name__}")
        return SRGenerator(**kwargs)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: cannot build the network from its config: {e}") from None


def _model_config(train_config: dict, where: Path) -> dict:
    """The released-model config (architecture + kwargs + scale) of an ``sr-train`` run's config dict."""
    try:
        scale = train_config["data"]["scale"]
        m = train_config["model"]
        kwargs = {"channels": m["channels"], "num_blocks": m["num_blocks"], "scale": scale}
    except (KeyError, TypeError) as e:
        raise ValueError(f"{where}: its training config lacks {e} (not an sr-train checkpoint?)") from None
    return {"architecture": "SRGenerator", "kwargs": kwargs, "scale": scale}


def _describe_format(fmt) -> str:
    if isinstance(fmt, str) and fmt.startswith("san-gan/translate-train/"):
        return "a translate-train (SAN-SPADE label-to-image) checkpoint"
    if fmt is None:
        return "a PyTorch file without a 'format' entry (not written by sr-train)"
    return f"a checkpoint of format {fmt!r}"


def load_sr_checkpoint(path: str | Path) -> dict:
    """The contents of an ``sr-train`` checkpoint, checked.

    Raises:
        FileNotFoundError: no such file.
        ValueError: one line naming what the file is instead (a translate-train checkpoint, a released
            ``.safetensors`` model, an unsafe or corrupt file, another format).
    """
    from gan_core.checkpoint import load_checkpoint

    from .train import CKPT_FORMAT

    path = Path(path)
    if path.suffix == ".safetensors" and path.is_file():
        raise ValueError(f"{path} is a released model (.safetensors), not an sr-train checkpoint (.pt)")
    ck = load_checkpoint(path)
    if ck.get("format") != CKPT_FORMAT:
        raise ValueError(f"{path} is {_describe_format(ck.get('format'))}, not an sr-train checkpoint")
    if not isinstance(ck.get("G_ema", ck.get("G")), dict) or not isinstance(ck.get("config"), dict):
        raise ValueError(f"{path} is an sr-train checkpoint without generator weights or config (damaged?)")
    return ck


def check_finite(state: dict, where: str) -> None:
    """ValueError naming the first tensor of ``state`` that holds NaN or Inf (the weights are unusable)."""
    bad = [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point() and not v.isfinite().all()]
    if bad:
        more = f" (and {len(bad) - 1} more tensors)" if len(bad) > 1 else ""
        raise ValueError(
            f"{where} has non-finite weights (NaN/Inf) in {bad[0]}{more}: the training diverged or the file is "
            "damaged; refused"
        )


def _load_state(G: SRGenerator, state: dict, where: Path, config_file: str) -> None:
    """``G.load_state_dict(state)`` with a one-line ValueError when the weights do not fit the network."""
    expected = G.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or reshaped:
        parts = [f"{len(v)} {what} (e.g. {v[0]})" for what, v in
                 (("missing", missing), ("unexpected", unexpected), ("of another shape", reshaped)) if v]  # fmt: skip
        raise ValueError(f"{where} does not fit the architecture in {config_file}: tensors {', '.join(parts)}")
    G.load_state_dict(state)


def _read_model_config(candidates: list[Path], weights: Path) -> tuple[dict, Path]:
    """(config dict, its file): the first of ``candidates`` that exists; one-line errors naming the files."""
    for c in candidates:
        if c.is_file():
            try:
                config = json.loads(c.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                raise ValueError(f"model config {c} is not readable JSON: {e}") from None
            if not isinstance(config, dict):
                raise ValueError(f"model config {c} is not a JSON object")
            return config, c
    looked = " or ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"{weights}: its model config is missing (looked for {looked}; it rebuilds the network)")


def _is_manifest_name(name_or_path: str | Path) -> bool:
    """A bare name (no folder part) listed in the manifest: resolved there, never as a file in the cwd."""
    text = str(name_or_path)
    return "/" not in text and os.sep not in text and text in load_manifest()


def load_generator(name_or_path: str | Path | None = None) -> tuple[SRGenerator, dict]:
    """(generator in eval mode, its config dict) from a manifest name, a safetensors file (with its JSON
    config ``<name>.json``, else ``config.json`` beside it), a folder holding ``model.safetensors``, or an
    ``sr-train`` checkpoint (.pt, its EMA generator).

    A bare name listed in the manifest always means that entry (hash-checked), never a file of the same
    name in the current directory. The config gets ``source`` (the resolved file, absolute) and
    ``sha256`` (its full SHA-256).

    Raises:
        FileNotFoundError: a missing model file or config (the message names the files looked for).
        ValueError: one line for everything else: an unreadable / unsafe file, a config or weights that do
            not fit, non-finite weights, a checkpoint that is not from sr-train.
    """
    if name_or_path is None:
        name_or_path = load_manifest_default()
    if _is_manifest_name(name_or_path):
        name = str(name_or_path)
        spec = load_manifest()[name]
        if spec.kind not in ("", "model"):
            raise ValueError(f"{name!r} is a {spec.kind} weight file, not an SR model (see sr-infer --list-models)")
        p = resolve_weights(name)
        candidates = [p.parent / spec.config] if spec.config else [p.with_suffix(".json")]
    else:
        p = Path(name_or_path)
        if p.is_dir():
            p = p / "model.safetensors"
        if not p.is_file():
            if not p.suffix and "/" not in str(name_or_path):
                resolve_weights(name_or_path)  # raises: unknown name, with the known names
            raise FileNotFoundError(f"model file not found: {p}")
        if p.suffix == ".pt":
            return _load_checkpoint_generator(p)
        if p.suffix != ".safetensors":
            raise ValueError(f"{p}: not a model file (expected .safetensors with its .json, or an sr-train .pt)")
        candidates = [p.with_suffix(".json"), p.parent / "config.json"]
    config, cfg_path = _read_model_config(candidates, p)
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    G = _build(config, cfg_path)
    try:
        state = {k: v.float() for k, v in load_file(str(p)).items()}
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{p} is not a readable safetensors file: {e}") from None
    state = strip_prefixes(state)
    check_finite(state, str(p))
    _load_state(G, state, p, cfg_path.name)
    return G.eval(), {**config, "source": str(p.resolve()), "sha256": sha256_file(p)}


def _load_checkpoint_generator(p: Path) -> tuple[SRGenerator, dict]:
    ck = load_sr_checkpoint(p)
    config = {**_model_config(ck["config"], p), "name": p.stem}
    G = _build(config, p)
    state, key = generator_weights(ck)
    check_finite(state, f"{p} ({key})")
    _load_state(G, state, p, "its training config")
    return G.eval(), {**config, "source": str(p.resolve()), "sha256": sha256_file(p)}


def load_manifest_default() -> str:
    """Logical name of the default SR model (``default_sr_model`` of ``$SAN_WEIGHTS_DIR``'s manifest, else
    the repository's ``weights/manifest.json``; never a ``./weights`` the user did not name)."""
    return default_model_name("default_sr_model")


def export_paths(out: str | Path) -> tuple[Path, Path]:
    """(weights ``.safetensors``, config ``.json``) that :func:`export_generator` writes for ``out``.

    A path without suffix gets ``.safetensors``; any other suffix is refused (ValueError), so that
    ``m.pt`` is never written as ``m.safetensors`` behind the user's back."""
    out = Path(out)
    if not out.suffix:
        out = out.with_name(out.name + ".safetensors")
    elif out.suffix != ".safetensors":
        raise ValueError(
            f"{out}: sr-export writes a .safetensors file (and its .json config beside it); give a path ending in "
            ".safetensors or without a suffix"
        )
    return out, out.with_suffix(".json")


def export_generator(
    checkpoint: str | Path, out: str | Path, fp16: bool = True, extra: dict | None = None, overwrite: bool = False
) -> Path:
    """Write the EMA generator of an ``sr-train`` checkpoint as ``out`` (.safetensors) + ``out``.json.

    Both outputs are checked before either is written, and neither replaces an existing file unless
    ``overwrite`` (written through ``gan_core.atomic``: no partial files, no replacing a file that appears
    meanwhile). Returns the ``.safetensors`` path.

    Raises:
        ValueError: an output that exists (without ``overwrite``) or cannot be written, a suffix other than
            ``.safetensors``, a checkpoint that is not an sr-train one, non-finite weights.
        FileNotFoundError: no such checkpoint.
        FileExistsError: an output appeared while exporting (nothing of ours is left behind).
    """
    from safetensors.torch import save

    from gan_core.atomic import atomic_write, check_output_path, write_text

    weights_path, config_path = export_paths(out)
    for path in (weights_path, config_path):
        check_output_path(path, overwrite)
    ck = load_sr_checkpoint(checkpoint)
    cfg = ck["config"]
    model_config = _model_config(cfg, Path(checkpoint))
    state, key = generator_weights(ck)
    check_finite(state, f"{checkpoint} ({key})")
    _load_state(_build(model_config, Path(checkpoint)), {k: v.float() for k, v in state.items()}, Path(checkpoint),
                "its training config")  # fmt: skip
    dtype = torch.float16 if fp16 else torch.float32
    tensors = {k: v.to(dtype).contiguous() for k, v in state.items()}
    if fp16:
        check_finite(tensors, f"{checkpoint} ({key}, in float16; export with --fp32)")
    blob = save(tensors, metadata={"format": "san-gan/sr-generator/1", "scale": str(model_config["scale"])})
    config = {
        **model_config,
        "dtype": "float16" if fp16 else "float32",
        "training": {"step": ck.get("step"), "stage": cfg.get("train", {}).get("stage"), "config": cfg},
        **(extra or {}),
    }
    with atomic_write(weights_path, overwrite=overwrite) as f:
        f.write(blob)
    try:
        write_text(config_path, json.dumps(config, indent=2) + "\n", overwrite=overwrite)
    except BaseException:
        if not overwrite:  # ours (placed without replacing): do not leave weights without their config
            weights_path.unlink(missing_ok=True)
        raise
    return weights_path


class Upscaler:
    """A generator ready for inference on a device and precision, with tiling (see module docstring)."""

    def __init__(
        self,
        model: SRGenerator,
        config: dict | None = None,
        device: str | torch.device = "auto",
        precision: str = "auto",
        tile: int | str = "auto",
        tile_pad: int = DEFAULT_TILE_PAD,
        max_batch: int | None = None,
    ) -> None:
        self.device = device if isinstance(device, torch.device) else pick_device(str(device))
        self.amp = autocast_dtype(precision, self.device, allow_fp16=True)
        self.channels_last = self.amp is not None
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        self.model = model.eval().to(self.device, memory_format=fmt)
        self.config = config or {}
        self.scale = int(getattr(model, "scale", self.config.get("scale", 4)))
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
        at once (measured 5.5 KB/px in bf16 on CPU for the default model, benchmarks/infer_speed.py)."""
        return 64 * self.scale * self.scale * (2 if self.amp is not None else 4) * 3 * h * w

    def _memory_budget(self) -> float:
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            return free * 0.5
        return CPU_TILE_BUDGET  # CPU: a 4000x3000 photo stays near 2 GB in all (image + output + one tile)

    def auto_tile(self, h: int, w: int) -> int:
        """Tile size (input pixels): whole image when small, else bounded by (free) memory."""
        if isinstance(self.tile, int) or (isinstance(self.tile, str) and self.tile.isdigit()):
            return int(self.tile)
        t = int(math.sqrt(self._memory_budget() / self._activation_bytes(1, 1))) - 2 * self.tile_pad
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
        gray = x.shape[1] == 1
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
            y = 0.299 * y[:, 0:1] + 0.587 * y[:, 1:2] + 0.114 * y[:, 2:3]
        return y.clamp_(0, 1)

    def upscale_array(
        self, pixels: np.ndarray, out_dtype=np.float32, on_tile=None, tile: int | None = None
    ) -> np.ndarray:
        """(H, W, C) float32 in [0, 1], C = 1 or 3 -> (sH, sW, C) array of ``out_dtype`` (uint8, uint16 or
        float32), tiled as configured (several tiles per forward on CUDA); CUDA out-of-memory halves the
        tile and retries. Raises NonFiniteOutputError when the network's output is not finite even in fp32."""
        H, W, C = pixels.shape
        # a (C, H, W) view of the HWC pixels (no copy): upscale_tiled stacks channels_last tiles from it
        image = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)).permute(2, 0, 1)
        out = large_empty((H * self.scale, W * self.scale, C), out_dtype)
        t = self.auto_tile(H, W) if tile is None else tile
        while True:
            span = t if t > 0 else max(H, W)
            batch = self.batch_size(min(H, span + 2 * self.tile_pad), min(W, span + 2 * self.tile_pad))
            try:
                return upscale_tiled(
                    self._forward,
                    image,
                    self.scale,
                    out,
                    tile=t,
                    pad=self.tile_pad,
                    overlap=DEFAULT_OVERLAP,
                    on_tile=on_tile,
                    batch=batch,
                    device=self.device,
                )
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

    def upscale(self, image, outscale: float | None = None):
        """Upscale a PIL image, a numpy array (H, W[, C]) of uint8 / uint16 / float in [0, 1], or a tensor
        (C, H, W) / (B, C, H, W) float in [0, 1]; returns the same type. Alpha channels are resized
        with bicubic interpolation; ``outscale`` (a finite number > 0, else ValueError) resizes the
        x``scale`` result to x``outscale``. Raises NonFiniteOutputError when the network's output is not
        finite even in fp32."""
        from PIL import Image

        if isinstance(image, Image.Image):
            from gan_core.image_io import pil_to_pixels, pixels_to_pil

            pixels, _ = pil_to_pixels(image)
            return pixels_to_pil(self._upscale_pixels(pixels, np.uint8, outscale))
        if isinstance(image, np.ndarray):
            arr = image
            squeeze = arr.ndim == 2
            if squeeze:
                arr = arr[..., None]
            dt = arr.dtype
            top = 255.0 if dt == np.uint8 else 65535.0 if dt == np.uint16 else 1.0
            out = self._upscale_pixels(
                arr.astype(np.float32) / top, dt if dt in (np.uint8, np.uint16) else np.float32, outscale
            )
            return out[..., 0] if squeeze else out
        if isinstance(image, torch.Tensor):
            batched = image.dim() == 4
            xs = image if batched else image[None]
            outs = [
                torch.from_numpy(
                    self._upscale_pixels(x.detach().cpu().float().permute(1, 2, 0).numpy(), np.float32, outscale)
                ).permute(2, 0, 1)
                for x in xs
            ]
            res = torch.stack(outs).to(image.device)
            return res if batched else res[0]
        raise TypeError(f"cannot upscale a {type(image).__name__}: give a PIL image, numpy array or tensor")

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
