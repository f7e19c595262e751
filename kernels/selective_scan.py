"""Triton selective_scan (Mamba S6, docs/design.md §2.1) on the shared chunked scan core (scan.py).

Rows are the d channels; a group of d // G channels shares B[:, g] and C[:, g]; the sequence
runs along L (H = 1, W = L in the core's terms).
"""

from torch import Tensor
from torch.library import triton_op

from . import scan
from ._alloc import empty
from ._common import check_dtype, out_dtype


def _problem(u: Tensor, B: Tensor, N: int) -> scan.Problem:
    b, d, L = u.shape
    cpg = d // B.shape[1]

    def seq(t: Tensor) -> tuple:  # (b, d, L): group g starts at channel g * cpg
        return (t.stride(0), cpg * t.stride(1), t.stride(1), 0, t.stride(2))

    def groups(t: Tensor) -> tuple:  # (b, G, N, L)
        return (t.stride(0), t.stride(1), t.stride(2), 0, t.stride(3))

    return scan.Problem(
        batch=b,
        H=1,
        W=L,
        rows=d,
        cpg=cpg,
        groups=B.shape[1],
        N=N,
        four_way=False,
        x_strides=seq,
        delta_strides=seq,
        bc_strides=groups,
    )


def launch_fwd(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    delta_bias: Tensor | None,
    delta_softplus: bool,
    out_float32: bool,
    chunk: int | None = None,
) -> Tensor:
    """y (b, d, L); ``chunk`` forces the chunk length (tests of the carry path)."""
    check_dtype("selective_scan", u)
    y = empty(u.shape, out_dtype(u.dtype, out_float32), u.device)
    scan.forward(
        _problem(u, B, A.shape[1]), u, delta, A, B, C, D, delta_bias, delta_softplus, y, chunk
    )
    return y


def launch_bwd(
    dy: Tensor,
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    delta_bias: Tensor | None,
    delta_softplus: bool,
    chunk: int | None = None,
) -> tuple[Tensor, ...]:
    """(du, ddelta, dA, dB, dC, dD, ddelta_bias), each in its input's dtype (dD, ddelta_bias:
    (d,) in A's dtype, also when D / delta_bias are None)."""
    check_dtype("selective_scan", u)
    du = empty(u.shape, u.dtype, u.device)
    ddelta = empty(delta.shape, delta.dtype, u.device)
    dB, dC, dA, dD, dbias = scan.backward(
        _problem(u, B, A.shape[1]),
        dy,
        u,
        delta,
        A,
        B,
        C,
        D,
        delta_bias,
        delta_softplus,
        du,
        ddelta,
        chunk,
    )
    return du, ddelta, dA, dB, dC, dD, dbias


@triton_op("zeromamba::selective_scan_fwd_triton", mutates_args=())
def selective_scan_fwd(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    delta_bias: Tensor | None,
    delta_softplus: bool,
    out_float32: bool,
) -> Tensor:
    """Kernel op of the triton backend: the signature of zeromamba::selective_scan_fwd."""
    return launch_fwd(u, delta, A, B, C, D, delta_bias, delta_softplus, out_float32)


@triton_op("zeromamba::selective_scan_bwd_triton", mutates_args=())
def selective_scan_bwd(
    dy: Tensor,
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    delta_bias: Tensor | None,
    delta_softplus: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Kernel op of the triton backend: the signature of zeromamba::selective_scan_bwd."""
    return launch_bwd(dy, u, delta, A, B, C, D, delta_bias, delta_softplus)
