"""Backends and their selection (docs/design.md §3).

A backend is a set of six kernel functions with the signatures of the C++ kernel ops
(``selective_scan_fwd/bwd``, ``ss2d_scan_fwd/bwd``, ``slp_project_fwd/bwd``, see csrc/ops.cpp):

* ``reference`` — zeromamba.reference, backward by autograd through it; every device;
* ``cpu``       — the C++ kernels of zeromamba._C for CPU tensors;
* ``triton``    — zeromamba.kernels; CUDA tensors, or CPU tensors under TRITON_INTERPRET=1;
* ``cuda``      — the CUDA kernels of zeromamba._C for CUDA tensors.

Choice: the ``backend=`` argument, else ``ZEROMAMBA_BACKEND``, else the fastest available for the
tensors' device. A named backend that cannot run raises; nothing falls back silently.
"""

from __future__ import annotations

import functools
import importlib
import os
from dataclasses import dataclass
from types import SimpleNamespace

import torch

from . import reference

NAMES = ("reference", "cpu", "triton", "cuda")
# Default preference per device type, fastest first.
PREFERENCE = {"cpu": ("cpu", "reference"), "cuda": ("cuda", "triton", "reference")}
KERNELS = (
    "selective_scan_fwd",
    "selective_scan_bwd",
    "ss2d_scan_fwd",
    "ss2d_scan_bwd",
    "slp_project_fwd",
    "slp_project_bwd",
)


@dataclass(frozen=True)
class BackendInfo:
    """What a backend can do here: the device types it runs on, or why it runs on none."""

    name: str
    devices: tuple[str, ...]
    reason: str  # why it is unavailable (or limited); "" when nothing is missing

    @property
    def available(self) -> bool:
        return bool(self.devices)


def _has_native_kernel(dispatch_key: str) -> bool:
    return all(
        torch._C._dispatch_has_kernel_for_dispatch_key(f"zeromamba::{k}", dispatch_key)
        for k in KERNELS
    )


def _triton_interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _info(name: str) -> BackendInfo:
    if name == "reference":
        return BackendInfo(name, ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",), "")
    if name == "cpu":
        if _has_native_kernel("CPU"):
            return BackendInfo(name, ("cpu",), "")
        return BackendInfo(name, (), "zeromamba._C has no CPU kernels registered")
    if name == "cuda":
        from . import _C

        if not _C.build_info()["cuda"]:
            return BackendInfo(
                name,
                (),
                "zeromamba._C was built without CUDA (needs a CUDA toolkit and a CUDA build of "
                "torch at build time; ZEROMAMBA_CUDA=1 forces it)",
            )
        if not torch.cuda.is_available():
            return BackendInfo(name, (), "built with CUDA, but no CUDA device is visible")
        return BackendInfo(name, ("cuda",), "")
    if name == "triton":
        try:
            _triton()
        except (ImportError, AttributeError) as e:
            return BackendInfo(name, (), f"the Triton kernels are not importable ({e})")
        devices = (("cuda",) if torch.cuda.is_available() else ()) + (
            ("cpu",) if _triton_interpret() else ()
        )
        reason = "" if devices else "needs a CUDA device (or TRITON_INTERPRET=1 for CPU tensors)"
        if devices == ("cpu",):
            reason = "CPU tensors through the interpreter only (TRITON_INTERPRET=1)"
        return BackendInfo(name, devices, reason)
    raise ValueError(f"backend must be one of {NAMES}, got {name!r}")


def available_backends() -> dict[str, BackendInfo]:
    """Every backend with the device types it can run on here and, if limited, why."""
    return {name: _info(name) for name in NAMES}


def resolve(backend: str | None, device: torch.device) -> str:
    """The backend to run on ``device``: ``backend``, else $ZEROMAMBA_BACKEND, else the default.

    Raises RuntimeError when a named backend cannot run on that device.
    """
    name = backend or os.environ.get("ZEROMAMBA_BACKEND") or None
    if name is None:
        for candidate in PREFERENCE.get(device.type, ("reference",)):
            if device.type in _info(candidate).devices:
                return candidate
        return "reference"
    if name not in NAMES:
        source = "backend" if backend else "ZEROMAMBA_BACKEND"
        raise ValueError(f"{source} must be one of {NAMES}, got {name!r}")
    info = _info(name)
    if device.type not in info.devices:
        raise RuntimeError(
            f"backend {name!r} cannot run on {device.type} tensors"
            + (f": {info.reason}" if info.reason else "")
        )
    return name


def _vjp(forward, n_tensors: int):
    """Backward of a reference op by autograd: (dy, *inputs) -> grads of the first n_tensors
    inputs, zeros where an input is None or unused, so every backend returns the same tuple."""

    def backward(dy, *inputs):
        with torch.enable_grad():
            leaves = [
                t.detach().requires_grad_(True) if isinstance(t, torch.Tensor) else t
                for t in inputs
            ]
            y = forward(*leaves)
            diff = [t for t in leaves[:n_tensors] if isinstance(t, torch.Tensor)]
            grads = iter(torch.autograd.grad(y, diff, dy.to(y.dtype), allow_unused=True))
        out = []
        for t in leaves[:n_tensors]:
            g = next(grads) if isinstance(t, torch.Tensor) else None
            out.append(g if g is not None or t is None else torch.zeros_like(t))
        return tuple(out)

    return backward


@functools.cache
def _reference() -> SimpleNamespace:
    scan_bwd = _vjp(reference.selective_scan, 7)
    ss2d_bwd = _vjp(reference.ss2d_scan, 7)
    return SimpleNamespace(
        selective_scan_fwd=reference.selective_scan,
        selective_scan_bwd=lambda dy, u, delta, A, B, C, D, bias, sp: _with_param_grads(
            scan_bwd, dy, (u, delta, A, B, C, D, bias, sp)
        ),
        ss2d_scan_fwd=reference.ss2d_scan,
        ss2d_scan_bwd=lambda dy, x, delta, A, B, C, D, bias, sp, cl: _with_param_grads(
            ss2d_bwd, dy, (x, delta, A, B, C, D, bias, sp, cl)
        ),
        slp_project_fwd=reference.slp_project,
        slp_project_bwd=_vjp(reference.slp_project, 3),
    )


def _with_param_grads(backward, dy, inputs):
    """Run a reference scan backward with D and delta_bias made explicit (zeros when None), so
    their gradients exist like the kernels' (shape (d,), dtype of A); zero D and bias leave the
    forward unchanged."""
    A = inputs[2]
    D = inputs[5] if inputs[5] is not None else A.new_zeros(A.shape[0])
    bias = inputs[6] if inputs[6] is not None else A.new_zeros(A.shape[0])
    return backward(dy, *inputs[:5], D, bias, *inputs[7:])


@functools.cache
def _native() -> SimpleNamespace:
    ops = torch.ops.zeromamba
    return SimpleNamespace(**{k: getattr(ops, k).default for k in KERNELS})


@functools.cache
def _triton() -> SimpleNamespace:
    kernels = importlib.import_module("zeromamba.kernels")
    return SimpleNamespace(**{k: getattr(kernels, k) for k in KERNELS})


def kernels(name: str) -> SimpleNamespace:
    """The six kernel functions of a backend (resolved name, see ``resolve``)."""
    if name == "reference":
        return _reference()
    if name in ("cpu", "cuda"):
        return _native()
    return _triton()
