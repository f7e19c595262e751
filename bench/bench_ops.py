#!/usr/bin/env python
"""Op benchmarks (docs/design.md §5): every backend of ``ss2d_scan``, ``selective_scan`` and
``slp_project`` against the references and peers that define the targets.

``--device cpu`` (fp32, VMamba-T stage shapes at 224 px, b = 2):
  * ss2d_scan fwd and fwd+bwd: backends ``cpu`` and ``reference`` against a four-way pipeline on
    ``mambapy.pscan`` (the pure-PyTorch scan CPU users pick; verified against the reference on
    small shapes before anything is timed, the run aborts on a mismatch);
  * selective_scan alone (b = 2, d = 768, L = 3136, N = 1): cpu, reference, mambapy;
  * slp_project (b = 4, A = 312, F = 768, R = 196): cpu against its einsum form
    (``zeromamba.reference.slp_project``), time and activation memory.
``--device cuda`` (VMamba-S stage shapes at 448 px, b = 32, bf16 in, fp32 out):
  * ss2d_scan fwd, bwd and fwd+bwd: backends ``cuda`` and ``triton`` against the unfused pipeline
    built from our own ops (cross_scan -> selective_scan on the same backend -> cross_merge),
    with GB/s on the minimal-bytes count (``ss2d_min_bytes``) and the % of the device-to-device
    copy bandwidth measured in the same run;
  * slp_project (b = 32, A = 312, F = 768, R = 196): cuda, triton and the einsum form.

Timing: medians over repeated runs after warm-up, ``torch.utils.benchmark`` on CPU and
``triton.testing.do_bench`` on GPU. Nothing here asserts a timing. Results go to
``<out>/ops-<device>.json`` and ``<out>/ops-<device>.md``; the markdown table is printed last.

Usage:
  python bench/bench_ops.py --device cpu [--quick] [--out DIR] [--machine "2-core CPU dev box"]
  python bench/bench_ops.py --device cuda --time-limit 180
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

import zeromamba
from zeromamba import ops, reference

try:
    from mambapy.pscan import pscan
except ImportError:  # bench-only dependency (the `bench` extra)
    pscan = None

ROOT = Path(__file__).resolve().parent.parent
Fn = Callable[..., torch.Tensor]

# --------------------------------------------------------------------------- shapes

# (b, C, H, W, N): VMamba-T stages at 224 px (CPU) and VMamba-S stages at 448 px (GPU).
CPU_SS2D = [
    (2, 192, 56, 56, 1),
    (2, 192, 56, 56, 16),
    (2, 384, 28, 28, 1),
    (2, 768, 14, 14, 1),
    (2, 1536, 7, 7, 1),
]
GPU_SS2D = [
    (32, 192, 112, 112, 1),
    (32, 384, 56, 56, 1),
    (32, 768, 28, 28, 1),
    (32, 1536, 14, 14, 1),
]
CPU_SCAN = [(2, 768, 3136, 1, 1)]  # (b, d, L, N, G)
CPU_SLP = [(4, 312, 768, 196)]  # (b, A, F, R): the CUB shape scaled to CPU
GPU_SLP = [(32, 312, 768, 196)]
# --quick: tiny shapes (odd, non-power-of-two L) for the smoke test.
QUICK_SS2D = [(1, 4, 3, 5, 1), (1, 4, 3, 5, 2)]
QUICK_SCAN = [(1, 8, 13, 1, 1)]
QUICK_SLP = [(2, 12, 32, 10)]
QUICK_GPU_SS2D = [(1, 4, 3, 5, 1)]

CPU_STAGE1 = (2, 192, 56, 56, 1)  # where the CPU ss2d targets are defined (docs/design.md §5.3)


def ss2d_case(b: int, c: int, H: int, W: int, N: int) -> str:
    return f"b={b} C={c} {H}x{W} N={N}"


# --------------------------------------------------------------------------- inputs


def _randn(shape, g, device, dtype, scale=1.0, shift=0.0) -> torch.Tensor:
    return (torch.randn(shape, generator=g, device=device) * scale + shift).to(dtype)


def scan_params(rows: int, N: int, g, device) -> tuple[torch.Tensor, ...]:
    """A (rows, N) = -exp(.) < 0, D (rows,), delta_bias (rows,): fp32, as in VMamba."""
    A = -torch.exp(_randn((rows, N), g, device, torch.float32, 0.5))
    return (
        A,
        _randn((rows,), g, device, torch.float32),
        _randn((rows,), g, device, torch.float32, 0.1),
    )


def ss2d_inputs(b, c, H, W, N, dtype, device, seed=0) -> dict[str, torch.Tensor]:
    """Channel-first ss2d_scan inputs; delta is centred so that softplus(dt) ~ 0.3."""
    g = torch.Generator(device).manual_seed(seed)
    x = _randn((b, c, H, W), g, device, dtype)
    delta = _randn((b, 4, c, H, W), g, device, dtype, 0.5, -1.0)
    B = _randn((b, 4, N, H, W), g, device, dtype)
    C = _randn((b, 4, N, H, W), g, device, dtype)
    A, D, bias = scan_params(4 * c, N, g, device)
    return {"x": x, "delta": delta, "A": A, "B": B, "C": C, "D": D, "delta_bias": bias}


def scan_inputs(b, d, L, N, G, dtype, device, seed=0) -> dict[str, torch.Tensor]:
    """selective_scan inputs: u, delta (b, d, L); B, C (b, G, N, L)."""
    g = torch.Generator(device).manual_seed(seed)
    u = _randn((b, d, L), g, device, dtype)
    delta = _randn((b, d, L), g, device, dtype, 0.5, -1.0)
    B = _randn((b, G, N, L), g, device, dtype)
    C = _randn((b, G, N, L), g, device, dtype)
    A, D, bias = scan_params(d, N, g, device)
    return {"u": u, "delta": delta, "A": A, "B": B, "C": C, "D": D, "delta_bias": bias}


def slp_inputs(b, A, F_, R, dtype, device, seed=0) -> dict[str, torch.Tensor]:
    """feat (b, F, R) L2-normalised over F; q1, q2 (A, F)."""
    g = torch.Generator(device).manual_seed(seed)
    feat = F.normalize(_randn((b, F_, R), g, device, torch.float32), dim=1).to(dtype)
    return {
        "feat": feat,
        "q1": _randn((A, F_), g, device, dtype, F_**-0.5),
        "q2": _randn((A, F_), g, device, dtype, F_**-0.5),
    }


def to_scan_order(t: torch.Tensor) -> torch.Tensor:
    """(b, 4, X, H, W) per-direction map -> (b, 4, X, L): direction k in its own scan order.

    This is the layout an unfused SS2D already has for delta, B and C (VMamba projects them
    from the cross-scanned x), so the unfused pipelines get it for free, outside the timing.
    """
    b, k, X, H, W = t.shape
    pos = reference.scan_positions(H, W, t.device)
    return t.flatten(3).gather(3, pos[None, :, None, :].expand(b, k, X, H * W))


# --------------------------------------------------------------------------- peer pipelines


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


def unfused_ss2d_layout(i: dict) -> tuple[torch.Tensor, ...]:
    """ss2d inputs (spatial) -> unfused_ss2d arguments (delta (b, 4C, L), B/C (b, 4, N, L))."""
    b, c = i["x"].shape[:2]
    delta = to_scan_order(i["delta"]).reshape(b, 4 * c, -1)
    return (
        i["x"],
        delta,
        i["A"],
        to_scan_order(i["B"]),
        to_scan_order(i["C"]),
        i["D"],
        i["delta_bias"],
    )


def unfused_ss2d(backend: str, out_float32: bool) -> Fn:
    """Our unfused SS2D: ops.cross_scan -> ops.selective_scan (``backend``) -> ops.cross_merge."""

    def run(x, delta, A, B, C, D, delta_bias):
        b, c, H, W = x.shape
        us = ops.cross_scan(x).view(b, 4 * c, H * W)
        ys = ops.selective_scan(
            us, delta, A, B, C, D, delta_bias, True, out_float32=out_float32, backend=backend
        )
        return ops.cross_merge(ys.view(b, 4, c, H * W), H, W)

    return run


def fused_ss2d(backend: str, out_float32: bool) -> Fn:
    def run(x, delta, A, B, C, D, delta_bias):
        return ops.ss2d_scan(
            x, delta, A, B, C, D, delta_bias, True, out_float32=out_float32, backend=backend
        )

    return run


def scan_op(backend: str) -> Fn:
    def run(u, delta, A, B, C, D, delta_bias):
        return ops.selective_scan(u, delta, A, B, C, D, delta_bias, True, backend=backend)

    return run


def slp_op(backend: str) -> Fn:
    return lambda feat, q1, q2: ops.slp_project(feat, q1, q2, backend=backend)


def _spatial(i: dict) -> tuple[torch.Tensor, ...]:
    return tuple(i[k] for k in ("x", "delta", "A", "B", "C", "D", "delta_bias"))


def _scan_args(i: dict) -> tuple[torch.Tensor, ...]:
    return tuple(i[k] for k in ("u", "delta", "A", "B", "C", "D", "delta_bias"))


def _slp_args(i: dict) -> tuple[torch.Tensor, ...]:
    return i["feat"], i["q1"], i["q2"]


@dataclass
class Impl:
    """One implementation of a case: ``layout`` maps the case inputs to its arguments (untimed),
    ``run`` computes the output from them (timed)."""

    name: str
    run: Fn
    layout: Callable[[dict], tuple[torch.Tensor, ...]]
    memory: bool = True  # measure peak memory (skipped for the reference loop: minutes)
    full_only_n1: bool = False  # the reference loop's backward is quadratic in L; N = 1 only


# --------------------------------------------------------------------------- checks


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """|a - b| / |b| in norms (docs/design.md §6)."""
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def _fwd_bwd(run: Fn, layout, i: dict, dy: torch.Tensor):
    """Output and gradients w.r.t. the case inputs (spatial layout) through ``layout`` + ``run``."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in i.items()}
    y = run(*layout(leaves))
    grads = torch.autograd.grad(y, list(leaves.values()), dy)
    return y.detach(), dict(zip(leaves, grads, strict=True))


