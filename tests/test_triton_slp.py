"""The Triton slp_project's row kernels around the score and gradient GEMMs (docs/design.md
§4.8): rows longer than one tile (the online softmax rescales; the backward's second sweep
reloads all but the kept first tile), a last tile past R, a last program past the last row;
no atomics, so the gradients repeat bitwise; autograd saves only the inputs; both kernels
lower for sm_90 with int64 offsets."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from inputs import DEVICES, check_against_reference, slp_inputs, to

import zeromamba
from zeromamba import ops

if "cpu" not in zeromamba.available_backends()["triton"].devices and not torch.cuda.is_available():
    pytest.skip("the triton backend is not available here", allow_module_level=True)

from zeromamba.kernels import slp_project as slp_kernels

DEVICE = DEVICES[-1]


@pytest.fixture
def small_tiles(monkeypatch):
    # R = 150 is 5 tiles of 32 regions, the last (128..159) past R; 4 rows a program, so the
    # 3 x 5 = 15 rows leave the last program one row past the end.
    monkeypatch.setattr(slp_kernels, "MAX_BLOCK_R", 32)
    monkeypatch.setattr(slp_kernels, "TILE_ELEMS", 128)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_multi_tile_rows_against_reference(small_tiles, dtype):
    kw = to(slp_inputs(3, 5, 40, 150, seed=5), device=DEVICE)
    check_against_reference("slp_project", "triton", kw, dtype)


def test_gradients_repeat_bitwise(small_tiles):
    kw = to(slp_inputs(3, 20, 40, 150, seed=6), torch.float32, DEVICE)
    dout = torch.randn(3, 20, device=DEVICE)
    runs = [slp_kernels.slp_project_bwd(dout, kw["feat"], kw["q1"], kw["q2"]) for _ in range(2)]
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)
    outs = [slp_kernels.slp_project_fwd(kw["feat"], kw["q1"], kw["q2"]) for _ in range(2)]
    assert torch.equal(*outs) and torch.isfinite(outs[0]).all()


def test_autograd_saves_only_the_inputs():
    """No score-sized tensor lives between the passes (the >= 10x memory target against the
    einsum form, which saves (b, A, R) tensors)."""
    kw = to(slp_inputs(2, 6, 8, 10, seed=7), torch.float32, DEVICE, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = ops.slp_project(**kw, backend="triton")
    assert sorted(t.numel() for t in saved) == sorted(t.numel() for t in kw.values())
    y.sum().backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in kw.values())


@pytest.mark.skipif(DEVICE != "cpu", reason="lowers the kernels without the interpreter")
def test_row_kernels_lower_with_int64_offsets():
    """The Triton front end (which the interpreter skips) takes both row kernels at the CUB
    shape, and every pointer offset is int64: S and ds pass 2^31 elements at large b A R."""
    tests = Path(__file__).resolve().parent
    script = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(tests)!r})
        import torch, triton_offsets as t
        from kernel_static import triton_kernels as tk
        s = {{"b": 32, "A": 312, "F": 768, "R": 196}}
        ins = tk.meta_inputs("slp_project", s, torch.bfloat16, "-")
        out = []
        for p in ("fwd", "bwd"):
            for ln in tk.op_launches("slp_project", p, ins):
                out.append({{"kernel": ln.name, **t.offsets(t.ttir(ln))}})
        print(json.dumps(out))
    """)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    cmd = [sys.executable, "-c", script]
    out = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    launches = json.loads(out.stdout)
    assert [ln["kernel"] for ln in launches] == ["_softmax_reduce_kernel", "_ds_kernel"]
    for ln in launches:
        assert ln["tile"] == ["i64"] and ln["scalar"] in ([], ["i64"]), ln
