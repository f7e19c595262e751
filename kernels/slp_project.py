"""Triton slp_project: ZeroMamba's Semantic-aware Local Projection (docs/design.md §2.4, §4.8).

out[b, i] = sum_r softmax_r(s1[b, i, :])[r] * s2[b, i, r], s1 = q1 feat[b], s2 = q2 feat[b].

Forward: grid (A blocks, R splits, b). A program forms the (BLOCK_A, BLOCK_R) tiles of s1 and s2
with tl.dot over F-tiles for the R-tiles of its split and folds them into an online softmax
(running max m, denominator l, numerator acc); a few torch ops merge the splits' partial
statistics: out = acc / l. Neither the (b, A, F) projection nor the scores reach memory.
Backward, with the merged out and log-sum-exp: `_ds_kernel` (grid (A blocks, R-tiles, b))
recomputes the score tile and writes ds1 = dout p (s2 - out), ds2 = dout p into a transient
(2, b, A, R) buffer; `_dq_kernel` (grid (A blocks, F blocks, batch splits)) accumulates
dq = sum over (b, r) of ds feat^T in registers; `_dfeat_kernel` (grid (F blocks, R-tiles, b))
accumulates dfeat = q1^T ds1 + q2^T ds2 over A in registers. No atomics: every output element
has one writer and a fixed summation order (the batch splits of dq are summed by torch), so the
gradients are bitwise repeatable.
Dots: fp16/bf16 inputs multiply in their own dtype with fp32 accumulation (exact products);
fp32 inputs use tf32 (``FP32_DOT``), within the tf32-level tolerance of docs/design.md §6.
"""

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.library import triton_op, wrap_triton

from ._alloc import empty
from ._common import LOG2E, check_dtype, next_pow2

# tl.dot input precision for fp32 inputs ("ieee" would be fp32-exact at several times the cost).
FP32_DOT = "tf32"
NUM_WARPS = 4
# The dq kernel holds two (BLOCK_A, BLOCK_F) fp32 accumulators: 8 warps keep the fp32/tf32
# variant free of spills on sm_90.
DQ_NUM_WARPS = 8
# Batch splits of the dq kernel: enough programs to fill an H100's 132 SMs twice.
TARGET_PROGRAMS = 264
MAX_R_SPLITS = 16


@triton.jit
def _score_tiles(
    feat, q1, q2, bi, i, r, imask, rmask, F, BLOCK_F: tl.constexpr, PRECISION: tl.constexpr
):
    """(s1, s2) fp32 tiles (len(i), len(r)) of q1 feat[bi], q2 feat[bi]; feat is (pointer,
    batch, F and R strides), q1 and q2 (pointer, A and F strides)."""
    feat_ptr, sf_b, sf_f, sf_r = feat
    q1_ptr, sq1_a, sq1_f = q1
    q2_ptr, sq2_a, sq2_f = q2
    s1 = tl.zeros((i.shape[0], r.shape[0]), dtype=tl.float32)
    s2 = tl.zeros((i.shape[0], r.shape[0]), dtype=tl.float32)
    for f0 in range(0, F, BLOCK_F):
        f = f0 + tl.arange(0, BLOCK_F)
        fmask = f < F
        qm = imask[:, None] & fmask[None, :]
        q1t = tl.load(q1_ptr + i[:, None] * sq1_a + f[None, :] * sq1_f, mask=qm, other=0.0)
        q2t = tl.load(q2_ptr + i[:, None] * sq2_a + f[None, :] * sq2_f, mask=qm, other=0.0)
        ft = tl.load(
            feat_ptr + bi * sf_b + f[:, None] * sf_f + r[None, :] * sf_r,
            mask=fmask[:, None] & rmask[None, :],
            other=0.0,
        )
        s1 = tl.dot(q1t, ft, s1, input_precision=PRECISION)
        s2 = tl.dot(q2t, ft, s2, input_precision=PRECISION)
    return s1, s2


