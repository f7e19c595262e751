"""Modeled H100 (SXM, sm_90) time of a kernel launch: **modeled, not measured**.

A launch takes the longest of its limits (they overlap on the GPU; each is a lower bound):

* memory: bytes moved between L2 and the SMs (the emulator's sector count x 32 B, every
  warp request moving its own sectors) at ``HBM_BW`` = 3.35 TB/s. This charges a kernel for
  sectors it fetches and does not use; it gives no credit for L1 hits between requests.
* issue: warp instructions / (132 SMs x 4 schedulers x 1.755 GHz x e). For the scan kernels the
  instructions are ``sass_per_step`` (the hot loop's longest path per step, from the SASS) x the
  steps a warp runs (tiles are whole, so a sequence of L steps costs ceil(L / tile) tiles);
  ``e`` = min(1, resident warps per scheduler / ``WARPS_TO_HIDE``): with fewer than 4 eligible
  warps a scheduler idles on dependent-instruction latency (the scan's serial chains have ILP ~1).
  Resident warps come from the occupancy (registers, shared memory incl. the dynamic plane) and
  from the grid when it has fewer blocks than the GPU holds.
* GEMMs (cuBLAS, issued by the SLP binding): FLOPs at ``GEMM_EFFICIENCY`` of the H100 SXM dense
  peak of their math (``PEAK_FLOPS``: bf16 tensor cores, tf32, fp32 on CUDA cores) or their bytes
  at HBM bandwidth, whichever is longer (``gemm_ms``).

Small launches (grid-stride stores, reductions) are charged their bytes only. Launch overhead
(~3-5 us each) is not included. The first GPU run measures the model's error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .occupancy import H100, occupancy

HBM_BW = 3.35e12  # bytes/s, H100 SXM
SMS = 132
SCHEDULERS = 4
CLOCK = 1.755e9  # Hz, boost
WARPS_TO_HIDE = 4  # eligible warps per scheduler for one issue per clock
# H100 SXM dense peaks (FLOP/s) and the fraction of them a cuBLAS GEMM of the SLP's sizes is
# assumed to reach (M, N, K of a few hundred to a few thousand).
PEAK_FLOPS = {"bf16": 989.4e12, "tf32": 494.7e12, "fp32": 66.9e12}
GEMM_EFFICIENCY = 0.7


@dataclass
class LaunchCost:
    kernel: str
    ms: float
    bound: str  # which limit set the time
    mem_ms: float
    issue_ms: float | None = None
    pipe_ms: float | None = None
    occupancy: float | None = None


def resident_warps(threads: int, regs: int, smem: int, blocks: int) -> tuple[float, float]:
    """(occupancy fraction, resident warps per scheduler) of a launch of ``blocks`` blocks."""
    occ = occupancy(threads, regs, smem)
    warps_per_block = math.ceil(threads / 32)
    per_sm = min(occ.warps_per_sm, blocks * warps_per_block / SMS)
    return occ.fraction, per_sm / SCHEDULERS


def issue_ms(warp_instructions: float, warps_per_scheduler: float) -> float:
    e = min(1.0, warps_per_scheduler / WARPS_TO_HIDE)
    return warp_instructions / (SMS * SCHEDULERS * CLOCK * max(e, 1e-9)) * 1e3


def mem_ms(nbytes: float) -> float:
    return nbytes / HBM_BW * 1e3


def launch_cost(
    kernel: str,
    bytes_moved: float,
    *,
    threads: int | None = None,
    regs: int | None = None,
    smem: int = 0,
    blocks: int = 0,
    warp_instructions: float | None = None,
    pipe: dict[str, float] | None = None,
) -> LaunchCost:
    """The modeled time of one launch. ``warp_instructions``: issued warp instructions (None:
    not modeled); ``pipe``: {"mio": warp LDS+LDG, "fma": warp FFMA} for a kernel bound by its
    shared-memory loads or FFMAs."""
    m = mem_ms(bytes_moved)
    cost = LaunchCost(kernel, m, "memory", m)
    wps = None
    if threads and regs is not None and blocks:
        cost.occupancy, wps = resident_warps(threads, regs, smem, blocks)
    if warp_instructions is not None and wps is not None:
        cost.issue_ms = issue_ms(warp_instructions, wps)
    if pipe is not None and wps is not None:
        # the MIO pipe accepts one warp instruction per SM per clock whatever the occupancy,
        # as long as a few warps keep it fed
        e = min(1.0, wps / WARPS_TO_HIDE)
        mio = pipe.get("mio", 0.0) / (SMS * CLOCK * e) * 1e3
        fma = pipe.get("fma", 0.0) / (SMS * SCHEDULERS * CLOCK * e) * 1e3
        cost.pipe_ms = max(mio, fma)
    for name, v in (("issue", cost.issue_ms), ("pipe", cost.pipe_ms)):
        if v is not None and v > cost.ms:
            cost.ms, cost.bound = v, name
    return cost


def scan_steps(sequences: int, L: int, tile: int) -> int:
    """Steps the scan kernels run: whole tiles per sequence."""
    return sequences * math.ceil(L / tile) * tile


def gemm_ms(flops: float, nbytes: float, math: str = "bf16") -> tuple[float, str]:
    """(ms, bound) of a library op: FLOPs at GEMM_EFFICIENCY x PEAK_FLOPS[math] or bytes at
    HBM_BW, whichever is longer; elementwise ops pass flops = 0."""
    if math not in PEAK_FLOPS:
        raise ValueError(f"gemm_ms: math must be one of {sorted(PEAK_FLOPS)}, got {math!r}")
    compute = flops / (GEMM_EFFICIENCY * PEAK_FLOPS[math]) * 1e3
    memory = mem_ms(nbytes)
    return (compute, "compute") if compute > memory else (memory, "memory")


__all__ = ["H100", "LaunchCost", "gemm_ms", "launch_cost", "scan_steps"]
