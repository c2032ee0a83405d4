"""SAN constant: Lemma 1 against brute force, FFT oracles, strided modes, eq. 9, sampling, legacy port."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gan_core.norm import kernel_peaks, legacy_san_constant, sample_kernel_block, san_constant, san_gain
from gan_core.norm.certified import certified_max
from gan_core.norm.sparsity_aware import harmonic_number


def circulant_block(kernel: torch.Tensor, H: int, W: int, stride: int = 1) -> torch.Tensor:
    """Dense matrix of x -> cross-correlation of x (H x W, cyclic) with ``kernel``, subsampled by stride.

    Built by applying F.conv2d on a circularly padded grid to every unit impulse: independent of the DFT.
    """
    kh, kw = kernel.shape
    eye = torch.eye(H * W, dtype=torch.float64).reshape(H * W, 1, H, W)
    # wrap by kh-1 / kw-1 at the bottom/right: output (i, j) = sum_ab w[a, b] x[(i + a) % H, (j + b) % W]
    x = F.pad(eye, (0, kw - 1, 0, kh - 1), mode="circular")
    y = F.conv2d(x, kernel.double()[None, None], stride=stride)
    return y.reshape(H * W, -1).T  # (outputs, inputs)


def brute_force_san(weight: torch.Tensor, H: int, W: int, stride: int = 1) -> float:
    """sup over 1-sparse unit inputs of the largest output-channel norm = max_ij sigma_max(A_ij)."""
    m, n = weight.shape[:2]
    return max(
        float(torch.linalg.matrix_norm(circulant_block(weight[i, j], H, W, stride), ord=2))
        for i in range(m)
        for j in range(n)
    )


@pytest.mark.parametrize(("k", "H", "W"), [(3, 6, 5), (4, 8, 8), (2, 7, 9)])
def test_lemma1_matches_brute_force(k, H, W):
    w = torch.randn(3, 2, k, k, dtype=torch.float64)
    assert float(san_constant(w, (H, W))) == pytest.approx(brute_force_san(w, H, W), rel=1e-5)


def test_one_sparse_maximiser_attains_the_constant():
    """The cosine at the arg-max frequency in the arg-max input channel reaches the bound (docs/algorithms.md §1.2)."""
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    H, W = 10, 12
    spec = torch.fft.fft2(w, s=(H, W)).abs()
    _, j, u, v = np.unravel_index(int(spec.argmax()), spec.shape)
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    x = torch.zeros(1, 3, H, W, dtype=torch.float64)
    x[0, j] = torch.cos(2 * math.pi * (u * yy / H + v * xx / W))
    x = x / x.norm()
    y = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="circular"), w)
    gain = float(y[0].flatten(1).norm(dim=1).max())
    assert gain == pytest.approx(float(san_constant(w, (H, W))), rel=1e-6)


def test_matches_fft2_and_rfft2_maxima():
    w = torch.randn(16, 8, 4, 4) * 0.1
    for H, W in [(32, 32), (17, 23), (16, 40)]:
        full = torch.fft.fft2(w, s=(H, W)).abs().amax()
        half = torch.fft.rfft2(w, s=(H, W)).abs().amax()
        ours = san_constant(w, (H, W))
        assert torch.allclose(full, half, rtol=1e-6)
        assert float(ours) == pytest.approx(float(full), rel=1e-5)
        assert ours.dtype == torch.float32 and ours.dim() == 0


def test_non_square_grid_orientation():
    # [1, -1] along the width: |DFT|(v) = 2 |sin(pi v / W)|, which reaches 2 only when W is even
    w = torch.tensor([[[[1.0, -1.0]]]])
    assert float(san_constant(w, (6, 5))) == pytest.approx(2 * math.cos(math.pi / 10), rel=1e-6)
    assert float(san_constant(w, (5, 6))) == pytest.approx(2.0, rel=1e-6)
    w2 = torch.randn(2, 3, 3, 5, dtype=torch.float64)
    assert float(san_constant(w2, (6, 10))) == pytest.approx(brute_force_san(w2, 6, 10), rel=1e-5)
    assert float(san_constant(w2, (10, 6))) == pytest.approx(brute_force_san(w2, 10, 6), rel=1e-5)


def test_strided_exact_and_bound():
    w = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    H = W = 8
    exact = float(san_constant(w, (H, W), stride=2, strided="exact"))
    bound = float(san_constant(w, (H, W), stride=2, strided="bound"))
    assert exact == pytest.approx(brute_force_san(w, H, W, stride=2), rel=1e-5)
    assert bound == pytest.approx(float(san_constant(w, (H, W))), rel=1e-7)  # bound = stride-1 formula
    assert bound >= exact * (1 - 1e-6)
    assert bound > exact * 1.05  # for generic kernels the bound is strictly looser
    # odd grid: the exact formula does not apply, the bound is used
    assert float(san_constant(w, (9, 9), stride=2, strided="exact")) == pytest.approx(
        float(san_constant(w, (9, 9))), rel=1e-7
    )


def test_dilation():
    w = torch.randn(2, 2, 3, 3, dtype=torch.float64)
    dilated = torch.zeros(2, 2, 5, 5, dtype=torch.float64)
    dilated[..., ::2, ::2] = w
    assert float(san_constant(w, (12, 10), dilation=2)) == pytest.approx(float(san_constant(dilated, (12, 10))), 1e-6)


@pytest.mark.parametrize(
    ("num_filters", "ratio", "expected"),
    # docs/algorithms.md §1.5 table (computed there from the harmonic numbers)
    [
        (4096, 0.25, 1.1846),
        (192, 0.5, 1.134),
        (192, 0.01, 5.837),
        (2496, 0.25, 1.198),
        (262144, 0.01, 1.545),
        (512, 0.0625, 1.680),
        (131072, 0.10, 1.229),
    ],
)
def test_eq9_gain_values(num_filters, ratio, expected):
    assert san_gain(ratio, num_filters) == pytest.approx(expected, abs=6e-4)


def test_eq9_gain_edges_and_harmonic_numbers():
    assert san_gain(1.0, 1) == 1.0 and san_gain(1.0, 262144) == 1.0
    for k in (1, 7, 2000, 2001, 5000, 123457):  # series vs exact sum across the switch point
        assert harmonic_number(k) == pytest.approx(math.fsum(1.0 / j for j in range(1, k + 1)), rel=1e-14)
    # eq. 9 literally: sum_{j=1}^{mn} 1 / (mn - j + 1) over sum_{j=1}^{floor(mn r)} 1 / (floor(mn r) - j + 1)
    mn, r = 300, 0.3
    k = math.floor(mn * r)
    literal = sum(1 / (mn - j + 1) for j in range(1, mn + 1)) / sum(1 / (k - j + 1) for j in range(1, k + 1))
    assert san_gain(r, mn) == pytest.approx(literal, rel=1e-12)
    with pytest.raises(ValueError, match="samples no kernel"):
        san_gain(0.001, 100)


def test_sampling_block_semantics():
    g = torch.Generator().manual_seed(3)
    rows, cols = sample_kernel_block(64, 39, 0.25, g)
    assert (len(rows), len(cols)) == (32, 20)  # round(0.5*64), round(0.5*39 = 19.5) half up
    assert len(set(rows.tolist())) == 32 and rows.max() < 64 and cols.max() < 39
    rows, cols = sample_kernel_block(1, 3, 0.01, g)
    assert (len(rows), len(cols)) == (1, 1)  # at least one channel each way
    w = torch.randn(64, 39, 4, 4)
    r1, c1 = sample_kernel_block(64, 39, 0.25, torch.Generator().manual_seed(11))
    sub = w[r1][:, c1]
    sampled = san_constant(w, (32, 64), ratio=0.25, generator=torch.Generator().manual_seed(11))
    assert float(sampled) == pytest.approx(float(san_constant(sub, (32, 64))), rel=1e-6)
    assert float(sampled) <= float(san_constant(w, (32, 64))) * (1 + 1e-6)
    other = san_constant(w, (32, 64), ratio=0.25, generator=torch.Generator().manual_seed(12))
    assert float(other) != float(sampled)
    # ratio 1 uses every kernel whatever the generator
    assert float(san_constant(w, (32, 64), 1.0, torch.Generator().manual_seed(5))) == float(san_constant(w, (32, 64)))


def official_port(weight: torch.Tensor, input_size) -> torch.Tensor:
    """The four lines of SANGAN's ``Sparse.W_`` (torch >= 1.7), with x.size() = (B, C, H, W)."""
    x_size = (1, weight.shape[1], *input_size)
    w_fft = F.pad(weight, (0, x_size[2] - weight.size(2), 0, x_size[3] - weight.size(3)))
    w_fft = torch.fft.fft2(w_fft)
    r = torch.norm(w_fft, p=2, dim=-1)
    return r.max()


