// Known-bad (and one known-good) kernels that prove the kernel lab's sanitizers fire: each case
// of tests/test_cuda_emulated.py::test_sanitizer_finds runs one of them. Built only into the
// emulator library, never by nvcc.
#include <cstdio>
#include <exception>

#include <cuda_runtime.h>

#include "../cuda/common.cuh"

namespace zeromamba {
namespace selftest {

constexpr int kThreads = 64;

enum Case {
  kGood, kMissingBarrier, kWriteAfterRead, kUninitialised, kSharedOutOfBounds,
  kGlobalOutOfBounds, kExitBeforeBarrier, kTwoBarrierSites, kWriteToInput, kShuffles, kLaunch
};

__global__ void selftest_kernel(int which, float* out, const float* in, int n) {
  __shared__ float s[kThreads];
  ZM_DYNAMIC_SHARED(float, dyn);
  const int tid = threadIdx.x, lane = tid & 31;
  switch (which) {
    case kGood:
      s[tid] = in[tid];
      __syncthreads();
      out[tid] = s[(tid + 1) % kThreads];
      break;
    case kMissingBarrier:
      s[tid] = in[tid];
      out[tid] = s[(tid + 1) % kThreads];
      break;
    case kWriteAfterRead:
      s[tid] = in[tid];
      __syncthreads();
      out[tid] = s[(tid + 1) % kThreads];
      s[tid] = 0.f;
      break;
    case kUninitialised:
      if (tid > 0) s[tid] = in[tid];
      __syncthreads();
      out[tid] = s[(tid + 1) % kThreads];
      break;
    case kSharedOutOfBounds:
      dyn[tid] = in[tid];
      __syncthreads();
      out[tid] = dyn[tid + 1];  // the launch has kThreads floats
      break;
    case kGlobalOutOfBounds:
      out[tid + n - kThreads + 1] = in[tid];
      break;
    case kExitBeforeBarrier:
      if (tid >= 32) return;
      __syncthreads();
      out[tid] = in[tid];
      break;
    case kTwoBarrierSites:
      if (tid & 1) {
        __syncthreads();
      } else {
        __syncthreads();
      }
      out[tid] = in[tid];
      break;
    case kWriteToInput:
      const_cast<float*>(in)[tid] = 0.f;
      break;
    case kShuffles: {  // out: xor-1 partner, up-3, down-5 (width 16), broadcast of lane 7, ballot
      const float v = in[tid];
      const float x = __shfl_xor_sync(0xffffffffu, v, 1);
      const float u = __shfl_up_sync(0xffffffffu, v, 3);
      const float d = __shfl_down_sync(0xffffffffu, v, 5, 16);
      const float b = __shfl_sync(0xffffffffu, v, 7);
      const unsigned ballot = __ballot_sync(0xffffffffu, v > 0.f);
      out[tid] = x;
      out[n / 5 + tid] = u;
      out[2 * (n / 5) + tid] = d;
      out[3 * (n / 5) + tid] = b;
      out[4 * (n / 5) + tid] = static_cast<float>((ballot >> lane) & 1u);
      break;
    }
    case kLaunch:  // any block size: a copy
      if (tid < n) out[tid] = in[tid];
      break;
  }
}

}  // namespace selftest
}  // namespace zeromamba

// Runs case `which` on one block of `threads` threads with `smem` bytes of dynamic shared
// memory, opting in to `opt_in` bytes first when it is positive; in and out hold n floats.
// Returns the cudaError_t of the opt-in or the launch, or -1 with the sanitizer's message.
extern "C" int zm_emu_selftest(int which, float* out, const float* in, int n, int threads,
                               int smem, int opt_in, char* err, int err_len) {
  try {
    auto kernel = zeromamba::selftest::selftest_kernel;
    if (opt_in > 0) {
      const cudaError_t e =
          cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, opt_in);
      if (e != cudaSuccess) return static_cast<int>(e);
    }
    ZM_LAUNCH(kernel, 1, threads, static_cast<size_t>(smem), nullptr)(which, out, in, n);
    return static_cast<int>(cudaGetLastError());
  } catch (const std::exception& e) {
    std::snprintf(err, static_cast<size_t>(err_len), "%s", e.what());
    return -1;
  }
}
