// Launch of the scan forward (selective_scan and ss2d_scan): see scan.cuh for the design.
#include "scan.cuh"

namespace zeromamba {
namespace cuda {
namespace scan {
namespace {

bool fwd_acc_in_smem(const ScanFwdParams& p) {
  return p.n_dir == 4 && p.H * p.W <= kAccSmemMaxFloats;
}

template <typename T, int kMaxN>
cudaError_t launch_fwd(const ScanFwdParams& p) {
  const bool in_smem = fwd_acc_in_smem(p);
  const int smem = in_smem ? p.H * p.W * static_cast<int>(sizeof(float)) : 0;
  auto kernel = scan_fwd_kernel<T, kMaxN>;
  // The default allows 48 KiB of static + dynamic shared memory: opt in whenever the plane is
  // there, since the kernel's static shared memory counts against the same 48 KiB.
  if (smem > 0) {
    const cudaError_t err =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (err != cudaSuccess) return err;
  }
  const int64_t blocks = static_cast<int64_t>(p.channels) * p.batch;
  if (blocks > kMaxGridX) return cudaErrorInvalidValue;
  ZM_LAUNCH(kernel, static_cast<unsigned>(blocks), kThreads, smem, p.stream)(p, in_smem);
  return cudaGetLastError();
}

template <int kMaxN>
cudaError_t launch_fwd_dtype(const ScanFwdParams& p) {
  switch (p.dtype) {
    case DType::kFloat32:
      return launch_fwd<float, kMaxN>(p);
    case DType::kFloat16:
      return launch_fwd<__half, kMaxN>(p);
    case DType::kBFloat16:
      return launch_fwd<__nv_bfloat16, kMaxN>(p);
  }
  return cudaErrorInvalidValue;
}

}  // namespace
}  // namespace scan

int64_t scan_fwd_workspace_floats(const ScanFwdParams& p) {
  if (p.n_dir != 4 || scan::fwd_acc_in_smem(p)) return 0;
  return static_cast<int64_t>(p.batch) * p.channels * p.H * p.W;
}

cudaError_t scan_fwd(const ScanFwdParams& p) {
  if (p.batch == 0 || p.channels == 0 || p.H * p.W == 0) return cudaSuccess;
  if (p.d_state < 1 || p.d_state > 16) return cudaErrorInvalidValue;
  // N = 1 (VMamba v2) gets its own specialisation; N <= 4 and N <= 16 share loop bounds.
  if (p.d_state == 1) return scan::launch_fwd_dtype<1>(p);
  if (p.d_state <= 4) return scan::launch_fwd_dtype<4>(p);
  return scan::launch_fwd_dtype<16>(p);
}

}  // namespace cuda
}  // namespace zeromamba
