"""Pure-PyTorch reference of every op (docs/design.md §2): the oracle all kernels are tested against.

Written to be obviously correct, not fast: the scan is a Python loop over time, the four
directions are built from explicit index maps. All math runs in float32, or float64 when the
inputs are float64; outputs are cast back to the input dtype (or kept float32 with
``out_float32``). Backward passes come from autograd through these functions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the math runs in: float64 for float64 inputs, float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def output_dtype(dtype: torch.dtype, out_float32: bool) -> torch.dtype:
    """Output dtype: the input dtype, or float32 for half inputs when ``out_float32``."""
    return torch.float32 if out_float32 and dtype in (torch.float16, torch.bfloat16) else dtype


def _dt(delta: Tensor, delta_bias: Tensor | None, delta_softplus: bool) -> Tensor:
    """dt = delta + bias, then softplus (identity above 20, as in mamba_ssm)."""
    dt = delta if delta_bias is None else delta + delta_bias.to(delta.dtype)[:, None]
    return F.softplus(dt, threshold=20.0) if delta_softplus else dt


def _selective_scan(u, delta, A, B, C, D, delta_bias, delta_softplus) -> Tensor:
    """The S6 recurrence in the compute dtype; returns y (b, d, L) in that dtype."""
    ct = compute_dtype(u.dtype)
    u, delta, A = u.to(ct), delta.to(ct), A.to(ct)
    b, d, _ = u.shape
    channels_per_group = d // B.shape[1]
    B = B.to(ct).repeat_interleave(channels_per_group, dim=1)  # (b, d, N, L)
    C = C.to(ct).repeat_interleave(channels_per_group, dim=1)
    dt = _dt(delta, delta_bias, delta_softplus)  # (b, d, L)
    h = u.new_zeros(b, d, A.shape[1])
    ys = []
    # Per-step slices via unbind: indexing [..., t] would make autograd build a full-size
    # gradient per step (quadratic in L).
    for dt_t, u_t, B_t, C_t in zip(dt.unbind(-1), u.unbind(-1), B.unbind(-1), C.unbind(-1)):
        dA = torch.exp(dt_t[..., None] * A)  # (b, d, N)
        h = dA * h + (dt_t * u_t)[..., None] * B_t
        ys.append((C_t * h).sum(-1))
    y = torch.stack(ys, dim=-1) if ys else u.new_zeros(b, d, 0)  # L = 0: an empty sequence
    if D is not None:
        y = y + D.to(ct)[:, None] * u
    return y


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    out_float32: bool = False,
) -> Tensor:
    """Mamba's selective scan (S6), docs/design.md §2.1.

    u, delta: (b, d, L); A: (d, N); B, C: (b, G, N, L) with channel c in group c // (d // G);
    D, delta_bias: (d,). Returns y: (b, d, L). L = 0 gives an empty y. A may have any sign
    (A >= 0 grows the state; exp(dt A) overflows to inf as torch.exp does); NaN and Inf propagate
    as the recurrence's arithmetic says.
    """
    y = _selective_scan(u, delta, A, B, C, D, delta_bias, delta_softplus)
    return y.to(output_dtype(u.dtype, out_float32))


def scan_positions(H: int, W: int, device=None) -> Tensor:
    """(4, H*W) long: entry [k, t] is the row-major spatial index visited at step t of direction k.

    k=0 row-major, k=1 column-major, k=2 reversed row-major, k=3 reversed column-major.
    """
    hw = torch.arange(H * W, device=device).view(H, W)  # row-major index of (h, w)
    row = hw.flatten()  # step t = h*W + w
    col = hw.t().flatten()  # step t = w*H + h
    return torch.stack([row, col, row.flip(0), col.flip(0)])


def cross_scan(x: Tensor) -> Tensor:
    """(b, C, H, W) -> (b, 4, C, H*W): the map laid out in the four scan orders (docs/design.md §2.2)."""
    b, c, H, W = x.shape
    pos = scan_positions(H, W, x.device)
    return (
        x.flatten(2)[:, None, :, :]
        .expand(b, 4, c, H * W)
        .gather(3, pos[None, :, None, :].expand(b, 4, c, H * W))
    )


def cross_merge(ys: Tensor, H: int, W: int) -> Tensor:
    """(b, 4, C, H*W) -> (b, C, H, W): each direction's sequence added back at its positions."""
    b, _, c, L = ys.shape
    pos = scan_positions(H, W, ys.device)
    y = ys.new_zeros(b, c, L)
    for k in range(4):
        y = y.index_add(2, pos[k], ys[:, k])
    return y.view(b, c, H, W)


def _direction(t: Tensor, k: int) -> Tensor:
    """Direction k's sequence of a per-direction map t: (b, 4, X, H, W) -> (b, X, L)."""
    return cross_scan(t[:, k])[:, k]


def ss2d_scan(
    x: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = True,
    channel_last: bool = False,
    out_float32: bool = False,
) -> Tensor:
    """The four-way selective scan of SS2D, docs/design.md §2.3, by its definition:
    cross_merge(selective_scan(cross_scan(x), ...)).

    Channel-first: x (b, C, H, W); delta (b, 4, C, H, W); B, C (b, 4, N, H, W); A (4C, N);
    D, delta_bias (4C,); returns (b, C, H, W).
    channel_last: x (b, H, W, C); delta (b, 4, H, W, C); B, C (b, 4, H, W, N); returns (b, H, W, C).
    """
    if channel_last:
        x = x.permute(0, 3, 1, 2)
        delta, B, C = (t.permute(0, 1, 4, 2, 3) for t in (delta, B, C))
    b, c, H, W = x.shape
    us = cross_scan(x).reshape(b, 4 * c, H * W)
    deltas = torch.cat([_direction(delta, k) for k in range(4)], dim=1)  # (b, 4C, L)
    Bs = torch.stack([_direction(B, k) for k in range(4)], dim=1)  # (b, 4, N, L)
    Cs = torch.stack([_direction(C, k) for k in range(4)], dim=1)
    ys = _selective_scan(us, deltas, A, Bs, Cs, D, delta_bias, delta_softplus)
    y = cross_merge(ys.view(b, 4, c, H * W), H, W).to(output_dtype(x.dtype, out_float32))
    return y.permute(0, 2, 3, 1) if channel_last else y


def slp_project(feat: Tensor, q1: Tensor, q2: Tensor) -> Tensor:
    """ZeroMamba's Semantic-aware Local Projection, docs/design.md §2.4, in its einsum form.

    feat: (b, F, R); q1, q2: (A, F). Returns out: (b, A) with
    out[b, i] = sum_r softmax_r(q1[i] . feat[b, :, r]) * (q2[i] . feat[b, :, r]).
    """
    ct = compute_dtype(feat.dtype)
    f = feat.to(ct)
    s1 = torch.einsum("af,bfr->bar", q1.to(ct), f)
    s2 = torch.einsum("af,bfr->bar", q2.to(ct), f)
    return (torch.softmax(s1, dim=-1) * s2).sum(-1).to(feat.dtype)
