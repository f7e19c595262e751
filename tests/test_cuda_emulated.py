"""The CUDA kernels of csrc/cuda run on the CPU by the kernel lab's emulator (bench/kernel_lab):
every kernel, forward and backward, against the float64 reference; the launch-legality rules of
sm_80/sm_90; the sanitizers on known-bad kernels; the memory-traffic model on a known pattern.

Needs only a host C++ compiler (g++ on x86-64) and binutils; the emulator library is built on
first use and cached under build/kernel_lab/. The default (ci) hypothesis profile keeps this file
near two minutes on two cores, compilation included; HYPOTHESIS_PROFILE=thorough draws many more
shapes.
"""

from __future__ import annotations

import platform
import shutil
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from inputs import rel_err, scan_inputs, slp_inputs, ss2d_inputs, to, tolerance

from zeromamba import reference

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from kernel_lab import LaunchError, SanitizerError, emulate
from kernel_lab.emulator import lab, selftest

pytestmark = pytest.mark.skipif(
    platform.machine() not in ("x86_64", "AMD64")
    or shutil.which("g++") is None
    or shutil.which("nm") is None,
    reason="the kernel lab's emulator needs g++ and binutils on x86-64",
)

HALF = [torch.float16, torch.bfloat16]
DTYPES = [torch.float32, *HALF]
GRAD_NAMES = {"x": "du", "u": "du", "feat": "dfeat"}


@pytest.fixture(scope="module", autouse=True)
def built():
    return lab()


def check(op: str, inputs: dict, dtype: torch.dtype, deterministic: bool = False) -> list[dict]:
    """Forward and backward of ``op`` emulated in ``dtype`` against the float64 reference, with
    the tolerances of the op tests (tests/inputs.py); returns the launches."""
    ref_fn = getattr(reference, op)
    hi = to(inputs, torch.float64, requires_grad=True)
    y_hi = ref_fn(**hi)
    g = torch.Generator().manual_seed(1)
    dy = torch.randn(y_hi.shape, generator=g, dtype=torch.float64)
    names = [k for k, v in hi.items() if isinstance(v, torch.Tensor)]
    g_hi = dict(zip(names, torch.autograd.grad(y_hi, [hi[k] for k in names], dy), strict=True))

    lo = to(inputs, dtype)
    fwd, launches = emulate(op, "fwd", **lo)
    grad_key = "dout" if op == "slp_project" else "dy"
    kw = {grad_key: dy.to(dtype), "deterministic": deterministic}
    grads, bwd_launches = emulate(op, "bwd", **lo, **kw)

    ref_errs = {}
    if dtype != torch.float32:  # what the reference itself loses in this dtype
        lo_ref = to(inputs, dtype, requires_grad=True)
        y_lo = ref_fn(**lo_ref)
        g_lo = torch.autograd.grad(y_lo, [lo_ref[k] for k in names], dy.to(y_lo.dtype))
        ref_errs = {"y": rel_err(y_lo, y_hi)}
        ref_errs.update({k: rel_err(a, g_hi[k]) for k, a in zip(names, g_lo, strict=True)})
    failures = []
    y = fwd["out" if op == "slp_project" else "y"]
    pairs = [("y", y, y_hi)]
    pairs += [(k, grads[GRAD_NAMES.get(k, "d" + k)], g_hi[k]) for k in names]
    for name, out, ref in pairs:
        err = rel_err(out, ref)
        tol = tolerance(dtype, "cuda", "cuda", ref_errs.get(name, 0.0))
        if not err <= tol:
            failures.append(f"{name}: rel err {err:.3g} > {tol:.3g}")
    assert not failures, f"{op} emulated ({dtype}, deterministic={deterministic}): " + "; ".join(
        failures
    )
    return launches + bwd_launches


# ------------------------------------------------------------------------ kernels vs reference


@pytest.mark.parametrize("N", [1, 4, 16])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("channel_last", [False, True], ids=["cf", "cl"])
def test_ss2d(channel_last, dtype, N):
    H, W = (5, 7) if channel_last else (7, 5)
    check("ss2d_scan", ss2d_inputs(1, 2, H, W, N, channel_last=channel_last), dtype)


@pytest.mark.parametrize("N", [1, 4, 16])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_selective_scan(dtype, N):
    check("selective_scan", scan_inputs(2, 4, 37, N, 2), dtype)