def numpy_restatement(weight: np.ndarray, H: int, W: int) -> float:
    """docs/algorithms.md §1.6 in words: kernel padded to (kh + W - kw) x (kw + H - kh), 2-D DFT, L2 norm over
    the last frequency axis (energy of a row of frequencies), max over everything."""
    m, n, kh, kw = weight.shape
    padded = np.zeros((m, n, kh + W - kw, kw + H - kh))
    padded[:, :, :kh, :kw] = weight
    spec = np.fft.fft2(padded)
    return float(np.sqrt((np.abs(spec) ** 2).sum(axis=-1)).max())


@pytest.mark.parametrize("size", [(16, 16), (12, 20)])
def test_legacy_switch_reproduces_official_port(size):
    w = torch.randn(40, 6, 4, 4) * 0.2
    legacy = legacy_san_constant(w, size, chunk_bytes=4096)  # forces many chunks
    assert torch.equal(legacy, official_port(w, size))  # bit for bit
    assert float(legacy) == pytest.approx(numpy_restatement(w.double().numpy(), *size), rel=1e-5)
    # and it is not the paper's quantity: it overestimates (row energy >= any single modulus)
    assert float(legacy) > 1.3 * float(san_constant(w, size))


def test_certified_max_equals_full_scan_on_adversarial_kernels():
    """Near-ties, one dominant kernel, zero kernels, and random drifts of every size."""
    torch.manual_seed(1)
    peaks_of = functools.partial(kernel_peaks, input_size=(16, 12))
    base = torch.randn(300, 3, 3)
    cases = [base, base * 0 + base[:1], torch.zeros(50, 3, 3), torch.cat([base, 10 * base[:1]])]
    for kernels in cases:
        value, _, _ = certified_max(kernels, peaks_of, chunk_rows=7)
        assert float(value) == pytest.approx(float(peaks_of(kernels).max()), rel=1e-6, abs=1e-12)
    ref, ref_peaks = base.clone(), peaks_of(base)
    for scale in (1e-6, 1e-3, 1e-1, 10.0):
        moved = ref + scale * torch.randn_like(ref)
        value, idx, _ = certified_max(moved, peaks_of, ref, ref_peaks, chunk_rows=5)
        assert float(value) == pytest.approx(float(peaks_of(moved).max()), rel=1e-6)
    # small moves need only a few kernels transformed
    _, idx, _ = certified_max(ref + 1e-6 * torch.randn_like(ref), peaks_of, ref, ref_peaks, chunk_rows=5)
    assert len(idx) < 30  # out of 300


