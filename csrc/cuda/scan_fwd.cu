// Launch of the scan forward (selective_scan and ss2d_scan): see scan.cuh for the design.
#include "scan.cuh"

namespace zeromamba {
namespace cuda {
namespace scan {
namespace {

bool fwd_acc_in_smem(const ScanFwdParams& p) {
  return p.n_dir == 4 && !lanes_on_channels(p) && p.H * p.W <= kAccSmemMaxFloats;
}

template <typename T, int kMaxN>
cudaError_t launch_fwd(const ScanFwdParams& p) {
  using Traits = ScanTraits<kMaxN>;
  if (lanes_on_channels(p)) {
    const int64_t blocks = static_cast<int64_t>(p.batch) *
                           ((p.channels + Traits::kLaneChannels - 1) / Traits::kLaneChannels);
    if (blocks > kMaxGridX) return cudaErrorInvalidValue;
    auto kernel = scan_fwd_cl_kernel<T, kMaxN>;
    ZM_LAUNCH(kernel, static_cast<unsigned>(blocks), Traits::kThreads, 0, p.stream)(p);
    return cudaGetLastError();
  }
  const bool in_smem = fwd_acc_in_smem(p);
  const int smem = in_smem ? p.H * p.W * static_cast<int>(sizeof(float)) : 0;
  const int64_t blocks = static_cast<int64_t>(p.channels) * p.batch;
  if (blocks > kMaxGridX) return cudaErrorInvalidValue;
  if (p.n_dir == 4) return launch_fwd_cf(p, in_smem, smem, static_cast<unsigned>(blocks));
  auto kernel = scan_fwd_kernel<T, kMaxN>;
  ZM_LAUNCH(kernel, static_cast<unsigned>(blocks), Traits::kThreads, smem, p.stream)(p, in_smem);
  return cudaGetLastError();
}

}  // namespace
}  // namespace scan

int64_t scan_fwd_workspace_floats(const ScanFwdParams& p) {
  if (p.n_dir != 4 || scan::fwd_acc_in_smem(p)) return 0;
  return scan::u_extent(p);
}

cudaError_t scan_fwd(const ScanFwdParams& p) {
  if (p.batch == 0 || p.channels == 0 || p.H * p.W == 0) return cudaSuccess;
  return scan::dispatch_scan(p, [&](auto tag, auto max_n) {
    return scan::launch_fwd<decltype(tag), decltype(max_n)::value>(p);
  });
}

}  // namespace cuda
}  // namespace zeromamba
