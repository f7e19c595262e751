#!/usr/bin/env python
"""Static kernel report: what an H100 would see of our CUDA and Triton kernels, without a GPU.

Writes ``<out>/kernels.json`` and ``<out>/kernels.md``:

* ``kernels``: every CUDA ``__global__`` instantiation of ``csrc/cuda`` compiled for sm_90 by nvcc
  (registers, spills, static shared memory from the objects; H100 occupancy; for the scan kernels
  the hot loop's SASS instructions per scan step) and every Triton kernel specialisation the ops
  launch at the report's shapes, compiled for sm_90 with ``triton.compile`` (no GPU needed).
* ``ops``: ``ss2d_scan`` (both layouts), ``selective_scan`` and ``slp_project``, forward and
  backward, at the VMamba-S shapes at 448 px (b = 32, bf16 in, fp32 out): the op's minimal bytes,
  the bytes the CUDA kernels move by the kernel lab's warp-level traffic model (emulated at a
  scaled-down shape, scaled per launch: ``kernel_static/traffic.py``), sectors per request,
  atomics, and a modeled H100 time (``kernel_static/cost_model.py``).

Every time and bandwidth figure is **modeled, not measured**.

Usage:
  python bench/kernel_report.py --out DIR [--subset tiny] [--no-triton] [--no-ops]
  python bench/kernel_report.py --out DIR --render DIR/kernels.json   # markdown only
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import math
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import bench_ops
import torch
from kernel_static import (
    cost_model,
    cuda_kernels,
    min_bytes,
    slp_model,
    torch_glue,
    traffic,
    triton_op_traffic,
)
from kernel_static import triton_kernels as tk

DTYPE, IN_BYTES, OUT_BYTES = torch.bfloat16, 2, 4
LAYOUTS = ("channel_first", "channel_last")
TRITON_COUNTS = ("requests", "sectors", "ideal_sectors", "lines", "bytes_l2", "atomics")


def cases(subset: str) -> list[tuple[str, dict, str]]:
    """(op, shape, layout) of the report: bench_ops' GPU shapes (VMamba-S at 448 px, b = 32)."""
    if subset == "tiny":
        return [("ss2d_scan", {"b": 2, "C": 16, "H": 7, "W": 9, "N": 1}, "channel_first")]
    out = []
    for b, c, H, W, N in bench_ops.GPU_SS2D:
        for layout in LAYOUTS:
            out.append(("ss2d_scan", {"b": b, "C": c, "H": H, "W": W, "N": N}, layout))
    for N in (1, 16):
        out.append(("selective_scan", {"b": 32, "d": 1536, "L": 3136, "N": N, "G": 1}, "-"))
    for b, A, F, R in bench_ops.GPU_SLP:
        out.append(("slp_project", {"b": b, "A": A, "F": F, "R": R}, "-"))
    return out


# --------------------------------------------------------------------------- CUDA ops


def _kernel_lookup(rows: list[dict]) -> dict:
    return {(r["name"], r["variant"].get("dtype"), r["variant"].get("N")): r for r in rows}


def _bucket(N: int) -> int:
    return 1 if N == 1 else 4 if N <= 4 else 16  # scan_fwd.cu / scan_bwd.cu dispatch


def _sequences(op: str, s: dict) -> tuple[int, int]:
    """(sequences, steps per sequence) a scan pass runs."""
    if op == "ss2d_scan":
        return s["b"] * s["C"] * 4, s["H"] * s["W"]
    return s["b"] * s["d"], s["L"]


