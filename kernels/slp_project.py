"""Triton slp_project: ZeroMamba's Semantic-aware Local Projection (docs/design.md §2.4, §4.8).

out[b, i] = sum_r softmax_r(s1[b, i, :])[r] * s2[b, i, r], s1 = q1 feat[b], s2 = q2 feat[b].

The score and gradient products are matrix products with F as the inner dimension, so they run
as torch GEMMs (cuBLAS on a GPU) and the two Triton kernels here do only the per-row work between
them, which is memory-bound:

* forward: ``S = q feat`` with ``q = (q1; q2)``, a transient fp32 (b, 2A, R) (s1 in rows
  0..A-1 of a batch, s2 in rows A..2A-1); ``_softmax_reduce_kernel``: out = sum_r p s2,
  p = softmax_r(s1), one online-softmax sweep per row;
* backward: S again; ``_ds_kernel``: the row's statistics and out, then ds1 = dout p (s2 - out),
  ds2 = dout p into ds (2A, b, R) in the inputs' dtype; dfeat[b] = q^T ds[:, b] (one batched
  GEMM reading ds in place) and dq = ds feat^T over every (b, r) (two GEMMs after a copy of
  feat to (F, b R)).

No atomics: every element has one writer and the GEMMs are deterministic on one stream, so both
passes repeat bitwise. Nothing of score size outlives a call: autograd saves only the inputs.
GEMM precision: fp32 inputs multiply as torch's fp32 matmul does (tf32 only where
``torch.backends.cuda.matmul.allow_tf32`` allows it); fp16/bf16 scores accumulate and come out
in fp32; the gradient GEMMs take ds in the inputs' dtype and accumulate in fp32.
"""

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.library import triton_op, wrap_triton

from ._alloc import empty
from ._common import LOG2E, check_dtype, next_pow2

NUM_WARPS = 4
# Regions a row tile holds: rows of up to this many regions (the model's R = 196 = 14 x 14) are
# read from memory once in the backward, which keeps the first tile between its two sweeps.
MAX_BLOCK_R = 256
# Elements of a (rows, regions) tile: 4 rows of 256 regions. Compiled for sm_90 at 4 warps the
# backward's row kernel, which keeps a tile between its sweeps, takes 80 registers (37.5%
# occupancy); 8 rows took over 200 (12.5%).
TILE_ELEMS = 1024
# The running max's start and the padding's score: finite, so that a row whose scores are all
# -inf (the reference's NaN) meets no inf - inf before l = 0 makes out NaN; padded regions are
# masked out of the sums, so they never count as scores.
MINUS_INF = tl.constexpr(-1e30)
# torch >= 2.8 has a half-in, fp32-out bmm on CUDA; the CPU (interpreter) path upcasts instead.
HAS_FP32_OUT_BMM = hasattr(torch.ops.aten.bmm, "dtype")


@triton.jit
def _score_tile(s_ptr, s_off, R, rows_ok, r0, BLOCK_R: tl.constexpr):
    """(s1, s2, mask) fp32 tiles (rows, BLOCK_R) of regions r0.., MINUS_INF / 0 where the mask
    is off (past R or past the last row); s_off: the offsets of the rows' s1 and s2 in S."""
    r = r0 + tl.arange(0, BLOCK_R)
    mask = rows_ok[:, None] & (r < R)[None, :]
    s1_off, s2_off = s_off
    s1 = tl.load(s_ptr + (s1_off[:, None] + r[None, :]), mask=mask, other=MINUS_INF)
    s2 = tl.load(s_ptr + (s2_off[:, None] + r[None, :]), mask=mask, other=0.0)
    return s1, s2, mask


@triton.jit
def _fold(m, l, acc, s1, s2, mask):
    """The online softmax (running max m, sum l of exp(s1 - m), acc = sum of exp(s1 - m) s2)
    after one more tile."""
    m_new = tl.maximum(m, tl.max(s1, axis=1))
    scale = tl.exp2((m - m_new) * LOG2E)
    p = tl.where(mask, tl.exp2((s1 - m_new[:, None]) * LOG2E), 0.0)
    return m_new, l * scale + tl.sum(p, axis=1), acc * scale + tl.sum(p * s2, axis=1)


