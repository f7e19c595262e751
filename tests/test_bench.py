"""Smoke tests of bench/bench_ops.py on tiny shapes: files and fields written, the mambapy
comparison pipeline equal to the reference, the GPU harness exercised on CPU. No timing is
asserted (docs/design.md §5.4)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from zeromamba import reference

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench_ops():
    spec = importlib.util.spec_from_file_location("bench_ops", ROOT / "bench" / "bench_ops.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_ops"] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    yield module
    del sys.modules["bench_ops"]


def test_ss2d_min_bytes(bench_ops):
    # b=1, C=1, 1x2 map, N=1: x 2 + delta 8 + B, C 16 = 26 input elements, y 2 elements.
    assert bench_ops.ss2d_min_bytes(1, 1, 1, 2, 1, 2, 4, "fwd") == 26 * 2 + 2 * 4
    assert bench_ops.ss2d_min_bytes(1, 1, 1, 2, 1, 2, 4, "bwd") == 2 * 4 + 2 * 26 * 2
    assert bench_ops.ss2d_min_bytes(1, 1, 1, 2, 1, 2, 4, "fwd+bwd") == 60 + 112


@pytest.mark.parametrize(
    "shape",
    [(1, 2, 1, 1, 1), (1, 3, 4, 2, 2), (2, 3, 5, 7, 1)],
    ids=["L1", "L8-pow2", "L35-padded"],
)
def test_mambapy_ss2d_matches_reference(bench_ops, shape):
    pytest.importorskip("mambapy")
    i = bench_ops.ss2d_inputs(*shape, torch.float64, "cpu", seed=2)
    errs = bench_ops.check_against_reference(
        bench_ops.mambapy_ss2d, bench_ops.mambapy_ss2d_layout, reference.ss2d_scan, i
    )
    assert set(errs) == {"y", "dx", "ddelta", "dA", "dB", "dC", "dD", "ddelta_bias"}
    assert max(errs.values()) < 1e-10, errs


def test_bench_ops_cpu_quick(bench_ops, tmp_path, monkeypatch):
    pytest.importorskip("mambapy")
    monkeypatch.setenv("ZEROMAMBA_POISON", "1")  # main() drops it; restored after the test
    assert bench_ops.main(["--device", "cpu", "--quick", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "ops-cpu.json").read_text())
    table = (tmp_path / "ops-cpu.md").read_text()

    meta = result["meta"]
    for key in ("device", "date", "commit", "machine", "torch", "threads", "backends", "checks"):
        assert key in meta
    checks = [c for c in meta["checks"] if c["impl"] == "mambapy"]
    assert {c["op"] for c in checks} == {"ss2d", "selective_scan"}
    assert all(c["max_rel_err"] < 1e-10 for c in checks)

    rows = result["rows"]
    assert not [r for r in rows if "error" in r or "memory_error" in r]
    backends = [n for n in ("cpu", "reference") if "cpu" in meta["backends"][n]["devices"]]
    for suite, impls in (
        ("ss2d_scan", [*backends, "mambapy"]),
        ("selective_scan", [*backends, "mambapy"]),
        ("slp_project", [*(n for n in backends if n != "reference"), "einsum"]),
    ):
        for impl in impls:
            for mode in ("fwd", "fwd+bwd"):
                found = [
                    r for r in rows if (r["suite"], r["impl"], r["mode"]) == (suite, impl, mode)
                ]
                assert found, (suite, impl, mode)
                assert all("skipped" in r or r["ms"] > 0 for r in found)
    measured = [r for r in rows if r["impl"] != "reference" and r["mode"] == "fwd"]
    assert all(
        r["fwd_peak"] >= r["saved"] >= 0 and r["step_peak"] >= r["fwd_peak"] for r in measured
    )
    # The impls of a case compute the same function (fp32, same inputs).
    assert all(v < 1e-4 for r in rows for k, v in r.items() if k.startswith("rel_diff_vs_"))

    # 9 interleaved comparisons (ss2d: fwd, bwd vs floor, mambapy, N=16 per state; scan: fwd,
    # bwd vs floor, mambapy at two shapes; slp vs einsum) + reference and two memory ratios.
    assert len(result["interleaved"]) == 9
    assert all(
        e["rounds"] == 3 and e["min"] <= e["median"] <= e["max"] for e in result["interleaved"]
    )
    assert len(result["ratios"]) == 12
    assert all(k["value"] is None or k["value"] > 0 for k in result["ratios"])
    for text in (
        "## ss2d_scan",
        "## selective_scan",
        "## slp_project",
        "## Key ratios",
        "## Interleaved comparisons",
        "mambapy.pscan",
        "profile_memory",
    ):
        assert text in table


def test_gpu_harness_on_cpu(bench_ops, tmp_path):
    """The GPU suites' code path (unfused pipeline, GB/s, % copy, checks, table) with the
    reference backend and the CPU timer; do_bench and the CUDA memory counters need a GPU."""
    args = bench_ops.parse_args(["--device", "cuda", "--quick", "--suites", "ss2d"])
    bench = bench_ops.Bench("cpu", bench_ops.Deadline(60), lambda fn: bench_ops.time_cpu(fn, 0.005))
    notes: list[str] = []
    meta = {"checks": []}
    bench_ops.run_gpu(args, bench, notes, meta, names=("reference",))
    assert meta["copy_gbps"] > 0
    assert [c["impl"] for c in meta["checks"]] == ["reference", "unfused-reference"]
    assert all(c["max_rel_err"] < 1e-5 for c in meta["checks"])
    full = [r for r in bench.rows if r["mode"] == "fwd+bwd"]
    assert {r["impl"] for r in full} == {"reference", "unfused-reference"}
    assert all(r["gbps"] > 0 and r["pct_copy"] > 0 for r in full)
    diffs = [r["rel_diff_vs_reference"] for r in bench.rows if "rel_diff_vs_reference" in r]
    assert diffs and max(diffs) < 1e-5
    meta.update(
        device="cuda",
        machine="cpu dry run",
        date="-",
        commit="-",
        torch="-",
        threads=1,
        quick=True,
        notes=notes,
    )
    table = bench_ops.markdown(
        {"meta": meta, "rows": bench.rows, "ratios": bench_ops.key_ratios("cuda", bench.rows, True)}
    )
    assert "fwd+bwd GB/s" in table and "% copy" in table and "unfused-reference" in table


def test_interleaved_ratio_is_per_round():
    """The ratio of each round pairs runs made in that round; the median is over rounds."""
    from bench.timing import Interleaved

    r = Interleaved({"ours": [1.0, 2.0, 4.0], "peer": [3.0, 10.0, 4.0]}, loadavg=0.0)
    got = r.ratio("peer", "ours")
    assert got["median"] == 3.0 and got["min"] == 1.0 and got["max"] == 5.0
    assert got["rounds"] == 3


def test_pytest_benchmark_suite_quick(tmp_path):
    """``pytest bench --benchmark-only`` on the tiny shapes: every group holds ours and a peer."""
    pytest.importorskip("pytest_benchmark")
    pytest.importorskip("mambapy")
    import subprocess

    out = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "pytest", "bench", "--benchmark-only", "--bench-quick"]
    cmd += ["--bench-rounds", "1", "-q", "-p", "no:cacheprovider", f"--benchmark-json={out}"]
    run = subprocess.run(cmd, check=False, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    groups: dict[str, set[str]] = {}
    for b in json.loads(out.read_text())["benchmarks"]:
        groups.setdefault(b["group"], set()).add(b["param"].split("-")[0] if b["param"] else "")
    assert len(groups) == 7, groups  # ss2d and selective_scan fwd, bwd, fwd+bwd; slp
    assert all(len(impls) >= 2 and "cpu" in impls for impls in groups.values()), groups
