"""Timing: medians over repeated runs on CPU and GPU, and the interleaved ratio of two or more
functions (ours, peer, ours, peer, ...) that a shared machine needs for an honest comparison."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class Timing:
    ms: float
    lo: float  # p25 (CPU) / p20 (GPU)
    hi: float  # p75 (CPU) / p80 (GPU)
    runs: int


class Deadline:
    """Wall-clock budget for the whole run: later measurements are skipped, not cut short."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def time_cpu(fn: Callable[[], object], budget_s: float, single_run_s: float = 10.0) -> Timing:
    """Median over repeated runs (torch.utils.benchmark) after one warm-up run.

    A function whose warm-up takes longer than ``single_run_s`` (the reference loop at large L)
    is timed from one run after the warm-up.
    """
    from torch.utils import benchmark

    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    if first > single_run_s:
        start = time.perf_counter()
        fn()
        once = (time.perf_counter() - start) * 1e3
        return Timing(once, once, once, 1)
    timer = benchmark.Timer("fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    m = timer.blocked_autorange(min_run_time=max(budget_s, min(3 * first, single_run_s)))
    per_run = sorted(t * 1e3 for t in m.times)
    q = (
        statistics.quantiles(per_run, n=4, method="inclusive")
        if len(per_run) > 1
        else [per_run[0]] * 3
    )
    return Timing(m.median * 1e3, q[0], q[2], len(per_run) * m.number_per_run)


def time_gpu(fn: Callable[[], object], warmup_ms: int, rep_ms: int) -> Timing:
    """Median and p20/p80 of ``triton.testing.do_bench`` (CUDA events, L2 flushed per run)."""
    from triton.testing import do_bench

    med, lo, hi = do_bench(fn, warmup=warmup_ms, rep=rep_ms, quantiles=[0.5, 0.2, 0.8])
    runs = max(1, round(rep_ms / max(med, 1e-3)))
    return Timing(med, lo, hi, runs)


@dataclass
class Interleaved:
    """Per-function run times (ms) from one interleaved loop and the ratios to the first one."""

    ms: dict[str, list[float]]
    loadavg: float  # 1-minute load average at the end of the loop

    def median_ms(self, name: str) -> float:
        return statistics.median(self.ms[name])

    def ratios(self, peer: str, ours: str) -> list[float]:
        """peer / ours per round: > 1 means ours is faster."""
        return [p / o for p, o in zip(self.ms[peer], self.ms[ours], strict=True)]

    def ratio(self, peer: str, ours: str) -> dict[str, float]:
        """Median round ratio with its spread (min, max and the quartiles)."""
        r = sorted(self.ratios(peer, ours))
        q = statistics.quantiles(r, n=4, method="inclusive") if len(r) > 1 else [r[0]] * 3
        return {
            "median": statistics.median(r),
            "min": r[0],
            "max": r[-1],
            "p25": q[0],
            "p75": q[2],
            "rounds": len(r),
        }


def interleaved(
    fns: dict[str, Callable[[], object]],
    rounds: int = 7,
    warmup: int = 1,
    budget_s: float = 60,
    clock: Callable[[], float] = time.perf_counter,
) -> Interleaved:
    """Runs every function once per round, in the given order, for ``rounds`` rounds (fewer when
    ``budget_s`` runs out, but at least 3): each round's ratio compares runs made under the same
    machine load, so the median ratio is robust to load that comes and goes. ``clock``: wall
    time by default; ``time.process_time`` counts the CPU time of this process's threads."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    ms: dict[str, list[float]] = {n: [] for n in fns}
    end = time.monotonic() + budget_s
    for r in range(rounds):
        if r >= 3 and time.monotonic() > end:
            break
        for name, fn in fns.items():
            t0 = clock()
            fn()
            ms[name].append((clock() - t0) * 1e3)
    return Interleaved(ms, os.getloadavg()[0])


def transcendental_floor(elements: int, d_state: int) -> Callable[[], object]:
    """The scan's compute floor as a function to time: torch's vectorised ``exp`` over
    ``elements * (1 + d_state)`` values and ``log1p`` over ``elements`` (softplus needs one exp
    and one log1p per (channel, step), the decay one exp per state), into preallocated outputs.
    ``elements``: the (batch, direction, channel, step) count of the scan."""
    g = torch.Generator().manual_seed(0)
    e = torch.randn(elements * (1 + d_state), generator=g)
    l1 = torch.rand(elements, generator=g)
    e_out, l1_out = torch.empty_like(e), torch.empty_like(l1)

    def floor() -> None:
        torch.exp(e, out=e_out)
        torch.log1p(l1, out=l1_out)

    return floor
