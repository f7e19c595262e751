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
  inputs), from a second scan with one state per (channel, state) pair (see ``last_state``;
  it recomputes softplus(delta) per state, so it costs a few times the scan's forward). Unlike
  mamba_ssm's, gradients flow through it.

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


def last_state(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    *,
    backend: str | None = None,
) -> Tensor:
    """The scan's state after the last step, (b, d, N), float32 (float64 for float64 inputs).

    u, delta: (b, d, L); A: (d, N); B: (b, G, N, L). Each state h[c, n] is a scan of its own
    with one state, so the d * N of them run as one ``selective_scan`` with N = 1 over d * N
    channels (channel (g, n, j) reads u[g * d/G + j], A[., n] and B[:, g, n]; the kernels' N = 1
    path) whose C is 1 at the last step and 0 before: its output at L - 1 is h_L. Same
    recurrence and rounding as the scan itself, on every backend, with autograd.
    """
    b, d, L = u.shape
    G, N = B.shape[1], A.shape[1]
    channels_per_group = d // G
    if L == 0:  # no step: the initial state
        return u.new_zeros(b, d, N, dtype=compute_dtype(u.dtype))

    def per_state(t: Tensor) -> Tensor:  # (b, d, L) -> (b, G*N*channels_per_group, L)
        return (
            t.view(b, G, 1, channels_per_group, L)
            .expand(b, G, N, channels_per_group, L)
            .reshape(b, G * N * channels_per_group, L)
        )

    A1 = A.view(G, channels_per_group, N).permute(0, 2, 1).reshape(G * N * channels_per_group, 1)
    bias1 = None
    if delta_bias is not None:
        bias1 = (
            delta_bias.view(G, 1, channels_per_group).expand(G, N, channels_per_group).reshape(-1)
        )
    C1 = torch.zeros(L, dtype=u.dtype, device=u.device)
    C1[-1] = 1
    y = ops.selective_scan(
        per_state(u), per_state(delta), A1, B.reshape(b, G * N, 1, L),
        C1.expand(b, G * N, 1, L), None, bias1, delta_softplus, out_float32=True,
        backend=backend,
    )  # fmt: skip
    return y[:, :, -1].view(b, G, N, channels_per_group).transpose(2, 3).reshape(b, d, N)


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
    return out, last_state(u, delta, A, B4, delta_bias, delta_softplus, backend=backend)
