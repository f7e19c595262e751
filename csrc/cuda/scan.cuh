// The chunked selective-scan kernels behind selective_scan and the fused four-way ss2d_scan.
//
// One thread block scans one sequence at a time: a (batch, channel, direction) triple. The
// sequence is cut into tiles of kTile steps; thread i of the block owns kItems consecutive steps
// of the tile. Per state index n, every thread folds its steps into one affine map
// h -> a*h + b (a = prod exp(dt*A), b = the state reached from h = 0), a block-wide scan of these
// maps gives each thread the state entering its steps, and a second sweep over its steps
// produces the states themselves. The state leaving a tile is carried into the next tile in
// registers, so any length works with the same code.
//
// ss2d: direction k reads its inputs at the spatial position of its step t (DESIGN §2.2)
// directly, so the cross-scan copies never exist; the forward block owns one (b, c) plane, runs
// the four directions one after another and adds their outputs into one fp32 plane (shared
// memory when it fits, else global workspace), written once at the end.
//
// Backward (per sequence), with g_t = dL/dh_t flowing backwards:
//   g_t      = C_t * dy_t + a_{t+1} * g_{t+1},  a_t = exp(dt_t * A)      (g after the end = 0)
//   dB_t    += g_t * dt_t * u_t                  (summed over the channels sharing B)
//   dC_t    += dy_t * h_t
//   du_t     = D * dy_t + sum_n g_t * dt_t * B_t
//   d(dt_t)  = sum_n g_t * (A * a_t * h_{t-1} + B_t * u_t)
//   dA      += g_t * dt_t * a_t * h_{t-1}
//   dD      += dy_t * u_t
//   ddelta_t = d(dt_t) * sigmoid(z_t) with z_t = delta_t + bias (softplus; 1 above 20 or without)
//   ddelta_bias += ddelta_t
// The reverse recurrence is scanned in the variable q_t = a_t * g_t (what step t passes to step
// t-1): q_t = a_t * (C_t dy_t + q_{t+1}), an affine map of q_{t+1}, so the same block scan runs
// from the last thread to the first. Tiles are visited last to first; the forward states a tile
// needs are recomputed from its entering state, which a first forward sweep stored per tile.
#pragma once

#include "common.cuh"

namespace zeromamba {
namespace cuda {
namespace scan {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kItems = 8;
constexpr int kTile = kThreads * kItems;
// An fp32 (H*W) plane up to this many elements is accumulated in shared memory (96 KiB).
constexpr int kAccSmemMaxFloats = 24576;

// Spatial position (h, w) of step t of direction dir over an H x W map (DESIGN §2.2); with
// H = 1 and W = L it is the identity t -> (0, t) of a plain sequence.
__device__ __forceinline__ void step_position(int dir, int t, int H, int W, int& h, int& w) {
  if (dir >= 2) t = H * W - 1 - t;
  if (dir & 1) {
    w = t / H;
    h = t - w * H;
  } else {
    h = t / W;
    w = t - h * W;
  }
}

// The per-sequence inputs of one thread's kItems steps of a tile.
template <typename T>
struct Steps {
  int h[kItems], w[kItems];
  float u[kItems], dt[kItems], z[kItems];
  bool valid[kItems];

  // t0: the tile's first step, 64-bit so that the last tile of a sequence near 2^31 steps
  // does not overflow.
  __device__ __forceinline__ void load(const ScanParams& p, int dir, int64_t t0, const T* u_seq,
                                       const T* delta_seq, float bias) {
#pragma unroll
    for (int e = 0; e < kItems; ++e) {
      const int64_t t64 = t0 + static_cast<int64_t>(threadIdx.x) * kItems + e;
      valid[e] = t64 < static_cast<int64_t>(p.H) * p.W;
      const int t = valid[e] ? static_cast<int>(t64) : 0;
      h[e] = 0;
      w[e] = 0;
      u[e] = 0.f;
      dt[e] = 0.f;  // exp(0 * A) = 1 and dt * B * u = 0: padding steps leave the state alone
      z[e] = 0.f;
      if (valid[e]) {
        step_position(dir, t, p.H, p.W, h[e], w[e]);
        u[e] = to_float(u_seq[h[e] * p.u_sh + w[e] * p.u_sw]);
        z[e] = to_float(delta_seq[h[e] * p.dl_sh + w[e] * p.dl_sw]) + bias;
        dt[e] = p.delta_softplus ? softplus(z[e]) : z[e];
      }
    }
  }

