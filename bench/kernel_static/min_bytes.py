"""Minimal bytes of the ops the report covers, by the rule of ``bench_ops.ss2d_min_bytes``: every
input read once in its dtype, every output written once (forward: y in the output dtype;
backward: dy read in the output dtype, every input read again and its gradient written in the
input dtype). The small fp32 parameters (A, D, delta_bias) are not counted. ss2d_scan uses
``bench_ops.ss2d_min_bytes`` itself."""

from __future__ import annotations


def ss2d_min_bytes(shape: dict, in_bytes: int, out_bytes: int, pass_: str) -> int:
    import bench_ops

    s = shape
    return bench_ops.ss2d_min_bytes(
        s["b"], s["C"], s["H"], s["W"], s["N"], in_bytes, out_bytes, pass_
    )


def scan_min_bytes(shape: dict, in_bytes: int, out_bytes: int, pass_: str) -> int:
    """selective_scan: u, delta (b, d, L); B, C (b, G, N, L); y (b, d, L)."""
    b, d, L, N, G = (shape[k] for k in ("b", "d", "L", "N", "G"))
    inputs = 2 * b * d * L + 2 * b * G * N * L
    y = b * d * L * out_bytes
    return {"fwd": inputs * in_bytes + y, "bwd": y + 2 * inputs * in_bytes}[pass_]


def slp_min_bytes(shape: dict, in_bytes: int, pass_: str) -> int:
    """slp_project: feat (b, F, R), q1 and q2 (A, F), out (b, A), all in one dtype."""
    b, A, F, R = (shape[k] for k in ("b", "A", "F", "R"))
    inputs = b * F * R + 2 * A * F
    out = b * A
    return {"fwd": (inputs + out) * in_bytes, "bwd": (out + 2 * inputs) * in_bytes}[pass_]


def min_bytes(op: str, shape: dict, in_bytes: int, out_bytes: int, pass_: str) -> int:
    if op == "ss2d_scan":
        return ss2d_min_bytes(shape, in_bytes, out_bytes, pass_)
    if op == "selective_scan":
        return scan_min_bytes(shape, in_bytes, out_bytes, pass_)
    if op == "slp_project":
        return slp_min_bytes(shape, in_bytes, pass_)
    raise ValueError(f"unknown op {op!r}")
