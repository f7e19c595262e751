"""Triton ss2d_scan: the fused four-way scan of SS2D (docs/design.md §2.3) on the shared scan core
(scan.py), with n_dir = 4.

Group k of the core is direction k (rows k*C .. k*C+C-1 of A, D, delta_bias; B[:, k], C[:, k]);
each program reads x, delta, B, C at the spatial positions of its direction's steps, in either
layout, and adds its part of y (and, backward, of dx) into an fp32 buffer shared by the four
directions (per-direction slices summed in order in deterministic mode). Channel-last inputs
have channels contiguous, so a block of channels loads coalesced.
"""

from torch import Tensor
from torch.library import triton_op

from . import scan
from ._common import check_dtype, out_dtype
from .scan import Strides


def _problem(x: Tensor, N: int, channel_last: bool) -> scan.Problem:
    if channel_last:
        b, H, W, c = x.shape

        def plane(t: Tensor) -> Strides:  # (b, H, W, C), shared by the four directions
            return Strides(t.stride(0), 0, t.stride(3), t.stride(1), t.stride(2))

        def per_direction(t: Tensor) -> Strides:  # (b, 4, H, W, C|N)
            return Strides(t.stride(0), t.stride(1), t.stride(4), t.stride(2), t.stride(3))
    else:
        b, c, H, W = x.shape

        def plane(t: Tensor) -> Strides:  # (b, C, H, W)
            return Strides(t.stride(0), 0, t.stride(1), t.stride(2), t.stride(3))

        def per_direction(t: Tensor) -> Strides:  # (b, 4, C|N, H, W)
            return Strides(t.stride(0), t.stride(1), t.stride(2), t.stride(3), t.stride(4))

    return scan.Problem(
        batch=b, H=H, W=W, n_dir=4, n_groups=4, channels=c, d_state=N,
        x_strides=plane, delta_strides=per_direction, bc_strides=per_direction,
    )  # fmt: skip


def launch_fwd(
    x: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None,
    delta_bias: Tensor | None, delta_softplus: bool, channel_last: bool, out_float32: bool,
) -> Tensor:  # fmt: skip
    """y in x's layout: the kernel op zeromamba::ss2d_scan_fwd_triton, with the signature of
    zeromamba::ss2d_scan_fwd."""
    check_dtype("ss2d_scan", x)
    p = _problem(x, A.shape[1], channel_last)
    y_dtype = out_dtype(x.dtype, out_float32)
    return scan.forward(p, x, delta, A, B, C, D, delta_bias, delta_softplus, y_dtype)


def launch_bwd(
    dy: Tensor, x: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None,
    delta_bias: Tensor | None, delta_softplus: bool, channel_last: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """(dx, ddelta, dA, dB, dC, dD, ddelta_bias), each in its input's dtype (dD, ddelta_bias:
    (4C,) in A's dtype, also when D / delta_bias are None): the kernel op
    zeromamba::ss2d_scan_bwd_triton, with the signature of zeromamba::ss2d_scan_bwd."""
    check_dtype("ss2d_scan", x)
    p = _problem(x, A.shape[1], channel_last)
    dx, ddelta, dB, dC, dA, dD, dbias = scan.backward(
        p, dy, x, delta, A, B, C, D, delta_bias, delta_softplus
    )
    return dx, ddelta, dA, dB, dC, dD, dbias


ss2d_scan_fwd = triton_op("zeromamba::ss2d_scan_fwd_triton", launch_fwd, mutates_args=())
ss2d_scan_bwd = triton_op("zeromamba::ss2d_scan_bwd_triton", launch_bwd, mutates_args=())
