"""The byte model: the minimal bytes an op must move, the denominator of every GB/s figure, and
the device copy bandwidth those figures are compared with."""

from __future__ import annotations

from collections.abc import Callable

import torch

from bench.timing import Timing


def ss2d_min_bytes(
    b: int, c: int, H: int, W: int, N: int, in_bytes: int, out_bytes: int, mode: str
) -> int:
    """The minimal bytes an ss2d_scan pass must move , the GB/s denominator.

    Forward: reads x (b*C*L), delta (b*4C*L), B and C (2 * b*4*N*L) once in the input dtype and
    writes y (b*C*L) once in the output dtype.
    Backward: reads dy (output dtype), x, delta, B, C and writes dx, ddelta, dB, dC (input dtype).
    fwd+bwd: the sum. A, D and delta_bias (4C*(N+2) fp32) are negligible and not counted; so is
    anything recomputed or re-read (a kernel that re-reads its inputs is charged for it in time).
    """
    L = H * W
    inputs = b * c * L + b * 4 * c * L + 2 * b * 4 * N * L  # x, delta, B, C
    fwd = inputs * in_bytes + b * c * L * out_bytes
    bwd = b * c * L * out_bytes + 2 * inputs * in_bytes
    return {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}[mode]


def copy_bandwidth(
    timer: Callable[[Callable[[], object]], Timing], device: str, nbytes: int
) -> float:
    """Device-to-device copy bandwidth in GB/s (read + write) of an ``nbytes`` buffer."""
    src = torch.empty(nbytes // 2, dtype=torch.bfloat16, device=device).normal_()
    dst = torch.empty_like(src)
    t = timer(lambda: dst.copy_(src))
    return 2 * nbytes / (t.ms * 1e-3) / 1e9