def check_against_reference(run: Fn, layout, ref: Fn, i: dict) -> dict[str, float]:
    """Relative errors of ``run`` (output and every gradient) against ``ref`` on inputs ``i``."""
    y_ref = ref(*i.values())
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
    cases = [
        (
            "ss2d",
            (2, 3, 5, 7, 1),
            mambapy_ss2d,
            mambapy_ss2d_layout,
            reference.ss2d_scan,
            lambda s: ss2d_inputs(*s, torch.float64, "cpu", seed=3),
        ),
        (
            "ss2d",
            (1, 2, 6, 3, 3),
            mambapy_ss2d,
            mambapy_ss2d_layout,
            reference.ss2d_scan,
            lambda s: ss2d_inputs(*s, torch.float64, "cpu", seed=4),
        ),
        (
            "selective_scan",
            (2, 6, 37, 2, 2),
            mambapy_selective_scan,
            mambapy_scan_layout,
            lambda u, delta, A, B, C, D, bias: reference.selective_scan(
                u, delta, A, B, C, D, bias, True
            ),
            lambda s: scan_inputs(*s, torch.float64, "cpu", seed=5),
        ),
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


# --------------------------------------------------------------------------- timing


@dataclass
class Timing:
    ms: float
    lo: float  # p25 (CPU) / p20 (GPU)
    hi: float  # p75 (CPU) / p80 (GPU)
    runs: int


class Deadline:
    """Wall-clock budget for the whole run: later measurements are skipped, not cut short."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def time_cpu(fn: Callable[[], object], budget_s: float, single_run_s: float = 10.0) -> Timing:
    """Median over repeated runs (torch.utils.benchmark) after one warm-up run.

    A function whose warm-up takes longer than ``single_run_s`` (the reference loop at large L)
    is timed from one run after the warm-up.
    """
    from torch.utils import benchmark

    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    if first > single_run_s:
        start = time.perf_counter()
        fn()
        once = (time.perf_counter() - start) * 1e3
        return Timing(once, once, once, 1)
    timer = benchmark.Timer("fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    m = timer.blocked_autorange(min_run_time=max(budget_s, min(3 * first, single_run_s)))
    per_run = sorted(t * 1e3 for t in m.times)
    q = (
        statistics.quantiles(per_run, n=4, method="inclusive")
        if len(per_run) > 1
        else [per_run[0]] * 3
    )
    return Timing(m.median * 1e3, q[0], q[2], len(per_run) * m.number_per_run)


def time_gpu(fn: Callable[[], object], warmup_ms: int, rep_ms: int) -> Timing:
    """Median and p20/p80 of ``triton.testing.do_bench`` (CUDA events, L2 flushed per run)."""
    from triton.testing import do_bench

    med, lo, hi = do_bench(fn, warmup=warmup_ms, rep=rep_ms, quantiles=[0.5, 0.2, 0.8])
    runs = max(1, round(rep_ms / max(med, 1e-3)))
    return Timing(med, lo, hi, runs)


# --------------------------------------------------------------------------- memory


def _cpu_allocation_trace(fn: Callable[[], object]) -> tuple[int, int, object]:
    """(peak, net) bytes allocated while ``fn`` runs, from the profiler's allocation events, and
    fn's result. Replays every CPU allocation and free in time order; counts kernel scratch too."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    # The raw records: EventList keeps only the allocations made outside any op.
    events = sorted(
        (e.start_ns(), e.nbytes())
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]"
    )
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak, live, result