  __device__ __forceinline__ int64_t bc_offset(const ScanParams& p, int e) const {
    return h[e] * p.bc_sh + w[e] * p.bc_sw;
  }
  __device__ __forceinline__ int64_t u_offset(const ScanParams& p, int e) const {
    return h[e] * p.u_sh + w[e] * p.u_sw;
  }
};

// The sequence a block scans: (batch b, channel c, direction dir).
template <typename T>
struct Sequence {
  int row, group;  // row of A / D / delta_bias; group of B / C
  const T* u;
  const T* delta;
  const T* B;
  const T* C;
  float D, bias;

  __device__ __forceinline__ Sequence(const ScanParams& p, int b, int c, int dir) {
    row = dir * p.channels + c;
    group = p.n_dir == 4 ? dir : c / (p.channels / p.groups);
    u = static_cast<const T*>(p.u) + b * p.u_sb + c * p.u_sc;
    delta = static_cast<const T*>(p.delta) + b * p.dl_sb + dir * p.dl_sk + c * p.dl_sc;
    B = static_cast<const T*>(p.B) + b * p.bc_sb + group * p.bc_sg;
    C = static_cast<const T*>(p.C) + b * p.bc_sb + group * p.bc_sg;
    D = p.D != nullptr ? p.D[row] : 0.f;
    bias = p.delta_bias != nullptr ? p.delta_bias[row] : 0.f;
  }
};

// Grid: channels * batch blocks on x (block x scans plane (b, c) = (x / channels, x % channels);
// gridDim.y would cap the batch at 65,535). Dynamic shared memory: H*W floats when the ss2d plane accumulates
// there (acc_in_smem), else none.
template <typename T, int kMaxN>
__global__ void __launch_bounds__(kThreads)
    scan_fwd_kernel(ScanFwdParams p, bool acc_in_smem) {
  ZM_DYNAMIC_SHARED(float, acc_smem);
  __shared__ Affine scan_smem[kWarps];
  const int c = static_cast<int>(blockIdx.x % p.channels);
  const int b = static_cast<int>(blockIdx.x / p.channels);
  const int L = p.H * p.W, N = p.d_state;
  const bool four = p.n_dir == 4;
  float* acc = nullptr;
  if (four) {
    acc = acc_in_smem ? acc_smem : p.workspace + (static_cast<int64_t>(b) * p.channels + c) * L;
  }
  const int64_t y_base = b * p.u_sb + c * p.u_sc;

  for (int dir = 0; dir < p.n_dir; ++dir) {
    const Sequence<T> seq(p, b, c, dir);
    float A2[kMaxN], carry[kMaxN];
#pragma unroll
    for (int n = 0; n < kMaxN; ++n) {
      A2[n] = n < N ? p.A[seq.row * N + n] * kLog2e : 0.f;  // exp(dt*A) = exp2(dt*A*log2 e)
      carry[n] = 0.f;
    }
    for (int64_t t0 = 0; t0 < L; t0 += kTile) {
      Steps<T> s;
      s.load(p, dir, t0, seq.u, seq.delta, seq.bias);
      float y[kItems];
#pragma unroll
      for (int e = 0; e < kItems; ++e) y[e] = seq.D * s.u[e];
#pragma unroll
      for (int n = 0; n < kMaxN; ++n) {
        if (n < N) {
          float a[kItems], bu[kItems];
          Affine agg = {1.f, 0.f};
#pragma unroll
          for (int e = 0; e < kItems; ++e) {
            const float Bv = s.valid[e] ? to_float(seq.B[n * p.bc_sn + s.bc_offset(p, e)]) : 0.f;
            a[e] = exp2f(s.dt[e] * A2[n]);
            bu[e] = s.dt[e] * Bv * s.u[e];
            agg = compose(agg, {a[e], bu[e]});
          }
          Affine total;
          const Affine before = block_exclusive_scan<kThreads, false>(agg, total, scan_smem);
          float h = before.a * carry[n] + before.b;
#pragma unroll
          for (int e = 0; e < kItems; ++e) {
            h = a[e] * h + bu[e];
            if (s.valid[e]) y[e] += to_float(seq.C[n * p.bc_sn + s.bc_offset(p, e)]) * h;
          }
          carry[n] = total.a * carry[n] + total.b;
        }
      }
#pragma unroll
      for (int e = 0; e < kItems; ++e) {
        if (!s.valid[e]) continue;
        if (four) {
          const int pos = s.h[e] * p.W + s.w[e];
          acc[pos] = dir == 0 ? y[e] : acc[pos] + y[e];  // each direction visits pos once
        } else {
          store_as<T>(p.y, y_base + s.u_offset(p, e), y[e], p.y_float32);
        }
      }
    }
    __syncthreads();  // the next direction reads acc at positions other threads wrote
  }
  if (four) {
    for (int i = threadIdx.x; i < L; i += kThreads) {
      const int h = i / p.W, w = i - h * p.W;
      store_as<T>(p.y, y_base + h * p.u_sh + w * p.u_sw, acc[i], p.y_float32);
    }
  }
}

// How the backward kernel maps blocks to sequences and where its results go; computed on the
// host (scan_bwd.cu) and passed by value. The grid has grid_x * batch blocks on x; block
// b * grid_x + x runs n_jobs sequences of batch b; job j scans channel c = x*c_blk + j*c_job in
// direction dir = x*k_blk + j*k_job.
struct BwdPlan {
  int grid_x, n_jobs, c_blk, c_job, k_blk, k_job;
  int n_tiles;
  // du/dx: 0 = each job stores its sequence's du (selective_scan: one job per channel);
  // 1 = the block's jobs are the four directions of one (b, c) plane, summed in an fp32 plane
  //     (shared memory when acc_in_smem, else workspace at dx_off), written once at the end;
  // 2 = each job stores its direction's part into the workspace slice (b, dir, c) at dx_off;
  //     a second kernel adds the four parts in a fixed order (deterministic ss2d).
  int dx_mode;
  bool acc_in_smem;
  bool bc_atomic;  // dB/dC: fp32 atomics (several blocks share a group) or plain adds (one does)
  int64_t dbc_off, dbc_size;  // dB then dC, fp32 (b, groups, N, H*W), zero-initialised
  int64_t param_off;          // per (b, row): N dA partials, dD, ddelta_bias
  int64_t carry_off;          // per block: the state entering each tile
  int64_t dx_off;
  int64_t total;
  int smem_bytes;
};

template <typename T, int kMaxN>
__global__ void __launch_bounds__(kThreads) scan_bwd_kernel(ScanBwdParams p, BwdPlan plan) {
  ZM_DYNAMIC_SHARED(float, acc_smem);
  __shared__ Affine scan_smem[kWarps];
  __shared__ float sum_smem[kWarps];
  const int x = static_cast<int>(blockIdx.x % plan.grid_x);
  const int b = static_cast<int>(blockIdx.x / plan.grid_x);
  const int L = p.H * p.W, N = p.d_state, rows = p.n_dir * p.channels;
  float* carry_ws =
      p.workspace + plan.carry_off + static_cast<int64_t>(blockIdx.x) * plan.n_tiles * N;
  float* dB_ws = p.workspace + plan.dbc_off;
  float* dC_ws = dB_ws + plan.dbc_size;
  float* acc = nullptr;
  if (plan.dx_mode == 1) {
    acc = plan.acc_in_smem
              ? acc_smem
              : p.workspace + plan.dx_off + (static_cast<int64_t>(b) * p.channels + x) * L;
  }

  for (int j = 0; j < plan.n_jobs; ++j) {
    const int c = x * plan.c_blk + j * plan.c_job, dir = x * plan.k_blk + j * plan.k_job;
    const Sequence<T> seq(p, b, c, dir);
    const int64_t u_base = b * p.u_sb + c * p.u_sc;
    const int64_t dl_base = b * p.dl_sb + dir * p.dl_sk + c * p.dl_sc;
    const int64_t bc_base = ((static_cast<int64_t>(b) * p.groups + seq.group) * N) * L;
    float A[kMaxN], A2[kMaxN], carry[kMaxN];
#pragma unroll
    for (int n = 0; n < kMaxN; ++n) {
      A[n] = n < N ? p.A[seq.row * N + n] : 0.f;
      A2[n] = A[n] * kLog2e;
      carry[n] = 0.f;
    }

    // Sweep 1: the state entering every tile.
    for (int tile = 0; tile < plan.n_tiles; ++tile) {
      if (threadIdx.x == 0) {
#pragma unroll
        for (int n = 0; n < kMaxN; ++n) {
          if (n < N) carry_ws[tile * N + n] = carry[n];
        }
      }
      Steps<T> s;
      s.load(p, dir, static_cast<int64_t>(tile) * kTile, seq.u, seq.delta, seq.bias);
#pragma unroll
      for (int n = 0; n < kMaxN; ++n) {
        if (n < N) {
          Affine agg = {1.f, 0.f};
#pragma unroll
          for (int e = 0; e < kItems; ++e) {
            const float Bv = s.valid[e] ? to_float(seq.B[n * p.bc_sn + s.bc_offset(p, e)]) : 0.f;
            agg = compose(agg, {exp2f(s.dt[e] * A2[n]), s.dt[e] * Bv * s.u[e]});
          }
          Affine total;
          block_exclusive_scan<kThreads, false>(agg, total, scan_smem);
          carry[n] = total.a * carry[n] + total.b;
        }
      }
    }
    __syncthreads();  // carry_ws written by thread 0 is read by all

    // Sweep 2: tiles last to first.
    float q_carry[kMaxN], dA_part[kMaxN];
#pragma unroll
    for (int n = 0; n < kMaxN; ++n) q_carry[n] = dA_part[n] = 0.f;
    float dD_part = 0.f, dbias_part = 0.f;
    for (int tile = plan.n_tiles - 1; tile >= 0; --tile) {
      Steps<T> s;
      s.load(p, dir, static_cast<int64_t>(tile) * kTile, seq.u, seq.delta, seq.bias);
      float dy[kItems], du[kItems], ddt[kItems];
#pragma unroll
      for (int e = 0; e < kItems; ++e) {
        dy[e] = s.valid[e] ? load_as<T>(p.dy, u_base + s.u_offset(p, e), p.dy_float32) : 0.f;
        du[e] = seq.D * dy[e];
        ddt[e] = 0.f;
      }
#pragma unroll
      for (int n = 0; n < kMaxN; ++n) {
        if (n < N) {
          float a[kItems], Bv[kItems], h_prev[kItems], cdy[kItems];
          Affine agg = {1.f, 0.f};
#pragma unroll
          for (int e = 0; e < kItems; ++e) {
            Bv[e] = s.valid[e] ? to_float(seq.B[n * p.bc_sn + s.bc_offset(p, e)]) : 0.f;
            cdy[e] = s.valid[e] ? to_float(seq.C[n * p.bc_sn + s.bc_offset(p, e)]) * dy[e] : 0.f;
            a[e] = exp2f(s.dt[e] * A2[n]);
            agg = compose(agg, {a[e], s.dt[e] * Bv[e] * s.u[e]});
          }
          Affine total;
          const Affine before = block_exclusive_scan<kThreads, false>(agg, total, scan_smem);
          float h = before.a * carry_ws[tile * N + n] + before.b;
#pragma unroll
          for (int e = 0; e < kItems; ++e) {
            h_prev[e] = h;
            h = a[e] * h + s.dt[e] * Bv[e] * s.u[e];
          }
          // Reverse: this thread's steps map q entering from the right to q leaving left.
          Affine ragg = {1.f, 0.f};
#pragma unroll
          for (int e = kItems - 1; e >= 0; --e) ragg = compose(ragg, {a[e], a[e] * cdy[e]});
          Affine rtotal;
          const Affine after = block_exclusive_scan<kThreads, true>(ragg, rtotal, scan_smem);
          float q = after.a * q_carry[n] + after.b;
#pragma unroll
          for (int e = kItems - 1; e >= 0; --e) {
            const float g = cdy[e] + q;
            q = a[e] * g;
            if (s.valid[e]) {
              const float h_e = a[e] * h_prev[e] + s.dt[e] * Bv[e] * s.u[e];
              const int64_t i = bc_base + static_cast<int64_t>(n) * L + s.h[e] * p.W + s.w[e];
              const float dB = g * s.dt[e] * s.u[e], dC = dy[e] * h_e;
              if (plan.bc_atomic) {
                atomicAdd(dB_ws + i, dB);
                atomicAdd(dC_ws + i, dC);
              } else {
                dB_ws[i] += dB;
                dC_ws[i] += dC;
              }
              du[e] += g * s.dt[e] * Bv[e];
              const float g_ah = g * a[e] * h_prev[e];
              ddt[e] += A[n] * g_ah + g * Bv[e] * s.u[e];
              dA_part[n] += s.dt[e] * g_ah;
            }
          }
          q_carry[n] = rtotal.a * q_carry[n] + rtotal.b;
        }
      }
#pragma unroll
      for (int e = 0; e < kItems; ++e) {
        if (!s.valid[e]) continue;
        const float dz = p.delta_softplus ? ddt[e] * softplus_grad(s.z[e]) : ddt[e];
        static_cast<T*>(p.ddelta)[dl_base + s.h[e] * p.dl_sh + s.w[e] * p.dl_sw] =
            from_float<T>(dz);
        dbias_part += dz;
        dD_part += dy[e] * s.u[e];
        const int pos = s.h[e] * p.W + s.w[e];
        if (plan.dx_mode == 0) {
          static_cast<T*>(p.du)[u_base + s.u_offset(p, e)] = from_float<T>(du[e]);
        } else if (plan.dx_mode == 1) {
          acc[pos] = j == 0 ? du[e] : acc[pos] + du[e];  // jobs = directions 0..3
        } else {
          const int64_t slice = (static_cast<int64_t>(b) * 4 + dir) * p.channels + c;
          p.workspace[plan.dx_off + slice * L + pos] = du[e];
        }
      }
    }

    // Per-(b, row) partial sums of the parameter gradients; a second kernel adds them over b in
    // a fixed order. block_sum's barriers also order this job's acc / dB writes before the next.
    float* part = p.workspace + plan.param_off + (static_cast<int64_t>(b) * rows + seq.row) * (N + 2);
#pragma unroll
    for (int n = 0; n < kMaxN; ++n) {
      if (n < N) {
        const float v = block_sum<kThreads>(dA_part[n], sum_smem);
        if (threadIdx.x == 0) part[n] = v;
      }
    }
    const float dD = block_sum<kThreads>(dD_part, sum_smem);
    const float dbias = block_sum<kThreads>(dbias_part, sum_smem);
    if (threadIdx.x == 0) {
      part[N] = dD;
      part[N + 1] = dbias;
    }
  }
  if (plan.dx_mode == 1) {
    const int64_t u_base = b * p.u_sb + x * p.u_sc;
    for (int i = threadIdx.x; i < L; i += kThreads) {
      const int h = i / p.W, w = i - h * p.W;
      static_cast<T*>(p.du)[u_base + h * p.u_sh + w * p.u_sw] = from_float<T>(acc[i]);
    }
  }
}

// fp32 (b, groups, N, H*W) workspace -> dB and dC in their layout and dtype.
template <typename T>
__global__ void bc_grad_store_kernel(ScanBwdParams p, BwdPlan plan) {
  const int L = p.H * p.W;
  const float* dB_ws = p.workspace + plan.dbc_off;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < plan.dbc_size;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t r = i;
    const int pos = static_cast<int>(r % L);
    r /= L;
    const int n = static_cast<int>(r % p.d_state);
    r /= p.d_state;
    const int g = static_cast<int>(r % p.groups);
    const int64_t b = r / p.groups;
    const int h = pos / p.W, w = pos - h * p.W;
    const int64_t o = b * p.bc_sb + g * p.bc_sg + n * p.bc_sn + h * p.bc_sh + w * p.bc_sw;
    static_cast<T*>(p.dB)[o] = from_float<T>(dB_ws[i]);
    static_cast<T*>(p.dC)[o] = from_float<T>(dB_ws[plan.dbc_size + i]);
  }
}

// dx_mode 2: the four directions' parts of dx added in order.
template <typename T>
__global__ void dx_merge_kernel(ScanBwdParams p, BwdPlan plan) {
  const int L = p.H * p.W;
  const int64_t plane = static_cast<int64_t>(p.channels) * L;
  const float* parts = p.workspace + plan.dx_off;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < p.batch * plane;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = i / plane, cl = i - b * plane;
    const int c = static_cast<int>(cl / L), pos = static_cast<int>(cl - static_cast<int64_t>(c) * L);
    float v = 0.f;
#pragma unroll
    for (int k = 0; k < 4; ++k) v += parts[(b * 4 + k) * plane + cl];
    const int h = pos / p.W, w = pos - h * p.W;
    static_cast<T*>(p.du)[b * p.u_sb + c * p.u_sc + h * p.u_sh + w * p.u_sw] = from_float<T>(v);
  }
}

}  // namespace scan
}  // namespace cuda
}  // namespace zeromamba
