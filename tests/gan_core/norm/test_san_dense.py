"""Dense SAN refresh: equal to the certified path and to a float64 FFT oracle, no host reads, compilable."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from gan_core.norm import apply_critic_norm, norm_constants, refresh_norm_constants, san_constant, san_gain
from gan_core.norm.kernel_dft import exact_matmul_dtype
from gan_core.norm.san_dense import dense_refresh_, dense_san_constant, peak_partials
from gan_core.norm.san_layer import SparsityAwareNorm

HOST_READS = {"_local_scalar_dense", "item", "nonzero", "is_nonzero", "equal", "masked_select", "unique"}
HOST_DATA = {"tensor", "as_tensor", "from_numpy"}  # tensors made from host data (a copy to the device)


def fft_oracle(w: torch.Tensor, size, stride=(1, 1), dilation=(1, 1), exact=False) -> float:
    """max |DFT| (or the aliased RMS of docs/algorithms.md §1.2) of every kernel, from a float64 full-grid FFT."""
    H, W = size
    w = w.detach().double()
    if dilation != (1, 1):
        m, n, kh, kw = w.shape
        d = torch.zeros(m, n, (kh - 1) * dilation[0] + 1, (kw - 1) * dilation[1] + 1, dtype=torch.float64)
        d[..., :: dilation[0], :: dilation[1]] = w
        w = d
    power = torch.fft.fft2(w, s=(H, W)).abs().square()
    if exact:
        sh, sw = stride
        power = power.view(*w.shape[:2], sh, H // sh, sw, W // sw).mean(dim=(2, 4))  # planes u' + p H/sh
    return float(power.amax().sqrt())


def san_of(conv: nn.Module) -> SparsityAwareNorm:
    return conv.parametrizations.weight[0]


def raw(conv: nn.Module) -> torch.Tensor:
    return conv.parametrizations.weight.original


# (weight shape, grid, stride, dilation, strided)
CASES = [
    ((8, 4, 3, 3), (16, 16), 1, 1, "bound"),
    ((6, 5, 4, 4), (17, 23), 1, 1, "bound"),  # odd grid, non-square
    ((5, 3, 4, 4), (16, 12), 2, 1, "exact"),  # exact strided value, 4 aliased planes
    ((3, 4, 4, 4), (12, 18), (2, 3), 1, "exact"),  # 6 planes, anisotropic stride
    ((6, 4, 4, 4), (9, 9), 2, 1, "exact"),  # grid not divisible: the stride-1 bound
    ((4, 3, 3, 3), (12, 10), 1, 2, "bound"),  # dilation
    ((4, 2, 1, 5), (6, 10), 1, 1, "bound"),  # 1x5 kernels
    ((5, 3, 4, 4), (16, 16), 2, 1, "bound"),  # stride with the official bound
]


@pytest.mark.parametrize(("shape", "size", "stride", "dilation", "strided"), CASES)
def test_dense_equals_certified_equals_fft_oracle(shape, size, stride, dilation, strided):
    torch.manual_seed(hash(shape) % 1000)
    w = torch.randn(*shape) * 0.3
    kw = dict(stride=stride, dilation=dilation, strided=strided)
    dense = float(san_constant(w, size, algorithm="dense", **kw))
    certified = float(san_constant(w, size, algorithm="certified", **kw))
    st, dl = (stride, stride) if isinstance(stride, int) else stride, (dilation, dilation)
    exact = strided == "exact" and size[0] % st[0] == 0 and size[1] % st[1] == 0 and st != (1, 1)
    oracle = fft_oracle(w, size, st, dl, exact)
    assert dense == pytest.approx(oracle, rel=2e-6)
    assert certified == pytest.approx(oracle, rel=2e-6)
    assert dense == pytest.approx(certified, rel=1e-6)
    # chunking (memory bound) does not change the value: one kernel per chunk vs everything at once
    tiny = dense_san_constant(w, size, chunk_bytes=1, **kw)
    whole = dense_san_constant(w, size, chunk_bytes=1 << 30, **kw)
    assert float(tiny) == pytest.approx(float(whole), rel=1e-6) and float(whole) == pytest.approx(dense, rel=1e-6)


def test_chunks_bound_the_spectrum_buffer():
    w = torch.randn(16, 8, 3, 3)
    from gan_core.norm.san_dense import dense_basis

    basis = dense_basis(w, (32, 32))  # (9, 2, 1, 32 * 17)
    budget = 3 * 2 * 32 * 17 * 4  # three kernels' spectra
    assert peak_partials(w, basis, chunk_bytes=budget, backend="torch").numel() == -(-128 // 3)
    assert peak_partials(w, basis, chunk_bytes=1 << 30, backend="torch").numel() == 1


def test_sampled_block_with_gain_and_ema_on_a_layer():
    conv = apply_critic_norm(
        nn.Conv2d(16, 24, 3, padding=1), "san", ratio=0.25, gain="auto", momentum=0.8, seed=5, algorithm="dense"
    )
    san = san_of(conv)
    g = san_gain(12 * 8 / (24 * 16), 24 * 16)
    assert san.gain == pytest.approx(g)
    expected = None
    for step in range(3):
        rows, cols = san.next_dense_block(raw(conv))
        assert (len(rows), len(cols)) == (12, 8) and bool((rows[1:] > rows[:-1]).all())
        with torch.no_grad():
            block = raw(conv)[rows][:, cols]
        c = g * fft_oracle(block, (12, 12)) + 1e-8
        expected = c if expected is None else 0.8 * expected + 0.2 * c
        if step == 0:
            conv.train()(torch.randn(1, 16, 12, 12))  # the first forward computes s (draw 0)
        else:
            assert refresh_norm_constants(conv) == 1
        assert float(san.s) == pytest.approx(expected, rel=2e-6)
        assert int(san.draws) == step + 1
        with torch.no_grad():
            raw(conv).add_(0.05 * torch.randn_like(raw(conv)))


def test_device_draws_are_deterministic_distinct_and_spread():
    from gan_core.norm.san_dense import draw_block
    from gan_core.norm.san_draws import draw_keys

    seed = torch.tensor(1234567890123)
    keys = draw_keys(4096, 300, seed, torch.tensor(0))
    assert len(set(keys[:4096].tolist())) == 4096 and len(set(keys[4096:].tolist())) == 300  # no ties
    counts = torch.zeros(20, dtype=torch.int64)
    blocks = set()
    for d in range(400):
        rows, cols = draw_block(20, 10, 0.25, seed, torch.tensor(d))
        assert (len(rows), len(cols)) == (10, 5)
        assert torch.equal(rows, draw_block(20, 10, 0.25, seed, torch.tensor(d))[0])  # a function of (seed, d)
        counts[rows] += 1
        blocks.add((tuple(rows.tolist()), tuple(cols.tolist())))
    assert len(blocks) == 400  # a fresh block at every draw
    assert int(counts.min()) > 150 and int(counts.max()) < 250  # each out channel ~1/2 of the time (sd 10)
    other = draw_block(20, 10, 0.25, torch.tensor(7), torch.tensor(0))
    assert not torch.equal(other[0], draw_block(20, 10, 0.25, seed, torch.tensor(0))[0])


def test_hash_is_lowbias32():
    from gan_core.norm.san_draws import hash32

    def reference(x: int) -> int:  # C. Wellons' lowbias32 on Python ints
        x ^= x >> 16
        x = (x * 0x7FEB352D) & 0xFFFFFFFF
        x ^= x >> 15
        x = (x * 0x846CA68B) & 0xFFFFFFFF
        return x ^ (x >> 16)

    xs = [0, 1, 2, 0xFFFFFFFF, 0x80000000, *torch.randint(0, 2**32, (200,), dtype=torch.int64).tolist()]
    assert hash32(torch.tensor(xs)).tolist() == [reference(x) for x in xs]


class RecordOps(TorchDispatchMode):
    """Names of the aten ops run, and the devices of every tensor they see."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []
        self.devices: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.ops.append(func.overloadpacket.__name__)
        self.devices |= {t.device.type for t in tree_leaves((args, kwargs, out)) if isinstance(t, torch.Tensor)}
        return out


