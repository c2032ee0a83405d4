"""SAN as a weight parametrization of a circular-padded Conv2d: ``weight -> weight / s``.

``s = g * ||W||_{0,inf} + eps`` (optionally an EMA of it) is a buffer, refreshed explicitly once per
critic step by ``refresh_norm_constants`` (docs/algorithms.md §1.4, "explicit refresh") and treated as a
constant by autograd, so the gradient reaching the raw weight is the normal gradient divided by s.
The layer records its input size with a forward pre-hook: the constant is defined on that grid (a grid
smaller than the kernel is fine: the kernel wraps around it, as the circular conv does). In training mode a
new grid recomputes the constant; in eval mode the layer keeps the constant of the grid it was computed on
and says so once (a ``CriticNormWarning`` naming the layer and both sizes). Errors raised by the hook or a
refresh are ``CriticNormError``s naming the layer (``layer_name``, set by ``apply_critic_norm``).

State (all in ``state_dict``, under ``parametrizations.weight.0.``): ``s``, ``initialized``,
``input_size``, ``seed`` and ``draws`` (the subset drawn at a refresh is a function of (seed, draws):
identical on every DDP rank and reproduced exactly on resume), ``refreshes`` (the ``update_every``
counter). The algorithm (``options.algorithm``, resolved per device by ``resolve_san_algorithm``) decides
how a refresh runs:

* certified (default on CPU): ``constant()`` with the certified incremental maximum of
  ``sparsity_aware``; its per-kernel peaks and reference weights are a cache kept outside the state (a
  reloaded layer rebuilds it on its next refresh with the same result). r < 1 blocks come from
  ``torch.randperm`` on a CPU generator seeded by ``mix_seed(seed, draws)``.
* dense (default off the CPU): ``san_dense.dense_refresh_`` on the layer's own buffers: every sampled
  kernel transformed, static shapes, no host read and no host-to-device copy, so the refresh never
  synchronizes and can be captured in a CUDA graph (a replay recomputes ``s`` from the current weights
  and advances ``draws`` on the device). r < 1 blocks come from the counter-based device draw of
  ``san_draws`` keyed by the same ``(seed, draws)`` buffers: another stream than the CPU ``randperm``
  one (the same on every device), equally identical across ranks and exact on resume. The host only
  counts ``update_every`` (a Python counter, never a read of a device value).

Both give the same ``s`` for the same block up to float32 rounding (``sparsity_aware`` docstring).
``legacy_fft_norm`` always takes the certified route's code (the official port's quantity, unchanged).
"""

from __future__ import annotations

import functools
import warnings

import torch
from torch import nn

from .certified import certified_max
from .kernel_dft import check_input_grid, chunk_rows, pair, uses_exact_strided
from .layer_errors import CriticNormError, CriticNormWarning, describe_layer, layer_label, named_errors
from .options import SANOptions, resolve_san_algorithm
from .san_dense import dense_basis, dense_refresh_, draw_block
from .san_draws import block_shape
from .sparsity_aware import kernel_peaks, legacy_san_constant, sample_kernel_block, san_gain

__all__ = ["SparsityAwareNorm", "mix_seed"]

_MASK64 = (1 << 64) - 1


def mix_seed(seed: int, draw: int) -> int:
    """splitmix64 of (seed, draw): independent 63-bit generator seeds for successive draws."""
    z = (seed * 0x9E3779B97F4A7C15 + (draw + 1) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) & ((1 << 63) - 1)


class _PeakCache:
    """Reference kernels and their exact per-kernel peaks, for the certified incremental maximum."""

    def __init__(self) -> None:
        self.key = None
        self.kernels: torch.Tensor | None = None  # (m*n, kh, kw) float32
        self.peaks: torch.Tensor | None = None  # (m*n,) float32
        self.known: torch.Tensor | None = None  # (m*n,) bool: entry computed at least once

    def maximum(self, weight: torch.Tensor, key, peaks_of, rows: int, flat_idx=None) -> torch.Tensor:
        m, n, kh, kw = weight.shape
        kernels = weight.reshape(m * n, kh, kw)
        if self.key != key:
            self.key = key
            self.kernels = torch.zeros_like(kernels)
            self.peaks = torch.zeros(m * n, dtype=torch.float32, device=weight.device)
        if flat_idx is None:
            value, idx, vals = certified_max(kernels, peaks_of, self.kernels, self.peaks, rows)
        else:
            value, idx, vals = certified_max(
                kernels[flat_idx], peaks_of, self.kernels[flat_idx], self.peaks[flat_idx], rows
            )
            idx = flat_idx[idx]
        self.kernels.index_copy_(0, idx, kernels[idx])
        self.peaks.index_copy_(0, idx, vals)
        return value