@pytest.mark.parametrize("L", [1, 1023, 1024, 1025])
def test_selective_scan_tile_boundaries(L):
    """kTile = 1024 steps: one tile, exactly one, one step into the next."""
    check("selective_scan", scan_inputs(1, 2, L, 1, 1, softplus=False), torch.float32)


@pytest.mark.parametrize("H, W", [(32, 32), (25, 41)])
def test_ss2d_tile_boundaries(H, W):
    check("ss2d_scan", ss2d_inputs(1, 1, H, W, 1), torch.float32)


@pytest.mark.parametrize(
    "H, W, N, dtype",
    [
        (66, 18, 2, torch.bfloat16),  # 64-step chain tiles + 2; a band of 16 columns + 2
        (3, 33, 16, torch.float32),  # three bands, the last with one column
    ],
    ids=["66x18", "3x33"],
)
def test_ss2d_column_bands(H, W, N, dtype):
    """Channel-first column directions run lanes on columns: bands of 16 columns chained end to
    start, each column in chain tiles of 64 steps."""
    check("ss2d_scan", ss2d_inputs(1, 2, H, W, N), dtype)


@pytest.mark.parametrize(
    "H, W, where",
    [
        (96, 128, "smem"),  # 48 KiB plane: needs the shared-memory opt-in
        (128, 192, "smem"),  # 24,576 floats: the largest plane in shared memory
        (157, 157, "workspace"),  # 24,649: the global-workspace fallback
    ],
)
def test_ss2d_accumulator_plane_limits(H, W, where):
    launches = check("ss2d_scan", ss2d_inputs(1, 1, H, W, 1), torch.float32)
    scan = [x for x in launches if x["kernel"].startswith(("scan_fwd", "scan_bwd"))]
    want = H * W * 4 if where == "smem" else 0
    assert [x["smem_dynamic"] for x in scan] == [want, want]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_slp(dtype):
    # b x A = 80 rows: whole blocks of 8 row-warps; R = 19: lanes without a region.
    check("slp_project", slp_inputs(b=2, A=40, F=20, R=19), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_slp_rows_past_the_register_cache(dtype):
    """R = 300 > 256: each lane's first 8 regions stay in registers, the rest are read twice;
    b x A = 15 rows: a partial block."""
    check("slp_project", slp_inputs(b=3, A=5, F=6, R=300), dtype)


def test_slp_has_no_atomics_and_repeats_bitwise():
    inputs = to(slp_inputs(b=3, A=10, F=24, R=9), torch.float32)
    dout = torch.randn(3, 10)
    runs = [emulate("slp_project", "bwd", dout=dout, **inputs) for _ in range(2)]
    assert all(x["atomics"] == 0 for x in runs[0][1])
    for k, v in runs[0][0].items():
        assert torch.equal(v, runs[1][0][k]), k


def test_slp_row_of_minus_inf_scores_is_nan_like_the_reference():
    """Row (b, 1) has s1 = -inf at every region; R = 9 leaves 23 padded lanes per warp, which
    must stay out of the softmax sums (a padded entry counted as exp(0) would give 0, not NaN)."""
    inputs = to(slp_inputs(b=2, A=3, F=4, R=9), torch.float32)
    inputs["feat"] = inputs["feat"].abs() + 0.1
    inputs["q1"][1, 0] = float("-inf")
    dout = torch.randn(2, 3, generator=torch.Generator().manual_seed(0))
    leaves = to(inputs, torch.float32, requires_grad=True)
    ref = reference.slp_project(**leaves)
    ref_grads = torch.autograd.grad(ref, list(leaves.values()), dout)
    out = emulate("slp_project", "fwd", **inputs)[0]["out"]
    grads = emulate("slp_project", "bwd", dout=dout, **inputs)[0]
    assert torch.isnan(ref).any()
    assert torch.equal(torch.isnan(out), torch.isnan(ref))
    for name, g in zip(leaves, ref_grads, strict=True):
        assert torch.equal(torch.isnan(grads[GRAD_NAMES.get(name, "d" + name)]), torch.isnan(g)), (
            name
        )


@pytest.mark.parametrize("op", ["ss2d_scan", "selective_scan"])
def test_deterministic_mode_has_no_atomics(op):
    inputs = {
        "ss2d_scan": lambda: ss2d_inputs(2, 3, 4, 5, 4),
        "selective_scan": lambda: scan_inputs(2, 4, 40, 4, 1),
    }[op]()
    default = sum(x["atomics"] for x in check(op, inputs, torch.float32))
    det = sum(x["atomics"] for x in check(op, inputs, torch.float32, deterministic=True))
    assert default > 0 and det == 0


@pytest.mark.parametrize("channel_last", [False, True], ids=["cf", "cl"])
def test_ss2d_deterministic_mode_is_independent_of_block_order(channel_last):
    """Deterministic gradients are the same bits whichever order the blocks run in; the default
    mode's dB/dC atomics from 3 blocks of 16 channels (the last one partial) are not, which shows
    the check bites."""
    inputs = to(ss2d_inputs(2, 40, 5, 6, 2, seed=3, channel_last=channel_last), torch.float32)
    dy = torch.randn(inputs["x"].shape, generator=torch.Generator().manual_seed(2))

    def grads(deterministic, reverse_blocks):
        kw = {"deterministic": deterministic, "reverse_blocks": reverse_blocks}
        return emulate("ss2d_scan", "bwd", dy=dy, **inputs, **kw)[0]

    det = [grads(True, r) for r in (False, True)]
    for k, v in det[0].items():
        assert torch.equal(v, det[1][k]), k
    default = [grads(False, r) for r in (False, True)]
    assert not torch.equal(default[0]["dB"], default[1]["dB"])


# What both scan property tests draw besides their shapes.
SCAN_DRAWS = {
    "b": st.integers(1, 2),
    "dtype": st.sampled_from(DTYPES),
    "deterministic": st.booleans(),
    "seed": st.integers(0, 2**16),
}


@given(
    c=st.integers(1, 3),
    H=st.integers(1, 9),
    W=st.integers(1, 9),
    N=st.sampled_from([1, 2, 4, 5, 16]),
    channel_last=st.booleans(),
    **SCAN_DRAWS,
)
def test_ss2d_property(b, c, H, W, N, dtype, channel_last, deterministic, seed):
    inputs = ss2d_inputs(b, c, H, W, N, seed=seed, channel_last=channel_last)
    check("ss2d_scan", inputs, dtype, deterministic)


@given(
    groups=st.integers(1, 2),
    per_group=st.integers(1, 2),
    L=st.integers(1, 80),
    N=st.sampled_from([1, 3, 4, 16]),
    **SCAN_DRAWS,
)
def test_selective_scan_property(b, groups, per_group, L, N, dtype, deterministic, seed):
    inputs = scan_inputs(b, groups * per_group, L, N, groups, seed=seed)
    check("selective_scan", inputs, dtype, deterministic)


@given(
    b=st.integers(1, 3),
    F=st.integers(1, 70),
    R=st.integers(1, 40),
    A=st.integers(1, 40),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**16),
)
def test_slp_property(b, F, R, A, dtype, seed):
    # no deterministic variant: the SLP has no atomics in any mode
    check("slp_project", slp_inputs(b, A, F, R, seed=seed), dtype)


