"""Backends to test, tolerances and the reference check shared by the op tests; the sample inputs
and rel_err live in zeromamba.testing (the benchmarks use them too)."""

from __future__ import annotations

import torch

import zeromamba
from zeromamba import reference
from zeromamba.testing import (  # noqa: F401 - re-exported for the tests
    _gen,
    rel_err,
    scan_inputs,
    slp_inputs,
    ss2d_inputs,
)

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
