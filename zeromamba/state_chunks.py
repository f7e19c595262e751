"""selective_scan with more states than one kernel launch takes (16 < N <= 256).

The N states of a channel are independent recurrences that only meet in the output sum
``y = sum_n C_n h_n + D u``, so a scan with N states is exactly the sum of scans over disjoint
chunks of at most 16 states (D added by the first chunk only). The backward splits the same way:
du, ddelta and ddelta_bias add up over the chunks, dA, dB and dC are the chunks' slices side by
side, and dD comes from the first chunk. The kernels keep their specialised N <= 16 paths; each
extra chunk re-reads u and delta and recomputes softplus(delta), nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from .checks import MAX_D_STATE
from .reference import compute_dtype, output_dtype


def needs_chunks(A: Tensor) -> bool:
    return A.shape[1] > MAX_D_STATE


def _chunks(A: Tensor, B: Tensor, C: Tensor, D: Tensor | None) -> Iterator[tuple]:
    """(A, B, C, D) of each chunk of at most 16 states, in order; D goes with the first only."""
    for i, s in enumerate(range(0, A.shape[1], MAX_D_STATE)):
        n = slice(s, s + MAX_D_STATE)
        yield A[:, n], B[:, :, n], C[:, :, n], D if i == 0 else None


def forward(
    run: Callable[..., Tensor], u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
    D: Tensor | None, delta_bias: Tensor | None, delta_softplus: bool, out_float32: bool,
) -> Tensor:  # fmt: skip
    """y of selective_scan; ``run(u, delta, A, B, C, D, delta_bias, softplus, out_float32)`` is
    one kernel launch. Chunks return float32 for half inputs so the sum is not rounded twice."""
    y = None
    for A_k, B_k, C_k, D_k in _chunks(A, B, C, D):
        part = run(u, delta, A_k, B_k, C_k, D_k, delta_bias, delta_softplus, True)
        y = part if y is None else y + part
    return y.to(output_dtype(u.dtype, out_float32))


def backward(
    run: Callable[..., tuple[Tensor, ...]], dy: Tensor, u: Tensor, delta: Tensor, A: Tensor,
    B: Tensor, C: Tensor, D: Tensor | None, delta_bias: Tensor | None, delta_softplus: bool,
) -> tuple[Tensor, ...]:  # fmt: skip
    """(du, ddelta, dA, dB, dC, dD, ddelta_bias) like the kernels';
    ``run(dy, u, delta, A, B, C, D, delta_bias, softplus)`` is one kernel launch."""
    ct = compute_dtype(u.dtype)
    du = ddelta = dbias = dD = None
    dAs, dBs, dCs = [], [], []
    for A_k, B_k, C_k, D_k in _chunks(A, B, C, D):
        g = run(dy, u, delta, A_k, B_k, C_k, D_k, delta_bias, delta_softplus)
        # Sums in the compute dtype: half-precision partial gradients would round at each add.
        du = g[0].to(ct) if du is None else du + g[0].to(ct)
        ddelta = g[1].to(ct) if ddelta is None else ddelta + g[1].to(ct)
        dbias = g[6] if dbias is None else dbias + g[6]
        dD = g[5] if dD is None else dD
        dAs.append(g[2])
        dBs.append(g[3])
        dCs.append(g[4])
    return (
        du.to(u.dtype),
        ddelta.to(delta.dtype),
        torch.cat(dAs, dim=1),
        torch.cat(dBs, dim=2),
        torch.cat(dCs, dim=2),
        dD,
        dbias,
    )
