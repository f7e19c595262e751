"""The chunked selective-scan core (Triton), shared by ``selective_scan`` and ``ss2d_scan``.

Model. ``rows`` scan rows (the d channels of selective_scan, the 4C direction-channels of
ss2d_scan) form ``groups`` groups of ``cpg`` consecutive rows: a selective_scan group shares B/C
(G groups), an ss2d group is one direction k (B[:, k], C[:, k]). Every row scans L = H*W steps;
step t of a row in group g sits at a spatial position (h, w) found by index arithmetic (row-major
for selective_scan, where H = 1 and W = L; direction g's order for ss2d). Every tensor is
addressed by five strides (batch, group, channel-or-state, h, w), so any input layout and any
stride pattern is read in place: no cross-scan copy, no .contiguous() copy.

Grid of the scan kernels: (groups * channel blocks, chunks of L, batch). A program scans
BLOCK_C rows x N_PAD states over one chunk of BLOCK_T steps as a register tile with
``tl.associative_scan`` (pairs (a, b) -> h = a h_prev + b), in fp32 with exp2 forms
(dA = exp2(dt A log2 e), softplus = log2(1 + exp2(z log2 e)) ln 2, identity above 20).
Long sequences are cut into chunks:

* forward: pass 1 writes each chunk's (sum of dt, local end state); ``_combine_kernel`` folds
  the chunks in order ((a1, b1) then (a2, b2) -> (a1 a2, a2 b1 + b2), where the product of
  exp(dt A) over a chunk is exp(A sum dt)), leaving every chunk's true end state; pass 2 rescans
  each chunk from its predecessor's end state and writes y.
* backward: the same for the adjoint dh (g), scanned in reverse: g_t = a_{t+1} g_{t+1} + C_t dy_t.
  Pass 2 recomputes h from the forward chunk carries (no per-step h is stored) and forms every
  gradient.

ss2d's four directions add into the same y (and dx): those programs accumulate with
``tl.atomic_add`` into a zeroed fp32 buffer, so on a GPU the low bits of y and dx depend on the
order of the four adds. Every other reduction (dA, dD, d delta_bias over batch and chunks; dB, dC
over channel blocks) goes through per-program partial buffers summed by torch: deterministic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.library import wrap_triton

from ._alloc import empty
from ._common import LN2, LOG2E, next_pow2

# Register budget of one scan tile (BLOCK_C * N_PAD * BLOCK_T fp32 values, about eight live in
# the backward). ptxas for sm_90: 1024 with 8 warps for N = 1 (16 x 1 x 64) needs 64 (forward)
# and 111 (backward) registers per thread, no spills; 2048 spilled in the backward.
TILE_ELEMS = 1024
MAX_CHUNK = 64
COMBINE_BLOCK = 64  # chunks folded per step of _combine_kernel's loop
COMBINE_ELEMS = 512  # (rows x N_PAD x chunks) per combine tile: 72 registers for 8 x 1 x 64


@dataclass(frozen=True)
class Problem:
    """One scan problem: sizes and how each tensor kind maps to (batch, group, channel|state,
    h, w) strides."""

    batch: int
    H: int
    W: int
    rows: int
    cpg: int  # rows per group
    groups: int
    N: int
    four_way: bool  # groups are ss2d directions adding into one y
    x_strides: Callable[[Tensor], tuple]  # u / x / y / dy / du
    delta_strides: Callable[[Tensor], tuple]  # delta / ddelta
    bc_strides: Callable[[Tensor], tuple]  # B / C / dB / dC (channel slot = state n)

    @property
    def L(self) -> int:
        return self.H * self.W


@dataclass(frozen=True)
class _Config:
    n_pad: int
    block_c: int
    block_t: int
    n_cb: int  # channel blocks per group
    nch: int  # chunks of L
    num_warps: int

    def grid(self, p: Problem) -> tuple:
        return (p.groups * self.n_cb, self.nch, p.batch)


def _config(p: Problem, chunk: int | None) -> _Config:
    n_pad = next_pow2(p.N)
    block_t = chunk if chunk is not None else min(MAX_CHUNK, next_pow2(p.L))
    if block_t != next_pow2(block_t):
        raise ValueError(f"chunk must be a power of two, got {chunk}")
    block_c = min(next_pow2(p.cpg), max(1, TILE_ELEMS // (n_pad * block_t)))
    num_warps = 8 if block_c * block_t >= 1024 else 4
    return _Config(
        n_pad, block_c, block_t, triton.cdiv(p.cpg, block_c), triton.cdiv(p.L, block_t), num_warps
    )


# --------------------------------------------------------------------------- kernels
# Helpers are inlined by hand: besides _pair (the scan's combine) no @triton.jit function is
# called from the kernels, because the CPU interpreter pays ~20 ms per device-function call.


@triton.jit
def _pair(a1, b1, a2, b2):
    """Composition of h -> a1 h + b1 then h -> a2 h + b2."""
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _fwd_kernel(
    u_ptr,
    delta_ptr,
    A_ptr,
    B_ptr,
    C_ptr,
    D_ptr,
    bias_ptr,
    y_ptr,
    hs_ptr,
    dts_ptr,
    L,
    H,
    W,
    rows,
    cpg,
    n_cb,
    nch,
    su_b,
    su_g,
    su_c,
    su_h,
    su_w,
    sd_b,
    sd_g,
    sd_c,
    sd_h,
    sd_w,
    sB_b,
    sB_g,
    sB_n,
    sB_h,
    sB_w,
    sC_b,
    sC_g,
    sC_n,
    sC_h,
    sC_w,
    sy_b,
    sy_g,
    sy_c,
    sy_h,
    sy_w,
    N: tl.constexpr,
    N_PAD: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_T: tl.constexpr,
    HAS_D: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    FOUR_WAY: tl.constexpr,
    STATES: tl.constexpr,
    CARRY: tl.constexpr,
):
    """STATES: write chunk j's (sum dt, end state from h = 0) to dts/hs. Otherwise scan chunk j
    from the end state of chunk j-1 (CARRY) or from 0, and write (FOUR_WAY: add) y."""
    g = tl.program_id(0) // n_cb
    cl = (tl.program_id(0) % n_cb) * BLOCK_C + tl.arange(0, BLOCK_C)  # channel within group
    j = tl.program_id(1)
    bi = tl.program_id(2).to(tl.int64)
    cmask = cl < cpg
    r = g * cpg + cl
    n = tl.arange(0, N_PAD)
    nmask = n < N
    t = j * BLOCK_T + tl.arange(0, BLOCK_T)
    tmask = t < L
    # spatial position of step t: direction 0 row-major, 1 column-major, 2 and 3 reversed
    if FOUR_WAY:
        s = tl.where(g >= 2, L - 1 - t, t)
        col = (g % 2) == 1
        hh = tl.where(col, s % H, s // W)
        ww = tl.where(col, s // H, s % W)
    else:
        hh = t // W
        ww = t % W
    m2 = cmask[:, None] & tmask[None, :]
    mnt = nmask[:, None] & tmask[None, :]
    sm = cmask[:, None] & nmask[None, :]
    u = tl.load(
        u_ptr + bi * su_b + g * su_g + cl[:, None] * su_c + (hh * su_h + ww * su_w)[None, :],
        mask=m2,
        other=0.0,
    ).to(tl.float32)
    z = tl.load(
        delta_ptr + bi * sd_b + g * sd_g + cl[:, None] * sd_c + (hh * sd_h + ww * sd_w)[None, :],
        mask=m2,
        other=0.0,
    ).to(tl.float32)
    if HAS_BIAS:
        z += tl.load(bias_ptr + r, mask=cmask, other=0.0)[:, None]
    if SOFTPLUS:
        dt = tl.where(z > 20.0, z, tl.log2(1.0 + tl.exp2(z * LOG2E)) * LN2)
    else:
        dt = z
    dt = tl.where(m2, dt, 0.0)  # masked steps are the identity of the scan
    A2 = tl.load(A_ptr + r[:, None] * N + n[None, :], mask=sm, other=0.0) * LOG2E  # log2 units
    Bt = tl.load(
        B_ptr + bi * sB_b + g * sB_g + n[:, None] * sB_n + (hh * sB_h + ww * sB_w)[None, :],
        mask=mnt,
        other=0.0,
    ).to(tl.float32)  # (N_PAD, BLOCK_T), shared by the group
    bx = (dt * u)[:, None, :] * Bt[None, :, :]  # (BLOCK_C, N_PAD, BLOCK_T)
    row_state = (bi * rows + r)[:, None] * nch * N + n[None, :]  # hs[bi, r, 0, n]
    if STATES:
        # end state = sum_t exp(A * sum_{s>t} dt_s) bx_t: exponents <= 0, no scan needed
        after = tl.cumsum(dt, axis=1, reverse=True) - dt
        h_end = tl.sum(tl.exp2(after[:, None, :] * A2[:, :, None]) * bx, axis=2)
        tl.store(hs_ptr + row_state + j * N, h_end, mask=sm)
        tl.store(dts_ptr + (bi * rows + r) * nch + j, tl.sum(dt, axis=1), mask=cmask)
    else:
        dA = tl.exp2(dt[:, None, :] * A2[:, :, None])
        _, h = tl.associative_scan((dA, bx), 2, _pair)
        if CARRY:
            h0 = tl.load(hs_ptr + row_state + tl.maximum(j - 1, 0) * N, mask=sm, other=0.0)
            h0 = tl.where(j > 0, h0, 0.0)
            h += tl.exp2(tl.cumsum(dt, axis=1)[:, None, :] * A2[:, :, None]) * h0[:, :, None]
        else:
            # h_0 = a_0 h_{-1} + b_0 with h_{-1} = 0: a NaN or Inf a_0 = exp(dt_0 A) makes h NaN
            # from step 0 on, as in the recurrence (the scan alone would skip a_0 * 0)
            h += tl.sum(tl.where((t == 0)[None, None, :], dA, 0.0), axis=2)[:, :, None] * 0.0
        Ct = tl.load(
            C_ptr + bi * sC_b + g * sC_g + n[:, None] * sC_n + (hh * sC_h + ww * sC_w)[None, :],
            mask=mnt,
            other=0.0,
        ).to(tl.float32)
        y = tl.sum(Ct[None, :, :] * h, axis=1)
        if HAS_D:
            y += tl.load(D_ptr + r, mask=cmask, other=0.0)[:, None] * u
        y_ptrs = (
            y_ptr + bi * sy_b + g * sy_g + cl[:, None] * sy_c + (hh * sy_h + ww * sy_w)[None, :]
        )
        if FOUR_WAY:
            tl.atomic_add(y_ptrs, y, mask=m2)
        else:
            tl.store(y_ptrs, y.to(y_ptr.dtype.element_ty), mask=m2)


@triton.jit
def _bwd_kernel(
    dy_ptr,
    u_ptr,
    delta_ptr,
    A_ptr,
    B_ptr,
    C_ptr,
    D_ptr,
    bias_ptr,
    du_ptr,
    ddelta_ptr,
    dB_ptr,
    dC_ptr,
    dA_ptr,
    dD_ptr,
    dbias_ptr,
    hs_ptr,
    gs_ptr,
    gdts_ptr,
    L,
    H,
    W,
    rows,
    cpg,
    n_cb,
    nch,
    sdy_b,
    sdy_g,
    sdy_c,
    sdy_h,
    sdy_w,
    su_b,
    su_g,
    su_c,
    su_h,
    su_w,
    sd_b,
    sd_g,
    sd_c,
    sd_h,
    sd_w,
    sB_b,
    sB_g,
    sB_n,
    sB_h,
    sB_w,
    sC_b,
    sC_g,
    sC_n,
    sC_h,
    sC_w,
    sdu_b,
    sdu_g,
    sdu_c,
    sdu_h,
    sdu_w,
    sdd_b,
    sdd_g,
    sdd_c,
    sdd_h,
    sdd_w,
    sdB_cb,
    sdB_b,
    sdB_g,
    sdB_n,
    sdB_h,
    sdB_w,
    N: tl.constexpr,
    N_PAD: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_T: tl.constexpr,
    HAS_D: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    FOUR_WAY: tl.constexpr,
    STATES: tl.constexpr,
    CARRY: tl.constexpr,
):
    """STATES: write chunk j's (sum of dt_{t+1}, adjoint g at its first step from g = 0 after
    it) to gdts/gs. Otherwise recompute h (from chunk j-1's forward end state in hs when CARRY),
    scan g backwards (from chunk j+1's first-step adjoint in gs when CARRY) and write every
    gradient: du (FOUR_WAY: added into an fp32 buffer), ddelta, and partials of dB, dC (per
    channel block, layout of B), dA, dD, ddelta_bias (per batch and chunk)."""
    g = tl.program_id(0) // n_cb
    cb = tl.program_id(0) % n_cb
    cl = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    j = tl.program_id(1)
    bi = tl.program_id(2).to(tl.int64)
    cmask = cl < cpg
    r = g * cpg + cl
    n = tl.arange(0, N_PAD)
    nmask = n < N
    t = j * BLOCK_T + tl.arange(0, BLOCK_T)
    tmask = t < L
    # positions of steps t and t + 1 (see _fwd_kernel)
    if FOUR_WAY:
        s = tl.where(g >= 2, L - 1 - t, t)
        s1 = tl.where(g >= 2, s - 1, s + 1)
        col = (g % 2) == 1
        hh = tl.where(col, s % H, s // W)
        ww = tl.where(col, s // H, s % W)
        hh1 = tl.where(col, s1 % H, s1 // W)
        ww1 = tl.where(col, s1 // H, s1 % W)
    else:
        hh = t // W
        ww = t % W
        hh1 = (t + 1) // W
        ww1 = (t + 1) % W
    m2 = cmask[:, None] & tmask[None, :]
    m2n = cmask[:, None] & ((t + 1) < L)[None, :]
    mnt = nmask[:, None] & tmask[None, :]
    sm = cmask[:, None] & nmask[None, :]
    A = tl.load(A_ptr + r[:, None] * N + n[None, :], mask=sm, other=0.0)
    A2 = A * LOG2E
    bias = tl.zeros((BLOCK_C,), dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + r, mask=cmask, other=0.0)
    dy = tl.load(
        dy_ptr + bi * sdy_b + g * sdy_g + cl[:, None] * sdy_c + (hh * sdy_h + ww * sdy_w)[None, :],
        mask=m2,
        other=0.0,
    ).to(tl.float32)
    Ct = tl.load(
        C_ptr + bi * sC_b + g * sC_g + n[:, None] * sC_n + (hh * sC_h + ww * sC_w)[None, :],
        mask=mnt,
        other=0.0,
    ).to(tl.float32)
    # dt_{t+1} (0 past the end)
    z1 = tl.load(
        delta_ptr + bi * sd_b + g * sd_g + cl[:, None] * sd_c + (hh1 * sd_h + ww1 * sd_w)[None, :],
        mask=m2n,
        other=0.0,
    ).to(tl.float32)
    z1 += bias[:, None]
    if SOFTPLUS:
        z1 = tl.where(z1 > 20.0, z1, tl.log2(1.0 + tl.exp2(z1 * LOG2E)) * LN2)
    dt_next = tl.where(m2n, z1, 0.0)
    cdy = Ct[None, :, :] * dy[:, None, :]  # what y_t adds to dh_t
    row_state = (bi * rows + r)[:, None] * nch * N + n[None, :]
    if STATES:
        # adjoint at the chunk's first step from 0 after it: sum_t exp(A sum_{s<t} dt_{s+1}) cdy_t
        before = tl.cumsum(dt_next, axis=1) - dt_next
        g_first = tl.sum(tl.exp2(before[:, None, :] * A2[:, :, None]) * cdy, axis=2)
        tl.store(gs_ptr + row_state + j * N, g_first, mask=sm)
        tl.store(gdts_ptr + (bi * rows + r) * nch + j, tl.sum(dt_next, axis=1), mask=cmask)
    else:
        u = tl.load(
            u_ptr + bi * su_b + g * su_g + cl[:, None] * su_c + (hh * su_h + ww * su_w)[None, :],
            mask=m2,
            other=0.0,
        ).to(tl.float32)
        z = tl.load(
            delta_ptr
            + bi * sd_b
            + g * sd_g
            + cl[:, None] * sd_c
            + (hh * sd_h + ww * sd_w)[None, :],
            mask=m2,
            other=0.0,
        ).to(tl.float32)
        z += bias[:, None]
        if SOFTPLUS:
            dt = tl.where(z > 20.0, z, tl.log2(1.0 + tl.exp2(z * LOG2E)) * LN2)
        else:
            dt = z
        dt = tl.where(m2, dt, 0.0)
        Bt = tl.load(
            B_ptr + bi * sB_b + g * sB_g + n[:, None] * sB_n + (hh * sB_h + ww * sB_w)[None, :],
            mask=mnt,
            other=0.0,
        ).to(tl.float32)
        dtu = dt * u
        bx = dtu[:, None, :] * Bt[None, :, :]
        dA = tl.exp2(dt[:, None, :] * A2[:, :, None])
        _, h = tl.associative_scan((dA, bx), 2, _pair)
        if not CARRY:  # as in the forward: a NaN or Inf exp(dt_0 A) reaches h
            h += tl.sum(tl.where((t == 0)[None, None, :], dA, 0.0), axis=2)[:, :, None] * 0.0
        # dh_t = g_t = a_{t+1} g_{t+1} + C_t dy_t; a_L = 0 ends the sequence
        a_next = tl.where(m2n[:, None, :], tl.exp2(dt_next[:, None, :] * A2[:, :, None]), 0.0)
        _, gh = tl.associative_scan((a_next, cdy), 2, _pair, reverse=True)
        if CARRY:
            h0 = tl.load(hs_ptr + row_state + tl.maximum(j - 1, 0) * N, mask=sm, other=0.0)
            h0 = tl.where(j > 0, h0, 0.0)
            h += tl.exp2(tl.cumsum(dt, axis=1)[:, None, :] * A2[:, :, None]) * h0[:, :, None]
            g1 = tl.load(gs_ptr + row_state + tl.minimum(j + 1, nch - 1) * N, mask=sm, other=0.0)
            g1 = tl.where(j + 1 < nch, g1, 0.0)
            after = tl.cumsum(dt_next, axis=1, reverse=True)
            gh += tl.exp2(after[:, None, :] * A2[:, :, None]) * g1[:, :, None]
        ah = h - bx  # a_t h_{t-1}
        gB = tl.sum(gh * Bt[None, :, :], axis=1)
        du = dt * gB
        if HAS_D:
            du += tl.load(D_ptr + r, mask=cmask, other=0.0)[:, None] * dy
        ddt = gB * u + tl.sum(gh * ah * A[:, :, None], axis=1)
        if SOFTPLUS:  # d softplus(z) / dz = sigmoid(z), 1 above the threshold
            ddt = tl.where(z > 20.0, ddt, ddt / (1.0 + tl.exp2(-z * LOG2E)))
        ddt = tl.where(m2, ddt, 0.0)
        tl.store(
            ddelta_ptr
            + bi * sdd_b
            + g * sdd_g
            + cl[:, None] * sdd_c
            + (hh * sdd_h + ww * sdd_w)[None, :],
            ddt.to(ddelta_ptr.dtype.element_ty),
            mask=m2,
        )
        du_ptrs = (
            du_ptr
            + bi * sdu_b
            + g * sdu_g
            + cl[:, None] * sdu_c
            + (hh * sdu_h + ww * sdu_w)[None, :]
        )
        if FOUR_WAY:
            tl.atomic_add(du_ptrs, du, mask=m2)
        else:
            tl.store(du_ptrs, du.to(du_ptr.dtype.element_ty), mask=m2)
        # dB_t, dC_t: sums over this block's channels; the other blocks add theirs in torch
        part = (
            cb * sdB_cb
            + bi * sdB_b
            + g * sdB_g
            + n[:, None] * sdB_n
            + (hh * sdB_h + ww * sdB_w)[None, :]
        )
        tl.store(dB_ptr + part, tl.sum(gh * dtu[:, None, :], axis=0), mask=mnt)
        tl.store(dC_ptr + part, tl.sum(h * dy[:, None, :], axis=0), mask=mnt)
        per_row = (bi * nch + j) * rows + r  # partials over (batch, chunk)
        tl.store(
            dA_ptr + per_row[:, None] * N + n[None, :],
            tl.sum(gh * ah * dt[:, None, :], axis=2),
            mask=sm,
        )
        tl.store(dD_ptr + per_row, tl.sum(dy * u, axis=1), mask=cmask)
        tl.store(dbias_ptr + per_row, tl.sum(ddt, axis=1), mask=cmask)


@triton.jit
def _combine_kernel(
    A_ptr,
    hs_ptr,
    dts_ptr,
    rows,
    nch,
    N: tl.constexpr,
    N_PAD: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_K: tl.constexpr,
    REVERSE: tl.constexpr,
):
    """In place: chunk k's local end state e_k (from 0) becomes the true one,
    h_k = exp(A S_k) h_{k-1} + e_k with S_k = dts[k], in chunk order (REVERSE: from the last
    chunk down, for the adjoint). Grid (row blocks, batch)."""
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    bi = tl.program_id(1).to(tl.int64)
    rmask = r < rows
    n = tl.arange(0, N_PAD)
    sm = rmask[:, None] & (n < N)[None, :]
    A2 = tl.load(A_ptr + r[:, None] * N + n[None, :], mask=sm, other=0.0) * LOG2E
    carry = tl.zeros((BLOCK_R, N_PAD), dtype=tl.float32)
    for k0 in range(0, nch, BLOCK_K):
        i = k0 + tl.arange(0, BLOCK_K)  # position in scan order
        kmask = i < nch
        if REVERSE:
            k = nch - 1 - i
        else:
            k = i
        S = tl.load(
            dts_ptr + (bi * rows + r)[:, None] * nch + k[None, :],
            mask=rmask[:, None] & kmask[None, :],
            other=0.0,
        )
        offs = ((bi * rows + r)[:, None, None] * nch + k[None, None, :]) * N + n[None, :, None]
        m3 = sm[:, :, None] & kmask[None, None, :]
        e = tl.load(hs_ptr + offs, mask=m3, other=0.0)
        a = tl.exp2(S[:, None, :] * A2[:, :, None])
        _, h = tl.associative_scan((a, e), 2, _pair)
        h += tl.exp2(tl.cumsum(S, axis=1)[:, None, :] * A2[:, :, None]) * carry[:, :, None]
        tl.store(hs_ptr + offs, h, mask=m3)
        # masked tail entries are identities, so the last column is the last valid state
        last = (tl.arange(0, BLOCK_K) == BLOCK_K - 1)[None, None, :]
        carry = tl.sum(tl.where(last, h, 0.0), axis=2)


# --------------------------------------------------------------------------- launchers


def _combine(p: Problem, cfg: _Config, A: Tensor, hs: Tensor, dts: Tensor, reverse: bool):
    block_k = min(COMBINE_BLOCK, next_pow2(cfg.nch))
    block_r = min(next_pow2(p.rows), max(1, COMBINE_ELEMS // (cfg.n_pad * block_k)))
    wrap_triton(_combine_kernel)[(triton.cdiv(p.rows, block_r), p.batch)](
        A,
        hs,
        dts,
        p.rows,
        cfg.nch,
        N=p.N,
        N_PAD=cfg.n_pad,
        BLOCK_R=block_r,
        BLOCK_K=block_k,
        REVERSE=reverse,
        num_warps=4,
    )


def _flags(cfg: _Config, p: Problem, D, delta_bias, softplus: bool) -> dict:
    return {
        "N": p.N,
        "N_PAD": cfg.n_pad,
        "BLOCK_C": cfg.block_c,
        "BLOCK_T": cfg.block_t,
        "HAS_D": D is not None,
        "HAS_BIAS": delta_bias is not None,
        "SOFTPLUS": softplus,
        "FOUR_WAY": p.four_way,
        "num_warps": cfg.num_warps,
    }


def _params(A: Tensor, D: Tensor | None, delta_bias: Tensor | None) -> tuple:
    """The small parameter tensors, indexed densely by the kernels."""
    return tuple(t.contiguous() if t is not None else None for t in (A, D, delta_bias))


def _states(p: Problem, cfg: _Config, device) -> tuple[Tensor, Tensor]:
    return (
        empty((p.batch, p.rows, cfg.nch, p.N), torch.float32, device),
        empty((p.batch, p.rows, cfg.nch), torch.float32, device),
    )


def forward(
    p: Problem,
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    delta_bias: Tensor | None,
    softplus: bool,
    y: Tensor,
    chunk: int | None = None,
) -> None:
    """Scan and write y (x-like layout; for four-way problems a zeroed fp32 buffer that the
    directions add into). ``chunk`` (a power of two) overrides the chunk length."""
    cfg = _config(p, chunk)
    A, D, delta_bias = _params(A, D, delta_bias)
    dummy = A
    args = [
        u,
        delta,
        A,
        B,
        C,
        D if D is not None else dummy,
        delta_bias if delta_bias is not None else dummy,
        y,
    ]
    sizes = [p.L, p.H, p.W, p.rows, p.cpg, cfg.n_cb, cfg.nch]
    strides = [
        *p.x_strides(u),
        *p.delta_strides(delta),
        *p.bc_strides(B),
        *p.bc_strides(C),
        *p.x_strides(y),
    ]
    flags = _flags(cfg, p, D, delta_bias, softplus)
    kernel = wrap_triton(_fwd_kernel)[cfg.grid(p)]
    if cfg.nch > 1:
        hs, dts = _states(p, cfg, u.device)
        kernel(*args, hs, dts, *sizes, *strides, **flags, STATES=True, CARRY=False)
        _combine(p, cfg, A, hs, dts, reverse=False)
        kernel(*args, hs, dts, *sizes, *strides, **flags, STATES=False, CARRY=True)
    else:
        kernel(*args, dummy, dummy, *sizes, *strides, **flags, STATES=False, CARRY=False)


def backward(
    p: Problem,
    dy: Tensor,
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    delta_bias: Tensor | None,
    softplus: bool,
    du: Tensor,
    ddelta: Tensor,
    chunk: int | None = None,
) -> tuple[Tensor, ...]:
    """Write du (x-like; for four-way problems a zeroed fp32 buffer) and ddelta (delta-like),
    return (dB, dC, dA, dD, ddelta_bias) in the dtypes of B, C, A, A, A, with dB, dC shaped like
    B."""
    cfg = _config(p, chunk)
    A, D, delta_bias = _params(A, D, delta_bias)
    dev = u.device
    dummy = A
    f32 = torch.float32
    dB = empty((cfg.n_cb, *B.shape), f32, dev)
    dC = empty((cfg.n_cb, *B.shape), f32, dev)
    dA = empty((p.batch, cfg.nch, p.rows, p.N), f32, dev)
    dD = empty((p.batch, cfg.nch, p.rows), f32, dev)
    dbias = empty((p.batch, cfg.nch, p.rows), f32, dev)
    flags = _flags(cfg, p, D, delta_bias, softplus)
    ins = [
        dy,
        u,
        delta,
        A,
        B,
        C,
        D if D is not None else dummy,
        delta_bias if delta_bias is not None else dummy,
    ]
    outs = [du, ddelta, dB, dC, dA, dD, dbias]
    sizes = [p.L, p.H, p.W, p.rows, p.cpg, cfg.n_cb, cfg.nch]
    strides = [
        *p.x_strides(dy),
        *p.x_strides(u),
        *p.delta_strides(delta),
        *p.bc_strides(B),
        *p.bc_strides(C),
        *p.x_strides(du),
        *p.delta_strides(ddelta),
        dB.stride(0),
        *p.bc_strides(dB[0]),
    ]
    kernel = wrap_triton(_bwd_kernel)[cfg.grid(p)]
    if cfg.nch > 1:
        hs, dts = _states(p, cfg, dev)
        fwd_args = [u, delta, A, B, C, dummy, ins[7], dummy, hs, dts]
        wrap_triton(_fwd_kernel)[cfg.grid(p)](
            *fwd_args,
            *sizes,
            *p.x_strides(u),
            *p.delta_strides(delta),
            *p.bc_strides(B),
            *p.bc_strides(C),
            *p.x_strides(u),
            **{**flags, "HAS_D": False},
            STATES=True,
            CARRY=False,
        )
        _combine(p, cfg, A, hs, dts, reverse=False)
        gs, gdts = _states(p, cfg, dev)
        kernel(*ins, *outs, hs, gs, gdts, *sizes, *strides, **flags, STATES=True, CARRY=False)
        _combine(p, cfg, A, gs, gdts, reverse=True)
        kernel(*ins, *outs, hs, gs, gdts, *sizes, *strides, **flags, STATES=False, CARRY=True)
    else:
        kernel(
            *ins, *outs, dummy, dummy, dummy, *sizes, *strides, **flags, STATES=False, CARRY=False
        )
    dB = dB[0] if cfg.n_cb == 1 else dB.sum(0)
    dC = dC[0] if cfg.n_cb == 1 else dC.sum(0)
    return (
        dB.to(B.dtype),
        dC.to(C.dtype),
        dA.sum((0, 1)).to(A.dtype),
        dD.sum((0, 1)).to(A.dtype),
        dbias.sum((0, 1)).to(A.dtype),
    )