def cuda_op(
    op: str, pass_: str, shape: dict, layout: str, kernels: dict, tile: tuple[int, int]
) -> dict:
    t = traffic.cuda_traffic(op, pass_, shape, DTYPE, layout)
    launches = []
    for ln in t["launches"]:
        name = traffic.kernel_name(ln["kernel"])
        dt = "bf16" if "bfloat16" in ln["kernel"] else None
        N = _bucket(shape["N"]) if name.startswith("scan_") else None
        rec = kernels.get((name, dt, N)) or kernels.get((name, dt, None))
        threads = math.prod(ln["block"])
        blocks = math.prod(ln["grid"]) * ln["scale"]
        kw = {"threads": threads, "regs": rec["regs"] if rec else None, "blocks": blocks}
        kw["smem"] = ln["smem_static"] + ln["smem_dynamic"]
        if rec and rec["sass_per_step"] is not None:
            seqs, L = _sequences(op, shape)
            steps = cost_model.scan_steps(seqs, L, tile[name.endswith("_cl_kernel")])
            kw["warp_instructions"] = rec["sass_per_step"] * steps / 32
        c = cost_model.launch_cost(name, ln["bytes_l2"], **kw)
        launches.append(
            {
                **{k: ln[k] for k in ("kernel", "grid", "block", "smem_dynamic", "scale")},
                **{k: ln[k] for k in traffic.COUNTS},
                "occupancy_h100": c.occupancy,
                "modeled_ms": c.ms,
                "bound": c.bound,
                "mem_ms": c.mem_ms,
                "issue_ms": c.issue_ms,
                "pipe_ms": c.pipe_ms,
            }
        )
    if op == "slp_project":
        launches = _slp_with_gemms(pass_, shape, launches)
    return {"emulated_shape": t["emulated_shape"], "launches": launches}


def _library_launch(o: dict) -> dict:
    """A modeled library op (cuBLAS GEMM, torch copy) as a launch row: its bytes, no requests."""
    zero = {k: 0 for k in traffic.COUNTS}
    return {
        "kernel": o["kernel"],
        "grid": None,
        "block": None,
        "smem_dynamic": 0,
        "scale": 1.0,
        **zero,
        "bytes_l2": o["bytes"],
        "flops": o["flops"],
        "math": o["math"],
        "occupancy_h100": None,
        "modeled_ms": o["ms"],
        "bound": "gemm " + o["bound"] if o["flops"] else o["bound"],
        "mem_ms": cost_model.mem_ms(o["bytes"]),
        "issue_ms": None,
        "pipe_ms": None,
    }


def _slp_with_gemms(pass_: str, shape: dict, kernels: list[dict]) -> list[dict]:
    """slp.cu's emulated kernel placed among the binding's modeled cuBLAS GEMMs and copies, in
    the order ops_cuda.cpp issues them."""
    ops = [_library_launch(o) for o in slp_model.cuda_binding_ops(pass_, shape)]
    return ops[:2] + kernels + ops[2:]


def slp_einsum_rows(shape: dict) -> list[dict]:
    """Modeled rows of the einsum form (fp32 as the reference runs it, and bf16)."""
    rows = []
    for form in ("einsum", "einsum-bf16"):
        for pass_ in ("fwd", "bwd"):
            ls = [_library_launch(o) for o in slp_model.einsum_ops(pass_, shape, form)]
            rows.append(op_row(form, "slp_project", pass_, shape, "-", {"launches": ls}))
    return rows


def slp_comparison(rows: list[dict]) -> list[dict]:
    """fwd+bwd modeled time and saved bytes of every slp_project backend with a modeled time,
    against the einsum forms (DESIGN target: >= 2x faster, >= 10x less activation memory)."""
    out = []
    shapes = {json.dumps(r["shape"], sort_keys=True) for r in rows if r["op"] == "slp_project"}
    for key in sorted(shapes):
        shape = json.loads(key)
        mine = [r for r in rows if r["op"] == "slp_project" and r["shape"] == shape]
        total = {}
        for r in mine:
            if r["modeled_ms_h100"] is not None:
                total.setdefault(r["backend"], 0.0)
                total[r["backend"]] += r["modeled_ms_h100"]
        forms = ("cuda", "triton", "einsum", "einsum-bf16")
        saved = {f: slp_model.saved_bytes(f, shape) for f in forms}
        for ours, peer in itertools.product(("cuda", "triton"), ("einsum", "einsum-bf16")):
            if ours in total and peer in total:
                out.append(
                    {
                        "shape": shape,
                        "backend": ours,
                        "peer": peer,
                        "fwd_bwd_ms": total[ours],
                        "peer_fwd_bwd_ms": total[peer],
                        "speedup": total[peer] / total[ours],
                        "saved_bytes": saved[ours],
                        "peer_saved_bytes": saved[peer],
                        "memory_ratio": saved[peer] / saved[ours],
                        "modeled": "modeled, not measured",
                    }
                )
    return out


