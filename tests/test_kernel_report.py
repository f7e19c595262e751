"""bench/kernel_report.py: the H100 occupancy function, the cuobjdump / ptxas / SASS parsers (on a
tiny kernel compiled with nvcc when it is installed), the Triton launch capture, and the JSON
schema of a report on a tiny subset. Nothing here needs a GPU."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from kernel_static import cost_model, sass
from kernel_static.occupancy import occupancy

TINY = ROOT / "tests" / "data" / "tiny_kernel.cu"
needs_nvcc = pytest.mark.skipif(
    shutil.which("nvcc") is None or sass.find_tool("cuobjdump") is None,
    reason="nvcc and cuobjdump are needed to compile and read the tiny kernel",
)


# --------------------------------------------------------------------------- occupancy


@pytest.mark.parametrize(
    "threads, regs, smem, blocks, fraction, limiter",
    [
        (128, 32, 0, 16, 1.0, "threads"),  # 2048 / 128
        (128, 255, 0, 2, 0.125, "registers"),  # 8192 registers per warp -> 8 warps
        (128, 146, 48, 3, 0.1875, "registers"),  # 152 x 32 = 4864 -> 13 -> 12 warps
        (128, 32, 50208, 4, 0.25, "shared memory"),  # (50208 + 1024) -> 51328 B, 228 KiB / it
        (1024, 64, 0, 1, 0.5, "registers"),  # 2048 per warp: 32 warps
        (32, 16, 0, 32, 0.5, "blocks"),  # 32 blocks of one warp
    ],
)
def test_occupancy_h100(threads, regs, smem, blocks, fraction, limiter):
    occ = occupancy(threads, regs, smem)
    assert (occ.blocks_per_sm, occ.fraction, occ.limiter) == (blocks, fraction, limiter)


@pytest.mark.parametrize(
    "kw", [{"threads_per_block": 2048}, {"regs": 256}, {"smem_bytes": 227 * 1024 + 1}]
)
def test_occupancy_refuses_impossible_blocks(kw):
    args = {"threads_per_block": 128, "regs": 32, "smem_bytes": 0, **kw}
    with pytest.raises(ValueError, match=next(iter(kw))):
        occupancy(**args)


# --------------------------------------------------------------------------- parsers

RESOURCE_TEXT = """
Resource usage:
 Common:
  GLOBAL:0
 Function _Z3fooPf:
  REG:40 STACK:8 SHARED:1280 LOCAL:0 CONSTANT[0]:900 TEXTURE:0 SURFACE:0 SAMPLER:0
 Function _Z3barv:
  REG:6 STACK:0 SHARED:0 LOCAL:16 CONSTANT[0]:896 TEXTURE:0 SURFACE:0 SAMPLER:0
"""

PTXAS_TEXT = """ptxas info    : Compiling entry function '_Z3fooPf' for 'sm_90'
ptxas info    : Function properties for _Z3fooPf
    8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 40 registers, used 1 barriers, 8 bytes cumulative stack size, 256 bytes smem
"""

# head 0x10 .. back-edge 0x60; a forward branch at 0x20 skips two instructions (0x30, 0x40)
SASS_TEXT = """
		Function : _Z3loopv
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*0010*/                   IADD3 R2, R2, 0x1, RZ ;
        /*0020*/              @P0 BRA 0x50 ;
        /*0030*/                   FADD R3, R3, R4 ;
        /*0040*/                   FADD R3, R3, R4 ;
        /*0050*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;
        /*0060*/              @P1 BRA 0x10 ;
        /*0070*/                   NOP ;
        /*0080*/                   EXIT ;
        /*0090*/                   BRA 0x90;