def memory(run: Fn, args: tuple[torch.Tensor, ...], dy: torch.Tensor) -> dict[str, int]:
    """Bytes above what is allocated before the step (inputs and dy):

    fwd_peak: high-water mark during the forward (autograd recording);
    saved: still allocated when the forward returns (output + tensors saved for backward);
    step_peak: high-water mark over forward + backward, the returned gradients included.
    CPU: replay of the profiler's allocation events; CUDA: torch.cuda memory statistics.
    """
    if dy.device.type == "cuda":
        return _cuda_memory(run, args, dy)
    fwd_peak, saved, y = _cpu_allocation_trace(lambda: run(*args))
    bwd_peak, _, _ = _cpu_allocation_trace(lambda: torch.autograd.grad(y, args, dy))
    return {"fwd_peak": fwd_peak, "saved": saved, "step_peak": max(fwd_peak, saved + bwd_peak)}


def _cuda_memory(run: Fn, args: tuple[torch.Tensor, ...], dy: torch.Tensor) -> dict[str, int]:
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    y = run(*args)
    torch.cuda.synchronize()
    fwd_peak = torch.cuda.max_memory_allocated() - base
    saved = torch.cuda.memory_allocated() - base
    torch.cuda.reset_peak_memory_stats()
    torch.autograd.grad(y, args, dy)
    torch.cuda.synchronize()
    step_peak = max(fwd_peak, torch.cuda.max_memory_allocated() - base)
    return {"fwd_peak": fwd_peak, "saved": saved, "step_peak": step_peak}


# --------------------------------------------------------------------------- bytes


def ss2d_min_bytes(
    b: int, c: int, H: int, W: int, N: int, in_bytes: int, out_bytes: int, mode: str
) -> int:
    """The minimal bytes an ss2d_scan pass must move (docs/design.md §5.1), the GB/s denominator.

    Forward: reads x (b*C*L), delta (b*4C*L), B and C (2 * b*4*N*L) once in the input dtype and
    writes y (b*C*L) once in the output dtype.
    Backward: reads dy (output dtype), x, delta, B, C and writes dx, ddelta, dB, dC (input dtype).
    fwd+bwd: the sum. A, D and delta_bias (4C*(N+2) fp32) are negligible and not counted; so is
    anything recomputed or re-read (a kernel that re-reads its inputs is charged for it in time).
    """
    L = H * W
    inputs = b * c * L + b * 4 * c * L + 2 * b * 4 * N * L  # x, delta, B, C
    fwd = inputs * in_bytes + b * c * L * out_bytes
    bwd = b * c * L * out_bytes + 2 * inputs * in_bytes
    return {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}[mode]


