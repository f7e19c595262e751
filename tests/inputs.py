"""Sample inputs and error measures shared by the op tests (docs/design.md §6)."""

from __future__ import annotations

import torch

import zeromamba
from zeromamba import reference

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def backends_on(device: str, include_reference: bool = False) -> list[str]:
    """The backends that can run on ``device`` here (reference first when included)."""
    names = [n for n, info in zeromamba.available_backends().items() if device in info.devices]
    return [n for n in names if include_reference or n != "reference"]


def backend_params(include_reference: bool = False) -> list[tuple[str, str]]:
    """(device, backend) pairs for pytest.mark.parametrize."""
    return [(dev, name) for dev in DEVICES for name in backends_on(dev, include_reference)]


def noncontiguous(t: torch.Tensor) -> torch.Tensor:
    """The same values with every stride doubled (a view into a larger buffer)."""
    buf = t.new_full((*t.shape, 2), float("nan"))
    buf[..., 0] = t
    return buf[..., 0]


def _gen(seed: int, device: str) -> torch.Generator:
    return torch.Generator(device).manual_seed(seed)


def _randn(shape, g, dtype, device, scale=1.0, shift=0.0):
    return (torch.randn(shape, generator=g, device=device, dtype=torch.float64) * scale + shift).to(
        dtype
    )


def _params(rows, N, g, dtype, device, with_D, with_bias):
    """A = -exp(.) < 0 in (roughly) [-2.7, -0.4], D ~ N(0, 1), delta_bias small."""
    pdtype = torch.float64 if dtype == torch.float64 else torch.float32
    A = -torch.exp(_randn((rows, N), g, pdtype, device, 0.5))
    D = _randn((rows,), g, pdtype, device) if with_D else None
    bias = _randn((rows,), g, pdtype, device, 0.1) if with_bias else None
    return A, D, bias


def scan_inputs(
    b,
    d,
    L,
    N,
    G,
    dtype=torch.float64,
    device="cpu",
    seed=0,
    with_D=True,
    with_bias=True,
    softplus=True,
):
    """Arguments of selective_scan as a dict; delta is centred so that softplus(dt) ~ 0.3."""
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
    b,
    c,
    H,
    W,
    N,
    dtype=torch.float64,
    device="cpu",
    seed=0,
    channel_last=False,
    with_D=True,
    with_bias=True,
):
    """Arguments of ss2d_scan as a dict, in the requested layout."""
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


def slp_inputs(b, F, R, A, dtype=torch.float64, device="cpu", seed=0):
    """Arguments of slp_project: feat L2-normalised over F, queries of ~unit rows scaled x5 so
    the softmax is neither flat nor one-hot."""
    g = _gen(seed, device)
    feat = torch.nn.functional.normalize(_randn((b, F, R), g, torch.float64, device), dim=1)
    q1 = _randn((A, F), g, torch.float64, device, 5.0 / F**0.5)
    q2 = _randn((A, F), g, torch.float64, device, 1.0 / F**0.5)
    return {"feat": feat.to(dtype), "q1": q1.to(dtype), "q2": q2.to(dtype)}


def to(inputs: dict, dtype=None, device=None, requires_grad=False) -> dict:
    """A copy of an input dict with its tensors moved/cast (parameters A, D, delta_bias are
    cast only between float32 and float64) and made leaves."""
    out = {}
    for k, v in inputs.items():
        if isinstance(v, torch.Tensor):
            want = dtype
            if k in ("A", "D", "delta_bias") and dtype is not None:
                want = torch.float64 if dtype == torch.float64 else torch.float32
            v = v.detach().to(device=device or v.device, dtype=want or v.dtype)
            v.requires_grad_(requires_grad and v.is_floating_point())
        out[k] = v
    return out


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """|out - ref| / |ref| in Frobenius norms, computed in float64; NaN or inf give inf."""
    out, ref = out.detach().double().cpu(), ref.detach().double().cpu()
    if out.shape != ref.shape:
        raise AssertionError(f"shape {tuple(out.shape)} != reference shape {tuple(ref.shape)}")
    if not torch.isfinite(out).all():
        return float("inf")
    denom = ref.norm().item()
    return (out - ref).norm().item() / max(denom, 1e-30)


FP32_TOL = 1e-5  # docs/design.md §6: fp32 kernels within 1e-5 of the fp64 reference
FP64_TOL = 1e-10
TRITON_CUDA_FP32_TOL = 1e-3  # tf32-level dots on the GPU


def tolerance(dtype: torch.dtype, backend: str, device: str, ref_err: float = 0.0) -> float:
    """Allowed relative error of a kernel run in ``dtype``, given ``ref_err``: what the reference
    itself loses when run in that dtype.

    fp64: 1e-10. fp32: 1e-5 (tf32-level for Triton on CUDA), or on ill-conditioned draws (heavy
    cancellation, where summation order decides the low bits) 4x the fp32 reference's own error. fp16/bf16: twice the half reference's error, and never below
    the dtype's machine epsilon: on a few-element output the reference's input-rounding errors
    can cancel by luck while the kernel's (same inputs, other summation order) do not.
    """
    if dtype == torch.float64:
        return FP64_TOL
    if dtype == torch.float32:
        base = TRITON_CUDA_FP32_TOL if backend == "triton" and device == "cuda" else FP32_TOL
        return max(base, 4 * ref_err)
    return max(2 * ref_err, torch.finfo(dtype).eps)


def check_against_reference(
    op: str, backend: str, inputs: dict, dtype: torch.dtype, **kwargs
) -> None:
    """Run ``op`` on ``backend`` in ``dtype`` forward and backward and compare with the float64
    reference (for half dtypes: with a tolerance of twice the half-precision reference's own
    error)."""
    fn = getattr(zeromamba.ops, op)
    ref_fn = getattr(reference, op)
    hi = to(inputs, torch.float64, requires_grad=True)
    y_hi = ref_fn(**hi, **kwargs)
    dy = torch.randn(y_hi.shape, generator=_gen(1, "cpu"), dtype=torch.float64).to(y_hi.device)
    tensors = [k for k, v in hi.items() if isinstance(v, torch.Tensor)]
    g_hi = torch.autograd.grad(y_hi, [hi[k] for k in tensors], dy)

    lo = to(inputs, dtype, requires_grad=True)
    y = fn(**lo, **kwargs, backend=backend)
    g = torch.autograd.grad(y, [lo[k] for k in tensors], dy.to(y.dtype))

    ref_errs = {}
    if dtype != torch.float64:  # what the reference loses in this dtype (rounded inputs/outputs)
        lo_ref = to(inputs, dtype, requires_grad=True)
        y_lo = ref_fn(**lo_ref, **kwargs)
        g_lo = torch.autograd.grad(y_lo, [lo_ref[k] for k in tensors], dy.to(y_lo.dtype))
        ref_errs = {"y": rel_err(y_lo, y_hi)}
        ref_errs.update({"d" + k: rel_err(a, b) for k, a, b in zip(tensors, g_lo, g_hi)})
    failures = []
    for name, out, ref in [("y", y, y_hi), *zip(["d" + k for k in tensors], g, g_hi)]:
        err = rel_err(out, ref)
        tol = tolerance(dtype, backend, y.device.type, ref_errs.get(name, 0.0))
        if not err <= tol:
            failures.append(f"{name}: rel err {err:.3g} > {tol:.3g}")
    assert not failures, f"{op} on {backend} ({dtype}): " + "; ".join(failures)
