"""The Triton backend beyond tests/test_ops.py: the chunk walk of the scans (forced small
chunks, so it runs on small maps), int64 offsets, deterministic mode, several R-, F- and A-tiles
in slp_project, fp16 inputs, the kernel-op schemas, the dtype guard and, on a GPU, the scans
across warps and torch.compile through the triton_op wrappers."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from inputs import (
    DEVICES,
    check_against_reference,
    rel_err,
    scan_inputs,
    slp_inputs,
    ss2d_inputs,
    to,
    tolerance,
)

import zeromamba
from zeromamba import backends, ops, reference

if "cpu" not in zeromamba.available_backends()["triton"].devices and not torch.cuda.is_available():
    pytest.skip("the triton backend is not available here", allow_module_level=True)

from zeromamba.kernels import scan
from zeromamba.kernels import selective_scan as ss_kernels
from zeromamba.kernels import ss2d_scan as ss2d_kernels

DEVICE = DEVICES[-1]  # the GPU when there is one, else CPU tensors through the interpreter
SCAN_GRADS = ("u", "delta", "A", "B", "C", "D", "delta_bias")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the layouts across warps need a GPU")
@pytest.mark.parametrize("chunk", [None, 64, 128])
@pytest.mark.parametrize("channel_last", [False, True])
def test_gpu_scans_across_warps(chunk, channel_last):
    """Run first on a new GPU: with 64- and 128-step chunks the forward and reverse
    ``tl.associative_scan`` span several warps (the interpreter never does), a path with open
    Triton GPU bugs. Every direction, several chunks, against the reference."""
    kw = ss2d_inputs(2, 20, 19, 23, 1, channel_last=channel_last, seed=11)
    dy = torch.randn(kw["x"].shape, dtype=torch.float64)
    y_ref, g_ref = _reference_grads(reference.ss2d_scan, kw, dy)
    f = to(kw, torch.float32, "cuda")
    args = [f[k] for k in ("x", *SCAN_GRADS[1:])]
    with scan.forced_chunk(chunk):
        y = ss2d_kernels.launch_fwd(*args, True, channel_last, False)
        grads = ss2d_kernels.launch_bwd(dy.float().cuda(), *args, True, channel_last)
    names = ("x", *SCAN_GRADS[1:])
    _assert_close({"y": y, **dict(zip(names, grads))}, {"y": y_ref, **g_ref})


def _reference_grads(fn, inputs: dict, dy: torch.Tensor) -> tuple:
    hi = to(inputs, torch.float64, requires_grad=True)
    y = fn(**hi)
    names = [k for k, v in hi.items() if isinstance(v, torch.Tensor)]
    return y, dict(zip(names, torch.autograd.grad(y, [hi[k] for k in names], dy)))


def _assert_close(out: dict, ref: dict) -> None:
    tol = tolerance(torch.float32, "triton", next(iter(out.values())).device.type)
    errs = {k: rel_err(v, ref[k]) for k, v in out.items()}
    assert all(e <= tol for e in errs.values()), f"rel errors {errs} > {tol}"


@pytest.mark.parametrize("off64", [False, True])
def test_selective_scan_chunk_carries(off64, monkeypatch):
    """Ten chunks and a ragged last one, forward and backward; also on the int64 tile-offset
    path (OFF64) that maps whose tiles span 2^31 elements take."""
    monkeypatch.setattr(scan, "_off64", lambda *a: off64)
    kw = scan_inputs(2, 4, 37, 3, 2, seed=5)  # N = 3: padded states
    dy = torch.randn(2, 4, 37, dtype=torch.float64)
    y_ref, g_ref = _reference_grads(reference.selective_scan, kw, dy)
    f = to(kw, torch.float32, DEVICE)
    args = [f[k] for k in SCAN_GRADS]
    with scan.forced_chunk(4):
        y = ss_kernels.launch_fwd(*args, True, False)
        grads = ss_kernels.launch_bwd(dy.float().to(DEVICE), *args, True)
    _assert_close({"y": y, **dict(zip(SCAN_GRADS, grads))}, {"y": y_ref, **g_ref})


@pytest.mark.parametrize("channel_last", [False, True])
def test_ss2d_scan_chunk_carries(channel_last):
    """Each of the four directions crosses chunk boundaries in its own order (H != W, odd)."""
    kw = ss2d_inputs(1, 2, 5, 7, 4, channel_last=channel_last, seed=2)
    dy = torch.randn(kw["x"].shape, dtype=torch.float64)
    y_ref, g_ref = _reference_grads(reference.ss2d_scan, kw, dy)
    f = to(kw, torch.float32, DEVICE)
    args = [f[k] for k in ("x", *SCAN_GRADS[1:])]
    with scan.forced_chunk(8):
        y = ss2d_kernels.launch_fwd(*args, True, channel_last, False)
        grads = ss2d_kernels.launch_bwd(dy.float().to(DEVICE), *args, True, channel_last)
    names = ("x", *SCAN_GRADS[1:])
    _assert_close({"y": y, **dict(zip(names, grads))}, {"y": y_ref, **g_ref})


def test_ss2d_scan_column_tiles():
    """Channel-first maps: the column directions run on programs of their own with 32
    columns a chunk, forward and backward, so a 70-column map walks three chunks (the last
    one ragged) in each of the two orders; half-filled rows of the padded tile (H = 3); the
    backward's channel loop over a block of 2 channels."""
    kw = to(ss2d_inputs(1, 2, 3, 70, 2, seed=9), device=DEVICE)
    p = ss2d_kernels._problem(kw["x"], 2, channel_last=False)
    assert scan._columns(p, kw["x"], kw["delta"]) == 32
    assert scan._columns(p, kw["x"], kw["delta"], backward=True) == 32
    check_against_reference("ss2d_scan", "triton", kw, torch.float32)


