"""Peer implementations the CPU targets are set against: the S6 scan and a four-way SS2D built on
``mambapy.pscan`` (the pure-PyTorch scan CPU users pick), with their input layouts, and the check
of any implementation against the reference (a wrong peer would make every ratio meaningless)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.cases import Fn, to_scan_order
from zeromamba import reference
from zeromamba.testing import rel_err, scan_inputs, ss2d_inputs, tensors

try:
    from mambapy.pscan import pscan
except ImportError:  # bench-only dependency (the `bench` extra)
    pscan = None


def mambapy_scan(u, delta, A, B, C, D, delta_bias, delta_softplus=True) -> torch.Tensor:
    """The S6 scan on ``mambapy.pscan``, in the (b, L, d) layout mambapy users work in.

    u, delta: (b, L, d); A: (d, N); B, C: (b, L, G, N), channel c in group c // (d // G);
    D, delta_bias: (d,). Returns y: (b, L, d).
    pscan(dA, dBu) scans (b, L, d, N) tensors, h_t = dA_t * h_{t-1} + dBu_t; it pads L to the
    next power of two itself, with zeros after the last step, which leaves steps < L unchanged
    (the scan is causal) and is sliced off again, forward and backward.
    """
    b, L, d = u.shape
    G, N = B.shape[2], B.shape[3]
    dt = delta + delta_bias
    if delta_softplus:
        dt = F.softplus(dt)
    dA = torch.exp(dt[..., None] * A)  # (b, L, d, N)
    dBu = ((dt * u).view(b, L, G, d // G, 1) * B[:, :, :, None, :]).view(b, L, d, N)
    h = pscan(dA, dBu)
    y = (h.view(b, L, G, d // G, N) * C[:, :, :, None, :]).sum(-1).view(b, L, d)
    return y + D * u


def mambapy_selective_scan(u, delta, A, B, C, D, delta_bias) -> torch.Tensor:
    """``mambapy_scan`` with softplus, its (b, L, d) output seen as (b, d, L) (a free view)."""
    return mambapy_scan(u, delta, A, B, C, D, delta_bias).transpose(1, 2)


def mambapy_ss2d(x, delta, A, B, C, D, delta_bias) -> torch.Tensor:
    """Four-way SS2D on mambapy: cross-scan x, one pscan over the 4C direction channels, merge.

    x: (b, C, H, W); delta: (b, L, 4C) and B, C: (b, L, 4, N) already in scan order (see
    ``to_scan_order``); A (4C, N); D, delta_bias (4C,). Returns (b, C, H, W).
    """
    b, c, H, W = x.shape
    L = H * W
    rows = x.permute(0, 2, 3, 1).reshape(b, L, c)  # step h*W + w
    cols = x.permute(0, 3, 2, 1).reshape(b, L, c)  # step w*H + h
    u = torch.stack([rows, cols, rows.flip(1), cols.flip(1)], dim=2).view(b, L, 4 * c)
    y = mambapy_scan(u, delta, A, B, C, D, delta_bias).view(b, L, 4, c)
    y_rows = y[:, :, 0] + y[:, :, 2].flip(1)
    y_cols = y[:, :, 1] + y[:, :, 3].flip(1)
    out = y_rows.view(b, H, W, c) + y_cols.view(b, W, H, c).transpose(1, 2)
    return out.permute(0, 3, 1, 2)


def mambapy_ss2d_layout(i: dict) -> tuple[torch.Tensor, ...]:
    """ss2d inputs (spatial) -> mambapy_ss2d arguments (scan order, (b, L, .) layout)."""
    x, A, D, bias = i["x"], i["A"], i["D"], i["delta_bias"]
    b, c = x.shape[:2]
    delta = to_scan_order(i["delta"]).permute(0, 3, 1, 2).reshape(b, -1, 4 * c)
    B, C = (to_scan_order(i[k]).permute(0, 3, 1, 2).contiguous() for k in ("B", "C"))
    return x, delta, A, B, C, D, bias


def mambapy_scan_layout(i: dict) -> tuple[torch.Tensor, ...]:
    """selective_scan inputs -> mambapy_scan arguments ((b, L, .) layout)."""
    u, delta = (i[k].transpose(1, 2).contiguous() for k in ("u", "delta"))
    B, C = (i[k].permute(0, 3, 1, 2).contiguous() for k in ("B", "C"))
    return u, delta, i["A"], B, C, i["D"], i["delta_bias"]


def _fwd_bwd(run: Fn, layout, i: dict, dy: torch.Tensor):
    """Output and gradients w.r.t. the case inputs (spatial layout) through ``layout`` + ``run``."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in tensors(i).items()}
    y = run(*layout(leaves))
    grads = torch.autograd.grad(y, list(leaves.values()), dy)
    return y.detach(), dict(zip(leaves, grads, strict=True))


def check_against_reference(run: Fn, layout, ref: Fn, i: dict) -> dict[str, float]:
    """Relative errors of ``run`` (output and every gradient) against ``ref`` on inputs ``i``."""
    y_ref = ref(*tensors(i).values())
    dy = torch.randn(
        y_ref.shape,
        generator=torch.Generator(y_ref.device).manual_seed(1),
        device=y_ref.device,
        dtype=y_ref.dtype,
    )
    y, grads = _fwd_bwd(run, layout, i, dy)
    y_r, grads_r = _fwd_bwd(lambda *a: ref(*a), lambda d: tuple(d.values()), i, dy)
    errs = {"y": rel_err(y, y_r)}
    errs.update({f"d{k}": rel_err(grads[k], grads_r[k]) for k in grads})
    return errs


def verify_mambapy() -> list[dict]:
    """mambapy pipelines vs zeromamba.reference in fp64, non-power-of-two L, N in {1, 3}.

    Raises SystemExit on a mismatch: a wrong peer would make every ratio meaningless.
    """
    out = []

    def scan_ref(u, delta, A, B, C, D, bias):
        return reference.selective_scan(u, delta, A, B, C, D, bias, True)

    def seeded(make_inputs, seed):
        return lambda s: make_inputs(*s, torch.float64, "cpu", seed=seed)

    ss2d = (mambapy_ss2d, mambapy_ss2d_layout, reference.ss2d_scan, ss2d_inputs)
    scan = (mambapy_selective_scan, mambapy_scan_layout, scan_ref, scan_inputs)
    cases = [
        (op, shape, run, layout, ref, seeded(make_inputs, seed))
        for op, shape, seed, (run, layout, ref, make_inputs) in (
            ("ss2d", (2, 3, 5, 7, 1), 3, ss2d),
            ("ss2d", (1, 2, 6, 3, 3), 4, ss2d),
            ("selective_scan", (2, 6, 37, 2, 2), 5, scan),
        )
    ]
    for op, shape, run, layout, ref, make in cases:
        errs = check_against_reference(run, layout, ref, make(shape))
        worst = max(errs.values())
        out.append(
            {
                "op": op,
                "impl": "mambapy",
                "shape": list(shape),
                "dtype": "float64",
                "max_rel_err": worst,
                "errors": errs,
            }
        )
        if not worst <= 1e-10:
            raise SystemExit(
                f"mambapy {op} pipeline disagrees with zeromamba.reference at {shape}: {errs}"
            )
    return out
