"""Sparsity Aware Normalization (SAN): the constant ||W||_{0,inf} of a conv layer, exactly and fast.

Kligvasser & Michaeli, "Sparsity Aware Normalization for GANs" (AAAI 2021). For a conv layer with
kernels ``w_ij`` (out channel i, in channel j) and cyclic padding on an H x W grid, Lemma 1 (eq. 8):

    ||W||_{0,inf} = max_{i,j} max_{u,v} |DFT_{H,W}(w_ij)[u, v]|

the complex modulus of the 2-D DFT of each kernel zero-padded to the layer's *input* size, maximised
over all kernels and frequencies. The normalized weight is ``W / (g * ||W||_{0,inf})`` (g: eq. 9 gain
when only a fraction r of the kernels is sampled). See ../shared/docs/ALGORITHMS.md (a) for the
derivation, the strided variant and the bug of the official torch.fft port (a.6), which
``legacy_fft_norm=True`` reproduces for A/B comparisons only.

How the constant is computed (all in float32, autocast disabled):

* Transform. A kh x kw kernel has only kh*kw taps, so its DFT on the grid is one small matrix
  product, ``kernels (K, kh*kw) @ basis (kh*kw, 2F)`` with the cos / -sin basis of the F = H*(W//2+1)
  one-sided frequencies (the one-sided half has the same maximum for real kernels). It runs in chunks
  of kernels with a bounded buffer and never materialises the whole spectrum.
* Certified pruning. ``|DFT(w)[u,v]| <= ||w||_1`` and ``| |DFT(w')| - |DFT(w)| | <= ||w' - w||_1`` at
  every frequency (triangle inequality). Each kernel therefore has an upper bound
  ``peak_ref + ||w - w_ref||_1`` and a lower bound ``peak_ref - ||w - w_ref||_1`` from any earlier
  exact value ``peak_ref`` at weights ``w_ref`` (``peak_ref = 0``, ``w_ref = 0`` when none). Kernels are
  transformed in decreasing order of their upper bound, and the scan stops once the next upper bound
  is below the best exact peak found: every kernel skipped is *proven* not to hold the maximum, so the
  result equals the full computation (up to float32 rounding, covered by a 1e-4 relative slack on the
  bounds). A SAN layer keeps ``w_ref`` and the per-kernel peaks between refreshes (a cache, not
  state), so after an optimizer step only the few kernels whose bound still reaches the maximum are
  transformed again. The cost per refresh is one pass over the weights plus those kernels.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

__all__ = [
    "SAN_STRIDED_MODES",
    "kernel_peaks",
    "legacy_san_constant",
    "sample_kernel_block",
    "san_constant",
    "san_gain",
]

SAN_STRIDED_MODES = ("bound", "exact")
DEFAULT_CHUNK_BYTES = 4 << 20  # transform buffer per chunk of kernels: small enough to stay in cache
_REL_SLACK = 1e-4  # float32 rounding margin on the certified bounds
_EULER_GAMMA = 0.5772156649015329


def _pair(x: int | tuple[int, int] | list[int] | torch.Size) -> tuple[int, int]:
    if isinstance(x, int):
        return (x, x)
    t = tuple(int(v) for v in x)
    if len(t) != 2:
        raise ValueError(f"expected an int or a pair, got {x!r}")
    return t  # type: ignore[return-value]


def _check_weight(weight: torch.Tensor) -> None:
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4:
        shape = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise ValueError(f"SAN needs a 4-D conv weight (out, in, kh, kw), got {shape}")


def _check_grid(weight: torch.Tensor, input_size, dilation=(1, 1)) -> tuple[int, int]:
    H, W = _pair(input_size)
    kh = (weight.shape[2] - 1) * dilation[0] + 1
    kw = (weight.shape[3] - 1) * dilation[1] + 1
    if H < kh or W < kw:
        raise ValueError(
            f"input size {H}x{W} is smaller than the (dilated) {kh}x{kw} kernel; "
            "the SAN constant is defined on the layer's input grid"
        )
    return H, W


def _check_ratio(ratio: float) -> float:
    ratio = float(ratio)
    if not (0.0 < ratio <= 1.0) or math.isnan(ratio):
        raise ValueError(f"ratio must be in (0, 1] (fraction of kernel pairs), got {ratio}")
    return ratio


def _harmonic(k: int) -> float:
    """H_k = 1 + 1/2 + ... + 1/k (exact sum for small k, asymptotic series beyond, error < 1e-15)."""
    if k <= 2000:
        return math.fsum(1.0 / j for j in range(1, k + 1))
    k2 = float(k) * k
    return math.log(k) + _EULER_GAMMA + 1 / (2 * k) - 1 / (12 * k2) + 1 / (120 * k2 * k2)


def san_gain(ratio: float, num_filters: int) -> float:
    """Compensation gain of paper eq. 9 for sampling a fraction ``ratio`` of ``num_filters`` kernels.

    ``g = H_{m*n} / H_{floor(m*n*r)}`` with ``H_k`` the k-th harmonic number: the ratio of the expected
    maxima of m*n and of floor(m*n*r) i.i.d. exponential draws.

    >>> round(san_gain(0.25, 4096), 4)
    1.1846
    >>> san_gain(1.0, 192)
    1.0
    """
    ratio = _check_ratio(ratio)
    num_filters = int(num_filters)
    if num_filters < 1:
        raise ValueError(f"num_filters must be >= 1, got {num_filters}")
    k = math.floor(num_filters * ratio + 1e-9)  # the epsilon keeps exact products (e.g. 0.25 * 4096) exact
    if k < 1:
        raise ValueError(f"ratio {ratio} of {num_filters} kernels samples no kernel (floor(m*n*r) = 0)")
    if k >= num_filters:
        return 1.0
    return _harmonic(num_filters) / _harmonic(k)


def sample_kernel_block(
    num_out: int, num_in: int, ratio: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random block of kernels covering a fraction ``ratio`` of the (out, in) pairs.

    As in the official ``ApproxSparse`` class: ``round(sqrt(r) * m)`` out channels and
    ``round(sqrt(r) * n)`` in channels (rounded half up, at least 1 each), drawn without replacement by
    ``torch.randperm`` with ``generator`` (out channels first). Returns sorted CPU index tensors.
    """
    ratio = _check_ratio(ratio)
    root = math.sqrt(ratio)
    k_out = max(1, min(num_out, math.floor(root * num_out + 0.5)))
    k_in = max(1, min(num_in, math.floor(root * num_in + 0.5)))
    rows = torch.randperm(num_out, generator=generator)[:k_out].sort().values
    cols = torch.randperm(num_in, generator=generator)[:k_in].sort().values
    return rows, cols