def test_selective_scan_default_chunks():
    """A sequence longer than the default chunk goes through the carry path by itself."""
    kw = scan_inputs(1, 2, 150, 1, 1, seed=7)
    dy = torch.randn(1, 2, 150, dtype=torch.float64)
    y_ref, g_ref = _reference_grads(reference.selective_scan, kw, dy)
    f = to(kw, torch.float32, DEVICE, requires_grad=True)
    y = ops.selective_scan(**f, backend="triton")
    grads = torch.autograd.grad(y, [f[k] for k in SCAN_GRADS], dy.float().to(DEVICE))
    _assert_close({"y": y, **dict(zip(SCAN_GRADS, grads))}, {"y": y_ref, **g_ref})


def test_slp_project_several_tiles():
    """R spans three R-tiles (the online softmax rescales), F two F-tiles, A two A-blocks."""
    kw = slp_inputs(2, 70, 80, 150, seed=3)
    dout = torch.randn(2, 70, dtype=torch.float64)
    y_ref, g_ref = _reference_grads(reference.slp_project, kw, dout)
    f = to(kw, torch.float32, DEVICE, requires_grad=True)
    y = ops.slp_project(**f, backend="triton")
    grads = torch.autograd.grad(y, list(f.values()), dout.float().to(DEVICE))
    _assert_close({"y": y, **dict(zip(f, grads))}, {"y": y_ref, **g_ref})


@pytest.mark.parametrize("out_float32", [False, True])
def test_float16(out_float32):
    """Half inputs (the interpreter has fp16, not bf16, arithmetic): fp32 state, half or fp32
    output, within twice the half-precision reference's own error."""
    kw = to(ss2d_inputs(2, 3, 5, 6, 2, channel_last=out_float32), device=DEVICE)
    check_against_reference("ss2d_scan", "triton", kw, torch.float16, out_float32=out_float32)
    kw = to(scan_inputs(2, 4, 30, 4, 2), device=DEVICE)
    check_against_reference("selective_scan", "triton", kw, torch.float16, out_float32=out_float32)
    if not out_float32:
        kw = to(slp_inputs(2, 20, 40, 50), device=DEVICE)
        check_against_reference("slp_project", "triton", kw, torch.float16)


@pytest.mark.parametrize("name", backends.KERNELS)
def test_kernel_op_schemas(name):
    """Each Triton kernel is a registered op taking exactly the C++ kernel op's arguments."""
    native = getattr(torch.ops.zeromamba, name).default._schema
    ours = getattr(torch.ops.zeromamba, f"{name}_triton").default._schema
    assert [str(a.type) for a in ours.arguments] == [str(a.type) for a in native.arguments]
    assert [str(r.type) for r in ours.returns] == [str(r.type) for r in native.returns]


def test_float64_is_refused():
    kw = to(scan_inputs(1, 2, 3, 1, 1), device=DEVICE)
    with pytest.raises(ValueError, match="triton backend takes float32"):
        ops.selective_scan(**kw, backend="triton")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="torch.compile traces Triton on GPUs")
def test_compile_fullgraph_cuda():
    """torch.compile traces into the triton_op launches: no graph break, eager's results."""
    torch._dynamo.reset()
    samples = [
        (ops.selective_scan, to(scan_inputs(2, 4, 70, 2, 2), torch.float32, "cuda", True)),
        (ops.ss2d_scan, to(ss2d_inputs(2, 3, 9, 8, 1), torch.float32, "cuda", True)),
        (ops.slp_project, to(slp_inputs(2, 20, 40, 30), torch.float32, "cuda", True)),
    ]
    for op, kw in samples:
        fn = torch.compile(lambda kw, op=op: op(**kw, backend="triton") * 2, fullgraph=True)
        y = fn(kw)
        torch.testing.assert_close(y, op(**kw, backend="triton") * 2)
        y.sum().backward()