class RecordCalls(TorchFunctionMode):
    """Names of the torch functions called (sees factories that the dispatcher does not, e.g.
    ``torch.tensor(data, device=...)``, a host-to-device copy)."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.names.add(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


def small_critic(algorithm: str, ratio: float = 0.25) -> nn.Sequential:
    torch.manual_seed(0)
    D = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.LeakyReLU(0.1), nn.Conv2d(8, 16, 4, 2, 1))
    return apply_critic_norm(D, "san", ratio=ratio, momentum=0.5, gain="auto", algorithm=algorithm, strided="exact")


def test_dense_refresh_reads_nothing_back_to_the_host():
    """The proof that the dense refresh never synchronizes: on meta tensors (no data: any .item(), float(),
    .tolist(), nonzero or data-dependent shape raises) every op sees only meta tensors and no tensor is
    made from host data (nothing copied in), and on CPU no op that reads a value to the host runs. The
    certified path is the control."""
    for algorithm, expect_reads in [("dense", False), ("certified", True)]:
        D = small_critic(algorithm)
        D.train()(torch.randn(2, 3, 16, 16))  # records the grids, builds the bases
        with RecordOps() as rec:
            refresh_norm_constants(D)
        assert bool(HOST_READS & set(rec.ops)) == expect_reads, (algorithm, sorted(HOST_READS & set(rec.ops)))
    D = small_critic("dense").to("meta")
    D.train()(torch.randn(2, 3, 16, 16, device="meta"))
    refresh_norm_constants(D)  # warm: the bases move to the device once per grid
    with RecordOps() as rec, RecordCalls() as calls:
        for _ in range(2):
            refresh_norm_constants(D)
    assert rec.devices == {"meta"} and "mm" in rec.ops and "sort" in rec.ops
    assert not HOST_READS & set(rec.ops) and not HOST_DATA & calls.names


def test_dense_refresh_compiles_as_one_graph():
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    graphs = []

    def keep(gm, _):
        graphs.append(gm)
        return make_boxed_func(gm.forward)

    D = small_critic("dense")
    D.train()(torch.randn(2, 3, 16, 16))
    twin = copy.deepcopy(D)
    pairs = [(c, san_of(c)) for c in (D[0], D[2])]
    twins = [(c, san_of(c)) for c in (twin[0], twin[2])]

    def recompute_all(layers):
        for conv, san in layers:
            san.recompute(raw(conv))

    torch._dynamo.reset()
    compiled = torch.compile(recompute_all, fullgraph=True, backend=aot_autograd(fw_compiler=keep))
    for _ in range(3):  # replays draw new blocks and follow the weights, as eager does, bit for bit
        compiled(pairs)
        recompute_all(twins)
        assert norm_constants(D) == norm_constants(twin)
        assert [int(s.draws) for _, s in pairs] == [int(s.draws) for _, s in twins]
        with torch.no_grad():
            for (a, _), (b, _) in zip(pairs, twins, strict=True):
                noise = 0.1 * torch.randn_like(raw(a))
                raw(a).add_(noise), raw(b).add_(noise)
    assert len(graphs) == 1  # one graph, compiled once: static shapes, no graph break
    ops = {str(n.target).split(".")[1] for n in graphs[0].graph.nodes if str(n.target).startswith("aten.")}
    assert "mm" in ops and not HOST_READS & ops
    assert not {"cos", "sin"} & ops  # the basis is an input, not rebuilt


def test_training_sequence_gives_the_same_constants_with_both_algorithms():
    from sr_app.models import SRCritic

    def run(algorithm: str) -> list[list[float]]:
        torch.manual_seed(0)
        D = SRCritic("san", num_blocks=2, width=32, algorithm=algorithm).train()
        opt = torch.optim.Adam(D.parameters(), lr=1e-3, betas=(0.5, 0.9))
        gen = torch.Generator().manual_seed(1)
        trace = []
        for _ in range(4):
            refresh_norm_constants(D)
            x = torch.rand(2, 3, 16, 16, generator=gen)
            loss = torch.relu(1 - D(x)).mean() + torch.relu(1 + D(x.flip(-1))).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            trace.append(list(norm_constants(D).values()))
        refresh_norm_constants(D)
        convs = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
        for conv in convs:  # the constants in use are those of the current weights (independent oracle)
            assert float(san_of(conv).s) - 1e-8 == pytest.approx(fft_oracle(raw(conv), san_of(conv)._size), rel=2e-6)
        return trace

    dense, certified = torch.tensor(run("dense")), torch.tensor(run("certified"))
    torch.testing.assert_close(dense, certified, rtol=1e-5, atol=0)
    assert float(((dense[-1] - dense[0]) / dense[0]).abs().max()) > 1e-3  # the weights (and constants) moved


def test_state_dict_round_trip_resumes_identical_dense_draws():
    def make(seed):
        torch.manual_seed(seed)
        return small_critic("dense")

    A = make(0).train()
    opt = torch.optim.Adam(A.parameters(), 1e-2)
    x = torch.randn(2, 3, 16, 16)
    for _ in range(3):
        refresh_norm_constants(A)
        A(x).mean().backward()
        opt.step(), opt.zero_grad()
    B = make(1)
    B.load_state_dict(A.state_dict())
    assert "2.parametrizations.weight.0.basis" not in A.state_dict()  # a cache, not state
    B.train()
    for _ in range(3):  # the next blocks, the EMA and the constants continue identically
        blocks_a = [t for c in (A[0], A[2]) for t in san_of(c).next_dense_block(raw(c))]
        blocks_b = [t for c in (B[0], B[2]) for t in san_of(c).next_dense_block(raw(c))]
        assert all(torch.equal(p, q) for p, q in zip(blocks_a, blocks_b, strict=True))
        refresh_norm_constants(A), refresh_norm_constants(B)
        assert norm_constants(A) == norm_constants(B)


def test_dense_on_cpu_end_to_end_in_apply_critic_norm():
    D = small_critic("dense", ratio=1.0)
    san = san_of(D[2])
    assert san.algorithm_for(torch.device("cpu")) == "dense" and "algorithm='dense'" in repr(D)
    x = torch.randn(2, 3, 16, 16)
    out = D.train()(x)
    out.mean().backward()
    assert raw(D[2]).grad is not None and torch.isfinite(raw(D[2]).grad).all()
    exact = fft_oracle(raw(D[2]), (16, 16), (2, 2), exact=True)  # strided="exact": 16x16 input, stride 2
    assert float(san.s) - 1e-8 == pytest.approx(exact, rel=2e-6)
    h = D[1](D[0](x)).detach()
    expected = F.conv2d(F.pad(h, (1, 1, 1, 1), mode="circular"), raw(D[2]) / san.s, D[2].bias, stride=2)
    torch.testing.assert_close(D[2](h), expected)
    # auto: certified on the CPU, with the same constant
    auto = small_critic("auto", ratio=1.0)
    auto.train()(x)
    assert san_of(auto[2]).algorithm_for(torch.device("cpu")) == "certified"
    assert float(san_of(auto[2]).s) == pytest.approx(float(san.s), rel=1e-6)


def test_reduced_matmul_precision_keeps_the_constant_exact():
    w = torch.randn(12, 6, 4, 4)
    oracle = fft_oracle(w, (20, 20))
    previous = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")  # would allow bf16 products
        assert exact_matmul_dtype(torch.device("cpu")) == torch.float64
        for algorithm in ("dense", "certified"):
            assert float(san_constant(w, (20, 20), algorithm=algorithm)) == pytest.approx(oracle, rel=2e-6)
    finally:
        torch.set_float32_matmul_precision(previous)
    assert exact_matmul_dtype(torch.device("cpu")) == torch.float32


def test_dense_refresh_function_on_plain_buffers():
    w = torch.randn(6, 4, 3, 3)
    s, init = torch.ones(()), torch.zeros((), dtype=torch.bool)
    draws, seed = torch.zeros((), dtype=torch.int64), torch.tensor(3)
    dense_refresh_(w, s, init, draws, seed, input_size=(10, 10), gain=2.0, eps=0.5, momentum=0.5)
    first = 2.0 * fft_oracle(w, (10, 10)) + 0.5  # first value bias-free
    assert float(s) == pytest.approx(first, rel=2e-6) and bool(init) and int(draws) == 1
    dense_refresh_(2 * w, s, init, draws, seed, input_size=(10, 10), gain=2.0, eps=0.5, momentum=0.5)
    assert float(s) == pytest.approx(0.5 * first + 0.5 * (4.0 * fft_oracle(w, (10, 10)) + 0.5), rel=2e-6)
    with pytest.raises(ValueError, match="backend must be one of"):
        dense_refresh_(w, s, init, draws, seed, input_size=(10, 10), backend="cuda")
    with pytest.raises(ValueError, match="input size 2x0 is empty"):
        dense_refresh_(w, s, init, draws, seed, input_size=(2, 0))
