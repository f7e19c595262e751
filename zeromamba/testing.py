"""Sample inputs of the ops and the error measure, shared by the tests and the benchmarks.

One generator per op, one argument order: the op's shape letters in the order the op's docs
name them (``ss2d_inputs(b, C, H, W, N)``, ``scan_inputs(b, d, L, N, G)``,
``slp_inputs(b, A, F, R)``), then ``dtype``, ``device``, ``seed``. Values are drawn in float64 and
rounded to ``dtype``, so one seed gives the same numbers in every dtype. Each returns the op's
keyword arguments as a dict (flags included), so ``op(**inputs)`` runs it; ``tensors(inputs)``
keeps the tensors only.
"""

from __future__ import annotations

import torch

__all__ = ["rel_err", "scan_inputs", "slp_inputs", "ss2d_inputs", "tensors"]


def _gen(seed: int, device) -> torch.Generator:
    return torch.Generator(device).manual_seed(seed)


def _randn(shape, g, dtype, device, scale=1.0, shift=0.0) -> torch.Tensor:
    t = torch.randn(shape, generator=g, device=device, dtype=torch.float64)
    return (t * scale + shift).to(dtype)


def _params(rows: int, N: int, g, dtype, device, with_D: bool, with_bias: bool):
    """A = -exp(.) < 0 in (roughly) [-2.7, -0.4], D ~ N(0, 1), delta_bias small; float32
    (float64 with float64 activations), as the ops take them."""
    pdtype = torch.float64 if dtype == torch.float64 else torch.float32
    A = -torch.exp(_randn((rows, N), g, pdtype, device, 0.5))
    D = _randn((rows,), g, pdtype, device) if with_D else None
    bias = _randn((rows,), g, pdtype, device, 0.1) if with_bias else None
    return A, D, bias


def scan_inputs(
    b: int,
    d: int,
    L: int,
    N: int,
    G: int,
    dtype: torch.dtype = torch.float64,
    device="cpu",
    seed: int = 0,
    with_D: bool = True,
    with_bias: bool = True,
    softplus: bool = True,
) -> dict:
    """selective_scan arguments: u, delta (b, d, L); A (d, N); B, C (b, G, N, L); D, delta_bias
    (d,); delta is centred so that softplus(dt) ~ 0.3 (without softplus: |.| / 2 > 0)."""
    g = _gen(seed, device)
    u = _randn((b, d, L), g, dtype, device)
    delta = _randn((b, d, L), g, dtype, device, 0.5, -1.0 if softplus else 0.0)
    if not softplus:
        delta = delta.abs() * 0.5
    B = _randn((b, G, N, L), g, dtype, device)
    C = _randn((b, G, N, L), g, dtype, device)
    A, D, bias = _params(d, N, g, dtype, device, with_D, with_bias)
    return {
        "u": u,
        "delta": delta,
        "A": A,
        "B": B,
        "C": C,
        "D": D,
        "delta_bias": bias,
        "delta_softplus": softplus,
    }


def ss2d_inputs(
    b: int,
    c: int,
    H: int,
    W: int,
    N: int,
    dtype: torch.dtype = torch.float64,
    device="cpu",
    seed: int = 0,
    channel_last: bool = False,
    with_D: bool = True,
    with_bias: bool = True,
) -> dict:
    """ss2d_scan arguments in spatial order: x (b, C, H, W); delta (b, 4, C, H, W); A (4C, N);
    B, C (b, 4, N, H, W); D, delta_bias (4C,). ``channel_last``: x (b, H, W, C) and the others
    (b, 4, H, W, .), contiguous."""
    g = _gen(seed, device)
    x = _randn((b, c, H, W), g, dtype, device)
    delta = _randn((b, 4, c, H, W), g, dtype, device, 0.5, -1.0)
    B = _randn((b, 4, N, H, W), g, dtype, device)
    C = _randn((b, 4, N, H, W), g, dtype, device)
    A, D, bias = _params(4 * c, N, g, dtype, device, with_D, with_bias)
    if channel_last:
        x = x.permute(0, 2, 3, 1).contiguous()
        delta, B, C = (t.permute(0, 1, 3, 4, 2).contiguous() for t in (delta, B, C))
    return {
        "x": x,
        "delta": delta,
        "A": A,
        "B": B,
        "C": C,
        "D": D,
        "delta_bias": bias,
        "delta_softplus": True,
        "channel_last": channel_last,
    }


def slp_inputs(
    b: int, A: int, F: int, R: int, dtype: torch.dtype = torch.float64, device="cpu", seed: int = 0
) -> dict:
    """slp_project arguments: feat (b, F, R) L2-normalised over F; q1, q2 (A, F) with rows of
    norm ~5 and ~1, so the softmax over R is neither flat nor one-hot."""
    g = _gen(seed, device)
    feat = torch.nn.functional.normalize(_randn((b, F, R), g, torch.float64, device), dim=1)
    q1 = _randn((A, F), g, torch.float64, device, 5.0 / F**0.5)
    q2 = _randn((A, F), g, torch.float64, device, 1.0 / F**0.5)
    return {"feat": feat.to(dtype), "q1": q1.to(dtype), "q2": q2.to(dtype)}


def tensors(inputs: dict) -> dict[str, torch.Tensor]:
    """The tensor entries of an inputs dict, in order (flags and absent D / bias dropped)."""
    return {k: v for k, v in inputs.items() if isinstance(v, torch.Tensor)}


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """|out - ref| / |ref| in Frobenius norms, computed in float64; NaN or inf in ``out`` give
    inf. Raises AssertionError on a shape mismatch."""
    out, ref = out.detach().double().cpu(), ref.detach().double().cpu()
    if out.shape != ref.shape:
        raise AssertionError(f"shape {tuple(out.shape)} != reference shape {tuple(ref.shape)}")
    if not torch.isfinite(out).all():
        return float("inf")
    return (out - ref).norm().item() / max(ref.norm().item(), 1e-30)
