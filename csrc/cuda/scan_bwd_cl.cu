// Launch of the channel-last ss2d backward kernel (lanes on channels): see scan.cuh for the design
// and scan_bwd.cu for the rest of the backward.
#include "scan.cuh"

namespace zeromamba {
namespace cuda {
namespace scan {

cudaError_t launch_bwd_cl(const ScanBwdParams& p, const BwdPlan& plan, unsigned blocks) {
  return dispatch_scan(p, [&](auto tag, auto max_n) {
    constexpr int kMaxN = decltype(max_n)::value;
    auto kernel = scan_bwd_cl_kernel<decltype(tag), kMaxN>;
    ZM_LAUNCH(kernel, blocks, ScanTraits<kMaxN>::kThreads, 0, p.stream)(p, plan);
    return cudaGetLastError();
  });
}

}  // namespace scan
}  // namespace cuda
}  // namespace zeromamba