@functools.lru_cache(maxsize=24)
def _dft_basis(kh: int, kw: int, dh: int, dw: int, H: int, W: int, full: bool, device: str) -> torch.Tensor:
    """(kh*kw, 2F) float32: columns [Re | Im] of exp(-2 pi i (u a dh / H + v b dw / W)) per tap (a, b).

    F = H * Wf with Wf = W (full grid) or W // 2 + 1 (one-sided). Frequencies are ordered (u, v)
    row-major. Phases are reduced modulo the grid in integers before the float64 trigonometry.
    """
    Wf = W if full else W // 2 + 1
    a = torch.arange(kh, dtype=torch.int64) * dh
    b = torch.arange(kw, dtype=torch.int64) * dw
    u = torch.arange(H, dtype=torch.int64)
    v = torch.arange(Wf, dtype=torch.int64)
    pa = torch.outer(a, u) % H  # (kh, H)
    pb = torch.outer(b, v) % W  # (kw, Wf)
    theta = 2 * math.pi * (pa[:, None, :, None].double() / H + pb[None, :, None, :].double() / W)
    theta = theta.reshape(kh * kw, H * Wf)
    return torch.cat([torch.cos(theta), -torch.sin(theta)], dim=1).float().to(device)


def _peak_config(kernel_size, input_size, stride, dilation, strided: str) -> tuple[bool, tuple[int, int]]:
    """Whether the exact strided (aliased RMS) formula applies, and the stride to use."""
    sh, sw = _pair(stride)
    if strided not in SAN_STRIDED_MODES:
        raise ValueError(f"strided must be one of {SAN_STRIDED_MODES}, got {strided!r}")
    H, W = input_size
    exact = strided == "exact" and (sh, sw) != (1, 1) and H % sh == 0 and W % sw == 0
    return exact, (sh, sw)


