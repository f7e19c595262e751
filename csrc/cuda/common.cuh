// Device helpers shared by the kernels: dtype conversion, fast math forms, block-wide scans and
// reductions. No torch header (see launch.h).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "launch.h"

// Two spellings the kernel lab's CPU emulator (csrc/emu/cuda_emu.h) defines its own way; under
// nvcc they are plain CUDA.
#ifndef ZM_LAUNCH
#define ZM_LAUNCH(kernel, grid, block, smem, stream) kernel<<<grid, block, smem, stream>>>
#endif
#ifndef ZM_DYNAMIC_SHARED
#define ZM_DYNAMIC_SHARED(T, name) extern __shared__ T name[]
#endif

namespace zeromamba {
namespace cuda {

constexpr float kLog2e = 1.4426950408889634f;
// Launch limits (sm_80 / sm_90): gridDim.x up to 2^31 - 1, gridDim.y and z up to 65,535, so
// kernels put the batch on x.
constexpr int64_t kMaxGridX = 2147483647;
constexpr int kMaxGridY = 65535;

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// Stores v into a tensor that is either fp32 or T (a runtime choice: out_float32, fp32 dy).
template <typename T>
__device__ __forceinline__ void store_as(void* base, int64_t i, float v, bool as_float32) {
  if (as_float32) {
    static_cast<float*>(base)[i] = v;
  } else {
    static_cast<T*>(base)[i] = from_float<T>(v);
  }
}

template <typename T>
__device__ __forceinline__ float load_as(const void* base, int64_t i, bool as_float32) {
  return as_float32 ? static_cast<const float*>(base)[i] : to_float(static_cast<const T*>(base)[i]);
}

// softplus with mamba_ssm's threshold: identity above 20; log1p keeps precision for very
// negative inputs where log(1 + exp(z)) would round to 0.
__device__ __forceinline__ float softplus(float z) { return z > 20.f ? z : log1pf(__expf(z)); }

// d softplus / dz = sigmoid(z); 1 on the identity branch.
__device__ __forceinline__ float softplus_grad(float z) {
  return z > 20.f ? 1.f : 1.f / (1.f + __expf(-z));
}

// An affine map h -> a*h + b; composing the steps of a linear recurrence is associative.
struct Affine {
  float a, b;
};

// first, then second.
__device__ __forceinline__ Affine compose(Affine first, Affine second) {
  return {first.a * second.a, second.a * first.b + second.b};
}

__device__ __forceinline__ Affine shfl_up(Affine v, int delta) {
  return {__shfl_up_sync(0xffffffffu, v.a, delta), __shfl_up_sync(0xffffffffu, v.b, delta)};
}
__device__ __forceinline__ Affine shfl_down(Affine v, int delta) {
  return {__shfl_down_sync(0xffffffffu, v.a, delta), __shfl_down_sync(0xffffffffu, v.b, delta)};
}

// Block-wide exclusive scan of per-thread affine maps, in thread order (kReverse: from the last
// thread to the first). Returns the composition of the maps of every thread before this one in
// scan order (identity for the first) and sets `total` to the composition over the whole block.
// All kThreads threads must call it; `smem` holds kThreads / 32 entries.
template <int kThreads, bool kReverse>
__device__ __forceinline__ Affine block_exclusive_scan(Affine v, Affine& total, Affine* smem) {
  static_assert(kThreads % 32 == 0 && kThreads <= 1024, "whole warps");
  constexpr int kWarps = kThreads / 32;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  Affine inc = v;
#pragma unroll
  for (int offset = 1; offset < 32; offset *= 2) {
    if (!kReverse) {
      const Affine before = shfl_up(inc, offset);
      if (lane >= offset) inc = compose(before, inc);
    } else {
      const Affine before = shfl_down(inc, offset);
      if (lane + offset < 32) inc = compose(before, inc);
    }
  }
  if (lane == (kReverse ? 0 : 31)) smem[warp] = inc;
  Affine excl = kReverse ? shfl_down(inc, 1) : shfl_up(inc, 1);
  if (lane == (kReverse ? 31 : 0)) excl = {1.f, 0.f};
  __syncthreads();
  Affine before_warp = {1.f, 0.f};
  total = {1.f, 0.f};
#pragma unroll
  for (int i = 0; i < kWarps; ++i) {
    const int w = kReverse ? kWarps - 1 - i : i;
    if (w == warp) before_warp = total;
    total = compose(total, smem[w]);
  }
  __syncthreads();  // smem may be reused at once
  return compose(before_warp, excl);
}

// Block-wide sum; every thread gets the result. `smem` holds kThreads / 32 floats.
template <int kThreads>
__device__ __forceinline__ float block_sum(float v, float* smem) {
  constexpr int kWarps = kThreads / 32;
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  if ((threadIdx.x & 31) == 0) smem[threadIdx.x >> 5] = v;
  __syncthreads();
  float s = 0.f;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) s += smem[w];
  __syncthreads();
  return s;
}

}  // namespace cuda
}  // namespace zeromamba
