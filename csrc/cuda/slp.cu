// slp_project (docs/design.md §2.4, §4.6): the softmax-and-reduce kernels around the score GEMMs.
//
// out[b,i] = sum_r softmax_r(s1[b,i,:])[r] * s2[b,i,r],  s1 = q1 . feat, s2 = q2 . feat.
// The score products are GEMMs: the binding (ops_cuda.cpp) runs them on cuBLAS (tensor cores for
// bf16/fp16, tf32 where torch allows it) into a transient fp32 buffer S (b, 2A, R), s1 in rows
// 0..A-1 of a batch and s2 in rows A..2A-1. What is left is per row (b, i) and memory-bound:
//   forward:  out = sum_r p[r] s2[r], p = softmax(s1) (one online-softmax pass over the row);
//   backward: ds2 = dout * p, ds1 = dout * p * (s2 - out), written in the dtype for the
//             gradient GEMMs (dfeat = q^T ds per batch, dq = ds feat^T over all batches).
// One warp owns a row, so nothing is shared between warps: no shared memory, no atomics, the
// same bits on every run.
#include "common.cuh"

namespace zeromamba {
namespace cuda {
namespace slp {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;  // rows per block
// Elements of a row each lane keeps in registers between the backward's two sweeps: rows up to
// 32 * kCached = 256 regions (the model's R = 196 = 14 x 14) are read from memory once.
constexpr int kCached = 8;
constexpr float kMinusInf = -1e30f;  // finite: fast-math exp of (kMinusInf - m) is a clean 0

// Online softmax state of a (part of a) row: running max m, sum of exp(s1 - m) l, and
// acc = sum of exp(s1 - m) * s2.
struct RowStats {
  float m = kMinusInf, l = 0.f, acc = 0.f;

  __device__ __forceinline__ void add(float s1, float s2) {
    const float m_new = fmaxf(m, s1);
    const float scale = __expf(m - m_new);
    const float e = __expf(s1 - m_new);
    l = l * scale + e;
    acc = acc * scale + e * s2;
    m = m_new;
  }

