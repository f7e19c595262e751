// Launch of the channel-first ss2d forward kernel (column directions with lanes on columns): see
// scan.cuh for the design and scan_fwd.cu for the rest of the forward.
#include "scan.cuh"

namespace zeromamba {
namespace cuda {
namespace scan {

cudaError_t launch_fwd_cf(const ScanFwdParams& p, bool acc_in_smem, int smem, unsigned blocks) {
  return dispatch_scan(p, [&](auto tag, auto max_n) {
    constexpr int kMaxN = decltype(max_n)::value;
    auto kernel = scan_fwd_cf_kernel<decltype(tag), kMaxN>;
    // The default allows 48 KiB of static + dynamic shared memory: opt in whenever the plane is
    // there, since the kernel's static shared memory counts against the same 48 KiB.
    if (smem > 0) {
      ZM_RETURN_IF_ERROR(
          cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    }
    ZM_LAUNCH(kernel, blocks, ScanTraits<kMaxN>::kThreads, smem, p.stream)(p, acc_in_smem);
    return cudaGetLastError();
  });
}

}  // namespace scan
}  // namespace cuda
}  // namespace zeromamba
