"""Triton slp_project: ZeroMamba's Semantic-aware Local Projection, fused (docs/design.md §2.4).

out[b, i] = sum_r softmax_r(s1[b, i, :])[r] * s2[b, i, r], s1 = q1 feat[b], s2 = q2 feat[b].

Forward: grid (A blocks, b); a program streams the regions in R-tiles, forms the s1 and s2 tiles
with tl.dot over F-tiles and folds them into an online softmax (running max m, denominator l,
numerator acc): out = acc / l. Neither the (b, A, F) projection nor the (b, A, R) scores reach
memory.
Backward: a stats pass (the forward kernel) writes out and the log-sum-exp per (b, i); grid
(A blocks, R-tiles, b) then recomputes the s1, s2 tile, forms dS2 = p dout and
dS1 = p (s2 - out) dout and, over F-tiles, adds q1^T dS1 + q2^T dS2 into dfeat and
dS1 feat^T, dS2 feat^T into dq1, dq2 with fp32 atomics (order-dependent low bits on a GPU).
Dots run in fp32 (tf32x3 on GPUs, i.e. fp32-accurate) for every input dtype.
"""

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.library import triton_op, wrap_triton

from ._alloc import empty
from ._common import LN2, LOG2E, check_dtype, next_pow2


@triton.jit
def _scores(
    feat_ptr,
    q1_ptr,
    q2_ptr,
    bi,
    i,
    r,
    imask,
    rmask,
    F,
    sf_b,
    sf_f,
    sf_r,
    sq1_a,
    sq1_f,
    sq2_a,
    sq2_f,
    BLOCK_A: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_F: tl.constexpr,
):
    """(s1, s2) tiles (BLOCK_A, BLOCK_R) of q1 feat[bi], q2 feat[bi]."""
    s1 = tl.zeros((BLOCK_A, BLOCK_R), dtype=tl.float32)
    s2 = tl.zeros((BLOCK_A, BLOCK_R), dtype=tl.float32)
    for f0 in range(0, F, BLOCK_F):
        f = f0 + tl.arange(0, BLOCK_F)
        fmask = f < F
        qm = imask[:, None] & fmask[None, :]
        q1 = tl.load(q1_ptr + i[:, None] * sq1_a + f[None, :] * sq1_f, mask=qm, other=0.0)
        q2 = tl.load(q2_ptr + i[:, None] * sq2_a + f[None, :] * sq2_f, mask=qm, other=0.0)
        ft = tl.load(
            feat_ptr + bi * sf_b + f[:, None] * sf_f + r[None, :] * sf_r,
            mask=fmask[:, None] & rmask[None, :],
            other=0.0,
        ).to(tl.float32)
        s1 = tl.dot(q1.to(tl.float32), ft, s1, input_precision="tf32x3")
        s2 = tl.dot(q2.to(tl.float32), ft, s2, input_precision="tf32x3")
    return s1, s2


