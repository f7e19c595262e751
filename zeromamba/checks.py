"""Input validation shared by the op implementations and their fake kernels.

Every check names the argument and the expected shape, dtype or device, so a user sees at once
which tensor is wrong. The checks are shape-only (no data access), so they also run while
torch.compile traces with fake tensors.
"""

from __future__ import annotations

import torch
from torch import Tensor

MAX_D_STATE = 16  # ss2d_scan, and what one kernel launch of selective_scan handles
# selective_scan takes up to mamba_ssm's limit; above MAX_D_STATE it runs as chunks of states
# (zeromamba/state_chunks.py).
MAX_D_STATE_SELECTIVE = 256
DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _shape(op: str, name: str, t: Tensor | None, expected: tuple, layout: str) -> None:
    if t is None:
        raise ValueError(f"{op}: {name} must be a tensor of shape {layout}, got None")
    if tuple(t.shape) != tuple(expected):
        raise ValueError(
            f"{op}: {name} must have shape {layout} = {tuple(expected)}, got {tuple(t.shape)}"
        )


def _ndim(op: str, name: str, t: Tensor, ndim: int, layout: str) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{op}: {name} must be a tensor of shape {layout}, got {type(t).__name__}")
    if t.dim() != ndim:
        raise ValueError(f"{op}: {name} must have shape {layout}, got {tuple(t.shape)}")


def _dtypes_and_device(op: str, first: str, tensors: dict, params: dict) -> None:
    """Activations share the dtype of the first; parameters are float32 (float64 with float64
    activations); all on one device."""
    x = tensors[first]
    if x.dtype not in DTYPES:
        raise ValueError(
            f"{op}: {first} must be float32, float16, bfloat16 or float64, got {x.dtype}"
        )
    for name, t in tensors.items():
        if t.dtype != x.dtype:
            raise ValueError(
                f"{op}: {name} must have the dtype of {first} ({x.dtype}), got {t.dtype}"
            )
    allowed = (torch.float32, torch.float64) if x.dtype == torch.float64 else (torch.float32,)
    for name, t in params.items():
        if t is not None and t.dtype not in allowed:
            want = " or ".join(str(d) for d in allowed)
            raise ValueError(f"{op}: {name} must be {want}, got {t.dtype}")
    for name, t in {**tensors, **params}.items():
        if t is not None and t.device != x.device:
            raise ValueError(f"{op}: {name} is on {t.device} but {first} is on {x.device}")


def _d_state(op: str, A: Tensor, rows: int, rows_desc: str, max_n: int = MAX_D_STATE) -> int:
    _ndim(op, "A", A, 2, f"({rows_desc}, N)")
    if A.shape[0] != rows:
        raise ValueError(
            f"{op}: A must have shape ({rows_desc}, N) with {rows_desc} = {rows}, "
            f"got {tuple(A.shape)}"
        )
    N = A.shape[1]
    if not 1 <= N <= max_n:
        raise ValueError(f"{op}: d_state N = A.shape[1] must be in 1..{max_n}, got {N}")
    return N


def selective_scan(u, delta, A, B, C, D, delta_bias) -> None:
    """u, delta: (b, d, L); A: (d, N); B, C: (b, G, N, L), d % G == 0; D, delta_bias: (d,)."""
    op = "selective_scan"
    _ndim(op, "u", u, 3, "(b, d, L)")
    b, d, L = u.shape
    _shape(op, "delta", delta, (b, d, L), "(b, d, L)")
    N = _d_state(op, A, d, "d", MAX_D_STATE_SELECTIVE)
    _ndim(op, "B", B, 4, "(b, G, N, L)")
    G = B.shape[1]
    if G < 1 or d % G:
        raise ValueError(f"{op}: B has G = {G} groups, which must divide d = {d}")
    _shape(op, "B", B, (b, G, N, L), "(b, G, N, L)")
    _shape(op, "C", C, (b, G, N, L), "(b, G, N, L)")
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None:
            _shape(op, name, t, (d,), "(d,)")
    _dtypes_and_device(
        op,
        "u",
        {"u": u, "delta": delta, "B": B, "C": C},
        {"A": A, "D": D, "delta_bias": delta_bias},
    )


def ss2d_scan(x, delta, A, B, C, D, delta_bias, channel_last: bool) -> None:
    """Channel-first: x (b, C, H, W), delta (b, 4, C, H, W), B/C (b, 4, N, H, W).
    Channel-last: x (b, H, W, C), delta (b, 4, H, W, C), B/C (b, 4, H, W, N).
    A: (4C, N); D, delta_bias: (4C,)."""
    op = "ss2d_scan"
    if channel_last:
        _ndim(op, "x", x, 4, "(b, H, W, C) [channel_last]")
        b, H, W, c = x.shape
        _shape(op, "delta", delta, (b, 4, H, W, c), "(b, 4, H, W, C) [channel_last]")
        N = _d_state(op, A, 4 * c, "4C")
        bc_shape, bc_desc = (b, 4, H, W, N), "(b, 4, H, W, N) [channel_last]"
    else:
        _ndim(op, "x", x, 4, "(b, C, H, W)")
        b, c, H, W = x.shape
        _shape(op, "delta", delta, (b, 4, c, H, W), "(b, 4, C, H, W)")
        N = _d_state(op, A, 4 * c, "4C")
        bc_shape, bc_desc = (b, 4, N, H, W), "(b, 4, N, H, W)"
    _shape(op, "B", B, bc_shape, bc_desc)
    _shape(op, "C", C, bc_shape, bc_desc)
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None:
            _shape(op, name, t, (4 * c,), "(4C,)")
    _dtypes_and_device(
        op,
        "x",
        {"x": x, "delta": delta, "B": B, "C": C},
        {"A": A, "D": D, "delta_bias": delta_bias},
    )


def slp_project(feat, q1, q2) -> None:
    """feat: (b, F, R); q1, q2: (A, F)."""
    op = "slp_project"
    _ndim(op, "feat", feat, 3, "(b, F, R)")
    _ndim(op, "q1", q1, 2, "(A, F)")
    if q1.shape[1] != feat.shape[1]:
        raise ValueError(
            f"{op}: q1 must have shape (A, F) with F = feat.shape[1] = "
            f"{feat.shape[1]}, got {tuple(q1.shape)}"
        )
    if feat.shape[2] < 1:
        raise ValueError(
            f"{op}: feat must have at least one region (R >= 1), got {tuple(feat.shape)}"
        )
    _shape(op, "q2", q2, tuple(q1.shape), "(A, F)")
    _dtypes_and_device(op, "feat", {"feat": feat, "q1": q1, "q2": q2}, {})


def grad_output(op: str, dy: Tensor, shape: tuple) -> None:
    """The incoming gradient of a backward op has the output's shape."""
    _shape(op, "dy", dy, shape, "the output's shape")
