"""Run by test_san_triton.py with TRITON_INTERPRET=1: the Triton kernels on CPU tensors against PyTorch.

Exits non-zero (an AssertionError) on the first disagreement; prints the largest relative difference.
"""

from __future__ import annotations

import os

import torch
from torch import nn

assert os.environ.get("TRITON_INTERPRET") == "1", "set TRITON_INTERPRET=1 before importing triton"

from gan_core.norm import apply_critic_norm, refresh_norm_constants, san_triton  # noqa: E402
from gan_core.norm.san_dense import dense_san_constant, draw_block  # noqa: E402
from gan_core.norm.san_draws import draw_keys  # noqa: E402


def check_keys() -> None:
    for m, n, seed, draw in [(64, 39, 0, 0), (3, 300, -12345678901, 2**33 + 7), (1, 1, 2**62, 5), (257, 2, 7, 1)]:
        s, d = torch.tensor(seed), torch.tensor(draw)
        assert torch.equal(san_triton.triton_draw_keys(m, n, s, d), draw_keys(m, n, s, d)), (m, n, seed, draw)


def check_constants() -> float:
    worst = 0.0
    torch.manual_seed(0)
    cases = [  # (shape, grid, kwargs): tiles with ragged edges in K and F, aliased planes, dilation, K = 1
        ((40, 3, 3, 3), (20, 20), {}),
        ((6, 5, 4, 4), (17, 23), {}),
        ((5, 3, 4, 4), (16, 12), dict(stride=2, strided="exact")),
        ((3, 4, 4, 4), (12, 18), dict(stride=(2, 3), strided="exact")),
        ((4, 3, 3, 3), (12, 10), dict(dilation=2)),
        ((1, 1, 3, 3), (8, 8), {}),
    ]
    for shape, size, kw in cases:
        w = torch.randn(*shape)
        a = dense_san_constant(w, size, backend="triton", **kw)
        b = dense_san_constant(w, size, backend="torch", **kw)
        worst = max(worst, abs(float(a) - float(b)) / float(b))
    w = torch.randn(40, 24, 3, 3)  # a drawn block, gathered by the kernel through the indices
    seed, draw = torch.tensor(11), torch.tensor(4)
    rows, cols = draw_block(40, 24, 0.25, seed, draw, "triton")
    ref_rows, ref_cols = draw_block(40, 24, 0.25, seed, draw, "torch")
    assert torch.equal(rows, ref_rows) and torch.equal(cols, ref_cols)
    a = dense_san_constant(w, (20, 20), rows, cols, backend="triton")
    b = dense_san_constant(w[rows][:, cols].contiguous(), (20, 20), backend="torch")
    worst = max(worst, abs(float(a) - float(b)) / float(b))
    assert worst < 1e-6, worst
    return worst


def check_finalize() -> None:
    partials = torch.rand(37) * 9
    for momentum, was_set in [(0.0, False), (0.9, False), (0.9, True), (0.8, True)]:
        s, init, draws = torch.tensor(2.5), torch.tensor(was_set), torch.tensor(41)
        san_triton.triton_finalize_(partials, s, init, draws, alias=4, gain=1.3, eps=1e-8, momentum=momentum)
        new = (partials.amax() / 4).sqrt() * 1.3 + 1e-8  # the torch finalize, literally
        if momentum > 0 and was_set:
            new = torch.tensor(2.5) * momentum + (1.0 - momentum) * new
        assert torch.equal(s, new), (momentum, was_set, float(s), float(new))  # same bits
        assert bool(init) and int(draws) == 42


def check_layers() -> float:
    worst = 0.0
    nets = {}
    for backend in ("triton", "torch"):
        torch.manual_seed(0)
        D = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1), nn.LeakyReLU(0.1), nn.Conv2d(16, 24, 4, 2, 1))
        apply_critic_norm(D, "san", ratio=0.25, gain="auto", momentum=0.9, algorithm="dense", strided="exact")
        for conv in (D[0], D[2]):
            conv.parametrizations.weight[0].dense_backend = backend
        nets[backend] = D.train()
    x = torch.randn(2, 3, 16, 16)
    for _ in range(3):
        for D in nets.values():
            refresh_norm_constants(D)
            D(x)
            with torch.no_grad():
                D[2].parametrizations.weight.original.mul_(1.01)
        for i in (0, 2):
            a, b = (nets[k][i].parametrizations.weight[0] for k in ("triton", "torch"))
            assert int(a.draws) == int(b.draws) and bool(a.initialized)
            worst = max(worst, abs(float(a.s) - float(b.s)) / float(b.s))
    assert worst < 1e-6, worst
    return worst


def check_compiled() -> None:
    """torch.compile(fullgraph=True) of a Triton-backed refresh: one graph holding the custom ops, whose
    replays equal eager refreshes bit for bit (new draws, current weights)."""
    import copy

    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    graphs = []

    def keep(gm, _):
        graphs.append(gm)
        return make_boxed_func(gm.forward)

    torch.manual_seed(0)
    conv = apply_critic_norm(nn.Conv2d(12, 20, 3, 1, 1), "san", ratio=0.25, momentum=0.9, algorithm="dense")
    san = conv.parametrizations.weight[0]
    san.dense_backend = "triton"
    conv.train()(torch.randn(1, 12, 10, 10))
    twin = copy.deepcopy(conv)
    compiled = torch.compile(san.recompute, fullgraph=True, backend=aot_autograd(fw_compiler=keep))
    for _ in range(3):
        compiled(conv.parametrizations.weight.original)
        twin.parametrizations.weight[0].recompute(twin.parametrizations.weight.original)
        assert torch.equal(san.s, twin.parametrizations.weight[0].s) and int(san.draws) == int(
            twin.parametrizations.weight[0].draws
        )
        with torch.no_grad():
            noise = torch.randn_like(conv.parametrizations.weight.original)
            conv.parametrizations.weight.original.add_(noise)
            twin.parametrizations.weight.original.add_(noise)
    assert len(graphs) == 1
    text = str(graphs[0].graph)
    assert all(f"gan_core.san_{name}" in text for name in ("draw_keys", "peak_partials", "finalize_")), text


if __name__ == "__main__":
    check_keys()
    constants = check_constants()
    check_finalize()
    layers = check_layers()
    check_compiled()
    print(f"OK triton == torch: constants {constants:.1e}, layer refreshes {layers:.1e} (max relative difference)")
