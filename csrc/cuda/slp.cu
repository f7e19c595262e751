// slp_project forward and backward (DESIGN §2.4), fused: the (b, A, R) score tensors and the
// (b, A, F) projected features never reach global memory.
//
// out[b,i] = sum_r softmax_r(s1[b,i,:])[r] * s2[b,i,r],  s1 = q1 . feat, s2 = q2 . feat.
// A block computes a (kAttr x kRegions) tile of s1 and s2 at a time (the dot over F staged
// through shared memory in kFChunk slices) and streams the regions with an online softmax.
// Backward, with p = softmax_r(s1) and out recomputed (log-sum-exp kept per (b, i)):
//   ds2[b,i,r] = dout[b,i] * p[r]
//   ds1[b,i,r] = dout[b,i] * p[r] * (s2[b,i,r] - out[b,i])
//   dq1[i,f]   = sum_{b,r} ds1 * feat[b,f,r]            dq2 likewise with ds2
//   dfeat[b,f,r] = sum_i q1[i,f] * ds1 + q2[i,f] * ds2
// each score tile recomputed where it is needed.
#include <algorithm>

#include "common.cuh"

namespace zeromamba {
namespace cuda {
namespace slp {
namespace {

constexpr int kThreads = 128;
constexpr int kFChunk = 32;
constexpr float kMinusInf = -1e30f;  // finite: fast-math exp of (kMinusInf - m) is a clean 0

template <int kAttr, int kRegions>
struct ScoreSmem {
  static_assert(kAttr * kRegions == kThreads, "one score per thread");
  float q1[kAttr][kFChunk + 1];  // +1: the kAttr rows a warp reads fall in distinct banks
  float q2[kAttr][kFChunk + 1];
  float feat[kFChunk][kRegions];
};

// Thread (i, r) = (tid / kRegions, tid % kRegions) gets s1 = q1[i0 + i] . feat_b[:, r0 + r] and
// s2 likewise (0 outside the A x R range). All threads must call it.
template <typename T, int kAttr, int kRegions>
__device__ __forceinline__ void score_tile(const SlpParams& p, const T* feat_b, int i0, int r0,
                           ScoreSmem<kAttr, kRegions>& sm, float& s1, float& s2) {
  const T* q1 = static_cast<const T*>(p.q1);
  const T* q2 = static_cast<const T*>(p.q2);
  const int i = threadIdx.x / kRegions, r = threadIdx.x % kRegions;
  s1 = 0.f;
  s2 = 0.f;
  for (int f0 = 0; f0 < p.F; f0 += kFChunk) {
    for (int idx = threadIdx.x; idx < kAttr * kFChunk; idx += kThreads) {
      const int ii = idx / kFChunk, ff = idx % kFChunk;
      const bool ok = i0 + ii < p.n_attr && f0 + ff < p.F;
      const int64_t o = static_cast<int64_t>(i0 + ii) * p.F + f0 + ff;
      sm.q1[ii][ff] = ok ? to_float(q1[o]) : 0.f;
      sm.q2[ii][ff] = ok ? to_float(q2[o]) : 0.f;
    }
    for (int idx = threadIdx.x; idx < kFChunk * kRegions; idx += kThreads) {
      const int ff = idx / kRegions, rr = idx % kRegions;
      const bool ok = f0 + ff < p.F && r0 + rr < p.R;
      sm.feat[ff][rr] = ok ? to_float(feat_b[static_cast<int64_t>(f0 + ff) * p.R + r0 + rr]) : 0.f;
    }
    __syncthreads();
#pragma unroll 8
    for (int ff = 0; ff < kFChunk; ++ff) {
      const float fv = sm.feat[ff][r];
      s1 += sm.q1[i][ff] * fv;
      s2 += sm.q2[i][ff] * fv;
    }
    __syncthreads();
  }
}

// Reductions over the kWidth consecutive lanes that hold one attribute's regions.
template <int kWidth>
__device__ __forceinline__ float group_max(float v) {
#pragma unroll
  for (int o = kWidth / 2; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
template <int kWidth>
__device__ __forceinline__ float group_sum(float v) {
#pragma unroll
  for (int o = kWidth / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

constexpr int kFwdAttr = 16, kFwdRegions = 8;

// Grid: ceil(A / kFwdAttr) * b blocks on x (batch-major). Writes out (dtype) and/or, for the backward, the fp32 output
// and log-sum-exp of s1 per (b, i).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    slp_fwd_kernel(SlpParams p, void* out, float* out_f32, float* lse) {
  __shared__ ScoreSmem<kFwdAttr, kFwdRegions> sm;
  const int n_tiles = (p.n_attr + kFwdAttr - 1) / kFwdAttr;
  const int b = static_cast<int>(blockIdx.x / n_tiles);
  const int i0 = static_cast<int>(blockIdx.x % n_tiles) * kFwdAttr;
  const int i = i0 + threadIdx.x / kFwdRegions, rl = threadIdx.x % kFwdRegions;
  const T* feat_b = static_cast<const T*>(p.feat) + static_cast<int64_t>(b) * p.F * p.R;
  float m = kMinusInf, l = 0.f, acc = 0.f;  // running max, sum of exp, sum of exp * s2
  for (int r0 = 0; r0 < p.R; r0 += kFwdRegions) {
    float s1, s2;
    score_tile<T>(p, feat_b, i0, r0, sm, s1, s2);
    const bool valid = r0 + rl < p.R;
    const float m_new = fmaxf(m, group_max<kFwdRegions>(valid ? s1 : kMinusInf));
    const float e = valid ? __expf(s1 - m_new) : 0.f;
    const float scale = __expf(m - m_new);
    l = l * scale + group_sum<kFwdRegions>(e);
    acc = acc * scale + group_sum<kFwdRegions>(e * s2);
    m = m_new;
  }
  if (rl == 0 && i < p.n_attr) {
    const int64_t o = static_cast<int64_t>(b) * p.n_attr + i;
    const float v = acc / l;
    if (out != nullptr) static_cast<T*>(out)[o] = from_float<T>(v);
    if (out_f32 != nullptr) out_f32[o] = v;
    if (lse != nullptr) lse[o] = m + __logf(l);
  }
}

constexpr int kBwdAttr = 8, kBwdRegions = 16;

// Workspace layout of the backward (floats).
struct BwdLayout {
  int64_t out, lse, dq1, dq2, dfeat, total;
  __host__ __device__ explicit BwdLayout(const SlpParams& p) {
    const int64_t bA = static_cast<int64_t>(p.batch) * p.n_attr;
    const int64_t AF = static_cast<int64_t>(p.n_attr) * p.F;
    out = 0;
    lse = bA;
    dq1 = 2 * bA;
    dq2 = dq1 + AF;
    dfeat = dq2 + AF;
    total = dfeat + static_cast<int64_t>(p.batch) * p.F * p.R;
  }
};

// The (kBwdAttr x kBwdRegions) tile of ds1 and ds2 of batch b into shared memory.
template <typename T>
__device__ __forceinline__ void grad_score_tile(const SlpBwdParams& p, const BwdLayout& ws, const T* feat_b, int b,
                                int i0, int r0, ScoreSmem<kBwdAttr, kBwdRegions>& sm,
                                float (&ds1)[kBwdAttr][kBwdRegions],
                                float (&ds2)[kBwdAttr][kBwdRegions]) {
  float s1, s2;
  score_tile<T>(p, feat_b, i0, r0, sm, s1, s2);
  const int ii = threadIdx.x / kBwdRegions, rl = threadIdx.x % kBwdRegions;
  const int i = i0 + ii;
  float g1 = 0.f, g2 = 0.f;
  if (i < p.n_attr && r0 + rl < p.R) {
    const int64_t o = static_cast<int64_t>(b) * p.n_attr + i;
    const float dout = to_float(static_cast<const T*>(p.dout)[o]);
    const float prob = __expf(s1 - p.workspace[ws.lse + o]);
    g2 = dout * prob;
    g1 = g2 * (s2 - p.workspace[ws.out + o]);
  }
  ds1[ii][rl] = g1;
  ds2[ii][rl] = g2;
  __syncthreads();
}

// dq1, dq2. Grid (ceil(A / kBwdAttr), batch splits <= 65,535): a block runs batches blockIdx.y,
// blockIdx.y + gridDim.y, ...; with one split (deterministic) it owns its rows of dq.
template <typename T>
__global__ void __launch_bounds__(kThreads) slp_dq_kernel(SlpBwdParams p) {
  __shared__ ScoreSmem<kBwdAttr, kBwdRegions> sm;
  __shared__ float ds1[kBwdAttr][kBwdRegions], ds2[kBwdAttr][kBwdRegions];
  const BwdLayout ws(p);
  const int i0 = blockIdx.x * kBwdAttr;
  const bool atomic = gridDim.y > 1;
  for (int b = blockIdx.y; b < p.batch; b += gridDim.y) {
    const T* feat_b = static_cast<const T*>(p.feat) + static_cast<int64_t>(b) * p.F * p.R;
    for (int r0 = 0; r0 < p.R; r0 += kBwdRegions) {
      grad_score_tile<T>(p, ws, feat_b, b, i0, r0, sm, ds1, ds2);
      const int nr = min(kBwdRegions, p.R - r0);
      for (int idx = threadIdx.x; idx < kBwdAttr * p.F; idx += kThreads) {
        const int ii = idx / p.F, f = idx - ii * p.F;
        if (i0 + ii >= p.n_attr) break;  // idx only grows
        const T* feat_f = feat_b + static_cast<int64_t>(f) * p.R + r0;
        float v1 = 0.f, v2 = 0.f;
        for (int rr = 0; rr < nr; ++rr) {
          const float fv = to_float(feat_f[rr]);
          v1 += ds1[ii][rr] * fv;
          v2 += ds2[ii][rr] * fv;
        }
        const int64_t o = static_cast<int64_t>(i0 + ii) * p.F + f;
        if (atomic) {
          atomicAdd(p.workspace + ws.dq1 + o, v1);
          atomicAdd(p.workspace + ws.dq2 + o, v2);
        } else {
          p.workspace[ws.dq1 + o] += v1;
          p.workspace[ws.dq2 + o] += v2;
        }
      }
      __syncthreads();  // ds1 / ds2 are rewritten by the next tile
    }
  }
}

// dfeat. Grid: ceil(R / kBwdRegions) * b blocks on x (batch-major): a block owns dfeat[b, :, its regions] and runs over
// every attribute tile, accumulating in its fp32 workspace slice, then stores it once.
template <typename T>
__global__ void __launch_bounds__(kThreads) slp_dfeat_kernel(SlpBwdParams p) {
  __shared__ ScoreSmem<kBwdAttr, kBwdRegions> sm;
  __shared__ float ds1[kBwdAttr][kBwdRegions], ds2[kBwdAttr][kBwdRegions];
  const BwdLayout ws(p);
  const int n_tiles = (p.R + kBwdRegions - 1) / kBwdRegions;
  const int b = static_cast<int>(blockIdx.x / n_tiles);
  const int r0 = static_cast<int>(blockIdx.x % n_tiles) * kBwdRegions;
  const int nr = min(kBwdRegions, p.R - r0);
  const T* feat_b = static_cast<const T*>(p.feat) + static_cast<int64_t>(b) * p.F * p.R;
  const T* q1 = static_cast<const T*>(p.q1);
  const T* q2 = static_cast<const T*>(p.q2);
  float* acc = p.workspace + ws.dfeat + static_cast<int64_t>(b) * p.F * p.R;
  for (int i0 = 0; i0 < p.n_attr; i0 += kBwdAttr) {
    grad_score_tile<T>(p, ws, feat_b, b, i0, r0, sm, ds1, ds2);
    const int na = min(kBwdAttr, p.n_attr - i0);
    for (int idx = threadIdx.x; idx < p.F * kBwdRegions; idx += kThreads) {
      const int f = idx / kBwdRegions, rr = idx % kBwdRegions;
      if (rr >= nr) continue;
      float v = 0.f;
      for (int ii = 0; ii < na; ++ii) {
        const int64_t o = static_cast<int64_t>(i0 + ii) * p.F + f;
        v += to_float(q1[o]) * ds1[ii][rr] + to_float(q2[o]) * ds2[ii][rr];
      }
      const int64_t o = static_cast<int64_t>(f) * p.R + r0 + rr;
      acc[o] = i0 == 0 ? v : acc[o] + v;  // the same thread owns (f, rr) for every tile
    }
    __syncthreads();
  }
  for (int idx = threadIdx.x; idx < p.F * kBwdRegions; idx += kThreads) {
    const int f = idx / kBwdRegions, rr = idx % kBwdRegions;
    if (rr >= nr) continue;
    const int64_t o = static_cast<int64_t>(f) * p.R + r0 + rr;
    static_cast<T*>(p.dfeat)[static_cast<int64_t>(b) * p.F * p.R + o] = from_float<T>(acc[o]);
  }
}

template <typename T>
__global__ void store_dq_kernel(SlpBwdParams p) {
  const BwdLayout ws(p);
  const int64_t n = static_cast<int64_t>(p.n_attr) * p.F;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    static_cast<T*>(p.dq1)[i] = from_float<T>(p.workspace[ws.dq1 + i]);
    static_cast<T*>(p.dq2)[i] = from_float<T>(p.workspace[ws.dq2 + i]);
  }
}

int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Blocks of the forward kernel; 0 when the grid would exceed gridDim.x's limit.
unsigned fwd_blocks(const SlpParams& p) {
  const int64_t blocks = cdiv(p.n_attr, kFwdAttr) * p.batch;
  return blocks > kMaxGridX ? 0u : static_cast<unsigned>(blocks);
}

template <typename T>
cudaError_t launch_fwd(const SlpFwdParams& p) {
  if (fwd_blocks(p) == 0) return cudaErrorInvalidValue;
  ZM_LAUNCH(slp_fwd_kernel<T>, fwd_blocks(p), kThreads, 0, p.stream)(p, p.out, nullptr, nullptr);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_bwd(const SlpBwdParams& p) {
  const BwdLayout ws(p);
  const int64_t dfeat_blocks = cdiv(p.R, kBwdRegions) * p.batch;
  if (fwd_blocks(p) == 0 || dfeat_blocks > kMaxGridX) return cudaErrorInvalidValue;
  ZM_LAUNCH(slp_fwd_kernel<T>, fwd_blocks(p), kThreads, 0, p.stream)(
      p, nullptr, p.workspace + ws.out, p.workspace + ws.lse);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  err = cudaMemsetAsync(p.workspace + ws.dq1, 0, 2 * sizeof(float) * p.n_attr * p.F, p.stream);
  if (err != cudaSuccess) return err;
  const int splits = p.deterministic ? 1 : std::min(p.batch, kMaxGridY);
  const dim3 dq_grid(static_cast<unsigned>(cdiv(p.n_attr, kBwdAttr)), splits);
  ZM_LAUNCH(slp_dq_kernel<T>, dq_grid, kThreads, 0, p.stream)(p);
  if ((err = cudaGetLastError()) != cudaSuccess) return err;
  ZM_LAUNCH(slp_dfeat_kernel<T>, static_cast<unsigned>(dfeat_blocks), kThreads, 0, p.stream)(p);
  if ((err = cudaGetLastError()) != cudaSuccess) return err;
  const int64_t n = static_cast<int64_t>(p.n_attr) * p.F;
  const unsigned store_blocks = static_cast<unsigned>(std::min<int64_t>(cdiv(n, 256), 4096));
  ZM_LAUNCH(store_dq_kernel<T>, store_blocks, 256, 0, p.stream)(p);
  return cudaGetLastError();
}

}  // namespace
}  // namespace slp

int64_t slp_bwd_workspace_floats(const SlpBwdParams& p) { return slp::BwdLayout(p).total; }

cudaError_t slp_fwd(const SlpFwdParams& p) {
  if (p.batch == 0 || p.n_attr == 0) return cudaSuccess;
  switch (p.dtype) {
    case DType::kFloat32:
      return slp::launch_fwd<float>(p);
    case DType::kFloat16:
      return slp::launch_fwd<__half>(p);
    case DType::kBFloat16:
      return slp::launch_fwd<__nv_bfloat16>(p);
  }
  return cudaErrorInvalidValue;
}

cudaError_t slp_bwd(const SlpBwdParams& p) {
  if (p.F == 0) return cudaSuccess;  // every gradient is empty
  const size_t elem = p.dtype == DType::kFloat32 ? 4 : 2;  // fp16 and bf16: 2 bytes
  if (p.n_attr == 0) {  // out does not depend on feat
    return cudaMemsetAsync(p.dfeat, 0, elem * p.batch * p.F * p.R, p.stream);
  }
  if (p.batch == 0) {  // dq = 0; dfeat is empty
    const size_t bytes = elem * p.n_attr * p.F;
    cudaError_t err = cudaMemsetAsync(p.dq1, 0, bytes, p.stream);
    return err == cudaSuccess ? cudaMemsetAsync(p.dq2, 0, bytes, p.stream) : err;
  }
  switch (p.dtype) {
    case DType::kFloat32:
      return slp::launch_bwd<float>(p);
    case DType::kFloat16:
      return slp::launch_bwd<__half>(p);
    case DType::kBFloat16:
      return slp::launch_bwd<__nv_bfloat16>(p);
  }
  return cudaErrorInvalidValue;
}

}  // namespace cuda
}  // namespace zeromamba
