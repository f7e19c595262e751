"""Pointer offsets of the Triton scan kernels in their TTIR, for tests/test_triton_kernels.py.

Run as a script in a process without TRITON_INTERPRET (the interpreter replaces what the Triton
front end needs). Records the launches of every scan op pass on meta tensors, lowers each
launch to TTIR for sm_90 (the front end only: no GPU, no ptxas) and prints, as JSON, per launch:
its OFF64 flag and the offset types of its ``tt.addptr`` operations, split into scalar offsets
(a program's base) and tile offsets. With ``--off64`` every launch is forced onto the int64
tile-offset path.
"""

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import torch
from kernel_static import triton_kernels as tk
from triton._C.libtriton import ir
from triton.compiler import ASTSource
from triton.compiler.compiler import make_backend

ADDPTR = re.compile(r"tt\.addptr [^:]+: (?P<ptr>[^,]+(?:<[^>]*>)?[^,]*), (?P<off>\S+)")
CASES = [
    ("ss2d_scan", {"b": 2, "C": 16, "H": 12, "W": 20, "N": 1}, "channel_first"),
    ("ss2d_scan", {"b": 2, "C": 8, "H": 5, "W": 7, "N": 16}, "channel_last"),
    ("selective_scan", {"b": 2, "d": 8, "L": 100, "N": 4, "G": 2}, "-"),
]


def ttir(launch) -> str:
    target, options, signature, constexprs, attrs = tk._specialise(launch)
    src = ASTSource(tk._jit(launch.fn), signature, constexprs, attrs)
    backend = make_backend(target)
    context = ir.context()
    ir.load_dialects(context)
    backend.load_dialects(context)
    module = src.make_ir(
        target, options, backend.get_codegen_implementation(options), backend.get_module_map(),
        context,
    )  # fmt: skip
    return str(module)


def offsets(text: str) -> dict:
    scalar, tile = set(), set()
    for m in ADDPTR.finditer(text):
        off = m.group("off")
        (tile if off.startswith("tensor<") else scalar).add(re.sub(r"tensor<[\dx]*|>$", "", off))
    return {"scalar": sorted(scalar), "tile": sorted(tile)}


def main() -> None:
    if "--off64" in sys.argv:
        from zeromamba.kernels import scan

        scan._off64 = lambda *a: True
    out = []
    for op, shape, layout in CASES:
        for pass_ in ("fwd", "bwd"):
            for launch in tk.op_launches(
                op, pass_, tk.meta_inputs(op, shape, torch.bfloat16, layout)
            ):
                out.append(
                    {"op": op, "pass": pass_, "kernel": launch.name,
                     "OFF64": launch.kwargs["OFF64"], "COLS": launch.kwargs.get("COLS", 0),
                     **offsets(ttir(launch))}
                )  # fmt: skip
    print(json.dumps(out))


if __name__ == "__main__":
    main()