class SparsityAwareNorm(nn.Module):
    """Parametrization ``W -> W / s`` with s the SAN constant of the conv it is registered on.

    Args:
        conv: the Conv2d it will be registered on (for its kernel, stride and dilation).
        options: the validated :class:`~gan_core.norm.options.SANOptions` (ratio r, gain g or ``"auto"``
            for eq. 9 with this layer's m*n and sampled count, update_every, momentum mu of the EMA
            ``s <- mu s + (1 - mu) (g c + eps)`` whose first value is ``g c + eps``, legacy_fft_norm,
            strided, eps, algorithm). Its ``padding`` is the caller's business (``apply_critic_norm``
            sets it).
        seed: seed of this layer's sampling draws (default ``options.seed``). Deterministic, not taken
            from torch's global RNG, so that every DDP rank draws the same subsets even when buffers are
            not broadcast (``apply_critic_norm`` derives one per layer from ``options.seed`` and the
            layer's name).
    """

    def __init__(self, conv: nn.Conv2d, options: SANOptions | None = None, *, seed: int | None = None) -> None:
        super().__init__()
        options = SANOptions() if options is None else options
        if not isinstance(options, SANOptions):
            raise TypeError(f"SparsityAwareNorm needs SANOptions, got {type(options).__name__}")
        m, n, kh, kw = conv.weight.shape
        self.options = options
        self.ratio = options.ratio
        self.stride = pair(conv.stride)
        self.dilation = pair(conv.dilation)
        self.padding = tuple(int(p) for p in conv._reversed_padding_repeated_twice)  # (left, right, top, bottom)
        self.layer_name, self.layer_desc = "<unnamed>", describe_layer(conv)  # apply_critic_norm sets the name
        self.kernel_size = (kh, kw)
        self.update_every = options.update_every
        self.momentum = options.momentum
        self.legacy_fft_norm = options.legacy_fft_norm
        self.strided = options.strided
        self.eps = options.eps
        self.algorithm = options.algorithm
        self.dense_backend = "auto"  # "torch" / "triton" force a backend of the dense path (tests, benchmarks)
        if options.gain == "auto":
            k_out, k_in = block_shape(m, n, self.ratio)
            self.gain = san_gain(min(1.0, k_out * k_in / (m * n)), m * n)
        else:
            self.gain = float(options.gain)
        seed = options.seed if seed is None else seed
        self.register_buffer("s", torch.ones((), dtype=torch.float32))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self.register_buffer("input_size", torch.zeros(2, dtype=torch.int64))
        self.register_buffer("seed", torch.tensor(int(seed), dtype=torch.int64))
        self.register_buffer("draws", torch.zeros((), dtype=torch.int64))
        self.register_buffer("refreshes", torch.zeros((), dtype=torch.int64))
        # the dense path's DFT basis of this layer's grid: a cache, not state (rebuilt from the grid when the
        # grid or the device changes), and not a buffer (DDP with broadcast_buffers=True would send it at
        # every forward); compiled refreshes read it as a tensor instead of tracing its construction
        self._basis: torch.Tensor | None = None
        self._basis_key: tuple | None = None
        # Python mirrors of small buffers read on every forward or refresh (no device sync). The seed and
        # the draw counter are read from their buffers at each draw instead (on the device by the dense
        # path): DDP (broadcast_buffers=True) overwrites them with rank 0's, a CUDA graph replay advances
        # the counter without running this Python code.
        self._initialized = False
        self._size: tuple[int, int] | None = None
        self._refreshes = 0
        self._cache = _PeakCache()
        self._warned_stride = False
        self._warned_grid = False

    def extra_repr(self) -> str:
        return (
            f"ratio={self.ratio}, gain={self.gain:.4g}, update_every={self.update_every}, "
            f"momentum={self.momentum}, strided={self.strided!r}, legacy_fft_norm={self.legacy_fft_norm}, "
            f"algorithm={self.algorithm!r}"
        )

    # -- the parametrization -------------------------------------------------------------------------
    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        # clone: a later in-place refresh must not invalidate a graph that saved s
        return weight / self.s.clone()

    # -- constant maintenance ------------------------------------------------------------------------
    def observe_input(self, module: nn.Module, args) -> None:
        """Forward pre-hook: record the input grid; compute s on first use, or when the grid changes
        in training mode (eval mode keeps the stored constant, with a warning the first time)."""
        size = tuple(args[0].shape[-2:])
        if size != self._size:
            self._check_grid(size)
        if not self._initialized or (module.training and size != self._size):
            with named_errors(self.layer_name, self.layer_desc, f"the SAN constant on the {size[0]}x{size[1]} grid"):
                self._set_size(size)
                self._compute(module.parametrizations.weight.original)
        elif size != self._size and not self._warned_grid:
            self._warned_grid = True
            H, W = self._size
            warnings.warn(
                f"SAN {self.label()} in eval mode got a {size[0]}x{size[1]} input; it keeps the constant of "
                f"its {H}x{W} training grid (the constant is defined on the grid it was computed on; a forward "
                "in training mode on the new grid recomputes it). Warned once per layer.",
                CriticNormWarning,
                stacklevel=2,
            )

    def label(self) -> str:
        """``"layer 'name' (description)"`` of the conv this parametrization normalizes, for messages."""
        return layer_label(self.layer_name, self.layer_desc)

    def _check_grid(self, size: tuple[int, int]) -> None:
        """CriticNormError naming the layer when its conv has no output on an H x W input."""
        left, right, top, bottom = self.padding
        kh = (self.kernel_size[0] - 1) * self.dilation[0] + 1
        kw = (self.kernel_size[1] - 1) * self.dilation[1] + 1
        need = (max(kh - top - bottom, 1), max(kw - left - right, 1))
        H, W = size
        if H < need[0] or W < need[1]:
            raise CriticNormError(
                self.layer_name,
                f"critic {self.label()} gets a {H}x{W} input; its conv needs at least {need[0]}x{need[1]} "
                f"(the grid padded by (left, right, top, bottom) = {self.padding} must hold the (dilated) "
                f"{kh}x{kw} kernel). Feed larger inputs or give this layer more padding.",
            )

    def refresh(self, weight: torch.Tensor) -> bool:
        """One critic step: recompute s if this is an ``update_every``-th step. Returns True if it did."""
        due = self._refreshes % self.update_every == 0
        self._refreshes += 1
        self.refreshes.fill_(self._refreshes)
        if not due or self._size is None:  # grid unknown until the first forward, which computes s
            return False
        H, W = self._size
        with named_errors(self.layer_name, self.layer_desc, f"the SAN refresh on the {H}x{W} grid"):
            self._compute(weight)
        return True

    def reset(self) -> None:
        """Back to the state of a fresh conversion: no grid, no constant, no draws or refreshes counted
        (the next forward computes s from the weights it then has). ``load_plain_state_dict`` calls it."""
        self.s.fill_(1.0)
        self.initialized.fill_(False)
        self.input_size.zero_()
        self.draws.zero_()
        self.refreshes.zero_()
        self._initialized, self._size, self._refreshes = False, None, 0
        self._cache = _PeakCache()
        self._basis = self._basis_key = None
        self._warned_grid = False

    def _set_size(self, size: tuple[int, int]) -> None:
        self._size = (int(size[0]), int(size[1]))
        self.input_size[0] = self._size[0]  # fills from host scalars: no host-to-device copy
        self.input_size[1] = self._size[1]

    def algorithm_for(self, device: torch.device) -> str:
        """``"certified"`` or ``"dense"``: how a refresh of weights on ``device`` computes the constant."""
        return resolve_san_algorithm(self.algorithm, device.type)

    def generator_for_next_draw(self) -> torch.Generator:
        """CPU generator of the certified path's next r < 1 draw (reads the seed and draws buffers)."""
        return torch.Generator().manual_seed(mix_seed(int(self.seed), int(self.draws)))

    def next_dense_block(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The dense path's next r < 1 block: sorted out and in channel indices on the buffers' device."""
        m, n = weight.shape[:2]
        return draw_block(m, n, self.ratio, self.seed, self.draws, self.dense_backend)

    def _check_strided_grid(self, H: int, W: int) -> None:
        exact = uses_exact_strided((H, W), self.stride, self.strided)
        if self.strided == "exact" and self.stride != (1, 1) and not exact and not self._warned_stride:
            warnings.warn(
                f"SAN {self.label()}: strided='exact' needs the {H}x{W} grid divisible by the stride "
                f"{self.stride}; using the stride-1 bound for this layer",
                CriticNormWarning,
                stacklevel=4,
            )
            self._warned_stride = True

    @torch.no_grad()
    def constant(self, weight: torch.Tensor) -> torch.Tensor:
        """||W||_{0,inf} (no gain, no EMA) of ``weight`` on the recorded grid, with this layer's draw."""
        H, W = check_input_grid(weight, self._size, self.dilation)
        m, n = weight.shape[:2]
        rows = cols = None
        if self.ratio < 1.0:
            rows, cols = sample_kernel_block(m, n, self.ratio, self.generator_for_next_draw())
        with torch.autocast(weight.device.type, enabled=False):
            w = weight.detach().float()
            if self.legacy_fft_norm:
                if rows is not None:
                    w = w.index_select(0, rows.to(w.device)).index_select(1, cols.to(w.device))
                return legacy_san_constant(w, (H, W))
            self._check_strided_grid(H, W)
            exact = uses_exact_strided((H, W), self.stride, self.strided)
            peaks_of = functools.partial(
                kernel_peaks, input_size=(H, W), stride=self.stride, dilation=self.dilation, strided=self.strided
            )
            flat_idx = None
            if rows is not None:
                rows, cols = rows.to(w.device), cols.to(w.device)
                flat_idx = (rows[:, None] * n + cols[None, :]).reshape(-1)
            key = (H, W, exact, w.device, tuple(w.shape))
            return self._cache.maximum(w, key, peaks_of, chunk_rows((H, W)), flat_idx)

    def recompute(self, weight: torch.Tensor) -> None:
        """Recompute ``s`` now from ``weight`` (no ``update_every`` cadence; the grid must be known).

        With the dense algorithm this is device-only work on the layer's buffers (``s``, ``initialized``,
        ``draws``, ``seed``): the unit to capture in a CUDA graph or a compiled step (warm it up once
        first, which builds the DFT basis and compiles the Triton kernels).
        """
        if self._size is None:
            raise CriticNormError(
                self.layer_name, f"SAN {self.label()} has no input grid yet: run one forward pass first"
            )
        self._compute(weight)

    def dense_basis(self, weight: torch.Tensor) -> torch.Tensor:
        """The dense path's DFT basis for the recorded grid on ``weight``'s device (``san_dense.dense_basis``),
        looked up (host side, once) when the grid, the weight's shape or its device changed; otherwise
        returned as is: no work, and nothing for torch.compile to trace."""
        key = (self._size, weight.shape, weight.device)
        if key != self._basis_key or self._basis is None:
            self._check_strided_grid(*check_input_grid(weight, self._size, self.dilation))
            self._basis = dense_basis(weight, self._size, self.stride, self.dilation, self.strided)
            self._basis_key = key
        return self._basis

    @torch.no_grad()
    def _compute(self, weight: torch.Tensor) -> None:
        if self.algorithm_for(weight.device) == "dense" and not self.legacy_fft_norm:
            dense_refresh_(
                weight, self.s, self.initialized, self.draws, self.seed,
                input_size=self._size, ratio=self.ratio, gain=self.gain, eps=self.eps, momentum=self.momentum,
                stride=self.stride, dilation=self.dilation, strided=self.strided, backend=self.dense_backend,
                basis=self.dense_basis(weight),
            )  # fmt: skip
        else:
            c = self.constant(weight)
            new = c * self.gain + self.eps
            if self._initialized and self.momentum > 0:
                new = self.s * self.momentum + (1.0 - self.momentum) * new
            self.s.copy_(new)
            self.draws.add_(1)
            self.initialized.fill_(True)
        self._initialized = True

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._initialized = bool(self.initialized)
        size = tuple(int(v) for v in self.input_size.tolist())
        self._size = size if self._initialized or any(size) else None
        self._refreshes = int(self.refreshes)
        self._cache = _PeakCache()