@triton.jit
def _fwd_kernel(
    feat_ptr,
    q1_ptr,
    q2_ptr,
    out_ptr,
    lse_ptr,
    A,
    F,
    R,
    sf_b,
    sf_f,
    sf_r,
    sq1_a,
    sq1_f,
    sq2_a,
    sq2_f,
    BLOCK_A: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_F: tl.constexpr,
    STATS: tl.constexpr,
):
    """out (b, A) contiguous; STATS: also the log-sum-exp of s1 over r into lse (b, A)."""
    i = tl.program_id(0) * BLOCK_A + tl.arange(0, BLOCK_A)
    bi = tl.program_id(1).to(tl.int64)
    imask = i < A
    m = tl.full((BLOCK_A,), float("-inf"), dtype=tl.float32)
    l = tl.zeros((BLOCK_A,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_A,), dtype=tl.float32)
    for r0 in range(0, R, BLOCK_R):
        r = r0 + tl.arange(0, BLOCK_R)
        rmask = r < R
        s1, s2 = _scores(
            feat_ptr,
            q1_ptr,
            q2_ptr,
            bi,
            i,
            r,
            imask,
            rmask,
            F,
            sf_b,
            sf_f,
            sf_r,
            sq1_a,
            sq1_f,
            sq2_a,
            sq2_f,
            BLOCK_A,
            BLOCK_R,
            BLOCK_F,
        )
        s1 = tl.where(rmask[None, :], s1, float("-inf"))
        m_new = tl.maximum(m, tl.max(s1, axis=1))  # finite: every R-tile has a valid region
        scale = tl.exp2((m - m_new) * LOG2E)
        p = tl.exp2((s1 - m_new[:, None]) * LOG2E)
        l = l * scale + tl.sum(p, axis=1)
        acc = acc * scale + tl.sum(p * s2, axis=1)
        m = m_new
    tl.store(out_ptr + bi * A + i, (acc / l).to(out_ptr.dtype.element_ty), mask=imask)
    if STATS:
        tl.store(lse_ptr + bi * A + i, m + tl.log2(l) * LN2, mask=imask)


@triton.jit
def _bwd_kernel(
    dout_ptr,
    feat_ptr,
    q1_ptr,
    q2_ptr,
    out_ptr,
    lse_ptr,
    dfeat_ptr,
    dq1_ptr,
    dq2_ptr,
    A,
    F,
    R,
    sf_b,
    sf_f,
    sf_r,
    sq1_a,
    sq1_f,
    sq2_a,
    sq2_f,
    sdo_b,
    sdo_a,
    BLOCK_A: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_F: tl.constexpr,
):
    """Adds this (A block, R-tile, batch)'s share into the fp32 buffers dfeat (b, F, R),
    dq1 and dq2 (A, F), all contiguous."""
    i = tl.program_id(0) * BLOCK_A + tl.arange(0, BLOCK_A)
    r = tl.program_id(1) * BLOCK_R + tl.arange(0, BLOCK_R)
    bi = tl.program_id(2).to(tl.int64)
    imask = i < A
    rmask = r < R
    s1, s2 = _scores(
        feat_ptr,
        q1_ptr,
        q2_ptr,
        bi,
        i,
        r,
        imask,
        rmask,
        F,
        sf_b,
        sf_f,
        sf_r,
        sq1_a,
        sq1_f,
        sq2_a,
        sq2_f,
        BLOCK_A,
        BLOCK_R,
        BLOCK_F,
    )
    lse = tl.load(lse_ptr + bi * A + i, mask=imask, other=0.0)
    out = tl.load(out_ptr + bi * A + i, mask=imask, other=0.0)
    dout = tl.load(dout_ptr + bi * sdo_b + i * sdo_a, mask=imask, other=0.0).to(tl.float32)
    p = tl.where(imask[:, None] & rmask[None, :], tl.exp2((s1 - lse[:, None]) * LOG2E), 0.0)
    dS2 = p * dout[:, None]
    dS1 = dS2 * (s2 - out[:, None])
    for f0 in range(0, F, BLOCK_F):
        f = f0 + tl.arange(0, BLOCK_F)
        fmask = f < F
        qm = imask[:, None] & fmask[None, :]
        fm = fmask[:, None] & rmask[None, :]
        q1 = tl.load(q1_ptr + i[:, None] * sq1_a + f[None, :] * sq1_f, mask=qm, other=0.0)
        q2 = tl.load(q2_ptr + i[:, None] * sq2_a + f[None, :] * sq2_f, mask=qm, other=0.0)
        ft = tl.load(
            feat_ptr + bi * sf_b + f[:, None] * sf_f + r[None, :] * sf_r, mask=fm, other=0.0
        ).to(tl.float32)
        dfeat = tl.dot(tl.trans(q1.to(tl.float32)), dS1, input_precision="tf32x3")
        dfeat = tl.dot(tl.trans(q2.to(tl.float32)), dS2, dfeat, input_precision="tf32x3")
        tl.atomic_add(dfeat_ptr + bi * F * R + f[:, None] * R + r[None, :], dfeat, mask=fm)
        ftT = tl.trans(ft)
        q_offs = i[:, None] * F + f[None, :]
        tl.atomic_add(dq1_ptr + q_offs, tl.dot(dS1, ftT, input_precision="tf32x3"), mask=qm)
        tl.atomic_add(dq2_ptr + q_offs, tl.dot(dS2, ftT, input_precision="tf32x3"), mask=qm)


