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
        batch=b, H=1, W=L, n_dir=1, n_groups=G, channels=channels, d_state=N,
        x_strides=seq, delta_strides=seq, bc_strides=per_group,
    )  # fmt: skip


def launch_fwd(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None,
    delta_bias: Tensor | None, delta_softplus: bool, out_float32: bool,
) -> Tensor:  # fmt: skip
    """y (b, d, L): the kernel op zeromamba::selective_scan_fwd_triton, with the signature of
    zeromamba::selective_scan_fwd."""
    check_dtype("selective_scan", u)
    p = _problem(u, B, A.shape[1])
    y_dtype = out_dtype(u.dtype, out_float32)
    return scan.forward(p, u, delta, A, B, C, D, delta_bias, delta_softplus, y_dtype)


def launch_bwd(
    dy: Tensor, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None,
    delta_bias: Tensor | None, delta_softplus: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """(du, ddelta, dA, dB, dC, dD, ddelta_bias), each in its input's dtype (dD, ddelta_bias:
    (d,) in A's dtype, also when D / delta_bias are None): the kernel op
    zeromamba::selective_scan_bwd_triton, with the signature of zeromamba::selective_scan_bwd."""
    check_dtype("selective_scan", u)
    p = _problem(u, B, A.shape[1])
    du, ddelta, dB, dC, dA, dD, dbias = scan.backward(
        p, dy, u, delta, A, B, C, D, delta_bias, delta_softplus
    )
    return du, ddelta, dA, dB, dC, dD, dbias


selective_scan_fwd = triton_op("zeromamba::selective_scan_fwd_triton", launch_fwd, mutates_args=())
selective_scan_bwd = triton_op("zeromamba::selective_scan_bwd_triton", launch_bwd, mutates_args=())
