"""Bytes moved and FLOPs done by the torch operations a launcher runs around its kernels
(zero-filled accumulators, partial-sum reductions, dtype casts, the SLP's GEMMs): **modeled, not
measured**.

The launcher runs on ``meta`` tensors of the real shape under a ``TorchDispatchMode`` that sees
every aten call. A call that only makes a view or an uninitialised tensor moves nothing; any
other is charged as a streaming kernel: each distinct tensor argument read once and each output
written once (``zero_``/``fill_``/``copy_`` don't read their destination; a broadcast tensor's
zero-stride dimensions are read once), in 32-byte sectors with no waste. That is the least such
a kernel moves, so the figure is a lower bound. A matrix product (``mm``, ``bmm``) also records
its FLOPs and the math its inputs run on, for ``cost_model.gemm_ms``: the same terms as the CUDA
SLP binding's GEMMs (``slp_model.py``).
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

# calls that move no data (allocation without initialisation, metadata)
_FREE = {"empty", "empty_strided", "empty_like", "new_empty", "new_empty_strided", "detach"}
# views whose schema does not say so (reshape of a copy: the copy is charged, not the view)
_FREE |= {"_unsafe_view"}
_WRITE_ONLY = {"zero_", "fill_", "copy_", "zeros", "zeros_like", "full", "full_like", "new_zeros"}


def _is_view(func) -> bool:
    return any(r.alias_info is not None and not r.alias_info.is_write for r in func._schema.returns)


# matrix products: FLOPs from the (batch, M, K) x (batch, K, N) operands
_GEMMS = {"mm", "bmm"}


def _nbytes(t: torch.Tensor) -> int:
    """Bytes of the distinct elements: a zero-stride (broadcast) dimension counts once."""
    if t.numel() == 0:
        return 0
    n = 1
    for size, stride in zip(t.shape, t.stride()):
        n *= size if stride != 0 else 1
    return n * t.element_size()


def _gemm(ins: list[torch.Tensor]) -> tuple[float, str]:
    """(FLOPs, math) of mm/bmm on ``ins``: bf16 tensor cores for half inputs, fp32 (or tf32
    where torch allows it) for fp32."""
    a, b = ins[:2]
    flops = 2.0 * a.numel() * b.shape[-1]  # batch x M x K, times N, one multiply-add each
    if a.dtype in (torch.float16, torch.bfloat16):
        return flops, "bf16"
    return flops, "tf32" if torch.backends.cuda.matmul.allow_tf32 else "fp32"


class GlueRecorder(TorchDispatchMode):
    """Records ``{"op", "bytes"}`` per aten call made inside the mode (and ``"flops"``,
    ``"math"`` for a matrix product)."""

    def __init__(self):
        super().__init__()
        self.calls: list[dict] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = func._schema.name.split("::")[-1]
        if name in _FREE or _is_view(func):
            return out
        ins = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
        outs = [o for o in tree_flatten(out)[0] if isinstance(o, torch.Tensor)]
        base = name.split(".")[0]
        if base in _WRITE_ONLY and ins and base.endswith("_"):
            ins = ins[1:]  # the destination is written, not read
        seen, read = set(), 0
        for t in ins:
            key = (t.data_ptr() if t.device.type != "meta" else id(t), t.shape, t.stride())
            if key not in seen:
                seen.add(key)
                read += _nbytes(t)
        call = {"op": name, "bytes": read + sum(_nbytes(o) for o in outs)}
        if base in _GEMMS:
            call["flops"], call["math"] = _gemm(ins)
        self.calls.append(call)
        return out


def glue_launches(calls: list[dict]) -> list[dict]:
    """The report's launch rows of the recorded torch calls (one per call); a matrix product
    keeps its ``flops`` and ``math`` and, as the CUDA binding's modeled GEMMs, no requests."""
    rows = []
    for c in calls:
        sectors = -(-c["bytes"] // 32)
        gemm = c.get("flops", 0.0) > 0
        rows.append(
            {
                "kernel": f"torch {c['op']}",
                "requests": 0 if gemm else sectors / 4,  # 128-byte requests of a stream
                "sectors": 0 if gemm else sectors,
                "ideal_sectors": 0 if gemm else sectors,
                "bytes_l2": 32 * sectors,
                "atomics": 0,
                "flops": c.get("flops", 0.0),
                "math": c.get("math"),
            }
        )
    return rows
