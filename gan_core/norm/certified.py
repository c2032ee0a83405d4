"""The exact maximum of per-kernel values, transforming only the kernels that can hold it.

For a per-kernel value ``p(w)`` that is 1-Lipschitz in the L1 norm of the kernel (max |DFT(w)| and the
strided RMS form both are: ``|DFT(w)[u,v]| <= ||w||_1``), every kernel gets an interval
``[p(w_ref) - ||w - w_ref||_1, p(w_ref) + ||w - w_ref||_1]`` from a reference (zero kernels when there is
none). The kernels with the largest upper bounds are transformed first; then, in chunks sorted by upper
bound, only those whose bound still reaches the best exact value found so far. Every kernel skipped is
*proven* not to hold the maximum, so the result equals the full computation (up to float32 rounding,
covered by ``REL_SLACK`` on the bounds). See ``sparsity_aware`` for how SAN uses it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["REL_SLACK", "certified_max"]

REL_SLACK = 1e-4  # float32 rounding margin on the certified bounds


def certified_max(
    kernels: torch.Tensor,
    peaks_of: Callable[[torch.Tensor], torch.Tensor],
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
        (max value 0-dim, indices of the kernels transformed, their exact values). The leading values are
        recomputed one kernel at a time, so the maximum is a function of the kernels alone, whatever the
        reference (cached or not) and the chunking.
    """
    K = kernels.shape[0]
    if ref_kernels is None:
        base = torch.zeros(K, dtype=torch.float32, device=kernels.device)
        drift = kernels.abs().sum(dim=(1, 2))
    else:
        base = ref_peaks
        drift = torch.sub(kernels, ref_kernels).abs_().sum(dim=(1, 2))
    upper = (base + drift).mul_(1 + REL_SLACK)
    lower = (base - drift).mul_(1 - REL_SLACK)
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
    lead = torch.nonzero(vals >= vals.max() * (1 - REL_SLACK)).squeeze(1)
    canon = torch.cat([peaks_of(kernels[idx[j] : idx[j] + 1]) for j in lead.tolist()])
    vals = vals.index_copy(0, lead, canon)
    return canon.max(), idx, vals