# --------------------------------------------------------------------------- launch legality


@pytest.mark.parametrize("arch", [80, 90])
@pytest.mark.parametrize("hw", [(96, 128), (1, 12283)], ids=["96x128", "1x12283"])
def test_shared_memory_opt_in_counts_static_shared_memory(hw, arch):
    """Planes of 12,281-12,288 floats (12,277- in the backward) fit 48 KiB of dynamic shared
    memory but not 48 KiB with the kernels' static shared memory: the launch must opt in (it
    once did only above 48 KiB of dynamic memory)."""
    inputs = to(ss2d_inputs(1, 1, *hw, 1), torch.float32)
    _, launches = emulate("ss2d_scan", "fwd", arch=arch, execute=False, **inputs)
    dy = torch.zeros_like(inputs["x"])
    _, launches_b = emulate("ss2d_scan", "bwd", dy=dy, arch=arch, execute=False, **inputs)
    for x in (launches[0], launches_b[0]):
        assert x["smem_static"] > 0 and x["smem_static"] + x["smem_dynamic"] > 48 * 1024


@pytest.mark.parametrize("op", ["ss2d_scan", "selective_scan", "slp_project"])
def test_batch_above_gridDim_y_limit(op):
    """65,536 batches: more than gridDim.y allows."""
    b = 65536
    inputs = {
        "ss2d_scan": lambda: ss2d_inputs(b, 1, 1, 1, 1),
        "selective_scan": lambda: scan_inputs(b, 1, 1, 1, 1),
        "slp_project": lambda: slp_inputs(b, 1, 1, 1),
    }[op]()
    inputs = to(inputs, torch.float32)
    y = emulate(op, "fwd", execute=False, **inputs)[0]
    key = "dout" if op == "slp_project" else "dy"
    grad = torch.zeros_like(next(iter(y.values())))
    _, launches = emulate(op, "bwd", execute=False, **{key: grad}, **inputs)
    assert all(x["grid"][1] <= 65535 for x in launches)