def copy_bandwidth(
    timer: Callable[[Callable[[], object]], Timing], device: str, nbytes: int
) -> float:
    """Device-to-device copy bandwidth in GB/s (read + write) of an ``nbytes`` buffer."""
    src = torch.empty(nbytes // 2, dtype=torch.bfloat16, device=device).normal_()
    dst = torch.empty_like(src)
    t = timer(lambda: dst.copy_(src))
    return 2 * nbytes / (t.ms * 1e-3) / 1e9


# --------------------------------------------------------------------------- the runner


@dataclass
class Bench:
    device: str
    deadline: Deadline
    timer: Callable[[Callable[[], object]], Timing]
    rows: list[dict] = field(default_factory=list)
    save: Callable[[], None] | None = None  # called after every case: partial results survive

    def case(
        self,
        suite: str,
        case: str,
        dims: dict,
        dtype: str,
        impls: list[Impl],
        inputs: dict,
        modes: tuple[str, ...],
        out_dtype: torch.dtype,
        out_shape: tuple[int, ...],
        min_bytes: Callable[[str], int] | None = None,
    ) -> None:
        """Time every impl in every mode on one input set; record rows (errors, skips too)."""
        g = torch.Generator(self.device).manual_seed(7)
        dy = torch.randn(out_shape, generator=g, device=self.device).to(out_dtype)
        outputs = {}
        for impl in impls:
            base = {"suite": suite, "case": case, "dims": dims, "dtype": dtype, "impl": impl.name}
            try:
                args = tuple(t.detach().requires_grad_(True) for t in impl.layout(inputs))
            except Exception as e:  # noqa: BLE001 - reported in the table, never hidden
                self.rows.append({**base, "mode": "fwd", "error": f"{type(e).__name__}: {e}"})
                continue
            for mode in modes:
                row = {**base, "mode": mode}
                self.rows.append(row)
                if mode != "fwd" and impl.full_only_n1 and dims.get("N", 1) != 1:
                    row["skipped"] = "reference backward is quadratic in L: minutes at N > 1"
                    continue
                if self.deadline.left() <= 0:
                    row["skipped"] = "time limit"
                    continue
                try:
                    row.update(self._measure(impl, args, dy, mode, outputs))
                except Exception as e:  # noqa: BLE001 - reported in the table, never hidden
                    row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
                if min_bytes is not None and "ms" in row:
                    row["gbps"] = min_bytes(mode) / (row["ms"] * 1e-3) / 1e9
                print(
                    f"bench_ops: {suite} {case} {impl.name} {mode}: "
                    + (
                        f"{row['ms']:.4g} ms"
                        if "ms" in row
                        else row.get("skipped") or row.get("error")
                    ),
                    file=sys.stderr,
                    flush=True,
                )
            if impl.memory and self.deadline.left() > 0:
                try:
                    mem = memory(impl.run, args, dy)
                    self._mem_row(base).update(mem)
                except Exception as e:  # noqa: BLE001
                    self._mem_row(base)["memory_error"] = f"{type(e).__name__}: {e}"[:200]
            del args
        self._agreement(suite, case, outputs)
        if self.save is not None:
            self.save()

    def _mem_row(self, base: dict) -> dict:
        """Memory is attached to the impl's fwd row."""
        return next(
            r
            for r in reversed(self.rows)
            if all(r.get(k) == v for k, v in base.items()) and r["mode"] == "fwd"
        )

    def _measure(self, impl: Impl, args, dy, mode: str, outputs: dict) -> dict:
        if mode == "fwd":
            y = impl.run(*args)
            outputs[impl.name] = y.detach()
            t = self.timer(lambda: impl.run(*args))
        elif mode == "bwd":
            y = impl.run(*args)
            t = self.timer(lambda: torch.autograd.grad(y, args, dy, retain_graph=True))
        else:
            t = self.timer(lambda: torch.autograd.grad(impl.run(*args), args, dy))
        return {"ms": t.ms, "ms_lo": t.lo, "ms_hi": t.hi, "runs": t.runs}

    def _agreement(self, suite: str, case: str, outputs: dict) -> None:
        """Forward outputs of the impls of one case against its first impl (same inputs)."""
        names = list(outputs)
        for name in names[1:]:
            err = rel_err(outputs[name], outputs[names[0]])
            for r in self.rows:
                if (r["suite"], r["case"], r["impl"], r["mode"]) == (suite, case, name, "fwd"):
                    r["rel_diff_vs_" + names[0]] = err


def _backends(device: str, names: tuple[str, ...]) -> tuple[list[str], dict[str, str]]:
    """The named backends that run on ``device`` here, and why the others do not."""
    info = zeromamba.available_backends()
    ok = [n for n in names if device in info[n].devices]
    missing = {n: info[n].reason or f"not available on {device}" for n in names if n not in ok}
    return ok, missing


def run_cpu(args, bench: Bench, notes: list[str]) -> None:
    backends, missing = _backends("cpu", ("cpu", "reference"))
    notes += [f"backend {n} not run: {why}" for n, why in missing.items()]
    have_mambapy = pscan is not None
    if not have_mambapy:
        notes.append("mambapy not installed (pip install mambapy): its rows are absent")
    fp32 = torch.float32

    def impls(op: Callable[[str], Fn], layout, mamba: tuple | None) -> list[Impl]:
        out = [
            Impl(n, op(n), layout, memory=n != "reference", full_only_n1=n == "reference")
            for n in backends
        ]
        if mamba is not None and have_mambapy:
            out.insert(len([n for n in backends if n != "reference"]), Impl("mambapy", *mamba))
        return out

    # slp first, the reference loop last: what a --time-limit cuts is the least needed.
    if "slp" in args.suites:
        for b, A, F_, R in QUICK_SLP if args.quick else CPU_SLP:
            slp = [Impl(n, slp_op(n), _slp_args) for n in backends if n != "reference"]
            slp.append(Impl("einsum", reference.slp_project, _slp_args))
            bench.case(
                "slp_project",
                f"b={b} A={A} F={F_} R={R}",
                {"b": b, "A": A, "F": F_, "R": R},
                "float32",
                slp,
                slp_inputs(b, A, F_, R, fp32, "cpu"),
                ("fwd", "fwd+bwd"),
                fp32,
                (b, A),
            )
    if "ss2d" in args.suites:
        for b, c, H, W, N in QUICK_SS2D if args.quick else CPU_SS2D:
            bench.case(
                "ss2d_scan",
                ss2d_case(b, c, H, W, N),
                {"b": b, "C": c, "H": H, "W": W, "N": N},
                "float32",
                impls(
                    lambda n: fused_ss2d(n, False), _spatial, (mambapy_ss2d, mambapy_ss2d_layout)
                ),
                ss2d_inputs(b, c, H, W, N, fp32, "cpu"),
                ("fwd", "fwd+bwd"),
                fp32,
                (b, c, H, W),
                lambda m, s=(b, c, H, W, N): ss2d_min_bytes(*s, 4, 4, m),
            )
    if "scan" in args.suites:
        for b, d, L, N, G in QUICK_SCAN if args.quick else CPU_SCAN:
            bench.case(
                "selective_scan",
                f"b={b} d={d} L={L} N={N}",
                {"b": b, "d": d, "L": L, "N": N, "G": G},
                "float32",
                impls(scan_op, _scan_args, (mambapy_selective_scan, mambapy_scan_layout)),
                scan_inputs(b, d, L, N, G, fp32, "cpu"),
                ("fwd", "fwd+bwd"),
                fp32,
                (b, d, L),
            )


def run_gpu(
    args, bench: Bench, notes: list[str], meta: dict, names: tuple[str, ...] = ("cuda", "triton")
) -> None:
    """The GPU suites on ``bench.device`` for the backends ``names`` that run there (the harness
    runs on CPU too, with the reference backend, for the smoke test)."""
    device = bench.device
    backends, missing = _backends(device, names)
    notes += [f"backend {n} not run: {why}" for n, why in missing.items()]
    meta["copy_gbps"] = copy_bandwidth(bench.timer, device, 1 << 24 if args.quick else 1 << 30)
    meta["checks"] += check_backends(backends, device)
    bf16, fp32 = torch.bfloat16, torch.float32
    if "ss2d" in args.suites:
        for s, (b, c, H, W, N) in enumerate(QUICK_GPU_SS2D if args.quick else GPU_SS2D, 1):
            impls = []
            for n in backends:
                impls.append(Impl(n, fused_ss2d(n, True), _spatial))
                impls.append(Impl(f"unfused-{n}", unfused_ss2d(n, True), unfused_ss2d_layout))
            bench.case(
                "ss2d_scan",
                f"stage {s}: b={b} C={c} {H}x{W} N={N}",
                {"b": b, "C": c, "H": H, "W": W, "N": N},
                "bfloat16 in, float32 out",
                impls,
                ss2d_inputs(b, c, H, W, N, bf16, device),
                ("fwd", "bwd", "fwd+bwd"),
                fp32,
                (b, c, H, W),
                lambda m, s=(b, c, H, W, N): ss2d_min_bytes(*s, 2, 4, m),
            )
            if device == "cuda":
                torch.cuda.empty_cache()
    if "slp" in args.suites:
        for b, A, F_, R in QUICK_SLP if args.quick else GPU_SLP:
            slp = [Impl(n, slp_op(n), _slp_args) for n in backends]
            slp.append(Impl("einsum", reference.slp_project, _slp_args))
            bench.case(
                "slp_project",
                f"b={b} A={A} F={F_} R={R}",
                {"b": b, "A": A, "F": F_, "R": R},
                "float32",
                slp,
                slp_inputs(b, A, F_, R, fp32, device),
                ("fwd", "bwd", "fwd+bwd"),
                fp32,
                (b, A),
            )
    for r in bench.rows:
        if "gbps" in r:
            r["pct_copy"] = 100 * r["gbps"] / meta["copy_gbps"]


def check_backends(backends: list[str], device: str) -> list[dict]:
    """Fused and unfused SS2D of every backend vs the reference, fp32, one tiny shape.

    Recorded, not fatal: the op tests judge correctness; this says the timed pipelines compute
    the same function."""
    out = []
    i = ss2d_inputs(2, 6, 5, 7, 2, torch.float32, device, seed=11)
    for n in backends:
        for name, run, layout in (
            (n, fused_ss2d(n, False), _spatial),
            (f"unfused-{n}", unfused_ss2d(n, False), unfused_ss2d_layout),
        ):
            try:
                errs = check_against_reference(run, layout, reference.ss2d_scan, i)
                out.append(
                    {
                        "op": "ss2d",
                        "impl": name,
                        "shape": [2, 6, 5, 7, 2],
                        "dtype": "float32",
                        "max_rel_err": max(errs.values()),
                        "errors": errs,
                    }
                )
            except Exception as e:  # noqa: BLE001 - recorded, the benchmark goes on
                out.append({"op": "ss2d", "impl": name, "error": f"{type(e).__name__}: {e}"[:200]})
    return out


# --------------------------------------------------------------------------- ratios and tables


def _find(
    rows: list[dict], suite: str, impl: str, mode: str, key: str = "ms", case: str | None = None
) -> float | None:
    """The first measured ``key`` of (suite, impl, mode), in ``case`` when given."""
    for r in rows:
        if (
            (r["suite"], r["impl"], r["mode"]) == (suite, impl, mode)
            and key in r
            and case in (None, r["case"])
        ):
            return r[key]
    return None


def key_ratios(device: str, rows: list[dict], quick: bool) -> list[dict]:
    """The ratios docs/design.md §5.3 sets targets on (value None when a side was not measured)."""
    out = []

    def add(name, num, den, target, cmp=">="):
        value = num / den if num is not None and den else None
        out.append({"name": name, "value": value, "target": target, "cmp": cmp})

    if device == "cpu":
        stage1 = ss2d_case(*(QUICK_SS2D[0] if quick else CPU_STAGE1))
        for peer, target in (("mambapy", 10), ("reference", 100)):
            add(
                f"ss2d fwd+bwd {stage1}: {peer} / cpu",
                _find(rows, "ss2d_scan", peer, "fwd+bwd", case=stage1),
                _find(rows, "ss2d_scan", "cpu", "fwd+bwd", case=stage1),
                target,
            )
        add(
            "slp fwd+bwd time: einsum / cpu",
            _find(rows, "slp_project", "einsum", "fwd+bwd"),
            _find(rows, "slp_project", "cpu", "fwd+bwd"),
            1,
        )
        add(
            "slp peak activation memory (fwd peak): einsum / cpu",
            _find(rows, "slp_project", "einsum", "fwd", "fwd_peak"),
            _find(rows, "slp_project", "cpu", "fwd", "fwd_peak"),
            10,
        )
        add(
            "slp activations saved for backward: einsum / cpu",
            _find(rows, "slp_project", "einsum", "fwd", "saved"),
            _find(rows, "slp_project", "cpu", "fwd", "saved"),
            10,
        )
        return out
    for case in dict.fromkeys(r["case"] for r in rows if r["suite"] == "ss2d_scan"):
        label = case.split(":")[0]
        for n in ("cuda", "triton"):
            add(
                f"ss2d fwd+bwd {label}: unfused-{n} / {n}",
                _find(rows, "ss2d_scan", f"unfused-{n}", "fwd+bwd", case=case),
                _find(rows, "ss2d_scan", n, "fwd+bwd", case=case),
                3,
            )
            out.append(
                {
                    "name": f"ss2d fwd+bwd {label}: {n} % of copy bandwidth",
                    "value": _find(rows, "ss2d_scan", n, "fwd+bwd", "pct_copy", case),
                    "target": 70,
                    "cmp": ">=",
                }
            )
        add(
            f"ss2d fwd+bwd {label}: triton / cuda",
            _find(rows, "ss2d_scan", "triton", "fwd+bwd", case=case),
            _find(rows, "ss2d_scan", "cuda", "fwd+bwd", case=case),
            1.5,
            "<=",
        )
    for n in ("cuda", "triton"):
        add(
            f"slp fwd+bwd time: einsum / {n}",
            _find(rows, "slp_project", "einsum", "fwd+bwd"),
            _find(rows, "slp_project", n, "fwd+bwd"),
            2,
        )
        add(
            f"slp peak activation memory (fwd peak): einsum / {n}",
            _find(rows, "slp_project", "einsum", "fwd", "fwd_peak"),
            _find(rows, "slp_project", n, "fwd", "fwd_peak"),
            10,
        )
        add(
            f"slp activations saved for backward: einsum / {n}",
            _find(rows, "slp_project", "einsum", "fwd", "saved"),
            _find(rows, "slp_project", n, "fwd", "saved"),
            10,
        )
    return out


def _ms(r: dict | None) -> str:
    if r is None:
        return ""
    if "error" in r:
        return "error"
    if "skipped" in r:
        return "skipped"
    if "ms" not in r:
        return ""
    tail = " (1 run)" if r.get("runs") == 1 else ""
    return f"{r['ms']:.3g}{tail}"


def _mb(n: int | None) -> str:
    return "" if n is None else f"{n / 2**20:.3g}"


def markdown(result: dict) -> str:
    meta, rows = result["meta"], result["rows"]
    device = meta["device"]
    lines = [
        f"# Op benchmarks, {device}: {meta['machine']}",
        "",
        f"{meta['date']}, commit {meta['commit']} (extension built "
        f"{meta.get('extension_built', '?')}), torch {meta['torch']}"
        + (f", triton {meta['triton']}" if meta.get("triton") else "")
        + f", {meta['threads']} threads"
        + (", --quick sizes" if meta["quick"] else "")
        + (
            f", 1-min load average {meta['loadavg_start']:.1f} at the start, "
            f"{meta['loadavg_end']:.1f} at the end"
            if "loadavg_end" in meta
            else ""
        )
        + (" (PARTIAL: the run did not finish)" if meta.get("partial") else ""),
        "",
    ]
    modes = ["fwd", "bwd", "fwd+bwd"] if device == "cuda" else ["fwd", "fwd+bwd"]
    for suite in dict.fromkeys(r["suite"] for r in rows):
        srows = [r for r in rows if r["suite"] == suite]
        gbps = any("gbps" in r for r in srows) and device == "cuda"
        head = ["case", "impl"] + [f"{m} ms" for m in modes]
        if gbps:
            head += ["fwd+bwd GB/s", "% copy"]
        head += [
            "fwd peak MB",
            "saved MB",
            "fwd+bwd peak MB",
            "fwd+bwd / first row",
            "fwd rel diff to first row",
        ]
        lines += [
            f"## {suite} ({srows[0]['dtype']})",
            "",
            "| " + " | ".join(head) + " |",
            "|" + "---|" * len(head),
        ]
        for case in dict.fromkeys(r["case"] for r in srows):
            crows = [r for r in srows if r["case"] == case]
            first = None
            for impl in dict.fromkeys(r["impl"] for r in crows):
                by_mode = {r["mode"]: r for r in crows if r["impl"] == impl}
                full = by_mode.get("fwd+bwd", {}).get("ms")
                first = full if first is None else first
                fwd = by_mode.get("fwd", {})
                cells = [case, impl] + [_ms(by_mode.get(m)) for m in modes]
                if gbps:
                    fb = by_mode.get("fwd+bwd", {})
                    cells += [
                        f"{fb['gbps']:.0f}" if "gbps" in fb else "",
                        f"{fb['pct_copy']:.0f}%" if "pct_copy" in fb else "",
                    ]
                diff = next((v for k, v in fwd.items() if k.startswith("rel_diff_vs_")), None)
                cells += [
                    _mb(fwd.get("fwd_peak")),
                    _mb(fwd.get("saved")),
                    _mb(fwd.get("step_peak")),
                    f"{full / first:.3g}x" if full and first else "",
                    "" if diff is None else f"{diff:.1e}",
                ]
                lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
        "## Key ratios (docs/design.md §5.3)",
        "",
        "| ratio | measured | target |",
        "|---|---|---|",
    ]
    for k in result["ratios"]:
        v = "not measured" if k["value"] is None else f"{k['value']:.3g}"
        unit = "%" if "% of copy" in k["name"] else "x"
        lines.append(
            f"| {k['name']} | {v}{unit if k['value'] is not None else ''} | "
            f"{k['cmp']} {k['target']}{unit} |"
        )
    lines.append("")
    problems = [r for r in rows if "error" in r or "memory_error" in r]
    for r in problems:
        lines.append(
            f"- error: {r['suite']} {r['case']} {r['impl']} {r['mode']}: "
            f"{r.get('error') or r.get('memory_error')}"
        )
    for c in meta["checks"]:
        what = f"{c['op']} {c['impl']} vs reference"
        lines.append(
            f"- check: {what}: "
            + (
                f"max rel err {c['max_rel_err']:.2e} "
                f"({c['dtype']}, shape {c['shape']}, output and "
                "all gradients)"
                if "error" not in c
                else c["error"]
            )
        )
    lines += [f"- {n}" for n in meta["notes"]]
    lines += ["", *(f"{i}. {n}" for i, n in enumerate(FOOTNOTES[device], 1)), ""]
    return "\n".join(lines)