"""


def test_parse_resource_usage_and_ptxas():
    res = sass.parse_resource_usage(RESOURCE_TEXT)
    assert (res["_Z3fooPf"].regs, res["_Z3fooPf"].stack, res["_Z3fooPf"].shared) == (40, 8, 1280)
    assert (res["_Z3barv"].regs, res["_Z3barv"].local) == (6, 16)
    info = sass.parse_ptxas_verbose(PTXAS_TEXT)["_Z3fooPf"]
    assert (info.regs, info.spill_stores, info.spill_loads, info.smem) == (40, 4, 12, 256)


def test_sass_loops_longest_path():
    code = sass.parse_sass(SASS_TEXT)["_Z3loopv"]
    (lp,) = [lp for lp in sass.loops(code) if lp.head == 0x10]
    assert (lp.latch, lp.instructions, lp.barriers) == (0x60, 6, 1)
    assert lp.path == 6  # head, branch, 2 x FADD, BAR, back-edge
    assert sass.hot_loops(code) == [lp]  # the self-loop at 0x90 has no barrier


@needs_nvcc
def test_tiny_kernel_agrees_with_cuobjdump():
    from kernel_static import cuda_kernels

    (co,) = cuda_kernels.compile_all(sources=[TINY])  # cached: the schema test reuses it
    obj = co.obj
    (name,) = co.resources
    usage = subprocess.run(
        [sass.find_tool("cuobjdump"), "--dump-resource-usage", str(obj)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = usage[usage.index(name) :].splitlines()[1]
    assert f"REG:{co.resources[name].regs} " in line
    assert co.ptxas[name].regs == co.resources[name].regs
    assert co.ptxas[name].smem == 256  # float buf[64]
    assert co.resources[name].shared in (256, 256 + 1024)  # sm_90's 1 KiB system reserve
    (hot,) = sass.hot_loops(co.code[name])
    assert hot.barriers == 2 and 10 < hot.path <= hot.instructions
    # four steps per iteration: at least the 4 FFMA of the recurrence per step's worth
    assert sum(1 for i in co.code[name] if i.base in ("FFMA", "FMUL", "FADD")) >= 4


# --------------------------------------------------------------------------- cost model


def test_cost_model_bounds():
    c = cost_model.launch_cost("k", 3.35e9, threads=128, regs=32, smem=0, blocks=10**6)
    assert c.bound == "memory" and c.ms == pytest.approx(1.0)
    # 1 G warp instructions at full issue rate: 1e9 / (132 * 4 * 1.755e9) s
    c = cost_model.launch_cost(
        "k", 0.0, threads=128, regs=32, smem=0, blocks=10**6, warp_instructions=1e9
    )
    assert c.bound == "issue" and c.issue_ms == pytest.approx(1e3 / (132 * 4 * 1.755e9) * 1e9)
    # 2 warps per scheduler instead of 4: half the rate
    slow = cost_model.launch_cost(
        "k", 0.0, threads=128, regs=255, smem=0, blocks=10**6, warp_instructions=1e9
    )
    assert slow.issue_ms == pytest.approx(2 * c.issue_ms)
    assert cost_model.scan_steps(3, 1025, 1024) == 3 * 2048


def test_gemm_model_and_slp_flop_counts():
    from kernel_static import slp_model

    ms, bound = cost_model.gemm_ms(1e12, 0.0, "bf16")
    assert bound == "compute"
    assert ms == pytest.approx(1e3 / (cost_model.GEMM_EFFICIENCY * 989.4e12) * 1e12)
    assert cost_model.gemm_ms(0.0, 3.35e9)[1] == "memory"
    s = {"b": 2, "A": 3, "F": 4, "R": 5}
    unit = 2 * 2 * 3 * 4 * 5  # one (b, A, R) x F product
    ours = slp_model.cuda_binding_ops("fwd", s) + slp_model.cuda_binding_ops("bwd", s)
    # scores in both passes (s1 and s2 each), dfeat, dq1 + dq2
    assert sum(o["flops"] for o in ours) == 8 * unit
    for form in ("einsum", "einsum-bf16"):
        ops = slp_model.einsum_ops("fwd", s, form) + slp_model.einsum_ops("bwd", s, form)
        assert sum(o["flops"] for o in ops) == 6 * unit
    out = 2 * 3 * 2
    assert slp_model.saved_bytes("cuda", s) == out
    assert slp_model.saved_bytes("einsum-bf16", s) == out + 2 * 2 * (2 * 3 * 5)
    assert slp_model.saved_bytes("einsum", s) == out + 4 * (2 * 4 * 5 + 2 * 3 * 4) + 8 * 2 * 3 * 5


@pytest.mark.skipif(shutil.which("g++") is None, reason="the kernel lab's emulator needs g++")
def test_slp_rows_place_the_kernels_among_the_gemms():
    import kernel_report
    from kernel_static.markdown import slp_table

    shape = {"b": 4, "A": 40, "F": 32, "R": 20}
    rows = []
    for pass_ in ("fwd", "bwd"):
        detail = kernel_report.cuda_op("slp_project", pass_, shape, "-", {}, 1024)
        rows.append(kernel_report.op_row("cuda", "slp_project", pass_, shape, "-", detail))
    names = [ln["kernel"].split("<")[0] for ln in rows[1]["launches"]]
    assert names[:3] == ["cat(q1, q2)", "cuBLAS bmm S = q feat", "slp_bwd_kernel"]
    assert rows[0]["launches"][2]["scale"] == pytest.approx(4 * 40 / (2 * 32))
    rows += kernel_report.slp_einsum_rows(shape)
    assert all(r["atomics"] == 0 and r["modeled_ms_h100"] > 0 for r in rows)
    comparison = kernel_report.slp_comparison(rows)
    assert [c["peer"] for c in comparison] == ["einsum", "einsum-bf16"]
    fwd_bwd = rows[0]["modeled_ms_h100"] + rows[1]["modeled_ms_h100"]
    assert comparison[0]["fwd_bwd_ms"] == pytest.approx(fwd_bwd)
    assert "| cuda | einsum-bf16 |" in "\n".join(slp_table(comparison))


@pytest.mark.parametrize("pass_", ["fwd", "bwd"])
def test_triton_slp_gemms_are_charged_as_the_cuda_bindings(pass_, monkeypatch):
    """The Triton SLP's torch calls, seen on meta tensors, are the CUDA binding's modeled ops:
    the same GEMM FLOPs and bytes (a broadcast q read once), the same copies, one row kernel."""
    import torch

    monkeypatch.setenv("ZEROMAMBA_POISON", "0")  # as the report runs: no NaN fills
    from kernel_static import slp_model, torch_glue
    from kernel_static import triton_kernels as tk

    s = {"b": 4, "A": 40, "F": 32, "R": 20}
    glue = torch_glue.GlueRecorder()
    with glue:
        launches = tk.op_launches(
            "slp_project", pass_, tk.meta_inputs("slp_project", s, torch.bfloat16, "-")
        )
    assert [ln.name for ln in launches] == [
        "_softmax_reduce_kernel" if pass_ == "fwd" else "_ds_kernel"
    ]
    ours = torch_glue.glue_launches(glue.calls)
    cuda = slp_model.cuda_binding_ops(pass_, s)
    assert sorted(g["flops"] for g in ours) == sorted(o["flops"] for o in cuda)
    assert sorted(g["bytes_l2"] for g in ours) == sorted(-(-o["bytes"] // 32) * 32 for o in cuda)
    assert all(g["math"] == "bf16" for g in ours if g["flops"])


# --------------------------------------------------------------------------- Triton capture


def test_triton_launches_are_captured_on_meta_tensors():
    import torch
    from kernel_static import triton_kernels as tk

    shape = {"b": 2, "C": 16, "H": 12, "W": 20, "N": 1}
    ins = tk.meta_inputs("ss2d_scan", shape, torch.bfloat16, "channel_first")
    launches = tk.op_launches("ss2d_scan", "fwd", ins)
    names = [ln.name for ln in launches]
    # one launch: the row directions walk the 4 chunks of L = 240; the column directions of a
    # channel-first map have programs of their own in it (adjacent columns as lanes)
    assert names == ["_fwd_kernel"]
    assert launches[0].grid[1] == 2 and launches[0].kwargs["N_DIR"] == 4
    assert launches[0].kwargs["COLS"] > 0
    _, _, signature, constexprs, _ = tk._specialise(launches[0])
    assert signature["u_ptr"] == "*bf16"  # x, as Triton's JIT would type it
    assert constexprs[(list(signature).index("N"),)] == 1


# --------------------------------------------------------------------------- report schema


@needs_nvcc
def test_report_schema_on_a_tiny_subset(tmp_path):
    import kernel_report
    from kernel_static.markdown import markdown

    report = kernel_report.build("tiny", triton=False, ops=True, log=lambda *_: None,
                                 cuda_sources=[TINY])  # fmt: skip
    assert set(report) >= {"date", "commit", "arch", "kernels", "ops"}
    assert report["arch"] == "sm_90"
    kernel_keys = {"backend", "name", "variant", "regs", "spill_bytes", "smem_static_bytes",
                   "threads_per_block", "occupancy_h100", "sass_per_step"}  # fmt: skip
    (k,) = report["kernels"]
    assert kernel_keys <= set(k) and k["backend"] == "cuda" and k["smem_static_bytes"] == 256
    op_keys = {"backend", "op", "pass", "shape", "dtype", "layout", "bytes_min", "bytes_moved",
               "sectors_per_request", "atomics", "modeled_ms_h100",
               "modeled_fraction_of_copy_bw"}  # fmt: skip
    assert [(r["op"], r["pass"]) for r in report["ops"]] == [
        ("ss2d_scan", "fwd"),
        ("ss2d_scan", "bwd"),
    ]
    for r in report["ops"]:
        assert op_keys <= set(r)
        assert r["bytes_moved"] >= r["bytes_min"] > 0  # a kernel moves at least the minimum
        assert r["sectors_per_request"] >= 1 and r["modeled_ms_h100"] > 0
        assert 0 < r["modeled_fraction_of_copy_bw"] <= 1
    assert report["ops"][1]["atomics"] > 0  # b x C planes share dB / dC
    md = markdown(report)
    assert "modeled, not measured" in md and "| ss2d_scan | bwd |" in md
