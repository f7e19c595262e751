"""Bytes moved by the torch operations a launcher runs around its kernels (zero-filled
accumulators, partial-sum reductions, dtype casts): **modeled, not measured**.

The launcher runs on ``meta`` tensors of the real shape under a ``TorchDispatchMode`` that sees
every aten call. A call that only makes a view or an uninitialised tensor moves nothing; any
other is charged as a streaming kernel: each distinct tensor argument read once and each output
written once (``zero_``/``fill_``/``copy_`` don't read their destination), in 32-byte sectors
with no waste. That is the least such a kernel moves, so the figure is a lower bound.
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

# calls that move no data (allocation without initialisation, metadata)
_FREE = {"empty", "empty_strided", "empty_like", "new_empty", "new_empty_strided", "detach"}
_WRITE_ONLY = {"zero_", "fill_", "copy_", "zeros", "zeros_like", "full", "full_like", "new_zeros"}


def _is_view(func) -> bool:
    return any(r.alias_info is not None and not r.alias_info.is_write for r in func._schema.returns)


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


class GlueRecorder(TorchDispatchMode):
    """Records ``{"op", "bytes"}`` per aten call made inside the mode."""

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
        self.calls.append({"op": name, "bytes": read + sum(_nbytes(o) for o in outs)})
        return out


def glue_launches(calls: list[dict]) -> list[dict]:
    """The report's launch rows of the recorded torch calls (one per call)."""
    rows = []
    for c in calls:
        sectors = -(-c["bytes"] // 32)
        rows.append(
            {
                "kernel": f"torch {c['op']}",
                "requests": sectors / 4,  # 128-byte warp requests of a streaming kernel
                "sectors": sectors,
                "ideal_sectors": sectors,
                "bytes_l2": 32 * sectors,
                "atomics": 0,
            }
        )
    return rows