@triton.jit
def _fwd_kernel(
    feat_ptr, sf_b, sf_f, sf_r,
    q1_ptr, sq1_a, sq1_f,
    q2_ptr, sq2_a, sq2_f,
    part_ptr, part_plane,
    A, F, R, n_split, r_per_split,
    BLOCK_A: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_F: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    """The softmax statistics (m, l, acc) of regions [split * r_per_split, + r_per_split) into
    part (3, b, n_split, A) fp32. r_per_split is a multiple of BLOCK_R and every split starts
    below R, so each program sees a valid region and m stays finite."""
    i = tl.program_id(0) * BLOCK_A + tl.arange(0, BLOCK_A)
    split = tl.program_id(1)
    bi = tl.program_id(2).to(tl.int64)
    imask = i < A
    m = tl.full((BLOCK_A,), float("-inf"), dtype=tl.float32)
    l = tl.zeros((BLOCK_A,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_A,), dtype=tl.float32)
    for r0 in range(0, r_per_split, BLOCK_R):
        r = split * r_per_split + r0 + tl.arange(0, BLOCK_R)
        rmask = r < R
        s1, s2 = _score_tiles(
            feat=(feat_ptr, sf_b, sf_f, sf_r), q1=(q1_ptr, sq1_a, sq1_f), q2=(q2_ptr, sq2_a, sq2_f),
            bi=bi, i=i, r=r, imask=imask, rmask=rmask, F=F, BLOCK_F=BLOCK_F, PRECISION=PRECISION,
        )  # fmt: skip
        s1 = tl.where(rmask[None, :], s1, float("-inf"))
        m_new = tl.maximum(m, tl.max(s1, axis=1))
        scale = tl.exp2((m - m_new) * LOG2E)  # exp2(-inf) = 0 on the first tile
        p = tl.exp2((s1 - m_new[:, None]) * LOG2E)
        l = l * scale + tl.sum(p, axis=1)
        acc = acc * scale + tl.sum(p * s2, axis=1)
        m = m_new
    o = (bi * n_split + split) * A + i
    tl.store(part_ptr + o, m, mask=imask)
    tl.store(part_ptr + part_plane + o, l, mask=imask)
    tl.store(part_ptr + 2 * part_plane + o, acc, mask=imask)


@triton.jit
def _ds_kernel(
    feat_ptr, sf_b, sf_f, sf_r,
    q1_ptr, sq1_a, sq1_f,
    q2_ptr, sq2_a, sq2_f,
    dout_ptr, sdo_b, sdo_a,
    out_ptr, lse_ptr, ds_ptr, ds_plane,
    A, F, R,
    BLOCK_A: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_F: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    """ds (2, b, A, R) contiguous: ds1 = dout p (s2 - out), ds2 = dout p, p = exp(s1 - lse);
    out and lse (b, A) fp32."""
    i = tl.program_id(0) * BLOCK_A + tl.arange(0, BLOCK_A)
    r = tl.program_id(1) * BLOCK_R + tl.arange(0, BLOCK_R)
    bi = tl.program_id(2).to(tl.int64)
    imask = i < A
    rmask = r < R
    s1, s2 = _score_tiles(
        feat=(feat_ptr, sf_b, sf_f, sf_r), q1=(q1_ptr, sq1_a, sq1_f), q2=(q2_ptr, sq2_a, sq2_f),
        bi=bi, i=i, r=r, imask=imask, rmask=rmask, F=F, BLOCK_F=BLOCK_F, PRECISION=PRECISION,
    )  # fmt: skip
    lse = tl.load(lse_ptr + bi * A + i, mask=imask, other=0.0)
    out = tl.load(out_ptr + bi * A + i, mask=imask, other=0.0)
    dout = tl.load(dout_ptr + bi * sdo_b + i * sdo_a, mask=imask, other=0.0).to(tl.float32)
    ds2 = tl.exp2((s1 - lse[:, None]) * LOG2E) * dout[:, None]
    ds1 = ds2 * (s2 - out[:, None])
    o = bi * A * R + i[:, None] * R + r[None, :]
    mask = imask[:, None] & rmask[None, :]
    tl.store(ds_ptr + o, ds1.to(ds_ptr.dtype.element_ty), mask=mask)
    tl.store(ds_ptr + ds_plane + o, ds2.to(ds_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _dq_kernel(
    ds_ptr,
    feat_ptr,
    dq_ptr,
    A,
    F,
    R,
    n_batch,
    b_per_split,
    ds_plane,
    dq_plane,
    sf_b,
    sf_f,
    sf_r,
    BLOCK_A: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_F: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """dq1, dq2 partial sums over the batches [split * b_per_split, + b_per_split) and every
    region, accumulated in registers, into dq (2, n_split, A, F) fp32."""
    i = tl.program_id(0) * BLOCK_A + tl.arange(0, BLOCK_A)
    f = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    split = tl.program_id(2)
    imask = i < A
    fmask = f < F
    acc1 = tl.zeros((BLOCK_A, BLOCK_F), dtype=tl.float32)
    acc2 = tl.zeros((BLOCK_A, BLOCK_F), dtype=tl.float32)
    for bb in range(b_per_split):
        bi = (split * b_per_split + bb).to(tl.int64)
        r_end = tl.where(bi < n_batch, R, 0)  # the last split may run past the batch
        for r0 in range(0, R, BLOCK_R):
            r = r0 + tl.arange(0, BLOCK_R)
            rmask = r < r_end
            dm = imask[:, None] & rmask[None, :]
            o = bi * A * R + i[:, None] * R + r[None, :]
            d1 = tl.load(ds_ptr + o, mask=dm, other=0.0)
            d2 = tl.load(ds_ptr + ds_plane + o, mask=dm, other=0.0)
            ft = tl.load(
                feat_ptr + bi * sf_b + f[None, :] * sf_f + r[:, None] * sf_r,
                mask=rmask[:, None] & fmask[None, :],
                other=0.0,
            )
            acc1 = tl.dot(d1, ft, acc1, input_precision=PRECISION)
            acc2 = tl.dot(d2, ft, acc2, input_precision=PRECISION)
    o = (split * A + i[:, None]).to(tl.int64) * F + f[None, :]
    mask = imask[:, None] & fmask[None, :]
    tl.store(dq_ptr + o, acc1, mask=mask)
    tl.store(dq_ptr + dq_plane + o, acc2, mask=mask)


@triton.jit
def _dfeat_kernel(
    ds_ptr,
    q1_ptr,
    q2_ptr,
    dfeat_ptr,
    A,
    F,
    R,
    ds_plane,
    sq1_a,
    sq1_f,
    sq2_a,
    sq2_f,
    BLOCK_A: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_F: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """dfeat (b, F, R) contiguous, in its dtype: q1^T ds1 + q2^T ds2, summed over A in
    registers."""
    f = tl.program_id(0) * BLOCK_F + tl.arange(0, BLOCK_F)
    r = tl.program_id(1) * BLOCK_R + tl.arange(0, BLOCK_R)
    bi = tl.program_id(2).to(tl.int64)
    fmask = f < F
    rmask = r < R
    acc = tl.zeros((BLOCK_F, BLOCK_R), dtype=tl.float32)
    for a0 in range(0, A, BLOCK_A):
        i = a0 + tl.arange(0, BLOCK_A)
        imask = i < A
        qm = fmask[:, None] & imask[None, :]
        q1t = tl.load(q1_ptr + i[None, :] * sq1_a + f[:, None] * sq1_f, mask=qm, other=0.0)
        q2t = tl.load(q2_ptr + i[None, :] * sq2_a + f[:, None] * sq2_f, mask=qm, other=0.0)
        dm = imask[:, None] & rmask[None, :]
        o = bi * A * R + i[:, None] * R + r[None, :]
        d1 = tl.load(ds_ptr + o, mask=dm, other=0.0)
        d2 = tl.load(ds_ptr + ds_plane + o, mask=dm, other=0.0)
        acc = tl.dot(q1t, d1, acc, input_precision=PRECISION)
        acc = tl.dot(q2t, d2, acc, input_precision=PRECISION)
    o = bi * F * R + f[:, None] * R + r[None, :]
    tl.store(
        dfeat_ptr + o, acc.to(dfeat_ptr.dtype.element_ty), mask=fmask[:, None] & rmask[None, :]
    )


def _blocks(A: int, F: int, R: int) -> dict[str, int]:
    """BLOCK_A (64: one Hopper wgmma M tile), BLOCK_R, BLOCK_F; tl.dot wants tiles of at least
    16 a side."""
    return {
        "BLOCK_A": min(64, max(16, next_pow2(A))),
        "BLOCK_R": min(32, max(16, next_pow2(R))),
        "BLOCK_F": min(64, max(16, next_pow2(F))),
    }


def _precision(x: Tensor) -> str:
    return FP32_DOT if x.dtype == torch.float32 else "ieee"


def _feat_args(feat: Tensor) -> dict:
    """feat and its strides as the kernels' named arguments."""
    return dict(zip(("feat_ptr", "sf_b", "sf_f", "sf_r"), (feat, *feat.stride()), strict=True))


def _q_args(q1: Tensor, q2: Tensor) -> dict:
    """q1, q2 and their strides as the kernels' named arguments."""
    return {"q1_ptr": q1, "sq1_a": q1.stride(0), "sq1_f": q1.stride(1)} | {
        "q2_ptr": q2, "sq2_a": q2.stride(0), "sq2_f": q2.stride(1),
    }  # fmt: skip


def _tiles(A: int, F: int, R: int, x: Tensor) -> dict:
    """The sizes, tile sizes and dot precision every kernel takes, by name."""
    return {"A": A, "F": F, "R": R, **_blocks(A, F, R), "PRECISION": _precision(x)}


def _forward(feat: Tensor, q1: Tensor, q2: Tensor) -> tuple[Tensor, Tensor]:
    """(out, lse), both (b, A) fp32, from the merged partial statistics of the R splits."""
    b, F, R = feat.shape
    A = q1.shape[0]
    blk = _blocks(A, F, R)
    r_tiles = triton.cdiv(R, blk["BLOCK_R"])
    r_per_split = triton.cdiv(r_tiles, min(r_tiles, MAX_R_SPLITS)) * blk["BLOCK_R"]
    n_split = triton.cdiv(R, r_per_split)
    part = empty((3, b, n_split, A), torch.float32, feat.device)
    wrap_triton(_fwd_kernel)[(triton.cdiv(A, blk["BLOCK_A"]), n_split, b)](
        **_feat_args(feat),
        **_q_args(q1, q2),
        part_ptr=part,
        part_plane=b * n_split * A,
        n_split=n_split,
        r_per_split=r_per_split,
        **_tiles(A, F, R, feat),
        num_warps=NUM_WARPS,
    )
    m, l, acc = part.unbind(0)
    m_all = m.amax(dim=1, keepdim=True)
    w = torch.exp(m - m_all)
    denom = (l * w).sum(dim=1)
    return (acc * w).sum(dim=1) / denom, m_all.squeeze(1) + torch.log(denom)


@triton_op("zeromamba::slp_project_fwd_triton", mutates_args=())
def slp_project_fwd(feat: Tensor, q1: Tensor, q2: Tensor) -> Tensor:
    """out (b, A) in feat's dtype; the signature of zeromamba::slp_project_fwd."""
    check_dtype("slp_project", feat)
    if feat.shape[0] == 0 or q1.shape[0] == 0:
        return empty((feat.shape[0], q1.shape[0]), feat.dtype, feat.device)
    out, _ = _forward(feat, q1, q2)
    return out.to(feat.dtype)


@triton_op("zeromamba::slp_project_bwd_triton", mutates_args=())
def slp_project_bwd(
    dout: Tensor, feat: Tensor, q1: Tensor, q2: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """(dfeat, dq1, dq2) in the inputs' dtype; the signature of zeromamba::slp_project_bwd."""
    check_dtype("slp_project", feat)
    b, F, R = feat.shape
    A = q1.shape[0]
    dev = feat.device
    if b == 0 or A == 0 or F == 0:  # out ignores feat (A = 0) or no term has a summand
        zeros = torch.zeros((A, F), dtype=q1.dtype, device=dev)
        return torch.zeros_like(feat, memory_format=torch.contiguous_format), zeros, zeros.clone()
    out, lse = _forward(feat, q1, q2)
    blk = _blocks(A, F, R)
    # ds in the dtype the gradient dots multiply in: the inputs' for fp16/bf16, fp32 for fp32
    ds = empty((2, b, A, R), feat.dtype, dev)
    n_a = triton.cdiv(A, blk["BLOCK_A"])
    wrap_triton(_ds_kernel)[(n_a, triton.cdiv(R, blk["BLOCK_R"]), b)](
        **_feat_args(feat),
        **_q_args(q1, q2),
        dout_ptr=dout,
        sdo_b=dout.stride(0),
        sdo_a=dout.stride(1),
        out_ptr=out,
        lse_ptr=lse,
        ds_ptr=ds,
        ds_plane=b * A * R,
        **_tiles(A, F, R, feat),
        num_warps=NUM_WARPS,
    )
    n_f = triton.cdiv(F, blk["BLOCK_F"])
    b_per_split = triton.cdiv(b, min(b, max(1, triton.cdiv(TARGET_PROGRAMS, n_a * n_f))))
    n_split = triton.cdiv(b, b_per_split)
    dq = empty((2, n_split, A, F), torch.float32, dev)
    wrap_triton(_dq_kernel)[(n_a, n_f, n_split)](
        ds_ptr=ds,
        ds_plane=b * A * R,
        **_feat_args(feat),
        dq_ptr=dq,
        dq_plane=n_split * A * F,
        n_batch=b,
        b_per_split=b_per_split,
        **_tiles(A, F, R, feat),
        num_warps=DQ_NUM_WARPS,
    )
    dfeat = empty((b, F, R), feat.dtype, dev)
    wrap_triton(_dfeat_kernel)[(n_f, triton.cdiv(R, blk["BLOCK_R"]), b)](
        ds_ptr=ds,
        ds_plane=b * A * R,
        **_q_args(q1, q2),
        dfeat_ptr=dfeat,
        **_tiles(A, F, R, feat),
        num_warps=NUM_WARPS,
    )
    # the batch splits, in a fixed order; sum makes new tensors, so the outputs do not alias
    return dfeat, dq[0].sum(dim=0).to(q1.dtype), dq[1].sum(dim=0).to(q2.dtype)