def kernel_peaks(
    kernels: torch.Tensor,
    input_size: tuple[int, int],
    *,
    stride: int | tuple[int, int] = 1,
    dilation: int | tuple[int, int] = 1,
    strided: str = "bound",
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> torch.Tensor:
    """Per-kernel SAN value: max over frequencies of |DFT_{H,W}(w)| (or the exact strided value).

    Args:
        kernels: (K, kh, kw) real kernels (any float dtype; computed in float32).
        input_size: (H, W) input grid of the layer (before its own padding).
        stride: conv stride; only used by ``strided="exact"``.
        dilation: conv dilation (taps at multiples of it).
        strided: ``"bound"``: Lemma 1 on the input grid, an upper bound for strided convs (the official
            choice). ``"exact"``: for stride s with H, W divisible by s, the exact value
            ``max_{u,v} sqrt(mean_t |DFT(w)[(u,v) + t (H/s, W/s)]|^2)`` over the s^2 aliased frequencies
            (ALGORITHMS.md a.2); grids not divisible by s use the bound.
        chunk_bytes: bound on the transform buffer (kernels are processed in chunks).

    Returns:
        (K,) float32 tensor on the kernels' device.
    """
    if kernels.dim() != 3:
        raise ValueError(f"kernels must be (K, kh, kw), got {tuple(kernels.shape)}")
    K, kh, kw = kernels.shape
    H, W = _pair(input_size)
    dh, dw = _pair(dilation)
    exact, (sh, sw) = _peak_config((kh, kw), (H, W), stride, dilation, strided)
    with torch.autocast(kernels.device.type, enabled=False), torch.no_grad():
        flat = kernels.detach().reshape(K, kh * kw).float()
        basis = _dft_basis(kh, kw, dh, dw, H, W, exact, str(kernels.device))
        nf = basis.shape[1] // 2
        rows = max(1, int(chunk_bytes) // (basis.shape[1] * 4))
        out = torch.empty(K, dtype=torch.float32, device=kernels.device)
        for start in range(0, K, rows):
            spec = flat[start : start + rows] @ basis  # (c, 2F): [Re | Im]
            spec.square_()
            power = spec[:, :nf] + spec[:, nf:]  # |DFT|^2, (c, F)
            if exact:
                c = power.shape[0]
                power = power.view(c, sh, H // sh, sw, W // sw).mean(dim=(1, 3))
            out[start : start + rows] = power.flatten(1).amax(dim=1)
        return out.sqrt_()


def _certified_max(
    kernels: torch.Tensor,
    peaks_of,
    ref_kernels: torch.Tensor | None = None,
    ref_peaks: torch.Tensor | None = None,
    chunk_rows: int = 4096,
    seed_rows: int = 64,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exact max over kernels of ``peaks_of(kernels[idx])``, transforming only kernels that can hold it.

    Args:
        kernels: (K, kh, kw) float32.
        peaks_of: function (k, kh, kw) -> (k,) exact per-kernel values, 1-Lipschitz in the L1 norm of the
            kernel (true for max |DFT| and for the strided RMS form).
        ref_kernels, ref_peaks: earlier kernels and their exact values (same K), or None.
        chunk_rows: kernels per transform call.
        seed_rows: kernels with the largest upper bounds transformed first, to get a good lower bound.

    Returns:
        (max value 0-dim, indices of the kernels transformed, their exact values).
    """
    K = kernels.shape[0]
    if ref_kernels is None:
        base = torch.zeros(K, dtype=torch.float32, device=kernels.device)
        drift = kernels.abs().sum(dim=(1, 2))
    else:
        base = ref_peaks
        drift = torch.sub(kernels, ref_kernels).abs_().sum(dim=(1, 2))
    upper = (base + drift).mul_(1 + _REL_SLACK)
    lower = (base - drift).mul_(1 - _REL_SLACK)
    seed = torch.topk(upper, min(K, seed_rows, chunk_rows)).indices
    seed_vals = peaks_of(kernels[seed])
    best = max(float(lower.max()), float(seed_vals.max()))
    mask = upper >= best
    mask[seed] = False
    cand = torch.nonzero(mask).squeeze(1)
    done_idx, done_val = [seed], [seed_vals]
    if cand.numel():
        cand = cand[torch.argsort(upper[cand], descending=True)]
        neg_upper = -upper[cand]  # ascending
        pos = 0
        while pos < cand.numel():
            # candidates whose upper bound still reaches the best exact value found so far
            reachable = int(torch.searchsorted(neg_upper, torch.tensor([-best], device=neg_upper.device), right=True))
            if pos >= reachable:
                break  # every remaining kernel is bounded below the best exact value
            end = min(pos + chunk_rows, reachable)
            vals = peaks_of(kernels[cand[pos:end]])
            done_idx.append(cand[pos:end])
            done_val.append(vals)
            best = max(best, float(vals.max()))
            pos = end
    idx, vals = torch.cat(done_idx), torch.cat(done_val)
    # Canonical final value: the leading kernels are transformed again one at a time, so the result does
    # not depend on which chunk (i.e. which matrix-product shape) computed them. That makes the constant a
    # function of the weights alone, whatever the cache state: resumed runs reproduce uninterrupted ones.
    lead = torch.nonzero(vals >= vals.max() * (1 - _REL_SLACK)).squeeze(1)
    canon = torch.cat([peaks_of(kernels[idx[j] : idx[j] + 1]) for j in lead.tolist()])
    vals = vals.index_copy(0, lead, canon)
    return canon.max(), idx, vals


def _chunk_rows(input_size, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    H, W = input_size
    return max(1, chunk_bytes // (2 * H * (W // 2 + 1) * 4))


def san_constant(
    weight: torch.Tensor,
    input_size: tuple[int, int],
    ratio: float = 1.0,
    generator: torch.Generator | None = None,
    *,
    stride: int | tuple[int, int] = 1,
    dilation: int | tuple[int, int] = 1,
    strided: str = "bound",
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> torch.Tensor:
    """The paper's ||W||_{0,inf} of a conv weight on an input grid (Lemma 1, eq. 8); no gain applied.

    Args:
        weight: (m, n, kh, kw) conv weight (out, in, kh, kw); any float dtype, computed in float32 even
            under autocast.
        input_size: (H, W) spatial size of the layer's input, before its own (circular) padding.
        ratio: fraction r of the m*n kernel pairs to use (paper semantics, in (0, 1]). r < 1 draws a
            random block of round(sqrt(r) m) out x round(sqrt(r) n) in channels with ``generator``.
        generator: torch.Generator for the draw (CPU); None uses the global RNG.
        stride, dilation, strided: see :func:`kernel_peaks` (default: the official stride-1 bound).
        chunk_bytes: bound on the transform buffer.

    Returns:
        0-dim float32 tensor on ``weight``'s device: max_{i,j,u,v} |DFT_{H,W}(w_ij)[u, v]| over the
        (sampled) kernels. Exact: the certified pruning of the module docstring only skips kernels
        proven not to hold the maximum.

    Example:
        >>> w = torch.zeros(1, 1, 3, 3); w[0, 0, 1, 1] = 2.0  # a scaled delta: |DFT| = 2 everywhere
        >>> float(san_constant(w, (8, 8)))
        2.0
    """
    _check_weight(weight)
    dil = _pair(dilation)
    H, W = _check_grid(weight, input_size, dil)
    ratio = _check_ratio(ratio)
    w = weight.detach()
    if ratio < 1.0:
        rows, cols = sample_kernel_block(w.shape[0], w.shape[1], ratio, generator)
        w = w.index_select(0, rows.to(w.device)).index_select(1, cols.to(w.device))
    m, n, kh, kw = w.shape
    with torch.autocast(w.device.type, enabled=False), torch.no_grad():
        kernels = w.reshape(m * n, kh, kw).float()
        peaks_of = functools.partial(
            kernel_peaks, input_size=(H, W), stride=stride, dilation=dil, strided=strided, chunk_bytes=chunk_bytes
        )
        value, _, _ = _certified_max(kernels, peaks_of, chunk_rows=_chunk_rows((H, W), chunk_bytes))
    return value


def legacy_san_constant(
    weight: torch.Tensor, input_size: tuple[int, int], *, chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> torch.Tensor:
    """What the official SANGAN torch.fft port computes (ALGORITHMS.md a.6); for A/B comparisons only.

    The official ``W_`` pads the kernel with ``F.pad(w, (0, H - kh, 0, W - kw))`` (a transposed
    W x H grid for square kernels), takes ``torch.fft.fft2`` and then ``torch.norm(p=2, dim=-1)``,
    an L2 norm over a whole row of frequencies instead of the complex modulus, and returns the max.
    Here the same operations run chunked over output channels, which leaves every value bit-identical.

    Returns:
        0-dim float32 tensor.
    """
    _check_weight(weight)
    H, W = _check_grid(weight, input_size)
    m, n, kh, kw = weight.shape
    rows = max(1, int(chunk_bytes) // max(1, n * (kh + W - kw) * (kw + H - kh) * 8))
    best = None
    with torch.autocast(weight.device.type, enabled=False), torch.no_grad():
        w = weight.detach().float()
        for start in range(0, m, rows):
            w_fft = F.pad(w[start : start + rows], (0, H - kh, 0, W - kw))
            w_fft = torch.fft.fft2(w_fft)
            r = torch.norm(w_fft, p=2, dim=-1).max()
            best = r if best is None else torch.maximum(best, r)
    return best
