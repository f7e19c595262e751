"""mamba_ssm's ``selective_scan_fn`` on the zeromamba kernels.

Code written against ``mamba_ssm.ops.selective_scan_interface.selective_scan_fn`` runs unchanged
with ``from zeromamba.compat.mamba import selective_scan_fn``: same signature, defaults
(``delta_softplus=False``), shapes and output dtypes. The scan itself is
``zeromamba.ops.selective_scan``; the extras compose outside the kernels:

* ``z`` gating, ``out * silu(z)``, in float32 (float64 for float64 inputs) before the cast back
  to u's dtype, as mamba_ssm's kernel does;
* ``B``/``C`` of shape (b, N, L) are one group; constant (d, N) ones are broadcast over batch and
  time to d groups (correct, but it materialises (b, d, N, L) and runs one channel per group);
* ``return_last_state``: the state after the last step, (b, d, N), float32 (float64 for float64
  inputs), by its closed form ``h_L = sum_t exp(A * sum_{s>t} dt_s) dt_t u_t B_t`` in blocks of
  time steps. Unlike mamba_ssm, gradients flow through it.

N up to 256 (mamba_ssm's limit): N <= 16 runs the kernels' specialised paths, larger N runs as
chunks of 16 states on every backend (exact, see zeromamba/state_chunks.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import ops
from ..reference import compute_dtype

__all__ = ["last_state", "selective_scan_fn"]

# Elements of exp(A * S) materialised at once by last_state (a block of time steps).
_LAST_STATE_BLOCK = 1 << 22


def _as_groups(name: str, t: Tensor, b: int, d: int, L: int, dtype: torch.dtype) -> Tensor:
    """B or C as (b, G, N, L) in the activations' dtype."""
    if t.dim() == 2:  # constant (d, N): one group per channel
        if t.shape[0] != d:
            raise ValueError(f"selective_scan_fn: a constant {name} must be (d, N) with d = {d}, "
                             f"got {tuple(t.shape)}")  # fmt: skip
        return t.to(dtype)[None, :, :, None].expand(b, d, t.shape[1], L)
    if t.dim() == 3:  # (b, N, L): one group
        return t.unsqueeze(1)
    if t.dim() == 4:
        return t
    raise ValueError(
        f"selective_scan_fn: {name} must be (b, N, L), (b, G, N, L) or constant (d, N), "
        f"got {tuple(t.shape)}"
    )


def _same_groups(B: Tensor, C: Tensor, d: int) -> tuple[Tensor, Tensor]:
    """A constant B or C has d groups; the other one is repeated to match."""
    if B.shape[1] == C.shape[1]:
        return B, C

    def widen(t: Tensor) -> Tensor:
        b, G, N, L = t.shape
        return t[:, :, None].expand(b, G, d // G, N, L).reshape(b, d, N, L)

    return (widen(B), C) if B.shape[1] < C.shape[1] else (B, widen(C))


def _dt(delta: Tensor, delta_bias: Tensor | None, delta_softplus: bool) -> Tensor:
    dt = delta if delta_bias is None else delta + delta_bias.to(delta.dtype)[:, None]
    return F.softplus(dt, threshold=20.0) if delta_softplus else dt


def last_state(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
) -> Tensor:
    """The scan's state after the last step, (b, d, N), in the compute dtype.

    u, delta: (b, d, L); A: (d, N); B: (b, G, N, L). Unrolling
    ``h_t = exp(dt_t A) h_{t-1} + dt_t u_t B_t`` from h = 0 gives
    ``h_L = sum_t exp(A * S_t) dt_t u_t B_t`` with ``S_t = sum_{s>t} dt_s`` (a reversed
    cumulative sum): no sequential loop, autograd through plain tensor ops, and exp(A S_t) <= 1
    for A < 0. Evaluated over blocks of time steps so at most ~4M elements of exp(A S) exist at
    once in inference (autograd keeps what its backward needs).
    """
    ct = compute_dtype(u.dtype)
    b, d, L = u.shape
    G, N = B.shape[1], A.shape[1]
    dt = _dt(delta.to(ct), None if delta_bias is None else delta_bias.to(ct), delta_softplus)
    # S_t = sum_{s>t} dt_s: the inclusive reversed cumsum shifted by one (no cancellation).
    suffix = dt.flip(-1).cumsum(-1).flip(-1)
    S = F.pad(suffix[..., 1:], (0, 1)).view(b, G, d // G, 1, L)
    dtu = (dt * u.to(ct)).view(b, G, d // G, 1, L)
    Bg = B.to(ct)[:, :, None]  # (b, G, 1, N, L)
    Ag = A.to(ct).view(G, d // G, N, 1)
    T = max(1, min(L, _LAST_STATE_BLOCK // max(1, b * d * N)))
    h = None
    for t0 in range(0, L, T):
        t = slice(t0, min(L, t0 + T))
        part = (torch.exp(Ag * S[..., t]) * (dtu[..., t] * Bg[..., t])).sum(-1)
        h = part if h is None else h + part
    return h.reshape(b, d, N)


def selective_scan_fn(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    cu_seqlens: Tensor | None = None,
    *,
    backend: str | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """mamba_ssm's selective scan: ``y = scan(u, delta, A, B, C) + D u``, times ``silu(z)``.

    Args:
        u, delta: (b, d, L).
        A: (d, N) float32, entries < 0, 1 <= N <= 256 (real; complex A is refused).
        B, C: (b, N, L), (b, G, N, L) with d % G == 0, or constant (d, N).
        D, delta_bias: optional (d,) float32.
        z: optional (b, d, L) gate: the output is multiplied by silu(z).
        delta_softplus: softplus on delta + delta_bias (default False, as mamba_ssm).
        return_last_state: also return the final state.
        cu_seqlens: mamba_ssm's packed variable-length mode; not supported (must be None).
        backend: zeromamba backend name (keyword only); default the fastest available.
    Returns:
        out (b, d, L) in u's dtype, or (out, last_state (b, d, N) float32 / float64).
    """
    if A.is_complex():
        raise ValueError("selective_scan_fn: complex A is not supported; A must be real (d, N)")
    if cu_seqlens is not None:
        raise ValueError("selective_scan_fn: cu_seqlens (packed variable-length sequences) is "
                         "not supported; pass None")  # fmt: skip
    if u.dim() != 3:
        raise ValueError(f"selective_scan_fn: u must be (b, d, L), got {tuple(u.shape)}")
    b, d, L = u.shape
    B4 = _as_groups("B", B, b, d, L, u.dtype)
    C4 = _as_groups("C", C, b, d, L, u.dtype)
    B4, C4 = _same_groups(B4, C4, d)
    y = ops.selective_scan(
        u, delta, A, B4, C4, D, delta_bias, delta_softplus, out_float32=True, backend=backend
    )
    if z is not None:
        if z.shape != u.shape:
            raise ValueError(
                f"selective_scan_fn: z must have u's shape (b, d, L) = {tuple(u.shape)}, "
                f"got {tuple(z.shape)}"
            )
        y = y * F.silu(z.to(y.dtype))
    out = y.to(u.dtype)
    if not return_last_state:
        return out
    return out, last_state(u, delta, A, B4, delta_bias, delta_softplus)