@pytest.mark.parametrize(
    "threads, smem, opt_in, arch, error",
    [
        (64, 0, 0, 90, None),
        (1024, 0, 0, 90, None),
        (1025, 0, 0, 90, "block"),
        (64, 48 * 1024 - 256, 0, 90, None),  # the kernel has 256 bytes of static memory
        (64, 48 * 1024 - 255, 0, 90, "48 KiB default"),
        (64, 100 * 1024, 100 * 1024, 80, None),
        (64, 163 * 1024 - 200, 163 * 1024 - 200, 80, "exceed the sm_80 limit"),
        (64, 163 * 1024 - 200, 163 * 1024 - 200, 90, None),
        (64, 227 * 1024, 227 * 1024, 90, "exceed the sm_90 limit"),
        (64, 64 * 1024, 60 * 1024, 90, "opted in"),
    ],
)
def test_launch_limits(threads, smem, opt_in, arch, error):
    x = torch.randn(2048)
    if error is None:
        selftest("launch", x, threads=threads, smem=smem, opt_in=opt_in, arch=arch)
    else:
        with pytest.raises(LaunchError, match=error):
            selftest("launch", x, threads=threads, smem=smem, opt_in=opt_in, arch=arch)


# -------------------------------------------------------------------------------- sanitizers

FINDINGS = {
    "missing_barrier": "shared-memory race: write of s",
    "write_after_read": "shared-memory race: write of s",
    "uninitialised": "read of uninitialised shared memory s",
    "shared_out_of_bounds": "out-of-bounds read of dynamic shared memory",
    "global_out_of_bounds": "out-of-bounds global write .* past the end of 'out'",
    "exit_before_barrier": "barrier divergence: the thread exits",
    "two_barrier_sites": "barrier divergence: __syncthreads",
    "write_to_input": "store to read-only input 'in'",
}


@pytest.mark.parametrize("case", sorted(FINDINGS))
def test_sanitizer_finds(case):
    with pytest.raises(SanitizerError, match=FINDINGS[case]) as info:
        selftest(case, torch.randn(320))
    assert "selftest_kernel, block (0,0,0)" in str(info.value)
    assert "csrc/emu/selftest.cu:" in str(info.value)  # the source line


def test_good_kernel_and_warp_collectives():
    x = torch.randn(320)
    torch.testing.assert_close(selftest("good", x)[:64], x[:64].roll(-1), rtol=0, atol=0)
    out = selftest("shuffles", x).view(5, 64)
    lane = torch.arange(64) % 32
    warp = torch.arange(64) - lane
    v = x[:64]
    src_up = torch.where(lane >= 3, torch.arange(64) - 3, torch.arange(64))
    seg = lane // 16 * 16
    src_down = torch.where(lane + 5 < seg + 16, torch.arange(64) + 5, torch.arange(64))
    assert torch.equal(out[0], v[warp + (lane ^ 1)])
    assert torch.equal(out[1], v[src_up])
    assert torch.equal(out[2], v[src_down])
    assert torch.equal(out[3], v[warp + 7])
    assert torch.equal(out[4], (v > 0).float())


def test_traffic_model_counts_sectors_per_warp_request():
    """64 threads load and store one float each, consecutive: per warp one load request of four
    32-byte sectors (one 128-byte line) and one such store; the kernel also reads s (shared)."""
    x = torch.randn(320)
    selftest("good", x)
    launch = lab().launches()[-1]
    assert launch["load"] == {"requests": 2, "sectors": 8, "lines": 2}
    assert launch["store"] == {"requests": 2, "sectors": 8, "lines": 2}
    assert launch["bytes_l2"] == 16 * 32 and launch["sectors_per_request"] == 4.0


def test_emulate_rejects_bad_arguments():
    inputs = to(ss2d_inputs(1, 1, 2, 2, 1), torch.float32)
    with pytest.raises(ValueError, match="pass_"):
        emulate("ss2d_scan", "forward", **inputs)
    with pytest.raises(ValueError, match="op must be"):
        emulate("ss2d", "fwd", **inputs)
    with pytest.raises(TypeError, match="x must be float32, float16 or bfloat16"):
        emulate("ss2d_scan", "fwd", **to(inputs, torch.float64))
