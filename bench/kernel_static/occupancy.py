"""Theoretical occupancy of a kernel on an H100 (sm_90), as the CUDA occupancy calculator
computes it.

Per SM: 65,536 registers, 2,048 threads (64 warps), 32 resident blocks, 228 KiB of shared memory
of which one block may use 227 KiB; sm_90 reserves 1 KiB of shared memory per block for the
system. Registers are allocated per warp in units of 256 (so per thread in steps of 8), and the
warps a block's registers are counted for come in groups of 4 (warp allocation granularity).
Shared memory is allocated in 128-byte units.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SM:
    """One SM's limits (defaults: H100 / sm_90)."""

    regs: int = 65536
    max_regs_per_thread: int = 255
    threads: int = 2048
    blocks: int = 32
    smem: int = 228 * 1024
    smem_per_block: int = 227 * 1024
    smem_reserved_per_block: int = 1024
    reg_unit: int = 256
    warp_granularity: int = 4
    smem_unit: int = 128
    warp_size: int = 32


H100 = SM()


@dataclass(frozen=True)
class Occupancy:
    blocks_per_sm: int
    warps_per_sm: int
    fraction: float  # resident warps / the SM's maximum
    limiter: str  # "threads", "blocks", "registers" or "shared memory"


def _round_up(x: int, unit: int) -> int:
    return -(-x // unit) * unit


def occupancy(threads_per_block: int, regs: int, smem_bytes: int, sm: SM = H100) -> Occupancy:
    """Resident blocks and warps per SM for a kernel of ``regs`` registers per thread and
    ``smem_bytes`` of shared memory per block (static + dynamic, without the system reserve).

    Raises ValueError for a block the SM cannot run at all (too many threads, registers or
    bytes of shared memory)."""
    if not 1 <= threads_per_block <= 1024:
        raise ValueError(f"threads_per_block must be in 1..1024, got {threads_per_block}")
    if not 0 <= regs <= sm.max_regs_per_thread:
        raise ValueError(f"regs must be in 0..{sm.max_regs_per_thread}, got {regs}")
    if not 0 <= smem_bytes <= sm.smem_per_block:
        raise ValueError(f"smem_bytes must be in 0..{sm.smem_per_block}, got {smem_bytes}")
    max_warps = sm.threads // sm.warp_size
    warps = -(-threads_per_block // sm.warp_size)
    limits = {"threads": max_warps // warps, "blocks": sm.blocks}
    if regs > 0:
        regs_per_warp = _round_up(regs * sm.warp_size, sm.reg_unit)
        warps_by_regs = sm.regs // regs_per_warp
        warps_by_regs -= warps_by_regs % sm.warp_granularity
        limits["registers"] = warps_by_regs // warps
    smem = _round_up(smem_bytes + sm.smem_reserved_per_block, sm.smem_unit)
    limits["shared memory"] = sm.smem // smem
    limiter = min(limits, key=lambda k: limits[k])
    blocks = limits[limiter]
    return Occupancy(blocks, blocks * warps, blocks * warps / max_warps, limiter)