FOOTNOTES = {
    "cpu": [
        (
            "Times: median (ms) of torch.utils.benchmark blocked_autorange after one warm-up run, "
            "all cores; a case whose warm-up took over 10 s (the reference loop at large L) is timed "
            "from one run after the warm-up, marked (1 run). fwd runs with autograd recording; "
            "fwd+bwd is the forward plus torch.autograd.grad w.r.t. every input (ss2d: x, delta, "
            "A, B, C, D, delta_bias)."
        ),
        (
            "Memory: the profiler's CPU allocation events (torch.profiler, profile_memory=True) "
            "replayed in time order, bytes above what was live before the step. fwd peak: "
            "high-water mark of the forward; saved: still allocated after it (output + tensors "
            "saved for backward); fwd+bwd peak: over the whole step, the returned gradients "
            'included. "Peak activation memory" in the ratios is the fwd peak.'
        ),
        (
            "mambapy: x cross-scanned with torch views (flip/transpose), then dA = exp(dt A) and "
            "dt B u for the four orders as one (b, L, 4C, N) scan by mambapy.pscan (which pads L to "
            "a power of two), contracted with C, + D u, merged. delta, B, C are handed to it already "
            "in scan order and in its (b, L, .) layout, as VMamba's unfused SS2D produces them: "
            "that layout work is not timed. Checked against zeromamba.reference (fp64, output and "
            "gradients) before timing."
        ),
        "einsum: zeromamba.reference.slp_project (two einsums, softmax over R, product, sum).",
    ],
    "cuda": [
        (
            "Times: triton.testing.do_bench median (ms) with warm-up, p20/p80 in the JSON. fwd runs "
            "with autograd recording; bwd is torch.autograd.grad w.r.t. every input on a retained "
            "graph; fwd+bwd both."
        ),
        (
            "GB/s: ss2d_min_bytes (bench_ops.py): forward reads x, delta, B, C once and writes y; "
            "backward reads dy, x, delta, B, C and writes dx, ddelta, dB, dC; A, D, delta_bias not "
            "counted. % copy: of a 1 GiB device-to-device torch copy measured in the same run "
            "(read + write bytes)."
        ),
        (
            "unfused-<backend>: ops.cross_scan -> ops.selective_scan (same backend, fp32 out) -> "
            "ops.cross_merge; delta, B, C handed to it already in scan order (as VMamba's unfused "
            "SS2D has them), untimed."
        ),
        (
            "Memory: torch.cuda.max_memory_allocated / memory_allocated above the step's start. "
            "fwd peak: high-water mark of the forward; saved: allocated after it; fwd+bwd peak: "
            "over the step, returned gradients included."
        ),
        "einsum: zeromamba.reference.slp_project.",
    ],
}