# --------------------------------------------------------------------------- Triton ops


def _shape_text(s: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in s.items())


def triton_op(op: str, pass_: str, shape: dict, layout: str, tc: tk.TritonCompiler) -> dict:
    """The launches of one triton op pass at the real shape, compiled for sm_90, with the torch
    calls of the launcher around them (``kernel_static/torch_glue.py``) and the traffic model's
    job for them (``kernel_static/triton_op_traffic.py``)."""
    inputs = tk.meta_inputs(op, shape, DTYPE, layout)
    glue = torch_glue.GlueRecorder()
    with glue:
        real = tk.op_launches(op, pass_, inputs)
    used_by = f"{op} {pass_} {_shape_text(shape)} {layout}"
    compiled = [tc.get(ln, used_by=used_by) for ln in real]
    launches = []
    for ln, c in zip(real, compiled):
        loops = tk.sass.loops(c.code)
        static = sum(1 for i in c.code if i.base != "NOP")
        # straight-line kernels: every warp of every program issues each instruction once
        warp_instr = static * c.num_warps * ln.programs if not loops else None
        cost = cost_model.launch_cost(
            c.name,
            0.0,
            threads=c.num_warps * 32,
            regs=c.resources.regs,
            smem=c.shared,
            blocks=ln.programs,
            warp_instructions=warp_instr,
        )
        launches.append(
            {
                "kernel": c.name,
                "key": c.key,
                "grid": list(ln.grid),
                "num_warps": c.num_warps,
                "regs": c.resources.regs,
                "occupancy_h100": cost.occupancy,
                "issue_ms": cost.issue_ms,
                "issue_modeled": warp_instr is not None,
            }
        )
    job = {
        "op": op,
        "pass": pass_,
        "shape": shape,
        "layout": layout,
        "real": [triton_op_traffic.real_launch(ln) for ln in real],
        "ttgir": [c.ttgir for c in compiled],
    }
    return {"launches": launches, "glue": glue.calls, "job": job}


def with_traffic(detail: dict, t: dict) -> dict:
    """A triton op's detail with its modeled traffic: each launch's time is the longest of its
    memory time (bytes moved at HBM bandwidth) and its issue time; the launcher's torch calls
    are charged their bytes (a GEMM: the longer of its bytes and its FLOPs)."""
    launches = []
    for ln, moved in zip(detail["launches"], t["launches"]):
        m = cost_model.mem_ms(moved["bytes_l2"])
        ms, bound = (m, "memory")
        if ln["issue_ms"] is not None and ln["issue_ms"] > m:
            ms, bound = ln["issue_ms"], "issue"
        row = {**ln, **{k: moved[k] for k in (*TRITON_COUNTS, "scale", "approximated")}}
        row.update(sites=moved["sites"], modeled_ms=ms, bound=bound, mem_ms=m)
        launches.append(row)
    for g in torch_glue.glue_launches(detail["glue"]):
        m = cost_model.mem_ms(g["bytes_l2"])
        ms, bound = (m, "memory")
        if g["flops"]:  # a GEMM (the SLP's): charged as the CUDA binding's (slp_model)
            ms, bound = cost_model.gemm_ms(g["flops"], g["bytes_l2"], g["math"])
            bound = "gemm " + bound
        launches.append(
            {**g, "modeled_ms": ms, "bound": bound, "mem_ms": m, "issue_ms": None}
            | {"issue_modeled": False, "approximated": []}
        )
    return {"launches": launches, "emulated_shape": t["emulated_shape"]}


