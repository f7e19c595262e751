"""The Triton scan core shared by ``selective_scan`` and ``ss2d_scan`` (docs/design.md §4.7).

Model (vocabulary of docs/design.md §1). ``n_groups`` B/C groups of ``channels`` consecutive
channels each make the ``rows`` = n_groups * channels rows of A, D, delta_bias: a
``selective_scan`` group is one of its G groups, an ``ss2d_scan`` group is direction k (which has
its own B[:, k], C[:, k]; ``n_dir`` = 4 tells the directions apart from B/C groups). Every row
scans L = H*W steps; step t sits at a spatial position (h, w) found by index arithmetic
(row-major for selective_scan, where H = 1 and W = L; direction k's order for ss2d). Every tensor
is addressed by five strides (batch, group, channel-or-state, h, w), so any input layout and any
strided view is read in place: no cross-scan copy, no .contiguous() copy.

One launch per pass. A program owns ``BLOCK_C`` channels of one group of one batch element and
walks the sequence in chunks of ``BLOCK_T`` steps, in order, with the state (BLOCK_C x N_PAD) in
registers: each chunk is scanned as a register tile with ``tl.associative_scan`` over the affine
pairs (a, b) -> h = a h_prev + b (a = exp(dt A), b = dt B u), and the cumulative product of the
a's carries the previous chunk's end state in. Everything is read once per pass. In fp32 with
exp2 forms (dA = exp2(dt A log2 e), softplus = log2(1 + exp2(z log2 e)) ln 2, identity above 20).

* forward: walks chunks 0 .. n-1 and writes y.
* backward: first walks forward without writing y, saving the state at every chunk start (a
  small fp32 scratch, closed form per chunk: no scan needed), then walks chunks n-1 .. 0 with the
  adjoint g in registers (g_t = a_{t+1} g_{t+1} + C_t dy_t, a reverse associative scan),
  recomputing h in each chunk from its saved start state, and forms every gradient.
* column directions of channel-first ss2d maps: their consecutive steps are W elements apart,
  so in both passes they get programs of their own in the same launch (``COLS`` > 0; program
  ids past ``row_programs``) whose lanes are adjacent columns: chunks of whole columns, each
  scanned down its rows, a second associative scan chaining the columns (_column_states,
  _column_adjoints), and a warp's loads coalesce. Forward: one channel a program. Backward:
  a block of channels a program, walked one after another inside each column chunk, so dB and
  dC add over the block in registers.

Reductions. The four ss2d directions add into one y (and dx); dB and dC add over channel
blocks. By default those adds are relaxed atomics (``sem="relaxed"``: plain reductions, no
fences) into zeroed fp32 buffers, so on a GPU the low bits depend on the order of the adds.
Deterministic mode ($ZEROMAMBA_DETERMINISTIC=1 or ``torch.use_deterministic_algorithms(True)``,
as for the CUDA backend) writes per-direction and per-channel-block partials with plain stores
and sums them in a fixed order: no atomics, bitwise repeatable. dA, dD and d delta_bias are
always per-batch partials summed by torch. Offsets are int64 throughout: partial buffers and
large maps pass 2^31 elements.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.library import wrap_triton

from ._alloc import empty
from ._common import LN2, LOG2E, next_pow2

# Register budget of one scan tile (BLOCK_C * N_PAD * BLOCK_T fp32 values). ptxas for sm_90
# (Triton 3.9): the forward at 1024 with 8 warps takes 64-78 registers; the backward holds about
# twice as many live tiles and at 1024 took 141-168 registers (N = 1) with spills in the
# channel-last layout, at 256 with 4 warps 91-96, no spills. For N = 16 the backward keeps 1024
# (128 registers with 8 warps): smaller tiles would leave one channel per block, and the dB / dC
# sums over channel blocks would grow with the channel count.
FWD_TILE_ELEMS = 1024
BWD_TILE_ELEMS = {1: 256}  # by N_PAD; 1024 otherwise
MAX_CHUNK = 64
MIN_CHUNK = 16
# Column programs: tiles of up to COLUMN_TILE_ELEMS values (H_PAD x N_PAD x COLS), at least
# MIN_COLS columns wide (8 fp32 or 16 bf16 values fill a 32-byte sector), at most 32. The
# backward holds more live tiles: 512 values with 8 warps (100-115 registers, no spills at the
# VMamba-S maps; 1024 spilled), at least 4 columns (112 x 112: 4, a quarter sector in bf16).
COLUMN_TILE_ELEMS = 2048
BWD_COLUMN_TILE_ELEMS = 512
MIN_COLS = 8
MIN_BWD_COLS = 4
MAX_COLS = 32


class Strides(NamedTuple):
    """Element strides of a tensor along (batch, group, channel or state, h, w)."""

    b: int
    g: int
    c: int
    h: int
    w: int


@dataclass(frozen=True)
class Problem:
    """One scan problem: sizes and how each tensor kind maps to its five strides."""

    batch: int
    H: int
    W: int
    n_dir: int  # 1 (selective_scan) or 4 (ss2d_scan: the directions add into one y)
    n_groups: int  # B/C groups: G for selective_scan, the 4 directions for ss2d_scan
    channels: int  # channels per group
    d_state: int  # N
    x_strides: Callable[[Tensor], Strides]  # u / x / y / dy / du
    delta_strides: Callable[[Tensor], Strides]  # delta / ddelta
    bc_strides: Callable[[Tensor], Strides]  # B / C / dB / dC (channel slot = state n)

    @property
    def L(self) -> int:
        return self.H * self.W

    @property
    def rows(self) -> int:
        return self.n_groups * self.channels


@dataclass(frozen=True)
class _Config:
    n_pad: int
    block_c: int
    block_t: int
    n_cb: int  # channel blocks per group
    n_chunks: int
    num_warps: int


_forced_chunk: int | None = None  # set by ``forced_chunk``


@contextmanager
def forced_chunk(steps: int | None) -> Iterator[None]:
    """Within the block every scan launch walks chunks of ``steps`` steps (a power of two;
    the column programs: of ``steps`` columns): tests reach the carry path on small maps."""
    global _forced_chunk
    saved, _forced_chunk = _forced_chunk, steps
    try:
        yield
    finally:
        _forced_chunk = saved


def _config(p: Problem, backward: bool) -> _Config:
    """Tile sizes: BLOCK_T steps per chunk (16 channels' worth of the tile, 16 to 64 steps) and
    BLOCK_C channels filling the rest of the tile budget."""
    n_pad = next_pow2(p.d_state)
    tile = BWD_TILE_ELEMS.get(n_pad, 1024) if backward else FWD_TILE_ELEMS
    chunk = _forced_chunk
    if chunk is None:
        block_t = min(MAX_CHUNK, next_pow2(p.L), max(MIN_CHUNK, tile // (16 * n_pad)))
    else:
        block_t = chunk
    if block_t != next_pow2(block_t):
        raise ValueError(f"chunk must be a power of two, got {chunk}")
    block_c = min(next_pow2(p.channels), max(1, tile // (n_pad * block_t)))
    num_warps = 8 if block_c * n_pad * block_t >= 1024 else 4
    return _Config(
        n_pad,
        block_c,
        block_t,
        triton.cdiv(p.channels, block_c),
        triton.cdiv(p.L, block_t),
        num_warps,
    )


def _columns(p: Problem, u: Tensor, delta: Tensor, backward: bool = False) -> int:
    """Columns per chunk of the column programs of the ss2d column directions, or 0 where
    the general kernel takes them: channel-last maps (whose channels make coalesced lanes
    already), maps with strided rows, and tiles that would be too narrow or too large."""
    if p.n_dir != 4 or p.x_strides(u).w != 1 or p.delta_strides(delta).w != 1:
        return 0
    h_pad, n_pad = next_pow2(p.H), next_pow2(p.d_state)
    if _forced_chunk is not None:
        return _forced_chunk
    tile = BWD_COLUMN_TILE_ELEMS if backward else COLUMN_TILE_ELEMS
    cols = min(MAX_COLS, next_pow2(p.W), tile // (h_pad * n_pad))
    return cols if cols >= (MIN_BWD_COLS if backward else MIN_COLS) else 0


def deterministic() -> bool:
    """Deterministic mode, as the CUDA backend reads it: $ZEROMAMBA_DETERMINISTIC=1 or
    ``torch.use_deterministic_algorithms(True)``."""
    return (
        os.environ.get("ZEROMAMBA_DETERMINISTIC") == "1"
        or torch.are_deterministic_algorithms_enabled()
    )


def tensor_args(name: str, t: Tensor, s: Strides) -> dict:
    """A tensor and its five strides as the named kernel arguments ``<name>_ptr``,
    ``<name>_sb``, ``<name>_sg``, ``<name>_sc``, ``<name>_sh``, ``<name>_sw``. Scalars, not a
    tuple: ``wrap_triton`` under torch.compile takes no tuple arguments."""
    return {
        f"{name}_ptr": t,
        f"{name}_sb": s.b,
        f"{name}_sg": s.g,
        f"{name}_sc": s.c,
        f"{name}_sh": s.h,
        f"{name}_sw": s.w,
    }


# --------------------------------------------------------------------------- kernels
# Runtime loops are `while` loops: Triton 3.6's interpreter cannot take a runtime `range` bound.


@triton.jit
def _pair(a1, b1, a2, b2):
    """Composition of h -> a1 h + b1 then h -> a2 h + b2."""
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _block(
    n_cb, group_step, channels, N, BLOCK_C: tl.constexpr, N_PAD: tl.constexpr, OFF64: tl.constexpr
):
    """What this program owns: group grp (every group_step-th), channel block cb, batch element
    bi (int64 scalars); its channels cl within the block (BLOCK_C,), their rows r of A, D,
    delta_bias and cmask; the states n (N_PAD,) and nmask."""
    grp = (tl.program_id(0) // n_cb).to(tl.int64) * group_step
    cb = (tl.program_id(0) % n_cb).to(tl.int64)
    bi = tl.program_id(1).to(tl.int64)
    cl = tl.arange(0, BLOCK_C)
    cmask = cb * BLOCK_C + cl < channels
    r = grp * channels + cb * BLOCK_C + cl
    n = tl.arange(0, N_PAD)
    nmask = n < N
    if OFF64:
        cl = cl.to(tl.int64)
        n = n.to(tl.int64)
    return grp, cb, bi, cl, cmask, r, n, nmask


@triton.jit
def _position(t, grp, L, H, W, N_DIR: tl.constexpr, OFF64: tl.constexpr):
    """Spatial position (h, w) of the steps t of group grp: row-major (H = 1, W = L) when N_DIR is
    1; with 4, direction grp's order (0 row-major, 1 column-major, 2 and 3 reversed)."""
    if N_DIR == 4:
        s = tl.where(grp >= 2, L - 1 - t, t)
        col = (grp % 2) == 1
        hh = tl.where(col, s % H, s // W)
        ww = tl.where(col, s // H, s % W)
    else:
        hh = t * 0
        ww = t
    if OFF64:
        hh, ww = hh.to(tl.int64), ww.to(tl.int64)
    return hh, ww


@triton.jit
def _chunk(
    j,
    grp,
    cmask,
    nmask,
    L,
    H,
    W,
    BLOCK_T: tl.constexpr,
    N_DIR: tl.constexpr,
    OFF64: tl.constexpr,
):
    """Chunk j: its steps t (BLOCK_T,), their positions (hh, ww) and the masks of its (channel,
    step) and (state, step) tiles."""
    t = j * BLOCK_T + tl.arange(0, BLOCK_T)
    hh, ww = _position(t, grp, L, H, W, N_DIR, OFF64)
    tmask = t < L
    return t, hh, ww, cmask[:, None] & tmask[None, :], nmask[:, None] & tmask[None, :]


@triton.jit
def _tile(base, k, sk, hh, ww, sh, sw):
    """Pointers (len(k), len(hh)) to channels or states k at positions (hh, ww) of a tensor with
    strides sk, sh, sw from base."""
    return base + (k * sk)[:, None] + (hh * sh + ww * sw)[None, :]


@triton.jit
def _load(base, k, sk, hh, ww, sh, sw, mask):
    """The fp32 tile of ``_tile``'s pointers (0 where masked)."""
    return tl.load(_tile(base, k, sk, hh, ww, sh, sw), mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _cell(hh, ww, sh, sw):
    """Offsets (len(hh), len(ww)) of the rows hh and columns ww of a plane."""
    return hh[:, None] * sh + ww[None, :] * sw


@triton.jit
def _plane(base, hh, ww, sh, sw, mask):
    """The fp32 (len(hh), len(ww)) tile at rows hh and columns ww of a plane (0 where masked)."""
    return tl.load(base + _cell(hh, ww, sh, sw), mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _state_cell(n, hh, ww, sn, sh, sw):
    """Offsets (len(hh), len(n), len(ww)) of states n at rows hh and columns ww."""
    return n[None, :, None] * sn + _cell(hh, ww, sh, sw)[:, None, :]


@triton.jit
def _write(ptrs, v, mask, ADD: tl.constexpr):
    """Store v in the pointees' dtype or, with ADD, add it with a relaxed atomic (a zeroed fp32
    buffer that other programs add to as well)."""
    if ADD:
        tl.atomic_add(ptrs, v, mask=mask, sem="relaxed")
    else:
        tl.store(ptrs, v.to(ptrs.dtype.element_ty), mask=mask)


@triton.jit
def _softplus(z, SOFTPLUS: tl.constexpr):
    """dt from z = delta + delta_bias: softplus(z) (z itself above 20) when SOFTPLUS."""
    if SOFTPLUS:
        z = tl.where(z > 20.0, z, tl.log2(1.0 + tl.exp2(z * LOG2E)) * LN2)
    return z


@triton.jit
def _fwd_kernel(
    A_ptr, D_ptr, bias_ptr,
    u_ptr, u_sb, u_sg, u_sc, u_sh, u_sw,
    delta_ptr, delta_sb, delta_sg, delta_sc, delta_sh, delta_sw,
    B_ptr, B_sb, B_sg, B_sc, B_sh, B_sw,
    C_ptr, C_sb, C_sg, C_sc, C_sh, C_sw,
    y_ptr, y_sb, y_sg, y_sc, y_sh, y_sw,
    L, H, W, rows, channels, n_cb, n_chunks, group_step, row_programs, n_col_chunks,
    N: tl.constexpr, N_PAD: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_T: tl.constexpr,
    HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    N_DIR: tl.constexpr, OFF64: tl.constexpr, ADD_Y: tl.constexpr,
    H_PAD: tl.constexpr, COLS: tl.constexpr,
):  # fmt: skip
    """Grid (row_programs + column programs, batch). The first row_programs programs take
    every group_step-th group (2: the ss2d row directions 0 and 2, when COLS > 0 gives the
    column directions 2 * channels programs of their own), walk the chunks of L in order and
    write y (ADD_Y: add with relaxed atomics into a zeroed fp32 buffer shared by the four
    directions)."""
    if COLS > 0:  # noqa: SIM102 (a static branch; the runtime one then returns early)
        if tl.program_id(0) >= row_programs:
            # The column directions (1, 3) of a channel-first map, lanes on adjacent columns:
            # one channel of one direction a program, chunks of COLS whole columns as tiles
            # (H_PAD, N_PAD, COLS) with the columns fastest, so a warp's loads and y adds
            # cover adjacent elements of a row (_column_states scans and chains them).
            q = tl.program_id(0) - row_programs
            grp = 1 + 2 * (q // channels).to(tl.int64)  # direction 1 or 3
            c = (q % channels).to(tl.int64)
            bi = tl.program_id(1).to(tl.int64)
            row = grp * channels + c  # of A, D, delta_bias
            n = tl.arange(0, N_PAD)
            nmask = n < N
            hr = tl.arange(0, H_PAD)  # step within a column, in walk order
            lane = tl.arange(0, COLS)
            hh = tl.where(grp == 3, H - 1 - hr, hr)  # direction 3 walks the columns bottom-up
            if OFF64:
                n, hh = n.to(tl.int64), hh.to(tl.int64)
            A2 = (tl.load(A_ptr + row * N + n, mask=nmask, other=0.0) * LOG2E)[None, :, None]
            bias = 0.0
            if HAS_BIAS:
                bias = tl.load(bias_ptr + row)
            if HAS_D:
                Dr = tl.load(D_ptr + row)
            u_base = u_ptr + bi * u_sb + grp * u_sg + c * u_sc
            delta_base = delta_ptr + bi * delta_sb + grp * delta_sg + c * delta_sc
            y_base = y_ptr + bi * y_sb + grp * y_sg + c * y_sc
            B_base = B_ptr + bi * B_sb + grp * B_sg
            C_base = C_ptr + bi * C_sb + grp * C_sg
            carry = tl.zeros((N_PAD, 1), dtype=tl.float32)  # the state at the end of the last chunk
            j = 0
            while j < n_col_chunks:
                _, ww, m2, m3 = _column_chunk(j, grp, hr, lane, nmask, H, W, COLS, OFF64)
                u = _plane(u_base, hh, ww, u_sh, u_sw, m2)
                z = _plane(delta_base, hh, ww, delta_sh, delta_sw, m2)
                dt = tl.where(m2, _softplus(z + bias, SOFTPLUS), 0.0)
                Bt = tl.load(B_base + _state_cell(n, hh, ww, B_sc, B_sh, B_sw), mask=m3, other=0.0)
                bx = (dt * u)[:, None, :] * Bt.to(tl.float32)  # (H_PAD, N_PAD, COLS)
                h, carry = _column_states(dt, A2, bx, carry, j, hr, lane, H_PAD, COLS)
                Ct = tl.load(C_base + _state_cell(n, hh, ww, C_sc, C_sh, C_sw), mask=m3, other=0.0)
                y = tl.sum(Ct.to(tl.float32) * h, axis=1)
                if HAS_D:
                    y += Dr * u
                _write(y_base + _cell(hh, ww, y_sh, y_sw), y, m2, ADD_Y)
                j += 1
            return

    grp, cb, bi, cl, cmask, r, n, nmask = _block(
        n_cb, group_step, channels, N, BLOCK_C, N_PAD, OFF64
    )
    c0 = cb * BLOCK_C  # first channel of the block
    sm = cmask[:, None] & nmask[None, :]
    A2 = tl.load(A_ptr + r[:, None] * N + n[None, :], mask=sm, other=0.0) * LOG2E  # log2 units
    bias = tl.zeros((BLOCK_C,), dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + r, mask=cmask, other=0.0)
    if HAS_D:
        Dr = tl.load(D_ptr + r, mask=cmask, other=0.0)
    # int64 bases of this program's tiles; offsets within a tile stay int32 unless OFF64
    u_base = u_ptr + bi * u_sb + grp * u_sg + c0 * u_sc
    delta_base = delta_ptr + bi * delta_sb + grp * delta_sg + c0 * delta_sc
    y_base = y_ptr + bi * y_sb + grp * y_sg + c0 * y_sc
    B_base = B_ptr + bi * B_sb + grp * B_sg
    C_base = C_ptr + bi * C_sb + grp * C_sg
    first = (tl.arange(0, BLOCK_T) == 0)[None, None, :]
    last = (tl.arange(0, BLOCK_T) == BLOCK_T - 1)[None, None, :]
    h_prev = tl.zeros((BLOCK_C, N_PAD), dtype=tl.float32)
    j = 0
    while j < n_chunks:
        _, hh, ww, m2, mnt = _chunk(j, grp, cmask, nmask, L, H, W, BLOCK_T, N_DIR, OFF64)
        u = _load(u_base, cl, u_sc, hh, ww, u_sh, u_sw, m2)
        z = _load(delta_base, cl, delta_sc, hh, ww, delta_sh, delta_sw, m2) + bias[:, None]
        dt = tl.where(m2, _softplus(z, SOFTPLUS), 0.0)  # masked steps: the scan's identity
        Bt = _load(B_base, n, B_sc, hh, ww, B_sh, B_sw, mnt)  # (N_PAD, BLOCK_T), for the group
        bx = (dt * u)[:, None, :] * Bt[None, :, :]  # (BLOCK_C, N_PAD, BLOCK_T)
        dA = tl.exp2(dt[:, None, :] * A2[:, :, None])
        a_cum, h = tl.associative_scan((dA, bx), 2, _pair)
        if j > 0:
            h += a_cum * h_prev[:, :, None]
        else:
            # h_0 = a_0 h_{-1} + b_0 with h_{-1} = 0: a NaN or Inf a_0 = exp(dt_0 A) makes h NaN
            # from step 0 on, as in the recurrence (the scan alone would skip a_0 * 0)
            h += tl.sum(tl.where(first, dA, 0.0), axis=2)[:, :, None] * 0.0
        # masked tail steps are identities, so the last column is the chunk's end state
        h_prev = tl.sum(tl.where(last, h, 0.0), axis=2)
        Ct = _load(C_base, n, C_sc, hh, ww, C_sh, C_sw, mnt)
        y = tl.sum(Ct[None, :, :] * h, axis=1)
        if HAS_D:
            y += Dr[:, None] * u
        _write(_tile(y_base, cl, y_sc, hh, ww, y_sh, y_sw), y, m2, ADD_Y)
        j += 1


@triton.jit
def _column_chunk(j, grp, hr, lane, nmask, H, W, COLS: tl.constexpr, OFF64: tl.constexpr):
    """Chunk j of a column direction (grp 1 or 3, channel-first): its columns in walk order
    wl and in the map ww (COLS,), and the masks of its (row, column) and (row, state, column)
    tiles."""
    wl = j * COLS + lane
    ww = tl.where(grp == 3, W - 1 - wl, wl)  # direction 3 walks the columns right to left
    if OFF64:
        ww = ww.to(tl.int64)
    m2 = (hr < H)[:, None] & (wl < W)[None, :]  # (H_PAD, COLS)
    return wl, ww, m2, m2[:, None, :] & nmask[None, :, None]


@triton.jit
def _column_states(dt, A2, bx, carry, j, hr, lane, H_PAD: tl.constexpr, COLS: tl.constexpr):
    """The states h (H_PAD, N_PAD, COLS) of a chunk of whole columns, and the state after its
    last column; carry (N_PAD, 1) is the state before its first. Each column is scanned down
    its rows from the zero state; the column end pairs are chained across the lanes (a second
    associative scan), and the state each column starts from is added back as a_cum * start.
    Masked rows and columns are identities (dt = 0, bx = 0)."""
    dA = tl.exp2(dt[:, None, :] * A2)
    a_cum, h = tl.associative_scan((dA, bx), 0, _pair)
    last_row = (hr == H_PAD - 1)[:, None, None]
    a_col = tl.sum(tl.where(last_row, a_cum, 0.0), axis=0)  # (N_PAD, COLS)
    h_col = tl.sum(tl.where(last_row, h, 0.0), axis=0)
    p_end, q_end = tl.associative_scan((a_col, h_col), 1, _pair)
    end = p_end * carry + q_end
    prev_lane = lane[None, :, None] == lane[None, None, :] - 1  # (1, COLS, COLS): l' = l - 1
    start = tl.sum(tl.where(prev_lane, end[:, :, None], 0.0), axis=1)  # end of lane l - 1
    start = tl.where((lane == 0)[None, :], carry, start)
    if j > 0:
        h += a_cum * start[None, :, :]
    else:
        # as in _fwd_kernel: a NaN or Inf exp(dt_0 A) at the first step reaches h; the other
        # columns start from real states
        first = tl.sum(tl.where((hr == 0)[:, None, None], dA, 0.0), axis=0)[None, :, :]
        h += tl.where((lane == 0)[None, None, :], first * 0.0, a_cum * start[None, :, :])
    return h, tl.sum(tl.where((lane == COLS - 1)[None, :], end, 0.0), axis=1)[:, None]


@triton.jit
def _column_adjoints(a_next, cdy, g_carry, hr, lane, COLS: tl.constexpr):
    """The adjoints g (H_PAD, N_PAD, COLS) of a chunk of whole columns, and g at its first
    step; g_carry (N_PAD, 1) is g at the step after its last column. a_next is a_{t+1} (1 on
    padded rows, 0 past the sequence), cdy = C_t dy_t. Each column is scanned up its rows
    (g_t = a_{t+1} g_{t+1} + C_t dy_t) from a zero g after its end; the pairs of the columns'
    first steps are chained across the lanes in reverse, and g at the first step of the next
    column is added back as a_after * g_next."""
    a_after, g = tl.associative_scan((a_next, cdy), 0, _pair, reverse=True)
    top = (hr == 0)[:, None, None]
    a_top = tl.sum(tl.where(top, a_after, 0.0), axis=0)  # (N_PAD, COLS)
    g_top = tl.sum(tl.where(top, g, 0.0), axis=0)
    p_top, q_top = tl.associative_scan((a_top, g_top), 1, _pair, reverse=True)
    first = q_top + p_top * g_carry  # g at the first step of each column
    next_lane = lane[None, :, None] == lane[None, None, :] + 1  # (1, COLS, COLS): l' = l + 1
    g_next = tl.sum(tl.where(next_lane, first[:, :, None], 0.0), axis=1)  # first of lane l + 1
    g_next = tl.where((lane == COLS - 1)[None, :], g_carry, g_next)
    g += a_after * g_next[None, :, :]
    return g, tl.sum(tl.where((lane == 0)[None, :], first, 0.0), axis=1)[:, None]


@triton.jit
def _pick(rows, c, BLOCK_C: tl.constexpr):
    """Row c of a (BLOCK_C, N_PAD) tile, as an (N_PAD, 1) column."""
    sel = (tl.arange(0, BLOCK_C) == c)[:, None]
    return tl.sum(tl.where(sel, rows, 0.0), axis=0)[:, None]


@triton.jit
def _bwd_kernel(
    A_ptr, D_ptr, bias_ptr, dA_ptr, dD_ptr, dbias_ptr, hs_ptr,
    dy_ptr, dy_sb, dy_sg, dy_sc, dy_sh, dy_sw,
    u_ptr, u_sb, u_sg, u_sc, u_sh, u_sw,
    delta_ptr, delta_sb, delta_sg, delta_sc, delta_sh, delta_sw,
    B_ptr, B_sb, B_sg, B_sc, B_sh, B_sw,
    C_ptr, C_sb, C_sg, C_sc, C_sh, C_sw,
    du_ptr, du_sb, du_sg, du_sc, du_sh, du_sw,
    ddelta_ptr, ddelta_sb, ddelta_sg, ddelta_sc, ddelta_sh, ddelta_sw,
    dB_ptr, dB_sb, dB_sg, dB_sc, dB_sh, dB_sw,
    dC_ptr, dC_sb, dC_sg, dC_sc, dC_sh, dC_sw,
    dB_block_stride,
    L, H, W, rows, channels, n_cb, n_chunks, group_step, hs_chunks, row_programs, n_col_chunks,
    N: tl.constexpr, N_PAD: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_T: tl.constexpr,
    HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    N_DIR: tl.constexpr, OFF64: tl.constexpr, ADD_DU: tl.constexpr, ADD_DBC: tl.constexpr,
    H_PAD: tl.constexpr, COLS: tl.constexpr,
):  # fmt: skip
    """Grid (row_programs + column programs, batch). The first row_programs programs take
    every group_step-th group (2: the ss2d row directions, when COLS > 0 gives the column
    directions 2 * n_cb programs of their own). Walk forward saving every chunk's start state
    in hs (hs_chunks slots a row), then walk backward with the adjoint g and write every gradient: du (ADD_DU: relaxed atomic adds
    into an fp32 buffer shared by the directions), ddelta, dB and dC (ADD_DBC: relaxed atomic
    adds over channel blocks; otherwise plain stores at ``channel block * dB_block_stride``), and
    the per-batch partials of dA (b, rows, N), dD and d delta_bias (b, rows)."""
    if COLS > 0:  # noqa: SIM102 (a static branch; the runtime one then returns early)
        if tl.program_id(0) >= row_programs:
            # The column directions (1, 3) of a channel-first map, lanes on adjacent columns:
            # BLOCK_C channels one after another inside each chunk of COLS whole columns, so
            # the loads coalesce and dB / dC add over the block's channels in registers. The
            # per-channel carries (h of walk 1, g of walk 2) are rows of (BLOCK_C, N_PAD) tiles.
            q = tl.program_id(0) - row_programs
            grp = 1 + 2 * (q // n_cb).to(tl.int64)
            cb = (q % n_cb).to(tl.int64)
            c0 = cb * BLOCK_C
            bi = tl.program_id(1).to(tl.int64)
            cl = tl.arange(0, BLOCK_C)
            r = grp * channels + c0 + cl
            n = tl.arange(0, N_PAD)
            nmask = n < N
            if OFF64:
                n = n.to(tl.int64)
            sm = (c0 + cl < channels)[:, None] & nmask[None, :]
            A_c = tl.load(A_ptr + r[:, None] * N + n[None, :], mask=sm, other=0.0)
            bias_c = tl.zeros((BLOCK_C,), dtype=tl.float32)
            if HAS_BIAS:
                bias_c = tl.load(bias_ptr + r, mask=c0 + cl < channels, other=0.0)
            hr = tl.arange(0, H_PAD)  # step within a column, in walk order
            lane = tl.arange(0, COLS)
            down = hr < H - 1  # step t + 1 is the next row of the same column
            hh = tl.where(grp == 3, H - 1 - hr, hr)  # direction 3 walks the columns bottom-up
            hr1 = tl.where(down, hr + 1, 0)
            hh1 = tl.where(grp == 3, H - 1 - hr1, hr1)
            if OFF64:
                hh, hh1 = hh.to(tl.int64), hh1.to(tl.int64)
            plane = bi * u_sb + grp * u_sg  # of u, and of dy / du through their strides
            B_base = B_ptr + bi * B_sb + grp * B_sg
            C_base = C_ptr + bi * C_sb + grp * C_sg
            dB_base = dB_ptr + cb * dB_block_stride + bi * dB_sb + grp * dB_sg
            dC_base = dC_ptr + cb * dB_block_stride + bi * dC_sb + grp * dC_sg
            hs_base = hs_ptr + (bi * rows + grp * channels + c0) * hs_chunks * N
            n_c = tl.minimum(channels - c0, BLOCK_C)  # channels of this block

            # Walk 1, forward: each channel's state at every chunk start into hs
            carries = tl.zeros((BLOCK_C, N_PAD), dtype=tl.float32)
            j = 0
            while j < n_col_chunks:
                wl, ww, m2, m3 = _column_chunk(j, grp, hr, lane, nmask, H, W, COLS, OFF64)
                Bt = tl.load(B_base + _state_cell(n, hh, ww, B_sc, B_sh, B_sw), mask=m3, other=0.0)
                c = 0
                while c < n_c:
                    ch = c0 + c
                    carry = _pick(carries, c, BLOCK_C)
                    tl.store(
                        hs_base + (c * hs_chunks + j).to(tl.int64) * N + n[:, None],
                        carry,
                        mask=nmask[:, None],
                    )
                    A2 = (_pick(A_c, c, BLOCK_C) * LOG2E)[None, :, :]  # (1, N_PAD, 1)
                    bias = tl.sum(tl.where(cl == c, bias_c, 0.0))
                    u = _plane(u_ptr + plane + ch * u_sc, hh, ww, u_sh, u_sw, m2)
                    z = _plane(
                        delta_ptr + bi * delta_sb + grp * delta_sg + ch * delta_sc,
                        hh,
                        ww,
                        delta_sh,
                        delta_sw,
                        m2,
                    )
                    dt = tl.where(m2, _softplus(z + bias, SOFTPLUS), 0.0)
                    bx = (dt * u)[:, None, :] * Bt.to(tl.float32)
                    _, carry = _column_states(dt, A2, bx, carry, j, hr, lane, H_PAD, COLS)
                    carries = tl.where((cl == c)[:, None], tl.sum(carry, axis=1)[None, :], carries)
                    c += 1
                j += 1
            tl.debug_barrier()  # walk 2 reads hs entries that other threads of the program wrote

            # Walk 2, backward: g per column chunk (_column_adjoints), every gradient
            carries = tl.zeros((BLOCK_C, N_PAD), dtype=tl.float32)  # g after each chunk
            acc_dA = tl.zeros((BLOCK_C, N_PAD), dtype=tl.float32)
            acc_dD = tl.zeros((BLOCK_C,), dtype=tl.float32)
            acc_dbias = tl.zeros((BLOCK_C,), dtype=tl.float32)
            j = n_col_chunks - 1
            while j >= 0:
                wl, ww, m2, m3 = _column_chunk(j, grp, hr, lane, nmask, H, W, COLS, OFF64)
                # step t + 1: the next row, or the first of the next column (none past the end)
                ww1 = tl.where(
                    down[:, None], ww[None, :], tl.where(grp == 3, ww - 1, ww + 1)[None, :]
                )
                m2n = tl.where(down[:, None], m2, (hr == H - 1)[:, None] & (wl + 1 < W)[None, :])
                Bt = tl.load(
                    B_base + _state_cell(n, hh, ww, B_sc, B_sh, B_sw), mask=m3, other=0.0
                ).to(tl.float32)
                Ct = tl.load(
                    C_base + _state_cell(n, hh, ww, C_sc, C_sh, C_sw), mask=m3, other=0.0
                ).to(tl.float32)
                dB_t = tl.zeros((H_PAD, N_PAD, COLS), dtype=tl.float32)
                dC_t = tl.zeros((H_PAD, N_PAD, COLS), dtype=tl.float32)
                c = 0
                while c < n_c:
                    ch = c0 + c
                    sel = cl == c
                    h_start = tl.load(
                        hs_base + (c * hs_chunks + j).to(tl.int64) * N + n[:, None],
                        mask=nmask[:, None],
                        other=0.0,
                    )
                    A = _pick(A_c, c, BLOCK_C)[None, :, :]  # (1, N_PAD, 1)
                    bias = tl.sum(tl.where(sel, bias_c, 0.0))
                    dy = _plane(
                        dy_ptr + bi * dy_sb + grp * dy_sg + ch * dy_sc, hh, ww, dy_sh, dy_sw, m2
                    )
                    u = _plane(u_ptr + plane + ch * u_sc, hh, ww, u_sh, u_sw, m2)
                    delta_base = delta_ptr + bi * delta_sb + grp * delta_sg + ch * delta_sc
                    z = _plane(delta_base, hh, ww, delta_sh, delta_sw, m2) + bias
                    dt = tl.where(m2, _softplus(z, SOFTPLUS), 0.0)
                    # dt_{t+1}: a second, cache-served load of the rows just read
                    z1 = tl.load(
                        delta_base + hh1[:, None] * delta_sh + ww1 * delta_sw, mask=m2n, other=0.0
                    )
                    dt_next = _softplus(z1.to(tl.float32) + bias, SOFTPLUS)
                    a_next = tl.where(
                        m2n[:, None, :], tl.exp2(dt_next[:, None, :] * A * LOG2E), 0.0
                    )
                    # padded rows: identities
                    a_next = tl.where((hr >= H)[:, None, None], 1.0, a_next)
                    bx = (dt * u)[:, None, :] * Bt
                    h, _ = _column_states(dt, A * LOG2E, bx, h_start, j, hr, lane, H_PAD, COLS)
                    dC_t += h * dy[:, None, :]
                    ah = h - bx  # a_t h_{t-1}; h and bx end here (fewer live tiles)
                    g_carry = _pick(carries, c, BLOCK_C)
                    g, g_carry = _column_adjoints(
                        a_next, Ct * dy[:, None, :], g_carry, hr, lane, COLS
                    )
                    carries = tl.where(sel[:, None], tl.sum(g_carry, axis=1)[None, :], carries)
                    gB = tl.sum(g * Bt, axis=1)
                    du = dt * gB
                    if HAS_D:
                        du += tl.load(D_ptr + grp * channels + ch) * dy
                    ddt = gB * u + tl.sum(g * ah * A, axis=1)
                    if SOFTPLUS:
                        ddt = tl.where(z > 20.0, ddt, ddt / (1.0 + tl.exp2(-z * LOG2E)))
                    ddt = tl.where(m2, ddt, 0.0)
                    ddelta_c = ddelta_ptr + bi * ddelta_sb + grp * ddelta_sg + ch * ddelta_sc
                    tl.store(
                        ddelta_c + _cell(hh, ww, ddelta_sh, ddelta_sw),
                        ddt.to(ddelta_ptr.dtype.element_ty),
                        mask=m2,
                    )
                    du_c = du_ptr + bi * du_sb + grp * du_sg + ch * du_sc
                    _write(du_c + _cell(hh, ww, du_sh, du_sw), du, m2, ADD_DU)
                    dB_t += g * (dt * u)[:, None, :]
                    gah = tl.sum(tl.sum(g * ah * dt[:, None, :], axis=2), axis=0)  # (N_PAD,)
                    acc_dA += tl.where(sel[:, None], gah[None, :], 0.0)
                    acc_dD += tl.where(sel, tl.sum(tl.sum(dy * u, axis=1), axis=0), 0.0)
                    acc_dbias += tl.where(sel, tl.sum(tl.sum(ddt, axis=1), axis=0), 0.0)
                    c += 1
                _write(dB_base + _state_cell(n, hh, ww, dB_sc, dB_sh, dB_sw), dB_t, m3, ADD_DBC)
                _write(dC_base + _state_cell(n, hh, ww, dC_sc, dC_sh, dC_sw), dC_t, m3, ADD_DBC)
                j -= 1
            tl.store(dA_ptr + ((bi * rows + r) * N)[:, None] + n[None, :], acc_dA, mask=sm)
            tl.store(dD_ptr + bi * rows + r, acc_dD, mask=c0 + cl < channels)
            tl.store(dbias_ptr + bi * rows + r, acc_dbias, mask=c0 + cl < channels)
            return

    grp, cb, bi, cl, cmask, r, n, nmask = _block(
        n_cb, group_step, channels, N, BLOCK_C, N_PAD, OFF64
    )
    c0 = cb * BLOCK_C  # first channel of the block
    sm = cmask[:, None] & nmask[None, :]
    A = tl.load(A_ptr + r[:, None] * N + n[None, :], mask=sm, other=0.0)
    A2 = A * LOG2E
    bias = tl.zeros((BLOCK_C,), dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + r, mask=cmask, other=0.0)
    # int64 bases of this program's tiles; offsets within a tile stay int32 unless OFF64
    dy_base = dy_ptr + bi * dy_sb + grp * dy_sg + c0 * dy_sc
    u_base = u_ptr + bi * u_sb + grp * u_sg + c0 * u_sc
    delta_base = delta_ptr + bi * delta_sb + grp * delta_sg + c0 * delta_sc
    du_base = du_ptr + bi * du_sb + grp * du_sg + c0 * du_sc
    ddelta_base = ddelta_ptr + bi * ddelta_sb + grp * ddelta_sg + c0 * ddelta_sc
    B_base = B_ptr + bi * B_sb + grp * B_sg
    C_base = C_ptr + bi * C_sb + grp * C_sg
    dB_base = dB_ptr + cb * dB_block_stride + bi * dB_sb + grp * dB_sg
    dC_base = dC_ptr + cb * dB_block_stride + bi * dC_sb + grp * dC_sg
    # hs[bi, r, j, n] (hs_chunks >= n_chunks slots a row): (BLOCK_C, N_PAD) offsets of chunk 0
    hs_base = hs_ptr + (bi * rows + grp * channels + c0) * hs_chunks * N
    hs_tile = (cl * (hs_chunks * N))[:, None] + n[None, :]
    first = (tl.arange(0, BLOCK_T) == 0)[None, None, :]

    # Walk 1, forward: the state at every chunk start, from the chunk's closed form
    # h_end = exp(A sum dt) h_start + sum_t exp(A * sum_{s>t} dt_s) dt_t B_t u_t.
    h_start = tl.zeros((BLOCK_C, N_PAD), dtype=tl.float32)
    j = 0
    while j < n_chunks:
        t, hh, ww, m2, mnt = _chunk(j, grp, cmask, nmask, L, H, W, BLOCK_T, N_DIR, OFF64)
        tl.store(hs_base + (j * N + hs_tile), h_start, mask=sm)
        u = _load(u_base, cl, u_sc, hh, ww, u_sh, u_sw, m2)
        z = _load(delta_base, cl, delta_sc, hh, ww, delta_sh, delta_sw, m2) + bias[:, None]
        dt = tl.where(m2, _softplus(z, SOFTPLUS), 0.0)
        Bt = _load(B_base, n, B_sc, hh, ww, B_sh, B_sw, mnt)
        after = tl.cumsum(dt, axis=1, reverse=True) - dt
        decay = tl.exp2(tl.sum(dt, axis=1)[:, None] * A2)
        h_start = decay * h_start + tl.sum(
            tl.exp2(after[:, None, :] * A2[:, :, None]) * (dt * u)[:, None, :] * Bt[None, :, :],
            axis=2,
        )
        j += 1
    tl.debug_barrier()  # walk 2 reads hs entries that other threads of the program wrote

    # Walk 2, backward: g_t = a_{t+1} g_{t+1} + C_t dy_t, with h recomputed per chunk.
    g_next = tl.zeros((BLOCK_C, N_PAD), dtype=tl.float32)  # g at the first step of chunk j + 1
    acc_dA = tl.zeros((BLOCK_C, N_PAD), dtype=tl.float32)
    acc_dD = tl.zeros((BLOCK_C,), dtype=tl.float32)
    acc_dbias = tl.zeros((BLOCK_C,), dtype=tl.float32)
    j = n_chunks - 1
    while j >= 0:
        t, hh, ww, m2, mnt = _chunk(j, grp, cmask, nmask, L, H, W, BLOCK_T, N_DIR, OFF64)
        hh1, ww1 = _position(t + 1, grp, L, H, W, N_DIR, OFF64)  # step t + 1
        m2n = cmask[:, None] & ((t + 1) < L)[None, :]
        dy = _load(dy_base, cl, dy_sc, hh, ww, dy_sh, dy_sw, m2)
        u = _load(u_base, cl, u_sc, hh, ww, u_sh, u_sw, m2)
        z = _load(delta_base, cl, delta_sc, hh, ww, delta_sh, delta_sw, m2) + bias[:, None]
        dt = tl.where(m2, _softplus(z, SOFTPLUS), 0.0)
        # dt_{t+1} (0 past the end); the next step's delta was just read by this or the
        # previous chunk, so this second load is served by the cache
        z1 = _load(delta_base, cl, delta_sc, hh1, ww1, delta_sh, delta_sw, m2n) + bias[:, None]
        dt_next = tl.where(m2n, _softplus(z1, SOFTPLUS), 0.0)
        Bt = _load(B_base, n, B_sc, hh, ww, B_sh, B_sw, mnt)
        Ct = _load(C_base, n, C_sc, hh, ww, C_sh, C_sw, mnt)
        dtu = dt * u
        bx = dtu[:, None, :] * Bt[None, :, :]
        dA = tl.exp2(dt[:, None, :] * A2[:, :, None])
        a_cum, h = tl.associative_scan((dA, bx), 2, _pair)
        if j > 0:
            h_start = tl.load(hs_base + (j * N + hs_tile), mask=sm, other=0.0)
            h += a_cum * h_start[:, :, None]
        else:  # as in the forward: a NaN or Inf exp(dt_0 A) reaches h
            h += tl.sum(tl.where(first, dA, 0.0), axis=2)[:, :, None] * 0.0
        # a_L = 0 ends the sequence
        a_next = tl.where(m2n[:, None, :], tl.exp2(dt_next[:, None, :] * A2[:, :, None]), 0.0)
        cdy = Ct[None, :, :] * dy[:, None, :]  # what y_t adds to g_t
        a_after, gh = tl.associative_scan((a_next, cdy), 2, _pair, reverse=True)
        if j < n_chunks - 1:
            gh += a_after * g_next[:, :, None]
        g_next = tl.sum(tl.where(first, gh, 0.0), axis=2)
        ah = h - bx  # a_t h_{t-1}
        gB = tl.sum(gh * Bt[None, :, :], axis=1)
        du = dt * gB
        if HAS_D:
            du += tl.load(D_ptr + r, mask=cmask, other=0.0)[:, None] * dy
        ddt = gB * u + tl.sum(gh * ah * A[:, :, None], axis=1)
        if SOFTPLUS:  # d softplus(z) / dz = sigmoid(z), 1 above the threshold
            ddt = tl.where(z > 20.0, ddt, ddt / (1.0 + tl.exp2(-z * LOG2E)))
        ddt = tl.where(m2, ddt, 0.0)
        ddelta_ptrs = _tile(ddelta_base, cl, ddelta_sc, hh, ww, ddelta_sh, ddelta_sw)
        tl.store(ddelta_ptrs, ddt.to(ddelta_ptr.dtype.element_ty), mask=m2)
        _write(_tile(du_base, cl, du_sc, hh, ww, du_sh, du_sw), du, m2, ADD_DU)
        # dB_t, dC_t: sums over this block's channels; the other blocks add theirs
        dB_t = tl.sum(gh * dtu[:, None, :], axis=0)
        dC_t = tl.sum(h * dy[:, None, :], axis=0)
        _write(_tile(dB_base, n, dB_sc, hh, ww, dB_sh, dB_sw), dB_t, mnt, ADD_DBC)
        _write(_tile(dC_base, n, dC_sc, hh, ww, dC_sh, dC_sw), dC_t, mnt, ADD_DBC)
        acc_dA += tl.sum(gh * ah * dt[:, None, :], axis=2)
        acc_dD += tl.sum(dy * u, axis=1)
        acc_dbias += tl.sum(ddt, axis=1)
        j -= 1
    tl.store(dA_ptr + ((bi * rows + r) * N)[:, None] + n[None, :], acc_dA, mask=sm)
    tl.store(dD_ptr + bi * rows + r, acc_dD, mask=cmask)
    tl.store(dbias_ptr + bi * rows + r, acc_dbias, mask=cmask)


# --------------------------------------------------------------------------- launchers


def _flags(cfg: _Config, p: Problem, D, delta_bias, softplus: bool) -> dict:
    return {
        "N": p.d_state,
        "N_PAD": cfg.n_pad,
        "BLOCK_C": cfg.block_c,
        "BLOCK_T": cfg.block_t,
        "HAS_D": D is not None,
        "HAS_BIAS": delta_bias is not None,
        "SOFTPLUS": softplus,
        "N_DIR": p.n_dir,
        "num_warps": cfg.num_warps,
    }


def _sizes(p: Problem, cfg: _Config) -> dict:
    return {
        "L": p.L,
        "H": p.H,
        "W": p.W,
        "rows": p.rows,
        "channels": p.channels,
        "n_cb": cfg.n_cb,
        "n_chunks": cfg.n_chunks,
    }


def _off64(p: Problem, cfg: _Config, tiles: list[tuple[Strides, int]]) -> bool:
    """Whether an offset within one program's tile (channels or states x steps, relative to the
    program's int64 base) can pass 2^31 for any of ``tiles`` ((strides, extent of the channel
    slot)); the kernels then compute those offsets in int64 too (OFF64)."""
    span = max(
        (ext - 1) * abs(s.c) + p.H * abs(s.h) + p.W * abs(s.w) for s, ext in tiles
    )  # H, W rather than H - 1, W - 1: the backward also forms the address of step t + 1
    return span >= 2**31


def _column_split(p: Problem, cfg: _Config, cols: int, col_programs: int) -> tuple:
    """(grid, launch arguments) of a pass whose ss2d column directions get programs of their
    own (``cols`` > 0: chunks of that many columns), after those of the general walk, which
    then takes every second group (the row directions). 8 warps: the column tiles hold 512
    to 2048 values."""
    row_programs = p.n_groups // (2 if cols else 1) * cfg.n_cb
    return (row_programs + (col_programs if cols else 0), p.batch), {
        "group_step": 2 if cols else 1,
        "row_programs": row_programs,
        "n_col_chunks": triton.cdiv(p.W, cols) if cols else 0,
        "H_PAD": next_pow2(p.H) if cols else 1,
        "COLS": cols,
        "num_warps": 8 if cols else cfg.num_warps,
    }


def _params(A: Tensor, D: Tensor | None, delta_bias: Tensor | None) -> dict:
    """The small parameter tensors, indexed densely by the kernels (A stands in for absent
    ones; the HAS_D / HAS_BIAS flags keep the kernels from reading it)."""
    A = A.contiguous()
    return {
        "A_ptr": A,
        "D_ptr": D.contiguous() if D is not None else A,
        "bias_ptr": delta_bias.contiguous() if delta_bias is not None else A,
    }


def _per_direction(p: Problem, like: Tensor) -> tuple[Tensor, Strides]:
    """An fp32 (n_dir, *like.shape) buffer and the strides that send direction k to slice k."""
    buf = empty((p.n_dir, *like.shape), torch.float32, like.device)
    return buf, p.x_strides(buf[0])._replace(g=buf.stride(0))


def forward(
    p: Problem, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None,
    delta_bias: Tensor | None, softplus: bool, out_dtype: torch.dtype,
) -> Tensor:  # fmt: skip
    """y, shaped and laid out like u, in ``out_dtype``."""
    cfg = _config(p, backward=False)
    if p.n_dir == 1:
        y = empty(u.shape, out_dtype, u.device)
        y_strides, add = p.x_strides(y), False
    elif deterministic():
        y, y_strides = _per_direction(p, u)
        add = False
    else:
        y = torch.zeros(u.shape, dtype=torch.float32, device=u.device)
        y_strides, add = p.x_strides(y), True
    xs, ds, bs, cs = p.x_strides(u), p.delta_strides(delta), p.bc_strides(B), p.bc_strides(C)
    c, n = cfg.block_c, cfg.n_pad
    off64 = _off64(p, cfg, [(xs, c), (ds, c), (bs, n), (cs, n), (y_strides, c)])
    tensors = {
        **tensor_args("u", u, xs),
        **tensor_args("delta", delta, ds),
        **tensor_args("B", B, bs),
        **tensor_args("C", C, cs),
        **tensor_args("y", y, y_strides),
        **_params(A, D, delta_bias),
    }
    cols = _columns(p, u, delta)
    grid, split = _column_split(p, cfg, cols, col_programs=2 * p.channels)
    wrap_triton(_fwd_kernel)[grid](
        **tensors,
        **_sizes(p, cfg),
        **(_flags(cfg, p, D, delta_bias, softplus) | split),
        OFF64=off64,
        ADD_Y=add,
    )
    if p.n_dir > 1 and not add:
        y = y.sum(0)  # the directions in a fixed order
    return y.to(out_dtype)


def backward(
    p: Problem, dy: Tensor, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
    D: Tensor | None, delta_bias: Tensor | None, softplus: bool,
) -> tuple[Tensor, ...]:  # fmt: skip
    """(du, ddelta, dB, dC, dA, dD, ddelta_bias) in the dtypes of u, delta, B, C, A, A, A;
    du like u, ddelta like delta, dB and dC shaped like B, dD and ddelta_bias (rows,)."""
    cfg = _config(p, backward=True)
    dev = u.device
    f32 = torch.float32
    det = deterministic()
    if p.n_dir == 1:
        du = empty(u.shape, u.dtype, dev)
        du_strides, add_du = p.x_strides(du), False
    elif det:
        du, du_strides = _per_direction(p, u)
        add_du = False
    else:
        du = torch.zeros(u.shape, dtype=f32, device=dev)
        du_strides, add_du = p.x_strides(du), True
    ddelta = empty(delta.shape, delta.dtype, dev)
    add_dbc = cfg.n_cb > 1 and not det
    if add_dbc:
        dB, dC = (torch.zeros(B.shape, dtype=f32, device=dev) for _ in range(2))
        block_stride = 0
    else:  # one block, or per-block partials summed below
        dB, dC = (empty((cfg.n_cb, *B.shape), f32, dev) for _ in range(2))
        block_stride = dB.stride(0)
    dB0, dC0 = (dB, dC) if add_dbc else (dB[0], dC[0])
    dA = empty((p.batch, p.rows, p.d_state), f32, dev)
    dD, dbias = (empty((p.batch, p.rows), f32, dev) for _ in range(2))
    cols = _columns(p, u, delta, backward=True)
    grid, split = _column_split(p, cfg, cols, col_programs=2 * cfg.n_cb)
    hs_chunks = max(cfg.n_chunks, split["n_col_chunks"])
    hs = torch.empty((p.batch, p.rows, hs_chunks, p.d_state), dtype=f32, device=dev)
    strides = {
        "dy": p.x_strides(dy),
        "u": p.x_strides(u),
        "delta": p.delta_strides(delta),
        "B": p.bc_strides(B),
        "C": p.bc_strides(C),
        "du": du_strides,
        "ddelta": p.delta_strides(ddelta),
        "dB": p.bc_strides(dB0),
        "dC": p.bc_strides(dC0),
    }
    tensors = {"dy": dy, "u": u, "delta": delta, "B": B, "C": C, "du": du, "ddelta": ddelta}
    tensors.update(dB=dB0, dC=dC0)
    ext = {k: cfg.n_pad if k in ("B", "C", "dB", "dC") else cfg.block_c for k in strides}
    off64 = _off64(p, cfg, [(strides[k], ext[k]) for k in strides])
    wrap_triton(_bwd_kernel)[grid](
        **{
            k: v
            for name, t in tensors.items()
            for k, v in tensor_args(name, t, strides[name]).items()
        },
        dB_block_stride=block_stride,
        **_params(A, D, delta_bias),
        dA_ptr=dA,
        dD_ptr=dD,
        dbias_ptr=dbias,
        hs_ptr=hs,
        **_sizes(p, cfg),
        **(_flags(cfg, p, D, delta_bias, softplus) | split),
        hs_chunks=hs_chunks,
        OFF64=off64,
        ADD_DU=add_du,
        ADD_DBC=add_dbc,
    )
    if p.n_dir > 1 and not add_du:
        du = du.sum(0)  # the directions in a fixed order
    if not add_dbc:  # channel blocks in a fixed order
        dB, dC = (t[0] if cfg.n_cb == 1 else t.sum(0) for t in (dB, dC))
    return (
        du.to(u.dtype),
        ddelta,
        dB.to(B.dtype),
        dC.to(C.dtype),
        *(t.sum(0).to(A.dtype) for t in (dA, dD, dbias)),
    )