def _blocks(A: int, F: int, R: int) -> tuple[int, int, int]:
    """(BLOCK_A, BLOCK_R, BLOCK_F): tl.dot wants tiles of at least 16 a side. tf32x3 dots are
    register-hungry: ptxas for sm_90 fits 32 x 32 x 16 (4 warps) in 227 (forward) and 246
    (backward) registers without spills, where 64 x 64 x 64 spilled kilobytes."""
    return tuple(min(cap, max(16, next_pow2(n))) for n, cap in ((A, 32), (R, 32), (F, 16)))


def _strides(feat: Tensor, q1: Tensor, q2: Tensor) -> list[int]:
    return [*feat.stride(), *q1.stride(), *q2.stride()]


def _forward(feat: Tensor, q1: Tensor, q2: Tensor, out: Tensor, lse: Tensor | None) -> None:
    b, F, R = feat.shape
    A = q1.shape[0]
    block_a, block_r, block_f = _blocks(A, F, R)
    wrap_triton(_fwd_kernel)[(triton.cdiv(A, block_a), b)](
        feat,
        q1,
        q2,
        out,
        lse if lse is not None else out,
        A,
        F,
        R,
        *_strides(feat, q1, q2),
        BLOCK_A=block_a,
        BLOCK_R=block_r,
        BLOCK_F=block_f,
        STATS=lse is not None,
        num_warps=4,
    )


@triton_op("zeromamba::slp_project_fwd_triton", mutates_args=())
def slp_project_fwd(feat: Tensor, q1: Tensor, q2: Tensor) -> Tensor:
    """out (b, A) in feat's dtype; the signature of zeromamba::slp_project_fwd."""
    check_dtype("slp_project", feat)
    out = empty((feat.shape[0], q1.shape[0]), feat.dtype, feat.device)
    _forward(feat, q1, q2, out, None)
    return out


@triton_op("zeromamba::slp_project_bwd_triton", mutates_args=())
def slp_project_bwd(
    dout: Tensor, feat: Tensor, q1: Tensor, q2: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """(dfeat, dq1, dq2) in the inputs' dtype; the signature of zeromamba::slp_project_bwd."""
    check_dtype("slp_project", feat)
    b, F, R = feat.shape
    A = q1.shape[0]
    dev = feat.device
    out = empty((b, A), torch.float32, dev)
    lse = empty((b, A), torch.float32, dev)
    _forward(feat, q1, q2, out, lse)
    dfeat = torch.zeros((b, F, R), dtype=torch.float32, device=dev)
    dq1 = torch.zeros((A, F), dtype=torch.float32, device=dev)
    dq2 = torch.zeros((A, F), dtype=torch.float32, device=dev)
    block_a, block_r, block_f = _blocks(A, F, R)
    wrap_triton(_bwd_kernel)[(triton.cdiv(A, block_a), triton.cdiv(R, block_r), b)](
        dout,
        feat,
        q1,
        q2,
        out,
        lse,
        dfeat,
        dq1,
        dq2,
        A,
        F,
        R,
        *_strides(feat, q1, q2),
        *dout.stride(),
        BLOCK_A=block_a,
        BLOCK_R=block_r,
        BLOCK_F=block_f,
        num_warps=4,
    )
    return dfeat.to(feat.dtype), dq1.to(q1.dtype), dq2.to(q2.dtype)
