"""The one piece of sr-infer's pipeline that san-serve needs and ``sr_app`` does not export yet.

``upscale_job(job, upscaler, opts, on_tile)`` is the single-image branch of ``sr_app.pipeline._upscale``
with a per-tile callback instead of its progress bar: the callback lets the server count tiles and stop a
cancelled job between two of them. Proposed for ``sr_app.pipeline`` (public, and used by ``_upscale``'s
single-image branch with ``bar.update``); until then this adapter calls the same Upscaler method that
``_upscale`` calls, with the same arguments.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["upscale_job"]


def upscale_job(job, upscaler, opts, on_tile: Callable[[], None] | None = None) -> np.ndarray:
    """Output pixels of one prepared ``sr_app.batch.Job``: (H', W', C) of ``job.out_dtype`` (uint8 or uint16),
    tiled as ``job.tile`` says (0: the whole image in one forward). ``on_tile()`` runs after every tile
    (once for a whole image); an exception it raises stops the upscale and propagates. Raises what
    ``Upscaler._upscale_pixels`` raises (NonFiniteOutputError, RuntimeError for out of memory)."""
    return upscaler._upscale_pixels(job.image.pixels, job.out_dtype, opts.outscale, on_tile, job.tile)
