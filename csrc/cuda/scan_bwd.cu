// Launch of the scan backward (selective_scan and ss2d_scan): see scan.cuh for the design.
#include <algorithm>

#include "scan.cuh"

namespace zeromamba {
namespace cuda {
namespace scan {
namespace {

constexpr int kSmallThreads = 256;

int grid_for(int64_t n) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((n + 255) / 256, 8192)));
}

// Channels per block of the deterministic channel-first ss2d plan: the channels' dB/dC add into
// the block's own slice in a fixed order, and the slices are summed in order afterwards.
constexpr int kDetChannels = 16;

template <int kMaxN>
BwdPlan make_plan(const ScanBwdParams& p) {
  using Traits = ScanTraits<kMaxN>;
  BwdPlan plan{};
  const int64_t L = static_cast<int64_t>(p.H) * p.W, N = p.d_state;
  const int64_t rows = static_cast<int64_t>(p.n_dir) * p.channels;
  plan.lanes_on_channels = lanes_on_channels(p);
  plan.chains = plan.lanes_on_channels ? Traits::kLaneChannels : 1;
  const int tile = plan.lanes_on_channels ? Traits::kLaneTile : Traits::kTile;
  plan.n_tiles = static_cast<int>((L + tile - 1) / tile);
  plan.bc_slices = 1;
  if (p.n_dir == 1) {
    const int per_group = p.channels / p.groups;
    // deterministic: block (b, g) runs the channels of group g and owns dB/dC of (b, g)
    plan.c_blk = p.deterministic ? per_group : 1;
    plan.bc_atomic = !p.deterministic && per_group > 1;
    plan.dx_mode = DxMode::kDirect;
  } else {  // block (b, x) runs the four directions of channels x*c_blk .. x*c_blk + c_blk - 1
    plan.c_blk = plan.lanes_on_channels ? plan.chains : p.deterministic ? kDetChannels : 1;
    plan.dx_mode = DxMode::kPlane;
    plan.acc_in_smem = !plan.lanes_on_channels && L <= kAccSmemMaxFloats;
    const int blocks_per_b = (p.channels + plan.c_blk - 1) / plan.c_blk;
    plan.bc_atomic = !p.deterministic && blocks_per_b > 1;
    if (p.deterministic) plan.bc_slices = blocks_per_b;  // one dB/dC slice per block
  }
  plan.grid_x = (p.channels + plan.c_blk - 1) / plan.c_blk;
  plan.n_jobs = (plan.lanes_on_channels ? 1 : plan.c_blk) * p.n_dir;
  plan.dbc_off = 0;
  plan.dbc_size = plan.bc_slices * p.batch * static_cast<int64_t>(p.groups) * N * L;
  plan.param_off = 2 * plan.dbc_size;
  plan.carry_off = plan.param_off + p.batch * rows * (N + 2);
  plan.dx_off = plan.carry_off +
                static_cast<int64_t>(plan.grid_x) * p.batch * plan.n_tiles * N * plan.chains;
  const int64_t dx_size = plan.dx_mode == DxMode::kPlane && !plan.acc_in_smem ? u_extent(p) : 0;
  plan.total = plan.dx_off + dx_size;
  plan.smem_bytes = plan.dx_mode == DxMode::kPlane && plan.acc_in_smem ? static_cast<int>(L * sizeof(float)) : 0;
  return plan;
}

// Per-(b, row) partials -> dA, dD, ddelta_bias, adding over b in order.
__global__ void param_grad_reduce_kernel(ScanBwdParams p, BwdPlan plan) {
  const int N = p.d_state, rows = p.n_dir * p.channels;
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= rows * (N + 2)) return;
  const int row = i / (N + 2), k = i - row * (N + 2);
  const float* part = p.workspace + plan.param_off;
  float v = 0.f;
  for (int b = 0; b < p.batch; ++b) v += part[(static_cast<int64_t>(b) * rows + row) * (N + 2) + k];
  if (k < N) {
    p.dA[row * N + k] = v;
  } else if (k == N) {
    p.dD[row] = v;
  } else {
    p.ddelta_bias[row] = v;
  }
}

template <typename T, int kMaxN>
cudaError_t launch_bwd(const ScanBwdParams& p) {
  const BwdPlan plan = make_plan<kMaxN>(p);
  ZM_RETURN_IF_ERROR(
      cudaMemsetAsync(p.workspace + plan.dbc_off, 0, 2 * plan.dbc_size * sizeof(float), p.stream));
  const int64_t blocks = static_cast<int64_t>(plan.grid_x) * p.batch;
  if (blocks > kMaxGridX) return cudaErrorInvalidValue;
  if (plan.lanes_on_channels) {
    ZM_RETURN_IF_ERROR(launch_bwd_cl(p, plan, static_cast<unsigned>(blocks)));
  } else {
    auto kernel = scan_bwd_kernel<T, kMaxN>;
    if (plan.smem_bytes > 0) {  // static shared memory counts against the 48 KiB default too
      ZM_RETURN_IF_ERROR(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                              plan.smem_bytes));
    }
    ZM_LAUNCH(kernel, static_cast<unsigned>(blocks), ScanTraits<kMaxN>::kThreads, plan.smem_bytes,
              p.stream)(p, plan);
    ZM_RETURN_IF_ERROR(cudaGetLastError());
  }
  ZM_LAUNCH(bc_grad_store_kernel<T>, grid_for(plan.dbc_size / plan.bc_slices), kSmallThreads, 0,
            p.stream)(p, plan);
  ZM_RETURN_IF_ERROR(cudaGetLastError());
  const int n_params = p.n_dir * p.channels * (p.d_state + 2);
  ZM_LAUNCH(param_grad_reduce_kernel, (n_params + kSmallThreads - 1) / kSmallThreads,
            kSmallThreads, 0, p.stream)(p, plan);
  ZM_RETURN_IF_ERROR(cudaGetLastError());
  return cudaSuccess;
}

}  // namespace
}  // namespace scan

int64_t scan_bwd_workspace_floats(const ScanBwdParams& p) {
  int64_t floats = 0;
  dispatch_d_state(p.d_state, [&](auto max_n) {
    floats = scan::make_plan<decltype(max_n)::value>(p).total;
    return cudaSuccess;
  });
  return floats;
}

cudaError_t scan_bwd(const ScanBwdParams& p) {
  if (p.d_state < 1 || p.d_state > kMaxDState) return cudaErrorInvalidValue;
  const size_t rows = static_cast<size_t>(p.n_dir) * p.channels;
  if (p.batch == 0 || p.H * p.W == 0) {  // nothing to scan: the parameter gradients are zero
    ZM_RETURN_IF_ERROR(cudaMemsetAsync(p.dA, 0, rows * p.d_state * sizeof(float), p.stream));
    ZM_RETURN_IF_ERROR(cudaMemsetAsync(p.dD, 0, rows * sizeof(float), p.stream));
    return cudaMemsetAsync(p.ddelta_bias, 0, rows * sizeof(float), p.stream);
  }
  if (p.channels == 0) return cudaSuccess;
  return scan::dispatch_scan(p, [&](auto tag, auto max_n) {
    return scan::launch_bwd<decltype(tag), decltype(max_n)::value>(p);
  });
}

}  // namespace cuda
}  // namespace zeromamba