  // Merges the 32 lanes' states; every lane gets the row's.
  __device__ __forceinline__ void warp_merge() {
#pragma unroll
    for (int o = 16; o > 0; o /= 2) {
      const float m_o = __shfl_xor_sync(0xffffffffu, m, o);
      const float l_o = __shfl_xor_sync(0xffffffffu, l, o);
      const float acc_o = __shfl_xor_sync(0xffffffffu, acc, o);
      const float m_new = fmaxf(m, m_o);
      const float a = __expf(m - m_new), b = __expf(m_o - m_new);
      l = l * a + l_o * b;
      acc = acc * a + acc_o * b;
      m = m_new;
    }
  }
};

// The row (b, i) this warp owns; false for the warps past the last row.
struct Row {
  int b, i;
  bool valid;
  __device__ __forceinline__ explicit Row(const SlpScores& p) {
    const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
    valid = row < static_cast<int64_t>(p.batch) * p.n_attr;
    b = valid ? static_cast<int>(row / p.n_attr) : 0;
    i = valid ? static_cast<int>(row % p.n_attr) : 0;
  }
  // s1 and s2 of this row in S (b, 2A, R).
  __device__ __forceinline__ const float* s1(const SlpScores& p) const {
    return p.scores + (static_cast<int64_t>(b) * 2 * p.n_attr + i) * p.R;
  }
  __device__ __forceinline__ const float* s2(const SlpScores& p) const {
    return s1(p) + static_cast<int64_t>(p.n_attr) * p.R;
  }
};

// Grid: ceil(b * A / kWarps) blocks of kWarps warps, one row each. out (b, A) in dtype.
template <typename T>
__global__ void __launch_bounds__(kThreads) slp_fwd_kernel(SlpFwdParams p) {
  const Row row(p);
  if (!row.valid) return;  // whole warps only: no barrier or shuffle mixes rows
  const int lane = threadIdx.x % 32;
  const float* s1 = row.s1(p);
  const float* s2 = row.s2(p);
  RowStats st;
  for (int r = lane; r < p.R; r += 32) st.add(s1[r], s2[r]);
  st.warp_merge();
  if (lane == 0) {
    static_cast<T*>(p.out)[static_cast<int64_t>(row.b) * p.n_attr + row.i] =
        from_float<T>(st.acc / st.l);
  }
}

// Grid as the forward. ds (2A, b, R) in dtype: ds1 of row (b, i) at ((i * b_total + b) * R),
// ds2 at (((A + i) * b_total + b) * R), so that dq is one GEMM over (b, r).
template <typename T>
__global__ void __launch_bounds__(kThreads) slp_bwd_kernel(SlpBwdParams p) {
  const Row row(p);
  if (!row.valid) return;
  const int lane = threadIdx.x % 32;
  const float* s1 = row.s1(p);
  const float* s2 = row.s2(p);
  // Sweep 1: the row's softmax statistics and out, the first kCached elements of every lane
  // kept in registers for sweep 2.
  float c1[kCached], c2[kCached];
  RowStats st;
#pragma unroll
  for (int k = 0; k < kCached; ++k) {
    const int r = lane + 32 * k;
    c1[k] = r < p.R ? s1[r] : kMinusInf;
    c2[k] = r < p.R ? s2[r] : 0.f;
    // Padding stays out of the sums: a row whose scores are all -inf must give NaN, as the
    // reference does, and a padded -1e30 would count as exp(0) = 1 against it.
    if (r < p.R) st.add(c1[k], c2[k]);
  }
  for (int r = lane + 32 * kCached; r < p.R; r += 32) st.add(s1[r], s2[r]);
  st.warp_merge();
  const float out = st.acc / st.l;
  const float lse = st.m + __logf(st.l);
  const float dout = to_float(static_cast<const T*>(p.dout)[static_cast<int64_t>(row.b) * p.n_attr + row.i]);
  // Sweep 2: p = exp(s1 - lse); ds2 = dout p, ds1 = ds2 (s2 - out).
  T* ds1 = static_cast<T*>(p.ds) + (static_cast<int64_t>(row.i) * p.batch + row.b) * p.R;
  T* ds2 = ds1 + static_cast<int64_t>(p.n_attr) * p.batch * p.R;
#pragma unroll
  for (int k = 0; k < kCached; ++k) {
    const int r = lane + 32 * k;
    if (r < p.R) {
      const float g2 = dout * __expf(c1[k] - lse);
      ds1[r] = from_float<T>(g2 * (c2[k] - out));
      ds2[r] = from_float<T>(g2);
    }
  }
  for (int r = lane + 32 * kCached; r < p.R; r += 32) {
    const float g2 = dout * __expf(s1[r] - lse);
    ds1[r] = from_float<T>(g2 * (s2[r] - out));
    ds2[r] = from_float<T>(g2);
  }
}

// Blocks of either kernel; 0 when the grid would exceed gridDim.x's limit.
unsigned row_blocks(const SlpScores& p) {
  const int64_t blocks = (static_cast<int64_t>(p.batch) * p.n_attr + kWarps - 1) / kWarps;
  return blocks > kMaxGridX ? 0u : static_cast<unsigned>(blocks);
}

template <typename T>
cudaError_t launch_fwd(const SlpFwdParams& p) {
  if (row_blocks(p) == 0) return cudaErrorInvalidValue;
  ZM_LAUNCH(slp_fwd_kernel<T>, row_blocks(p), kThreads, 0, p.stream)(p);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_bwd(const SlpBwdParams& p) {
  if (row_blocks(p) == 0) return cudaErrorInvalidValue;
  ZM_LAUNCH(slp_bwd_kernel<T>, row_blocks(p), kThreads, 0, p.stream)(p);
  return cudaGetLastError();
}

// An empty problem launches nothing; R >= 1 is the caller's contract (a softmax needs a region).
bool empty(const SlpScores& p) { return p.batch == 0 || p.n_attr == 0; }

}  // namespace
}  // namespace slp

cudaError_t slp_fwd(const SlpFwdParams& p) {
  if (slp::empty(p)) return cudaSuccess;
  if (p.R < 1) return cudaErrorInvalidValue;
  return dispatch_dtype(p.dtype, [&](auto tag) { return slp::launch_fwd<decltype(tag)>(p); });
}

cudaError_t slp_bwd(const SlpBwdParams& p) {
  if (slp::empty(p)) return cudaSuccess;
  if (p.R < 1) return cudaErrorInvalidValue;
  return dispatch_dtype(p.dtype, [&](auto tag) { return slp::launch_bwd<decltype(tag)>(p); });
}

}  // namespace cuda
}  // namespace zeromamba
