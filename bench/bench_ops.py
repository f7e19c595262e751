#!/usr/bin/env python
"""Op benchmarks: every backend of ``ss2d_scan``, ``selective_scan`` and ``slp_project`` against
the references and peers that define the performance targets.

``--device cpu`` (fp32, VMamba-T stage shapes at 224 px, b = 2):
  * ss2d_scan fwd and fwd+bwd: backends ``cpu`` and ``reference`` against a four-way pipeline on
    ``mambapy.pscan`` (the pure-PyTorch scan CPU users pick; verified against the reference on
    small shapes before anything is timed, the run aborts on a mismatch);
  * selective_scan alone (b = 2, d = 768, L = 3136, N = 1): cpu, reference, mambapy;
  * slp_project (b = 4, A = 312, F = 768, R = 196): cpu against its einsum form
    (``zeromamba.reference.slp_project``), time and activation memory;
  * then the target ratios, each from one interleaved loop (ours, peer, ours, peer, ...; median
    and spread over the rounds): fwd+bwd against mambapy and the einsum form, fwd and bwd against
    the transcendental floor (torch's vectorised exp / log1p over the elements the scan
    transforms), and the N = 16 backward per state against N = 1's.
``--device cuda`` (VMamba-S stage shapes at 448 px, b = 32, bf16 in, fp32 out):
  * ss2d_scan fwd, bwd and fwd+bwd: backends ``cuda`` and ``triton`` against the unfused pipeline
    built from our own ops (cross_scan -> selective_scan on the same backend -> cross_merge),
    with GB/s on the minimal-bytes count (``bench.byte_model.ss2d_min_bytes``) and the % of the
    device-to-device copy bandwidth measured in the same run;
  * slp_project (b = 32, A = 312, F = 768, R = 196): cuda, triton and the einsum form.

Timing: medians over repeated runs after warm-up, ``torch.utils.benchmark`` on CPU and
``triton.testing.do_bench`` on GPU. Nothing here asserts a timing. Results go to
``<out>/ops-<device>.json`` and ``<out>/ops-<device>.md``; the markdown table is printed last.
The pieces live in small modules next to this script: cases (shapes, ops), peers (mambapy),
timing (incl. the interleaved loop), memory, byte_model (minimal bytes), report.
``python -m pytest bench --benchmark-only`` runs the same cases under pytest-benchmark.

Usage:
  python bench/bench_ops.py --device cpu [--quick] [--out DIR] [--machine "2-core CPU dev box"]
  python bench/bench_ops.py --device cuda --time-limit 180
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: the bench package sits next to zeromamba
    sys.path.insert(0, str(ROOT))

import torch

import zeromamba
from bench.byte_model import copy_bandwidth, ss2d_min_bytes
from bench.cases import (
    CPU_SCAN,
    CPU_SCAN_WIDE,
    CPU_SLP,
    CPU_SS2D,
    CPU_STAGE1,
    GPU_SLP,
    GPU_SS2D,
    QUICK_GPU_SS2D,
    QUICK_SCAN,
    QUICK_SLP,
    QUICK_SS2D,
    Fn,
    Impl,
    _scan_args,
    _slp_args,
    _spatial,
    fused_ss2d,
    scan_op,
    slp_op,
    ss2d_case,
    unfused_ss2d,
    unfused_ss2d_layout,
)
from bench.memory import memory
from bench.peers import (
    check_against_reference,
    mambapy_scan_layout,
    mambapy_selective_scan,
    mambapy_ss2d,
    mambapy_ss2d_layout,
    pscan,
    verify_mambapy,
)
from bench.report import FOOTNOTES, finite, git_commit, key_ratios, markdown  # noqa: F401
from bench.timing import (
    Deadline,
    Timing,
    interleaved,
    time_cpu,
    time_gpu,
    transcendental_floor,
)
from zeromamba import reference
from zeromamba.testing import rel_err, scan_inputs, slp_inputs, ss2d_inputs


@dataclass
class Bench:
    device: str
    deadline: Deadline
    timer: Callable[[Callable[[], object]], Timing]
    rows: list[dict] = field(default_factory=list)
    interleaved: list[dict] = field(default_factory=list)  # the CPU target comparisons
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


def slp_cases(bench: Bench, shapes, backends: list[str], modes: tuple[str, ...]) -> None:
    """slp_project on ``bench.device`` for each (b, A, F, R): our backends (the reference
    backend excepted) against the einsum form."""
    fp32 = torch.float32
    for b, A, F_, R in shapes:
        slp = [Impl(n, slp_op(n), _slp_args) for n in backends if n != "reference"]
        slp.append(Impl("einsum", reference.slp_project, _slp_args))
        bench.case(
            "slp_project",
            f"b={b} A={A} F={F_} R={R}",
            {"b": b, "A": A, "F": F_, "R": R},
            "float32",
            slp,
            slp_inputs(b, A, F_, R, fp32, bench.device),
            modes,
            fp32,
            (b, A),
        )


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
        slp_cases(bench, QUICK_SLP if args.quick else CPU_SLP, backends, ("fwd", "fwd+bwd"))
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
        modes = ("fwd", "bwd", "fwd+bwd")
        slp_cases(bench, QUICK_SLP if args.quick else GPU_SLP, backends, modes)
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


# --------------------------------------------------------------------------- interleaved ratios


def _grad_step(run: Fn, args: tuple[torch.Tensor, ...], dy: torch.Tensor) -> Callable[[], object]:
    return lambda: torch.autograd.grad(run(*args), args, dy)


def _no_grad(fn: Callable[[], object]) -> Callable[[], object]:
    def run():
        with torch.no_grad():
            return fn()

    return run


def _leaves(ts: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return tuple(t.detach().requires_grad_(True) for t in ts)


def _scan_sides(run: Fn, args: tuple, dy: torch.Tensor) -> dict[str, Callable[[], object]]:
    """fwd (no autograd), bwd (on a retained graph) and fwd+bwd of one op."""
    y = run(*args)
    return {
        "fwd": _no_grad(lambda: run(*args)),
        "bwd": lambda: torch.autograd.grad(y, args, dy, retain_graph=True),
        "fwd+bwd": _grad_step(run, args, dy),
    }


def interleaved_ratios(args, bench: Bench) -> None:
    """The CPU target ratios, each measured in one interleaved loop (ours, peer, ours, ...)."""
    rounds, budget = args.rounds, 20 if args.quick else 90
    have_cpu = "cpu" in zeromamba.available_backends()["cpu"].devices
    if not have_cpu:
        return

    def record(name, fns, num, den, target, cmp, per=1.0):
        if bench.deadline.left() <= 0:
            return
        r = interleaved(fns, rounds=rounds, budget_s=budget)
        ratio = r.ratio(num, den)
        if per != 1.0:  # a per-unit ratio (per state): scale every round alike
            ratio = {k: v / per if k != "rounds" else v for k, v in ratio.items()}
        bench.interleaved.append(
            {
                "name": name,
                **ratio,
                "ms": {num: r.median_ms(num), den: r.median_ms(den)},
                "target": target,
                "cmp": cmp,
                "loadavg": r.loadavg,
            }
        )
        print(f"bench_ops: interleaved {name}: {ratio['median']:.3g}", file=sys.stderr)
        if bench.save is not None:
            bench.save()

    def floor_and_peer(op: str, label: str, ours: dict, floor, peer) -> None:
        """fwd, bwd against the transcendental floor (<= 2x); fwd+bwd against mambapy (>= 30x)."""
        for mode in ("fwd", "bwd"):
            record(
                f"{op} {mode} {label}: cpu / floor",
                {mode: ours[mode], "floor": floor},
                mode,
                "floor",
                2,
                "<=",
            )
        if pscan is not None:
            record(
                f"{op} fwd+bwd {label}: mambapy / cpu",
                {"cpu": ours["fwd+bwd"], "mambapy": peer()},
                "mambapy",
                "cpu",
                30,
                ">=",
            )

    fp32 = torch.float32
    if "ss2d" in args.suites:
        s = QUICK_SS2D[0] if args.quick else CPU_STAGE1
        b, c, H, W, N = s
        i = ss2d_inputs(*s, fp32, "cpu")
        dy = torch.randn(b, c, H, W, generator=torch.Generator().manual_seed(7))
        ours = _scan_sides(fused_ss2d("cpu", False), _leaves(_spatial(i)), dy)
        floor = transcendental_floor(b * 4 * c * H * W, N)
        floor_and_peer(
            "ss2d",
            ss2d_case(*s),
            ours,
            floor,
            lambda: _grad_step(mambapy_ss2d, _leaves(mambapy_ss2d_layout(i)), dy),
        )
        wide = ss2d_inputs(b, c, H, W, 16, fp32, "cpu")
        bwd16 = _scan_sides(fused_ss2d("cpu", False), _leaves(_spatial(wide)), dy)["bwd"]
        record(
            f"ss2d bwd {ss2d_case(b, c, H, W, 16)} per state / N=1",
            {"N=16": bwd16, "N=1": ours["bwd"]},
            "N=16",
            "N=1",
            1,
            "<=",
            per=16,
        )
    if "scan" in args.suites:
        s = QUICK_SCAN[0] if args.quick else CPU_SCAN[0]
        b, d, L, N, _ = s
        i = scan_inputs(*s, fp32, "cpu")
        dy = torch.randn(b, d, L, generator=torch.Generator().manual_seed(7))
        ours = _scan_sides(scan_op("cpu"), _leaves(_scan_args(i)), dy)
        floor = transcendental_floor(b * d * L, N)
        floor_and_peer(
            "selective_scan",
            f"b={b} d={d} L={L} N={N}",
            ours,
            floor,
            lambda: _grad_step(mambapy_selective_scan, _leaves(mambapy_scan_layout(i)), dy),
        )
        # mambapy's cost grows with d_state (its scan runs over (b, L, d, N) tensors) while ours
        # is floor-bound per (channel, step) plus a multiply-add per state: the ratio depends on
        # the shape, so it is also measured at Mamba's own d_state = 16.
        s16 = QUICK_SCAN[0] if args.quick else CPU_SCAN_WIDE
        i16 = scan_inputs(*s16, fp32, "cpu")
        dy16 = torch.randn(*s16[:2], s16[2], generator=torch.Generator().manual_seed(7))
        a16 = _leaves(_scan_args(i16))
        record(
            f"selective_scan fwd+bwd b={s16[0]} d={s16[1]} L={s16[2]} N={s16[3]}: mambapy / cpu",
            {
                "cpu": _grad_step(scan_op("cpu"), a16, dy16),
                "mambapy": _grad_step(
                    mambapy_selective_scan, _leaves(mambapy_scan_layout(i16)), dy16
                ),
            },
            "mambapy",
            "cpu",
            30,
            ">=",
        )
    if "slp" in args.suites:
        s = QUICK_SLP[0] if args.quick else CPU_SLP[0]
        i = slp_inputs(*s, fp32, "cpu")
        dy = torch.randn(s[0], s[1], generator=torch.Generator().manual_seed(7))
        a = _leaves(_slp_args(i))
        record(
            f"slp fwd+bwd b={s[0]} A={s[1]} F={s[2]} R={s[3]}: einsum / cpu",
            {
                "cpu": _grad_step(slp_op("cpu"), a, dy),
                "einsum": _grad_step(reference.slp_project, a, dy),
            },
            "einsum",
            "cpu",
            2,
            ">=",
        )


# --------------------------------------------------------------------------- main


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
    optional = (  # unset: a default that depends on --device or --quick, filled in below
        (
            "--time-limit",
            float,
            "seconds; measurements starting later are skipped (default: cpu 1800, cuda 180)",
        ),
        (
            "--min-run-time",
            float,
            "CPU seconds of timed runs per measurement (default 1, --quick 0.02)",
        ),
        (
            "--rounds",
            int,
            "CPU: rounds of the interleaved comparisons (default 7, --quick 3; 0 skips them)",
        ),
    )
    for flag, kind, text in optional:
        p.add_argument(flag, type=kind, default=None, help=text)
    p.add_argument(
        "--ratios-only",
        action="store_true",
        help="CPU: only the interleaved target comparisons (no per-impl table)",
    )
    p.add_argument("--warmup-ms", type=int, default=25, help="GPU do_bench warm-up (ms)")
    p.add_argument("--rep-ms", type=int, default=100, help="GPU do_bench repetition time (ms)")
    args = p.parse_args(argv)
    args.suites = set(args.suites.split(","))
    if args.time_limit is None:
        args.time_limit = 1800 if args.device == "cpu" else 180
    if args.rounds is None:
        args.rounds = 3 if args.quick else 7
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
        "commit": git_commit(),
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
            "interleaved": bench.interleaved,
            "ratios": key_ratios(args.device, bench.rows, args.quick, bench.interleaved),
        }
        (out / f"ops-{args.device}.json").write_text(json.dumps(finite(result), indent=1))
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
        if not args.ratios_only:
            run_cpu(args, bench, notes)
        if args.rounds > 0:
            interleaved_ratios(args, bench)
    else:
        run_gpu(args, bench, notes, meta)
    if any(r.get("skipped") == "time limit" for r in bench.rows):
        notes.append(f"time limit of {args.time_limit:.0f} s reached: later measurements skipped")
    print(save(final=True))
    print(f"bench_ops: wrote {out}/ops-{args.device}.json and .md ({meta['wall_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
