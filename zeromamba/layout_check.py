"""Debug check of fused SS2D call sites: the fused path against the unfused one on a probe.

``ss2d_scan`` takes every per-direction tensor in *spatial* order. Tensors computed in VMamba's
*scan* order (projections of ``cross_scan(x)``) and merely reshaped to (b, 4, ..., H, W) have the
right shapes and pass every shape check, yet pair each position with another position's delta,
B and C in three of the four directions. At initialisation the output barely changes while the
gradients are far off (a VMamba-T SS2D block on a 7 x 9 probe: output 4e-5 relative, gradients
of A_logs, dt_projs and x_proj_weight 107-121%), so only a comparison of outputs *and
gradients* with the unfused flow catches it. This module does that comparison:

* ``compare_paths(fused, unfused, inputs, params)`` — explicit, for any hand-written call site;
* ``ZEROMAMBA_CHECK_LAYOUT=1`` — every fused SS2D of ``zeromamba.models`` and every module patched
  by ``zeromamba.compat.vmamba.patch_vssm`` compares itself with its unfused flow on its first
  input of each shape (two extra forward and backward passes, once; skipped while compiling).
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

ENV = "ZEROMAMBA_CHECK_LAYOUT"

# Relative error (norms) above which the fused path is declared different. Rounding differences
# between the two flows are ~1e-6 in float32; the layout mistake gives O(1) gradient errors.
_RTOL = {torch.float64: 1e-8, torch.float32: 1e-3, torch.float16: 5e-2, torch.bfloat16: 5e-2}


class LayoutMismatch(RuntimeError):
    """The fused path disagrees with the unfused one beyond rounding."""


def enabled() -> bool:
    """Whether ``ZEROMAMBA_CHECK_LAYOUT=1`` is set."""
    return os.environ.get(ENV, "0") == "1"


def _rel(a: Tensor | None, b: Tensor | None) -> float:
    if a is None and b is None:
        return 0.0
    if a is None or b is None:  # one path uses the tensor, the other does not
        other = a if b is None else b
        return 0.0 if not other.any() else float("inf")
    a, b = a.double(), b.double()
    scale = b.norm().item()
    err = (a - b).norm().item()
    return err / scale if scale > 0 else err


def compare_paths(
    fused: Callable[..., Tensor],
    unfused: Callable[..., Tensor],
    inputs: Sequence[Tensor],
    params: Mapping[str, Tensor] | None = None,
    *,
    what: str = "fused path",
    rtol: float | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Run ``fused(*inputs)`` and ``unfused(*inputs)`` with the same random output gradient and
    compare outputs and the gradients of ``inputs`` and ``params`` (relative error in norms).

    Returns the errors by name ("output", "d<input i>", "d<param name>"). Raises LayoutMismatch
    naming the worst ones when any exceeds ``rtol`` (default by dtype: 1e-3 for float32, 1e-8
    for float64, 5e-2 for half types). The inputs are detached copies: nothing of the caller's
    autograd graph or ``.grad`` fields is touched.
    """
    params = dict(params or {})
    leaves = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in inputs]
    wrt = [t for t in leaves if t.requires_grad] + list(params.values())
    names = [f"d<input {i}>" for i, t in enumerate(leaves) if t.requires_grad]
    names += [f"d{n}" for n in params]
    results = []
    with torch.enable_grad():
        for fn in (fused, unfused):
            y = fn(*leaves)
            gen = torch.Generator().manual_seed(seed)
            dy = torch.randn(y.shape, generator=gen, dtype=torch.float64).to(y)
            grads = torch.autograd.grad(y, wrt, dy, allow_unused=True)
            results.append((y.detach(), grads))
    (yf, gf), (yu, gu) = results
    errors = {"output": _rel(yf, yu)}
    errors.update({n: _rel(a, b) for n, a, b in zip(names, gf, gu)})
    tol = rtol if rtol is not None else _RTOL.get(yu.dtype, 1e-3)
    bad = {n: e for n, e in errors.items() if not e <= tol}  # NaN counts as bad
    if bad:
        worst = sorted(bad.items(), key=lambda kv: -kv[1] if kv[1] == kv[1] else float("-inf"))
        listed = ", ".join(f"{n} {e:.2e}" for n, e in worst[:6])
        raise LayoutMismatch(
            f"{what} differs from the unfused flow beyond rounding (relative errors above "
            f"{tol:g}: {listed}). If per-direction tensors were computed in scan order (from "
            f"cross_scan(x)) and reshaped to (b, 4, ..., H, W), ss2d_scan reads them at the wrong "
            f"positions: compute them from x in spatial order, or convert them with "
            f"zeromamba.compat.vmamba.scan_to_spatial."
        )
    return errors


# Modules already checked, with the input shapes they were checked on.
_checked: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def check_once(
    module: torch.nn.Module,
    x: Tensor,
    fused: Callable[[Tensor], Tensor],
    unfused: Callable[[Tensor], Tensor],
    what: str,
) -> None:
    """With ZEROMAMBA_CHECK_LAYOUT=1: compare_paths on ``x`` (and the module's parameters) the
    first time ``module`` sees an input of this shape and dtype."""
    if not enabled() or torch.compiler.is_compiling():
        return
    key = (tuple(x.shape), x.dtype, x.device)
    seen = _checked.setdefault(module, set())
    if key in seen:
        return
    seen.add(key)  # before running: the check calls the module's fused path again
    params = {n: p for n, p in module.named_parameters() if p.requires_grad}
    compare_paths(fused, unfused, (x,), params, what=what)