# --------------------------------------------------------------------------- assembly


def _git_commit() -> str:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()
        return (sha or "unknown") + ("+dirty" if dirty else "")
    except OSError:
        return "unknown"


def op_row(backend: str, op: str, pass_: str, shape: dict, layout: str, detail: dict) -> dict:
    nbytes = min_bytes.min_bytes(op, shape, IN_BYTES, OUT_BYTES, pass_)
    floor_ms = cost_model.mem_ms(nbytes)
    row = {
        "backend": backend,
        "op": op,
        "pass": pass_,
        "shape": shape,
        "dtype": "bf16",
        "out_dtype": "fp32" if op != "slp_project" else "bf16",
        "layout": layout,
        "bytes_min": nbytes,
        "bytes_moved": None,
        "sectors_per_request": None,
        "atomics": None,
        "modeled_ms_h100": None,
        "modeled_fraction_of_copy_bw": None,
        "modeled": "modeled, not measured",
    }
    ls = detail["launches"]
    if backend in ("cuda", "einsum", "einsum-bf16") or "emulated_shape" in detail:
        req = sum(ln["requests"] for ln in ls)
        row["bytes_moved"] = sum(ln["bytes_l2"] for ln in ls)
        row["sectors_per_request"] = sum(ln["sectors"] for ln in ls) / req if req else None
        row["atomics"] = sum(ln["atomics"] for ln in ls)
        row["modeled_ms_h100"] = sum(ln["modeled_ms"] for ln in ls)
        row["bound"] = max(ls, key=lambda ln: ln["modeled_ms"])["bound"]
        row["modeled_issue_ms"] = sum(ln["issue_ms"] or 0.0 for ln in ls)
        row["flops"] = sum(ln.get("flops", 0.0) for ln in ls)
        if backend == "triton":
            ideal = sum(ln["ideal_sectors"] for ln in ls)
            row["sectors_over_ideal"] = sum(ln["sectors"] for ln in ls) / ideal if ideal else None
            # looping kernels: bytes only, no issue limit (their time is a lower bound)
            row["issue_not_modeled"] = sorted(
                {ln["kernel"] for ln in ls if not ln["issue_modeled"]}
                - {ln["kernel"] for ln in ls if ln["kernel"].startswith("torch ")}
            )
            row["approximated_layouts"] = sorted(
                {a for ln in ls for a in ln.get("approximated", [])}
            )
    elif any(ln["issue_modeled"] for ln in ls) and op != "slp_project":
        # without the traffic model (--no-triton-traffic): bytes at the op's minimum, a lower
        # bound; the issue limit of its straight-line kernels (looping helper kernels, the
        # chunk-carry combine, are not charged)
        issue = sum(ln["issue_ms"] for ln in ls if ln["issue_modeled"])
        row["modeled_issue_ms"] = issue
        row["modeled_ms_h100"] = max(issue, floor_ms)
        row["bound"] = "issue" if issue > floor_ms else "memory (bytes_min)"
        row["not_charged"] = sorted({ln["kernel"] for ln in ls if not ln["issue_modeled"]})
    if row["modeled_ms_h100"]:
        row["modeled_fraction_of_copy_bw"] = floor_ms / row["modeled_ms_h100"]
    row["launches"] = ls
    if "emulated_shape" in detail:
        row["emulated_shape"] = detail["emulated_shape"]
    return row


def triton_over_cuda(rows: list[dict]) -> None:
    """Adds to each triton row its modeled time over the CUDA row's of the same case."""
    cuda = {_case(r): r for r in rows if r["backend"] == "cuda"}
    for r in rows:
        c = cuda.get(_case(r))
        if r["backend"] == "triton" and c and c["modeled_ms_h100"] and r["modeled_ms_h100"]:
            r["modeled_triton_over_cuda"] = r["modeled_ms_h100"] / c["modeled_ms_h100"]


