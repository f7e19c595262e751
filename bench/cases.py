"""The benchmark cases: shapes, the ops under test (ours and our unfused pipeline) and how each
implementation takes the case inputs. Inputs come from ``zeromamba.testing``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from zeromamba import ops, reference

Fn = Callable[..., torch.Tensor]

# (b, C, H, W, N): VMamba-T stages at 224 px (CPU) and VMamba-S stages at 448 px (GPU).
CPU_SS2D = [
    (2, 192, 56, 56, 1),
    (2, 192, 56, 56, 16),
    (2, 384, 28, 28, 1),
    (2, 768, 14, 14, 1),
    (2, 1536, 7, 7, 1),
]
GPU_SS2D = [
    (32, 192, 112, 112, 1),
    (32, 384, 56, 56, 1),
    (32, 768, 28, 28, 1),
    (32, 1536, 14, 14, 1),
]
CPU_SCAN = [(2, 768, 3136, 1, 1)]  # (b, d, L, N, G)
CPU_SCAN_WIDE = (1, 768, 1024, 16, 1)  # Mamba's d_state = 16: the mambapy ratio's shape dependence
CPU_SLP = [(4, 312, 768, 196)]  # (b, A, F, R): the CUB shape scaled to CPU
GPU_SLP = [(32, 312, 768, 196)]
# --quick: tiny shapes (odd, non-power-of-two L) for the smoke test.
QUICK_SS2D = [(1, 4, 3, 5, 1), (1, 4, 3, 5, 2)]
QUICK_SCAN = [(1, 8, 13, 1, 1)]
QUICK_SLP = [(2, 12, 32, 10)]
QUICK_GPU_SS2D = [(1, 4, 3, 5, 1)]

CPU_STAGE1 = (2, 192, 56, 56, 1)  # where the CPU ss2d targets are defined (the performance targets)


def ss2d_case(b: int, c: int, H: int, W: int, N: int) -> str:
    return f"b={b} C={c} {H}x{W} N={N}"


def to_scan_order(t: torch.Tensor) -> torch.Tensor:
    """(b, 4, X, H, W) per-direction map -> (b, 4, X, L): direction k in its own scan order.

    This is the layout an unfused SS2D already has for delta, B and C (VMamba projects them
    from the cross-scanned x), so the unfused pipelines get it for free, outside the timing.
    """
    b, k, X, H, W = t.shape
    pos = reference.scan_positions(H, W, t.device)
    return t.flatten(3).gather(3, pos[None, :, None, :].expand(b, k, X, H * W))


def unfused_ss2d_layout(i: dict) -> tuple[torch.Tensor, ...]:
    """ss2d inputs (spatial) -> unfused_ss2d arguments (delta (b, 4C, L), B/C (b, 4, N, L))."""
    b, c = i["x"].shape[:2]
    delta = to_scan_order(i["delta"]).reshape(b, 4 * c, -1)
    return (
        i["x"],
        delta,
        i["A"],
        to_scan_order(i["B"]),
        to_scan_order(i["C"]),
        i["D"],
        i["delta_bias"],
    )


def unfused_ss2d(backend: str, out_float32: bool) -> Fn:
    """Our unfused SS2D: ops.cross_scan -> ops.selective_scan (``backend``) -> ops.cross_merge."""

    def run(x, delta, A, B, C, D, delta_bias):
        b, c, H, W = x.shape
        us = ops.cross_scan(x).view(b, 4 * c, H * W)
        ys = ops.selective_scan(
            us, delta, A, B, C, D, delta_bias, True, out_float32=out_float32, backend=backend
        )
        return ops.cross_merge(ys.view(b, 4, c, H * W), H, W)

    return run


def fused_ss2d(backend: str, out_float32: bool) -> Fn:
    def run(x, delta, A, B, C, D, delta_bias):
        return ops.ss2d_scan(
            x, delta, A, B, C, D, delta_bias, True, out_float32=out_float32, backend=backend
        )

    return run


def scan_op(backend: str) -> Fn:
    def run(u, delta, A, B, C, D, delta_bias):
        return ops.selective_scan(u, delta, A, B, C, D, delta_bias, True, backend=backend)

    return run


def slp_op(backend: str) -> Fn:
    return lambda feat, q1, q2: ops.slp_project(feat, q1, q2, backend=backend)


def _spatial(i: dict) -> tuple[torch.Tensor, ...]:
    return tuple(i[k] for k in ("x", "delta", "A", "B", "C", "D", "delta_bias"))


def _scan_args(i: dict) -> tuple[torch.Tensor, ...]:
    return tuple(i[k] for k in ("u", "delta", "A", "B", "C", "D", "delta_bias"))


def _slp_args(i: dict) -> tuple[torch.Tensor, ...]:
    return i["feat"], i["q1"], i["q2"]


@dataclass
class Impl:
    """One implementation of a case: ``layout`` maps the case inputs to its arguments (untimed),
    ``run`` computes the output from them (timed)."""

    name: str
    run: Fn
    layout: Callable[[dict], tuple[torch.Tensor, ...]]
    memory: bool = True  # measure peak memory (skipped for the reference loop: minutes)
    full_only_n1: bool = False  # the reference loop's backward is quadratic in L; N = 1 only