@triton.jit
def _rows(n_rows, A, R, BLOCK_ROWS: tl.constexpr):
    """This program's rows (b, i) (int64), which of them exist, their batch and attribute, and
    the offsets of their s1 and s2 in S (b, 2A, R), every offset int64."""
    row = tl.program_id(0).to(tl.int64) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    ok = row < n_rows
    bi = row // A
    i = row - bi * A
    return row, ok, bi, i, ((bi * 2 * A + i) * R, (bi * 2 * A + A + i) * R)


@triton.jit
def _softmax_reduce_kernel(
    s_ptr, out_ptr, n_rows, A, R,
    BLOCK_ROWS: tl.constexpr, BLOCK_R: tl.constexpr,
):  # fmt: skip
    """out (b, A) contiguous, in its dtype, from S (b, 2A, R) fp32."""
    row, ok, _, _, s_off = _rows(n_rows, A, R, BLOCK_ROWS)
    m = tl.full((BLOCK_ROWS,), MINUS_INF, dtype=tl.float32)
    l = tl.zeros((BLOCK_ROWS,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_ROWS,), dtype=tl.float32)
    for r0 in range(0, R, BLOCK_R):
        s1, s2, mask = _score_tile(s_ptr, s_off, R, ok, r0, BLOCK_R)
        m, l, acc = _fold(m, l, acc, s1, s2, mask)
    out = acc / tl.where(ok, l, 1.0)  # l = 0 past the last row
    tl.store(out_ptr + row, out.to(out_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _store_ds(ds_ptr, ds_off, ok, r0, R, s1, s2, m, dout_l, out, BLOCK_R: tl.constexpr):
    """ds2 = dout p = exp(s1 - m) dout / l, ds1 = ds2 (s2 - out) of one tile, in ds's dtype."""
    r = r0 + tl.arange(0, BLOCK_R)
    mask = ok[:, None] & (r < R)[None, :]
    g2 = tl.exp2((s1 - m[:, None]) * LOG2E) * dout_l[:, None]
    g1 = g2 * (s2 - out[:, None])
    ty = ds_ptr.dtype.element_ty
    ds1_off, ds2_off = ds_off
    tl.store(ds_ptr + (ds1_off[:, None] + r[None, :]), g1.to(ty), mask=mask)
    tl.store(ds_ptr + (ds2_off[:, None] + r[None, :]), g2.to(ty), mask=mask)


@triton.jit
def _ds_kernel(
    s_ptr, dout_ptr, sdo_b, sdo_a, ds_ptr, n_rows, n_batch, A, R,
    BLOCK_ROWS: tl.constexpr, BLOCK_R: tl.constexpr,
):  # fmt: skip
    """ds (2A, b, R) contiguous, in its dtype, from S (b, 2A, R) fp32 and dout (b, A): ds1 of
    row (b, i) at (i b_total + b) R, ds2 at ((A + i) b_total + b) R, so that dq is one GEMM over
    (b, r). Sweep 1 forms the row's statistics, keeping the first tile; sweep 2 writes ds."""
    _, ok, bi, i, s_off = _rows(n_rows, A, R, BLOCK_ROWS)
    m = tl.full((BLOCK_ROWS,), MINUS_INF, dtype=tl.float32)
    l = tl.zeros((BLOCK_ROWS,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_ROWS,), dtype=tl.float32)
    c1, c2, c_mask = _score_tile(s_ptr, s_off, R, ok, 0, BLOCK_R)
    m, l, acc = _fold(m, l, acc, c1, c2, c_mask)
    for r0 in range(BLOCK_R, R, BLOCK_R):
        s1, s2, mask = _score_tile(s_ptr, s_off, R, ok, r0, BLOCK_R)
        m, l, acc = _fold(m, l, acc, s1, s2, mask)
    l = tl.where(ok, l, 1.0)  # l = 0 past the last row
    out = acc / l
    dout = tl.load(dout_ptr + bi * sdo_b + i * sdo_a, mask=ok, other=0.0).to(tl.float32)
    dout_l = dout / l
    ds_off = ((i * n_batch + bi) * R, ((A + i) * n_batch + bi) * R)
    _store_ds(ds_ptr, ds_off, ok, 0, R, c1, c2, m, dout_l, out, BLOCK_R)
    for r0 in range(BLOCK_R, R, BLOCK_R):
        s1, s2, mask = _score_tile(s_ptr, s_off, R, ok, r0, BLOCK_R)
        _store_ds(ds_ptr, ds_off, ok, r0, R, s1, s2, m, dout_l, out, BLOCK_R)


def _row_blocks(R: int) -> dict[str, int]:
    """BLOCK_R (the row, up to MAX_BLOCK_R regions) and BLOCK_ROWS (rows a program owns)."""
    block_r = min(MAX_BLOCK_R, next_pow2(R))
    return {"BLOCK_ROWS": max(1, TILE_ELEMS // block_r), "BLOCK_R": block_r}


def _row_grid(n_rows: int, blocks: dict[str, int]) -> tuple[int]:
    return (triton.cdiv(n_rows, blocks["BLOCK_ROWS"]),)


def _scores(q: Tensor, feat: Tensor) -> Tensor:
    """S[b] = q feat[b]: (b, 2A, R) fp32 for q (2A, F), feat (b, F, R); q is broadcast over the
    batch with a zero stride (read once, no copy)."""
    b = feat.shape[0]
    if feat.dtype == torch.float32:
        return torch.bmm(q.expand(b, *q.shape), feat)
    if feat.device.type != "cpu" and HAS_FP32_OUT_BMM:
        return torch.bmm(q.expand(b, *q.shape), feat, out_dtype=torch.float32)
    # no half-in, fp32-out bmm here: the same products from fp32 copies
    return torch.bmm(q.float().expand(b, *q.shape), feat.float())


@triton_op("zeromamba::slp_project_fwd_triton", mutates_args=())
def slp_project_fwd(feat: Tensor, q1: Tensor, q2: Tensor) -> Tensor:
    """out (b, A) in feat's dtype; the signature of zeromamba::slp_project_fwd."""
    check_dtype("slp_project", feat)
    b, _, R = feat.shape
    A = q1.shape[0]
    out = empty((b, A), feat.dtype, feat.device)
    if out.numel() == 0:
        return out
    s = _scores(torch.cat((q1, q2)), feat)
    blk = _row_blocks(R)
    wrap_triton(_softmax_reduce_kernel)[_row_grid(b * A, blk)](
        s_ptr=s, out_ptr=out, n_rows=b * A, A=A, R=R, **blk, num_warps=NUM_WARPS
    )
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
    if b == 0 or A == 0 or F == 0:  # out ignores feat (A = 0) or no term has a summand
        zeros = torch.zeros((A, F), dtype=q1.dtype, device=dev)
        return torch.zeros_like(feat, memory_format=torch.contiguous_format), zeros, zeros.clone()
    q = torch.cat((q1, q2))
    s = _scores(q, feat)
    ds = empty((2 * A, b, R), feat.dtype, dev)
    blk = _row_blocks(R)
    wrap_triton(_ds_kernel)[_row_grid(b * A, blk)](
        s_ptr=s,
        dout_ptr=dout,
        sdo_b=dout.stride(0),
        sdo_a=dout.stride(1),
        ds_ptr=ds,
        n_rows=b * A,
        n_batch=b,
        A=A,
        R=R,
        **blk,
        num_warps=NUM_WARPS,
    )
    del s
    # dfeat[b] = q^T ds[:, b]: q^T broadcast, ds viewed (b, 2A, R) with strides (R, b R, 1)
    dfeat = torch.bmm(q.t().expand(b, F, 2 * A), ds.permute(1, 0, 2))
    # dq = ds (2A, b R) feat^T: feat's (b, r) is one index only after a copy
    feat_t = feat.permute(1, 0, 2).reshape(F, b * R).t()
    ds2d = ds.view(2 * A, b * R)
    return dfeat, torch.mm(ds2d[:A], feat_t), torch.mm(ds2d[A:], feat_t)
