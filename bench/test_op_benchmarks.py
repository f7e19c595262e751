"""The op benchmarks under pytest-benchmark: one group per (op, case, mode) holding our CPU
kernel and its peers (mambapy's pscan pipeline, the einsum form, the transcendental floor), so
``pytest bench --benchmark-only`` prints them side by side and ``--benchmark-json`` keeps them.

These are separate medians per implementation; the target ratios are measured interleaved by
``bench/bench_ops.py`` (a shared machine's load drifts between two separate timings).
"""

from __future__ import annotations

import pytest
import torch

import zeromamba
from bench import bench_ops as bo
from zeromamba import reference
from zeromamba.testing import scan_inputs, slp_inputs, ss2d_inputs

pytestmark = pytest.mark.skipif(
    "cpu" not in zeromamba.available_backends()["cpu"].devices,
    reason="the cpu backend (zeromamba._C) is not built",
)


@pytest.fixture(scope="module")
def quick(request) -> bool:
    return request.config.getoption("--bench-quick")


def _time(benchmark, request, group: str, fn) -> None:
    benchmark.group = group
    rounds = request.config.getoption("--bench-rounds") or (
        2 if request.config.getoption("--bench-quick") else 5
    )
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)


def _mambapy():
    if bo.pscan is None:
        pytest.skip("mambapy is not installed (pip install mambapy)")


SCAN_IMPLS = ["cpu", "mambapy", "floor"]


@pytest.mark.parametrize("mode", ["fwd", "bwd", "fwd+bwd"])
@pytest.mark.parametrize("impl", SCAN_IMPLS)
def test_ss2d_scan(benchmark, request, quick, impl, mode):
    s = bo.QUICK_SS2D[0] if quick else bo.CPU_STAGE1
    b, c, H, W, N = s
    i = ss2d_inputs(*s, torch.float32, "cpu")
    dy = torch.randn(b, c, H, W, generator=torch.Generator().manual_seed(7))
    fn = _impl_fn(
        impl,
        mode,
        lambda: bo._scan_sides(bo.fused_ss2d("cpu", False), bo._leaves(bo._spatial(i)), dy),
        lambda: bo._grad_step(bo.mambapy_ss2d, bo._leaves(bo.mambapy_ss2d_layout(i)), dy),
        lambda: bo.transcendental_floor(b * 4 * c * H * W, N),
    )
    _time(benchmark, request, f"ss2d_scan {mode} {bo.ss2d_case(*s)}", fn)


@pytest.mark.parametrize("mode", ["fwd", "bwd", "fwd+bwd"])
@pytest.mark.parametrize("impl", SCAN_IMPLS)
def test_selective_scan(benchmark, request, quick, impl, mode):
    s = bo.QUICK_SCAN[0] if quick else bo.CPU_SCAN[0]
    b, d, L, N, _ = s
    i = scan_inputs(*s, torch.float32, "cpu")
    dy = torch.randn(b, d, L, generator=torch.Generator().manual_seed(7))
    fn = _impl_fn(
        impl,
        mode,
        lambda: bo._scan_sides(bo.scan_op("cpu"), bo._leaves(bo._scan_args(i)), dy),
        lambda: bo._grad_step(bo.mambapy_selective_scan, bo._leaves(bo.mambapy_scan_layout(i)), dy),
        lambda: bo.transcendental_floor(b * d * L, N),
    )
    _time(benchmark, request, f"selective_scan {mode} b={b} d={d} L={L} N={N}", fn)


def _impl_fn(impl: str, mode: str, ours, mambapy, floor):
    """The timed function of one implementation in one mode (the floor stands for every mode;
    mambapy is timed fwd+bwd only, the ratio the target is set on)."""
    if impl == "cpu":
        return ours()[mode]
    if impl == "floor":
        if mode == "fwd+bwd":
            pytest.skip("the floor is compared with fwd and bwd each")
        return floor()
    if mode != "fwd+bwd":
        pytest.skip("mambapy is compared fwd+bwd")
    _mambapy()
    return mambapy()


@pytest.mark.parametrize("impl", ["cpu", "einsum"])
def test_slp_project(benchmark, request, quick, impl):
    s = bo.QUICK_SLP[0] if quick else bo.CPU_SLP[0]
    i = slp_inputs(*s, torch.float32, "cpu")
    dy = torch.randn(s[0], s[1], generator=torch.Generator().manual_seed(7))
    run = bo.slp_op("cpu") if impl == "cpu" else reference.slp_project
    fn = bo._grad_step(run, bo._leaves(bo._slp_args(i)), dy)
    b, A, F, R = s
    _time(benchmark, request, f"slp_project fwd+bwd b={b} A={A} F={F} R={R}", fn)