def _case(r: dict) -> tuple:
    return (r["op"], r["pass"], repr(sorted(r["shape"].items())), r["layout"])


def build(
    subset: str,
    triton: bool,
    ops: bool,
    log=print,
    cuda_sources: list[Path] | None = None,
    triton_traffic: bool = True,
) -> dict:
    """The report dict; ``cuda_sources`` replaces csrc/cuda/*.cu (tests compile a tiny kernel);
    ``triton_traffic``: run the Triton traffic model (interpreter runs)."""
    log("compiling csrc/cuda for sm_90 (nvcc) ...")
    objects = cuda_kernels.compile_all(sources=cuda_sources)
    kernels = cuda_kernels.kernel_records(objects)
    lookup = _kernel_lookup(kernels)
    consts = cuda_kernels.scan_constants()
    # steps per sequence per tile: lanes on steps, or (channel-last kernels) on channels
    tile = (
        consts["threads"] * consts["items"],
        consts["threads"] // consts["lane_channels"] * consts["items"],
    )
    tc = tk.TritonCompiler() if triton else None
    rows, pending = [], []
    if ops:
        for op, shape, layout in cases(subset):
            for pass_ in ("fwd", "bwd"):
                log(f"cuda {op} {pass_} {shape} {layout}: emulating ...")
                detail = cuda_op(op, pass_, shape, layout, lookup, tile)
                rows.append(op_row("cuda", op, pass_, shape, layout, detail))
                if tc is not None:
                    log(f"triton {op} {pass_} {shape} {layout}: compiling for sm_90 ...")
                    detail = triton_op(op, pass_, shape, layout, tc)
                    pending.append((len(rows), (op, pass_, shape, layout), detail))
                    rows.append(None)
            if op == "slp_project":
                rows += slp_einsum_rows(shape)
    if pending and triton_traffic:
        log(f"triton traffic model: {len(pending)} op passes in the interpreter ...")
        t0 = time.perf_counter()
        traffic_of = triton_op_traffic.triton_traffic_batch([d["job"] for _, _, d in pending])
        log(f"  ... {time.perf_counter() - t0:.0f} s")
    for n, (i, case, detail) in enumerate(pending):
        if triton_traffic:
            detail = with_traffic(detail, traffic_of[n])
        rows[i] = op_row("triton", *case, detail)
    triton_over_cuda(rows)
    for k in kernels:
        k.pop("mangled", None)
    return {
        "date": datetime.date.today().isoformat(),
        "commit": _git_commit(),
        "arch": "sm_90",
        "device_modeled": "H100 SXM: 132 SMs, 1.755 GHz, 3.35 TB/s",
        "modeled": "every time and bandwidth figure is modeled, not measured",
        "kernels": kernels + (tc.records() if tc else []),
        "ops": rows,
        "slp_vs_einsum": slp_comparison(rows),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="folder for kernels.json / .md")
    ap.add_argument("--subset", choices=("full", "tiny"), default="full")
    ap.add_argument("--no-triton", action="store_true", help="skip the Triton compiles")
    ap.add_argument("--no-ops", action="store_true", help="kernels table only (no emulation)")
    ap.add_argument(
        "--no-triton-traffic",
        action="store_true",
        help="skip the Triton traffic model (its interpreter runs)",
    )
    ap.add_argument(
        "--render", type=Path, help="only rewrite kernels.md from this kernels.json (no build)"
    )
    args = ap.parse_args(argv)
    from kernel_static.markdown import markdown

    if args.render is not None:
        report = json.loads(args.render.read_text())
    else:
        report = build(
            args.subset,
            not args.no_triton,
            not args.no_ops,
            triton_traffic=not args.no_triton_traffic,
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "kernels.json").write_text(json.dumps(report, indent=1) + "\n")
    md = markdown(report)
    (args.out / "kernels.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