# --------------------------------------------------------------------------- main


def _git(*cmd: str) -> str | None:
    try:
        return subprocess.run(
            ["git", *cmd], cwd=ROOT, text=True, capture_output=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _git_commit() -> str:
    """Short commit, "+dirty" when the tree has uncommitted changes (untracked files too);
    $ZEROMAMBA_COMMIT where the copy has no git metadata."""
    commit = _git("rev-parse", "--short", "HEAD")
    if commit is None:
        return os.environ.get("ZEROMAMBA_COMMIT", "unknown")
    return commit + ("+dirty" if _git("status", "--porcelain") else "")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument(
        "--out", type=Path, default=None, help="output folder (default bench/results/local/<date>)"
    )
    p.add_argument("--machine", default=None, help="machine label for the table")
    p.add_argument("--quick", action="store_true", help="tiny shapes (smoke test)")
    p.add_argument(
        "--suites",
        default="ss2d,scan,slp",
        help="comma-separated subset of ss2d,scan,slp (scan: CPU only)",
    )
    p.add_argument(
        "--time-limit",
        type=float,
        default=None,
        help="seconds; measurements starting later are skipped (default: cpu 1800, cuda 180)",
    )
    p.add_argument(
        "--min-run-time",
        type=float,
        default=None,
        help="CPU seconds of timed runs per measurement (default 1, --quick 0.02)",
    )
    p.add_argument("--warmup-ms", type=int, default=25, help="GPU do_bench warm-up (ms)")
    p.add_argument("--rep-ms", type=int, default=100, help="GPU do_bench repetition time (ms)")
    args = p.parse_args(argv)
    args.suites = set(args.suites.split(","))
    if args.time_limit is None:
        args.time_limit = 1800 if args.device == "cpu" else 180
    if args.min_run_time is None:
        args.min_run_time = 0.02 if args.quick else 1.0
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    # The tests set ZEROMAMBA_POISON=1 (kernels NaN-fill every output first): it costs time and
    # must not leak into a benchmark started from a test.
    os.environ.pop("ZEROMAMBA_POISON", None)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_ops: --device cuda but no CUDA device is visible", file=sys.stderr)
        return 2
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    out = args.out or ROOT / "bench" / "results" / "local" / date
    out.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    meta = {
        "device": args.device,
        "date": date,
        "commit": _git_commit(),
        "quick": args.quick,
        "machine": args.machine
        or (
            torch.cuda.get_device_name()
            if args.device == "cuda"
            else f"{platform.node()} ({os.cpu_count()} CPUs)"
        ),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "notes": notes,
        "checks": [],
        "loadavg_start": os.getloadavg()[0],
        "extension_built": datetime.datetime.fromtimestamp(
            os.path.getmtime(zeromamba._C.__file__), datetime.timezone.utc
        ).strftime("%F %T UTC"),
        "backends": {
            n: {"devices": list(i.devices), "reason": i.reason}
            for n, i in zeromamba.available_backends().items()
        },
    }
    try:
        import triton

        meta["triton"] = triton.__version__
    except ImportError:
        meta["triton"] = None
    start = time.monotonic()

    def save(final: bool = False) -> str:
        meta["partial"] = not final  # true while running: a killed run leaves what it measured
        meta["wall_s"] = round(time.monotonic() - start, 1)
        meta["loadavg_end"] = os.getloadavg()[0]
        result = {
            "meta": meta,
            "rows": bench.rows,
            "ratios": key_ratios(args.device, bench.rows, args.quick),
        }
        (out / f"ops-{args.device}.json").write_text(json.dumps(_finite(result), indent=1))
        table = markdown(result)
        (out / f"ops-{args.device}.md").write_text(table)
        return table

    def timer(fn: Callable[[], object]) -> Timing:
        if args.device == "cpu":
            return time_cpu(fn, args.min_run_time)
        return time_gpu(fn, args.warmup_ms, args.rep_ms)

    bench = Bench(args.device, Deadline(args.time_limit), timer, save=save)
    if args.device == "cpu":
        if pscan is not None:
            meta["checks"] = verify_mambapy()
        run_cpu(args, bench, notes)
    else:
        run_gpu(args, bench, notes, meta)
    if any(r.get("skipped") == "time limit" for r in bench.rows):
        notes.append(f"time limit of {args.time_limit:.0f} s reached: later measurements skipped")
    print(save(final=True))
    print(f"bench_ops: wrote {out}/ops-{args.device}.json and .md ({meta['wall_s']} s)")
    return 0


def _finite(o):
    """The result with non-finite floats (a NaN error, say) as strings: strict JSON."""
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_finite(v) for v in o]
    if isinstance(o, float) and not math.isfinite(o):
        return str(o)
    return o


if __name__ == "__main__":
    sys.exit(main())
