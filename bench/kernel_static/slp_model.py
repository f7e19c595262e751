"""slp_project's modeled cost beyond the emulated kernels (**modeled, not measured**).

The CUDA backend runs the score and gradient products as cuBLAS GEMMs issued by the binding
(``csrc/cuda/ops_cuda.cpp``) around the two kernels of ``csrc/cuda/slp.cu``; the emulator runs
only those kernels, so the binding's torch ops are listed here with their FLOPs and bytes, in the
order the binding issues them. The einsum form it is compared with (``zeromamba.reference.
slp_project``, what ``bench/bench_ops.py`` times as "einsum") is modeled the same way, op by op as
PyTorch runs it under autograd, in two precisions:

* ``einsum`` as the reference runs it: bf16 inputs cast to fp32, fp32 GEMMs (cuBLAS SGEMM on
  CUDA cores: torch's default ``allow_tf32 = False`` for matmuls);
* ``einsum-bf16``: the same ops left in bf16, GEMMs on tensor cores: the strongest version of the
  einsum form, a bound on what an autocast user would get.

Each op costs max(FLOPs / rate, bytes / bandwidth) (``cost_model.gemm_ms``); an elementwise op
has no FLOPs. "saved" is what autograd holds between the passes beyond the inputs the caller
already has: the output plus the tensors saved for the backward (bench/memory.py's "saved").
"""

from __future__ import annotations

from . import cost_model

IN_BYTES = 2  # bf16 inputs, as the report's other rows


def _op(name: str, nbytes: float, flops: float = 0.0, math: str = "bf16") -> dict:
    ms, bound = cost_model.gemm_ms(flops, nbytes, math)
    return {"kernel": name, "bytes": nbytes, "flops": flops, "math": math, "ms": ms, "bound": bound}


def cuda_binding_ops(pass_: str, s: dict, e: int = IN_BYTES) -> list[dict]:
    """The binding's torch ops of one pass (the slp.cu kernels excluded), bf16 in."""
    b, A, F, R = (s[k] for k in "bAFR")
    unit = 2.0 * b * A * F * R  # FLOPs of one (b, A, R) x F product
    ops = [
        _op("cat(q1, q2)", 2 * (2 * A * F * e)),
        # S (b, 2A, R) fp32: feat read once, q broadcast (stride 0, read from L2)
        _op("cuBLAS bmm S = q feat", b * F * R * e + 2 * A * F * e + b * 2 * A * R * 4, 2 * unit),
    ]
    if pass_ == "bwd":
        ops += [
            # dfeat[b] = q^T ds[:, b]: ds (2A, b, R) read in place
            _op(
                "cuBLAS bmm dfeat = q^T ds",
                2 * A * b * R * e + 2 * A * F * e + b * F * R * e,
                2 * unit,
            ),
            _op("copy feat -> (F, b R)", 2 * b * F * R * e),
            _op("cuBLAS mm dq1 = ds1 feat^T", A * b * R * e + b * R * F * e + A * F * e, unit),
            _op("cuBLAS mm dq2 = ds2 feat^T", A * b * R * e + b * R * F * e + A * F * e, unit),
        ]
    return ops


def einsum_ops(pass_: str, s: dict, form: str, e_in: int = IN_BYTES) -> list[dict]:
    """The einsum form's ops of one pass; ``form``: "einsum" (fp32 math) or "einsum-bf16"."""
    b, A, F, R = (s[k] for k in "bAFR")
    fp32 = form == "einsum"
    e = 4 if fp32 else e_in  # bytes of the compute dtype
    math = "fp32" if fp32 else "bf16"
    unit = 2.0 * b * A * F * R
    bFR, bAR, AF = b * F * R, b * A * R, A * F
    if pass_ == "fwd":
        ops = []
        if fp32:
            ops += [
                _op("feat.to(fp32)", bFR * (e_in + e)),
                _op("q1, q2 .to(fp32)", 2 * AF * (e_in + e)),
            ]
        ops += [
            _op("einsum s1 = q1 feat", bFR * e + AF * e + bAR * e, unit, math),
            _op("einsum s2 = q2 feat", bFR * e + AF * e + bAR * e, unit, math),
            _op("softmax(s1)", 2 * bAR * e),
            _op("p * s2", 3 * bAR * e),
            _op("sum over r", bAR * e + b * A * e),
        ]
        if fp32:
            ops.append(_op("out.to(bf16)", b * A * (e + e_in)))
        return ops
    ops = [
        _op("mul backward: dp = dout s2", 2 * bAR * e + b * A * e),
        _op("mul backward: ds2 = dout p", 2 * bAR * e + b * A * e),
        _op("softmax backward: ds1", 3 * bAR * e),
        _op("einsum backward dq1 = ds1 feat^T", bAR * e + bFR * e + AF * e, unit, math),
        _op("einsum backward dfeat1 = q1^T ds1", bAR * e + AF * e + bFR * e, unit, math),
        _op("einsum backward dq2 = ds2 feat^T", bAR * e + bFR * e + AF * e, unit, math),
        _op("einsum backward dfeat2 = q2^T ds2", bAR * e + AF * e + bFR * e, unit, math),
        _op("dfeat = dfeat1 + dfeat2", 3 * bFR * e),
    ]
    if fp32:
        ops += [
            _op("dfeat.to(bf16)", bFR * (e + e_in)),
            _op("dq1, dq2 .to(bf16)", 2 * AF * (e + e_in)),
        ]
    return ops


def saved_bytes(form: str, s: dict, e_in: int = IN_BYTES) -> int:
    """Bytes autograd holds between the passes beyond the caller's inputs (output included)."""
    b, A, F, R = (s[k] for k in "bAFR")
    out = b * A * e_in
    if form in ("cuda", "triton"):
        return out  # feat, q1, q2 are the caller's tensors: nothing else is saved
    if form == "einsum":  # fp32 copies of feat, q1, q2 (einsum's saved inputs), p, s2
        return out + 4 * (b * F * R + 2 * A * F) + 2 * 4 * b * A * R
    if form == "einsum-bf16":  # p (softmax's output) and s2 (mul's other input)
        return out + 2 * e_in * b * A * R
    raise ValueError(f"saved_bytes: form must be cuda, triton, einsum or einsum-bf16, got {form!r}")


__all__ = ["cuda_binding_ops", "einsum_ops", "saved_bytes"]
