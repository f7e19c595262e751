"""Memory traffic of the CUDA kernels at the report's shapes, from the kernel lab's emulator
(``bench/kernel_lab``: every global load, store and atomic of the real ``csrc/cuda`` kernels,
grouped per warp request into 32-byte sectors).

Emulating b = 32 at 112 x 112 is too slow, so each op runs at a scaled-down shape that keeps every
per-block quantity of the real one (the whole map or sequence, N, F, R; for channel-last enough
channels that a position's channels span at least one sector) and shrinks only the number of
blocks: batch and channels (ss2d_scan, selective_scan) or batch and attributes (slp_project).
At fixed per-block work a launch's counts are a sum over its blocks, so each launch is scaled by
the ratio of the work units it runs over (``UNITS``): (b, C) planes for the scan kernels, b for
the dB/dC store (its size is b x 4 x N x L), b x A (rows) for the SLP kernels.
"""

from __future__ import annotations

import re

import torch

# Work units a launch's counts are proportional to, per kernel (see the module docstring).
UNITS = {
    "scan_fwd_kernel": ("b", "C"),
    "scan_bwd_kernel": ("b", "C"),
    "scan_fwd_cf_kernel": ("b", "C"),
    "scan_fwd_cl_kernel": ("b", "C"),  # ceil(C / 16) blocks per batch: C a multiple of 16
    "scan_bwd_cl_kernel": ("b", "C"),
    "param_grad_reduce_kernel": ("b", "C"),
    "bc_grad_store_kernel": ("b",),
    "slp_fwd_kernel": ("b", "A"),
    "slp_bwd_kernel": ("b", "A"),
}
COUNTS = ("requests", "sectors", "lines", "bytes_l2", "atomics")


def kernel_name(launch_name: str) -> str:
    """'scan_fwd_kernel<__nv_bfloat16, 1>' -> 'scan_fwd_kernel'."""
    return re.sub(r"<.*", "", launch_name).strip()


def emulated_shape(op: str, shape: dict, layout: str) -> dict:
    """The scaled-down shape an op is emulated at (see the module docstring)."""
    s = dict(shape)
    if op == "ss2d_scan":
        s["b"] = 1
        # >= 16 bf16 channels: one sector per position (channel-last); 32: two blocks of the
        # channel-last kernels (16 channels each) share dB/dC, with atomics as at the real C
        s["C"] = min(shape["C"], 32)
    elif op == "selective_scan":
        s["b"] = 1
        s["d"] = min(shape["d"], 16)
        s["G"] = 1
    elif op == "slp_project":
        s["b"] = 2
        s["A"] = min(shape["A"], 32)  # 64 rows: whole blocks of 8 row-warps
    return s


def _scale(kernel: str, real: dict, emu: dict, op: str) -> float:
    units = UNITS.get(kernel)
    if units is None:
        raise KeyError(f"no scaling rule for kernel {kernel!r}: add it to UNITS")
    key = {"C": "d" if op == "selective_scan" else "C"}
    f = 1.0
    for u in units:
        k = key.get(u, u)
        f *= real[k] / emu[k]
    return f


def emulator_inputs(op: str, pass_: str, s: dict, dtype: torch.dtype, layout: str) -> dict:
    """Random inputs of the emulated shape (bench_ops' generators), plus the output gradient."""
    import bench_ops

    if op == "ss2d_scan":
        i = bench_ops.ss2d_inputs(s["b"], s["C"], s["H"], s["W"], s["N"], dtype, "cpu")
        kw = {**i, "delta_softplus": True, "out_float32": True}
        if layout == "channel_last":
            kw["x"] = i["x"].permute(0, 2, 3, 1).contiguous()
            for k in ("delta", "B", "C"):
                kw[k] = i[k].permute(0, 1, 3, 4, 2).contiguous()
            kw["channel_last"] = True
        if pass_ == "bwd":
            kw["dy"] = torch.randn(kw["x"].shape)  # fp32, as the model's fp32 outputs give
        return kw
    if op == "selective_scan":
        i = bench_ops.scan_inputs(s["b"], s["d"], s["L"], s["N"], s["G"], dtype, "cpu")
        kw = {**i, "delta_softplus": True, "out_float32": True}
        if pass_ == "bwd":
            kw["dy"] = torch.randn(i["u"].shape)
        return kw
    if op == "slp_project":
        kw = bench_ops.slp_inputs(s["b"], s["A"], s["F"], s["R"], dtype, "cpu")
        if pass_ == "bwd":
            kw["dout"] = torch.randn(s["b"], s["A"]).to(dtype)
        return kw
    raise ValueError(f"unknown op {op!r}")


def cuda_traffic(op: str, pass_: str, shape: dict, dtype: torch.dtype, layout: str) -> dict:
    """Per-launch traffic of the CUDA backend at ``shape``, scaled from an emulated run.

    Returns {"emulated_shape", "launches": [{"kernel", "grid", "block", "smem_static",
    "smem_dynamic", "scale", requests, sectors, lines, bytes_l2, atomics (scaled)}]}."""
    from kernel_lab import emulate

    emu = emulated_shape(op, shape, layout)
    _, launches = emulate(op, pass_, **emulator_inputs(op, pass_, emu, dtype, layout))
    rows = []
    for ln in launches:
        name = kernel_name(ln["kernel"])
        f = _scale(name, shape, emu, op)
        row = {k: ln[k] for k in ("kernel", "grid", "block", "smem_static", "smem_dynamic")}
        row["scale"] = f
        for k in COUNTS:
            row[k] = ln[k] * f
        rows.append(row)
    return {"emulated_shape": emu, "launches": rows}
