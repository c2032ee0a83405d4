"""What ``Upscaler.upscale`` accepts and gives back: no silent rescaling, no silent channel swap.

Inputs (one rule per type, nothing guessed from the values):

- **PIL image**: any mode ``pil_to_pixels`` reads (L, LA, RGB, RGBA, palette, ...) -> a PIL image of the
  same kind (L, LA, RGB or RGBA), 8-bit.
- **numpy array** (H, W) or (H, W, C), C = 1 gray, 2 gray + alpha, 3 colour, 4 colour + alpha:
  ``uint8`` is read as 0-255, ``uint16`` as 0-65535 (its dtype's range), floating point (float16 /
  float32 / float64) must lie in [0, 1] (values at most ``FLOAT_TOLERANCE`` outside are clipped; anything
  else is a ValueError that says how to scale, e.g. "divide by 255"). Other dtypes (int32 from a PIL "I"
  image, int64, bool, ...) have no single meaning and are refused with the conversion to use.
- **torch tensor** (C, H, W) or (B, C, H, W) (torchvision's layout, e.g. ``torchvision.io.read_image``), or
  (H, W): the same dtype rules (``torch.uint8`` 0-255, ``torch.uint16`` 0-65535, float16 / bfloat16 /
  float32 / float64 in [0, 1]), on any device.
- ``channel_order="bgr"`` (arrays and tensors with 3 or 4 channels, e.g. OpenCV's ``cv2.imread``): the
  first three channels are B, G, R in the input and in the output; 1- and 2-channel images have no order.

Outputs keep the input's type, layout, dtype and (tensors) device: uint8 in -> uint8 out (rounded),
uint16 -> uint16, float64 -> float64 (computed in float32, the network in the Upscaler's precision), a
CUDA bfloat16 tensor -> a CUDA bfloat16 tensor. Float outputs lie in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["CHANNEL_ORDERS", "FLOAT_TOLERANCE", "Returned", "api_inputs", "api_outputs"]

CHANNEL_ORDERS = ("rgb", "bgr")
FLOAT_TOLERANCE = 1e-3  # float inputs this far outside [0, 1] are clipped (rounding of a resize); farther: error
_INT_TOP = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}
_TORCH_INT = {torch.uint8: np.uint8, torch.uint16: np.uint16}


@dataclass(frozen=True)
class Returned:
    """How the outputs go back to the caller (made by :func:`api_inputs`)."""

    kind: str  # "pil" | "numpy" | "tensor"
    compute_dtype: type  # what the Upscaler produces: np.uint8, np.uint16 or np.float32
    dtype: object = None  # the caller's numpy or torch dtype
    squeeze: bool = False  # (H, W) in: (sH, sW) out
    batched: bool = False  # (B, C, H, W) in
    device: torch.device | None = None
    bgr: bool = False


def api_inputs(image, channel_order: str = "rgb") -> tuple[list[np.ndarray], Returned]:
    """(images as (H, W, C) float32 arrays in [0, 1], RGB order; how to return the outputs).

    Raises:
        TypeError: not a PIL image, numpy array or tensor; a dtype without one meaning.
        ValueError: a bad ``channel_order``, layout or number of channels, an empty image, float values
            outside [0, 1] (the message says how to scale them) or not finite.
    """
    from PIL import Image

    if channel_order not in CHANNEL_ORDERS:
        raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
    bgr = channel_order == "bgr"
    if isinstance(image, Image.Image):
        if bgr:
            raise ValueError("a PIL image is always RGB: channel_order='bgr' is for numpy arrays and tensors")
        from gan_core.image_io import pil_to_pixels

        return [pil_to_pixels(image)[0]], Returned("pil", np.uint8)
    if isinstance(image, np.ndarray):
        arr, squeeze = _numpy_layout(image)
        pixels, compute = _to_unit(arr, arr.dtype, "array")
        return [_swap(pixels, bgr)], Returned("numpy", compute, arr.dtype, squeeze, bgr=bgr)
    if isinstance(image, torch.Tensor):
        t, squeeze, batched = _tensor_layout(image)
        host = t.detach().cpu()
        if host.dtype in (torch.bfloat16, torch.float16):
            host = host.float()  # float16 too: numpy reductions on it are slow and overflow
        images = [_to_unit(x.permute(1, 2, 0).numpy(), image.dtype, "tensor")[0] for x in host]
        compute = _TORCH_INT.get(image.dtype, np.float32)
        how = Returned("tensor", compute, image.dtype, squeeze, batched, image.device, bgr)
        return [_swap(p, bgr) for p in images], how
    raise TypeError(f"cannot upscale a {type(image).__name__}: give a PIL image, numpy array or tensor")


def api_outputs(outputs: list[np.ndarray], how: Returned):
    """The outputs ((sH, sW, C) arrays of ``how.compute_dtype``) as the caller gave the input."""
    if how.kind == "pil":
        from gan_core.image_io import pixels_to_pil

        return pixels_to_pil(outputs[0])
    outs = [_swap(o, how.bgr) for o in outputs]
    if how.kind == "numpy":
        out = outs[0].astype(how.dtype, copy=False)
        return out[..., 0] if how.squeeze else out
    ts = [torch.from_numpy(np.ascontiguousarray(o)).permute(2, 0, 1) for o in outs]
    res = torch.stack(ts).to(device=how.device, dtype=how.dtype)
    if how.squeeze:
        return res[0, 0]
    return res if how.batched else res[0]


def _numpy_layout(arr: np.ndarray) -> tuple[np.ndarray, bool]:
    """(H, W, C) view of a numpy image and whether it was (H, W)."""
    if arr.ndim == 2:
        return arr[..., None], True
    if arr.ndim == 3 and 1 <= arr.shape[2] <= 4:
        return arr, False
    hint = ""
    if arr.ndim == 3 and 1 <= arr.shape[0] <= 4:
        hint = " ((C, H, W)? use arr.transpose(1, 2, 0))"
    raise ValueError(f"a numpy image is (H, W) or (H, W, C) with C = 1..4 channels, got shape {tuple(arr.shape)}{hint}")


def _tensor_layout(t: torch.Tensor) -> tuple[torch.Tensor, bool, bool]:
    """((B, C, H, W) view, was (H, W), was batched) of a tensor image."""
    if t.dim() == 2:
        return t[None, None], True, False
    if t.dim() in (3, 4) and 1 <= t.shape[-3] <= 4:
        return (t if t.dim() == 4 else t[None]), False, t.dim() == 4
    hint = ""
    if t.dim() == 3 and 1 <= t.shape[-1] <= 4:
        hint = " ((H, W, C)? use t.permute(2, 0, 1))"
    raise ValueError(
        f"a tensor image is (C, H, W) or (B, C, H, W) with C = 1..4 channels (torchvision's layout), got shape "
        f"{tuple(t.shape)}{hint}"
    )


def _to_unit(arr: np.ndarray, dtype, what: str) -> tuple[np.ndarray, type]:
    """(float32 (H, W, C) in [0, 1], the dtype the Upscaler should produce) of one image; ``arr`` is the
    image as numpy (a half-precision tensor already widened to float32), ``dtype`` the caller's dtype."""
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"the {what} is empty ({arr.shape[1]}x{arr.shape[0]} pixels)")
    if arr.dtype in _INT_TOP:
        return arr.astype(np.float32) / np.float32(_INT_TOP[arr.dtype]), arr.dtype.type
    if not np.issubdtype(arr.dtype, np.floating):
        article = "an" if what[0] in "aeiou" else "a"
        example = "x.to(torch.uint16)" if what == "tensor" else "x.astype(np.uint16)"
        raise TypeError(
            f"{article} {what} of dtype {_name(dtype)} has no single meaning as an image: give uint8 (0-255), uint16 "
            f"(0-65535) or floats in [0, 1] (e.g. {example} for 16-bit values held in int32)"
        )
    lo, hi = float(np.min(arr)), float(np.max(arr))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(f"the {what} holds NaN or Inf: an image must be finite")
    if lo < -FLOAT_TOLERANCE or hi > 1 + FLOAT_TOLERANCE:
        raise ValueError(f"a float {what} must lie in [0, 1], this one spans [{lo:.4g}, {hi:.4g}]: {_advice(lo, hi)}")
    return np.clip(arr, 0.0, 1.0).astype(np.float32, copy=False), np.float32


def _advice(lo: float, hi: float) -> str:
    if lo >= 0 and hi <= 255:
        return "8-bit values? divide by 255 (or pass the uint8 array / tensor itself)"
    if lo >= 0 and hi <= 65535:
        return "16-bit values? divide by 65535 (or pass the uint16 array / tensor itself)"
    if lo >= -1 - FLOAT_TOLERANCE and hi <= 1 + FLOAT_TOLERANCE:
        return "values in [-1, 1] (a GAN's tanh range)? use (x + 1) / 2"
    return "rescale it to [0, 1], e.g. (x - x.min()) / (x.max() - x.min()), or clip it with np.clip(x, 0, 1)"


def _name(dtype) -> str:
    return str(dtype) if isinstance(dtype, torch.dtype) else np.dtype(dtype).name


def _swap(pixels: np.ndarray, bgr: bool) -> np.ndarray:
    """BGR(A) <-> RGB(A): the first three channels reversed (gray and gray + alpha have no order)."""
    if not bgr or pixels.shape[2] < 3:
        return pixels
    return np.concatenate([pixels[..., 2::-1], pixels[..., 3:]], axis=2)