def _count_atomics(monkeypatch) -> list:
    """Counts the atomic read-modify-writes the interpreter executes from here on."""
    from triton.runtime import interpreter

    calls = []
    original = interpreter.InterpreterBuilder.create_atomic_rmw

    def counted(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(interpreter.InterpreterBuilder, "create_atomic_rmw", counted)
    return calls


def _ss2d_fwd_bwd(kw: dict, dy: torch.Tensor) -> list:
    args = [kw[k] for k in ("x", *SCAN_GRADS[1:])]
    with scan.forced_chunk(8):
        y = ss2d_kernels.launch_fwd(*args, True, False, False)
        return [y, *ss2d_kernels.launch_bwd(dy, *args, True, False)]


@pytest.mark.skipif(DEVICE != "cpu", reason="counts the interpreter's atomics")
@pytest.mark.parametrize("how", ["env", "torch"])
def test_deterministic_mode(how, monkeypatch):
    """$ZEROMAMBA_DETERMINISTIC=1 or torch.use_deterministic_algorithms(True): no atomics (the
    default adds the directions' y and dx with atomics), results
    bitwise repeatable and equal to the reference's within tolerance."""
    # the default path adds the four directions into y and dx with atomics; 6 channels keep the
    # interpreted column programs (forward: one per channel and column direction) short
    kw = ss2d_inputs(2, 6, 5, 6, 2, seed=4)
    dy = torch.randn(kw["x"].shape, dtype=torch.float64)
    _, g_ref = _reference_grads(reference.ss2d_scan, kw, dy)
    f = to(kw, torch.float32, DEVICE)
    atomics = _count_atomics(monkeypatch)
    default = _ss2d_fwd_bwd(f, dy.float())
    assert atomics, "the default path was expected to add with atomics"
    atomics.clear()
    if how == "env":
        monkeypatch.setenv("ZEROMAMBA_DETERMINISTIC", "1")
    else:
        monkeypatch.setattr(torch, "are_deterministic_algorithms_enabled", lambda: True)
    first = _ss2d_fwd_bwd(f, dy.float())
    second = _ss2d_fwd_bwd(f, dy.float())
    assert not atomics, f"{len(atomics)} atomic operations in deterministic mode"
    for a, b, c in zip(first, second, default):
        assert torch.equal(a, b)
        torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-6)
    names = ("x", *SCAN_GRADS[1:])
    _assert_close(dict(zip(names, first[1:])), g_ref)


def test_tile_offsets_switch_to_int64_past_2_31():
    """A map whose per-image slice spans 2^31 elements (meta tensors: nothing is allocated)
    takes the int64 tile offsets; the benchmark shapes keep int32 ones."""
    big = torch.empty((1, 2, 46341, 46341), device="meta")  # C*H*W > 2^31
    small = torch.empty((32, 192, 112, 112), device="meta")
    for x, want in ((big, True), (small, False)):
        p = ss2d_kernels._problem(x, 1, channel_last=False)
        cfg = scan._config(p, backward=True)
        assert scan._off64(p, cfg, [(p.x_strides(x), cfg.block_c)]) is want


@pytest.mark.skipif(DEVICE != "cpu", reason="lowers the kernels without the interpreter")
@pytest.mark.parametrize("off64", [False, True])
def test_offsets_are_int64_in_the_ttir(off64):
    """Every program base (scalar pointer offset: batch, group, channel block, partial block)
    is int64 in the kernels' TTIR, so no int32 product such as block * partial stride can
    overflow; on the OFF64 path every tile offset is int64 too."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    script = Path(__file__).with_name("triton_offsets.py")
    cmd = [sys.executable, str(script)] + (["--off64"] if off64 else [])
    out = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    launches = json.loads(out.stdout)
    assert {ln["kernel"] for ln in launches} == {"_fwd_kernel", "_bwd_kernel"}
    assert {ln["COLS"] > 0 for ln in launches} == {True, False}  # with and without columns
    for ln in launches:
        assert ln["OFF64"] is off64
        assert ln["scalar"] == ["i64"], ln
        if off64:
            assert ln["tile"] == ["i64"], ln


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_gpu_reduce_overhead_captures_the_scans():
    """torch.compile(mode="reduce-overhead") captures ss2d_scan and selective_scan (forward and
    backward) in CUDA graphs: no host sync, no CPU tensor, nothing data-dependent in the
    launchers; replays give eager's results."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    samples = [
        (ops.ss2d_scan, to(ss2d_inputs(2, 8, 14, 14, 1), torch.float32, "cuda", True)),
        (ops.selective_scan, to(scan_inputs(2, 8, 196, 4, 2), torch.float32, "cuda", True)),
    ]
    for op, kw in samples:

        def step(kw, op=op):
            y = op(**kw, backend="triton")
            return (y, *torch.autograd.grad(y.square().sum(), [kw["x" if "x" in kw else "u"]]))

        fn = torch.compile(step, mode="reduce-overhead")
        want = step(kw)
        for _ in range(3):
            got = fn(kw)
            for a, b in zip(got, want):
                torch.testing.assert_close(a, b)
    assert not counters["inductor"]["cudagraph_skips"], dict(counters["inductor"])
