"""Triton selective_scan (Mamba S6, docs/design.md §2.1) on the shared scan core (scan.py), with
n_dir = 1.

Rows are the d channels; each of the G groups of d // G channels shares B[:, g] and C[:, g]; the
sequence runs along L (H = 1, W = L in the core's terms).
"""

from torch import Tensor
from torch.library import triton_op

from . import scan
from ._common import check_dtype, out_dtype
from .scan import Strides


def _problem(u: Tensor, B: Tensor, N: int) -> scan.Problem:
    b, d, L = u.shape
    G = B.shape[1]
    channels = d // G  # per group

    def seq(t: Tensor) -> Strides:  # (b, d, L): group g starts at channel g * channels
        return Strides(t.stride(0), channels * t.stride(1), t.stride(1), 0, t.stride(2))

    def per_group(t: Tensor) -> Strides:  # (b, G, N, L)
        return Strides(t.stride(0), t.stride(1), t.stride(2), 0, t.stride(3))

    return scan.Problem(
        batch=b,
        H=1,
        W=L,
        n_dir=1,
        n_groups=G,
        channels=channels,
        d_state=N,
        x_strides=seq,
        delta_strides=seq,
        bc_strides=per_group,
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
    p = _problem(u, B, A.shape[1])
    y_dtype = out_dtype(u.dtype, out_float32)
    return scan.forward(p, u, delta, A, B, C, D, delta_bias, delta_softplus, y_dtype, chunk)


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
    p = _problem(u, B, A.shape[1])
    du, ddelta, dB, dC, dA, dD, dbias = scan.backward(
        p, dy, u, delta, A, B, C, D, delta_bias, delta_softplus, chunk
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