def test_float32_under_autocast_and_other_dtypes():
    w = torch.randn(8, 8, 3, 3)
    expected = san_constant(w, (16, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = san_constant(w, (16, 16))
    assert got.dtype == torch.float32 and torch.equal(got, expected)
    assert float(san_constant(w.double(), (16, 16))) == pytest.approx(float(expected), rel=1e-6)
    assert float(san_constant(w.bfloat16(), (16, 16))) == pytest.approx(
        float(san_constant(w.bfloat16().float(), (16, 16))), rel=1e-6
    )


def test_error_paths():
    with pytest.raises(ValueError, match="4-D conv weight"):
        san_constant(torch.randn(8, 8), (16, 16))
    with pytest.raises(ValueError, match="4-D conv weight"):
        san_constant(torch.randn(2, 3, 3), (16, 16))
    with pytest.raises(ValueError, match="input size 0x16 is empty"):
        san_constant(torch.randn(2, 2, 4, 4), (0, 16))
    for bad in (0.0, -0.5, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"ratio must be in \(0, 1\]"):
            san_constant(torch.randn(2, 2, 3, 3), (8, 8), ratio=bad)
    with pytest.raises(ValueError, match="strided must be one of"):
        san_constant(torch.randn(2, 2, 3, 3), (8, 8), strided="exactly")
    with pytest.raises(ValueError, match=r"smaller than the .* use legacy_fft_norm=False"):
        legacy_san_constant(torch.randn(2, 2, 4, 4), (2, 2))
