// Device helpers shared by the kernels: dtype conversion, fast math forms, block-wide scans and
// reductions. No torch header (see launch.h).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

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
constexpr float kLn2 = 0.6931471805599453f;
// Launch limits (sm_80 / sm_90): gridDim.x up to 2^31 - 1, gridDim.y and z up to 65,535, so
// kernels put the batch on x.
constexpr int64_t kMaxGridX = 2147483647;
constexpr int kMaxGridY = 65535;

// The same pointer, opaque to the optimiser: a plane's base address then stays in a register and
// each access is one wide multiply-add of a 32-bit offset onto it, instead of the 64-bit index
// arithmetic the compiler otherwise redoes per access (base index + offset, shift, add).
template <typename P>
__device__ __forceinline__ P* opaque(P* ptr) {
#ifndef CUDA_EMU
  asm("" : "+l"(ptr));
#endif
  return ptr;
}

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

// Stores v into a tensor that is either fp32 or T (a runtime choice: out_float32, fp32 dy); i is an
// element offset from base (32-bit inside a (b, c) plane, 64-bit elsewhere).
template <typename T, typename I>
__device__ __forceinline__ void store_as(void* base, I i, float v, bool as_float32) {
  if (as_float32) {
    static_cast<float*>(base)[i] = v;
  } else {
    static_cast<T*>(base)[i] = from_float<T>(v);
  }
}

template <typename T, typename I>
__device__ __forceinline__ float load_as(const void* base, I i, bool as_float32) {
  return as_float32 ? static_cast<const float*>(base)[i] : to_float(static_cast<const T*>(base)[i]);
}

// A thread's steps of a tile in one tensor: kItems element offsets from a base pointer. When they
// are consecutive elements (ascending, or descending for a backward direction), all valid, and
// the lowest one is 16-byte aligned, they move as kItems * sizeof(T) / 16 vector accesses: a
// warp's request then covers 512 contiguous bytes instead of one element per lane.
template <int kItems>
struct Run {
  unsigned off[kItems];
  bool consecutive;  // off[e] = off[0] + e (or off[0] - e when descending): set by the caller
  bool descending;

  __device__ __forceinline__ unsigned lowest() const {
    return descending ? off[kItems - 1] : off[0];
  }
  template <typename T>
  __device__ __forceinline__ bool vector(const T* base) const {
    return kItems * sizeof(T) % 16 == 0 && consecutive &&
           (reinterpret_cast<uintptr_t>(base + lowest()) & 15) == 0;
  }
};

template <typename T, int kItems>
__device__ __forceinline__ void load_run(const T* base, const Run<kItems>& r,
                                         float (&out)[kItems]) {
  constexpr int kPer = 16 / sizeof(T);
  if (r.vector(base)) {
    const uint4* src = reinterpret_cast<const uint4*>(base + r.lowest());
    T v[kItems];
#pragma unroll
    for (int k = 0; k < kItems / kPer; ++k) {
      const uint4 w = src[k];
      memcpy(v + k * kPer, &w, 16);
    }
#pragma unroll
    for (int e = 0; e < kItems; ++e) out[e] = to_float(v[r.descending ? kItems - 1 - e : e]);
  } else {
#pragma unroll
    for (int e = 0; e < kItems; ++e) out[e] = to_float(base[r.off[e]]);
  }
}

// Stores the first n_valid of v (all kItems when the run is consecutive).
template <typename T, int kItems>
__device__ __forceinline__ void store_run(T* base, const Run<kItems>& r, const float (&v)[kItems],
                                          int n_valid) {
  constexpr int kPer = 16 / sizeof(T);
  if (r.vector(base)) {
    T packed[kItems];
#pragma unroll
    for (int e = 0; e < kItems; ++e) packed[r.descending ? kItems - 1 - e : e] = from_float<T>(v[e]);
    uint4* dst = reinterpret_cast<uint4*>(base + r.lowest());
#pragma unroll
    for (int k = 0; k < kItems / kPer; ++k) {
      uint4 w;
      memcpy(&w, packed + k * kPer, 16);
      dst[k] = w;
    }
  } else {
#pragma unroll
    for (int e = 0; e < kItems; ++e) {
      if (e < n_valid) base[r.off[e]] = from_float<T>(v[e]);
    }
  }
}

// base[e] += v[e] for the first n_valid of kItems consecutive floats, as atomics when atomic.
// With all kItems valid and base 16-byte aligned, sm_90 adds four floats per atomic instruction
// (global memory only), so a warp's request covers 512 contiguous bytes; elsewhere one by one.
template <int kItems>
__device__ __forceinline__ void add_run(float* base, const float (&v)[kItems], int n_valid,
                                        bool atomic) {
  const bool vector = kItems % 4 == 0 && n_valid == kItems &&
                      (reinterpret_cast<uintptr_t>(base) & 15) == 0;
  if (vector && !atomic) {  // one 16-byte load and store per four floats, as in load_run
    uint4* dst = reinterpret_cast<uint4*>(base);
#pragma unroll
    for (int k = 0; k < kItems / 4; ++k) {
      const uint4 w = dst[k];
      float sum[4];
      memcpy(sum, &w, 16);
#pragma unroll
      for (int e = 0; e < 4; ++e) sum[e] += v[4 * k + e];
      uint4 out;
      memcpy(&out, sum, 16);
      dst[k] = out;
    }
    return;
  }
#if defined(CUDA_EMU) || (defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900)
  if (vector) {
    float4* dst = reinterpret_cast<float4*>(base);
#pragma unroll
    for (int k = 0; k < kItems / 4; ++k) {
      atomicAdd(dst + k, make_float4(v[4 * k], v[4 * k + 1], v[4 * k + 2], v[4 * k + 3]));
    }
    return;
  }
#endif
#pragma unroll
  for (int e = 0; e < kItems; ++e) {
    if (e >= n_valid) continue;
    if (atomic) {
      atomicAdd(base + e, v[e]);
    } else {
      base[e] += v[e];
    }
  }
}

// *dst += v, as an atomic when atomic.
__device__ __forceinline__ void add_one(float* dst, float v, bool atomic) {
  if (atomic) {
    atomicAdd(dst, v);
  } else {
    *dst += v;
  }
}

// softplus with mamba_ssm's threshold: identity above 20. Otherwise ln(1 + e^z) in the exp2/log2
// forms the SFU evaluates in one instruction each (ex2.approx, lg2.approx under --use_fast_math);
// where e^z < 1/64, 1 + e^z would drop bits of e^z, so the series e - e^2/2 + e^3/3 - e^4/4
// (error below e^5/5 < 2^-30 relative) takes over, as log1p would.
__device__ __forceinline__ float softplus(float z) {
  const float e = exp2f(z * kLog2e);
  const float series = e * (1.f + e * (-0.5f + e * (1.f / 3.f - 0.25f * e)));
  const float logged = __log2f(1.f + e) * kLn2;
  return z > 20.f ? z : (e < 0.015625f ? series : logged);
}

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

// Block-wide exclusive scans of per-thread affine maps along chains of threads: chain k holds the
// threads with threadIdx.x % kChains == k, in thread order (kReverse: from the last to the
// first). kChains = 1 is one chain over the whole block; kChains = 16 gives the channel-last
// kernels one chain per channel (lanes on channels). Returns the composition of the maps of
// every thread before this one in its chain (identity for the first) and sets `total` to the
// composition over the whole chain. All kThreads threads must call it; `smem` holds
// kThreads / 32 * kChains entries.
template <int kThreads, bool kReverse, int kChains = 1>
__device__ __forceinline__ Affine block_exclusive_scan(Affine v, Affine& total, Affine* smem) {
  static_assert(kThreads % 32 == 0 && kThreads <= 1024, "whole warps");
  static_assert(kChains >= 1 && 32 % kChains == 0, "chains: a divisor of the warp size");
  constexpr int kWarps = kThreads / 32;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, chain = lane % kChains;
  const Affine identity = {1.f, 0.f};
  Affine inc = v;
#pragma unroll
  for (int offset = kChains; offset < 32; offset *= 2) {
    if (!kReverse) {
      const Affine before = shfl_up(inc, offset);
      if (lane >= offset) inc = compose(before, inc);
    } else {
      const Affine before = shfl_down(inc, offset);
      if (lane + offset < 32) inc = compose(before, inc);
    }
  }
  // the warp's last thread of each chain in scan order holds the chain's warp total
  if (kReverse ? lane < kChains : lane >= 32 - kChains) smem[warp * kChains + chain] = inc;
  Affine excl = identity;
  if constexpr (kChains < 32) {
    excl = kReverse ? shfl_down(inc, kChains) : shfl_up(inc, kChains);
    if (kReverse ? lane >= 32 - kChains : lane < kChains) excl = identity;
  }
  __syncthreads();
  Affine before_warp = identity;
  total = identity;
#pragma unroll
  for (int i = 0; i < kWarps; ++i) {
    const int w = kReverse ? kWarps - 1 - i : i;
    if (w == warp) before_warp = total;
    total = compose(total, smem[w * kChains + chain]);
  }
  __syncthreads();  // smem may be reused at once
  return compose(before_warp, excl);
}

// Exclusive scan of per-lane affine maps over each group of kGroup consecutive lanes (a power of
// two), in lane order: returns the composition of the maps of the group's lanes before this one
// (identity for the first) and sets `all` to the whole group's composition.
template <int kGroup>
__device__ __forceinline__ Affine group_exclusive_scan(Affine v, Affine& all) {
  static_assert(kGroup >= 1 && 32 % kGroup == 0, "groups: a divisor of the warp size");
  const int lane = threadIdx.x & 31, in_group = lane % kGroup;
  const Affine identity = {1.f, 0.f};
  Affine inc = v;
#pragma unroll
  for (int offset = 1; offset < kGroup; offset *= 2) {
    const Affine before = shfl_up(inc, offset);
    if (in_group >= offset) inc = compose(before, inc);
  }
  const int last = lane - in_group + kGroup - 1;
  all = {__shfl_sync(0xffffffffu, inc.a, last), __shfl_sync(0xffffffffu, inc.b, last)};
  const Affine excl = shfl_up(inc, 1);
  return in_group == 0 ? identity : excl;
}

// Block-wide sum along the chains of block_exclusive_scan; every thread gets its chain's sum.
// `smem` holds kThreads / 32 * kChains floats.
template <int kThreads, int kChains = 1>
__device__ __forceinline__ float block_sum(float v, float* smem) {
  constexpr int kWarps = kThreads / 32;
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int offset = 16; offset >= kChains; offset /= 2) {
    v += __shfl_xor_sync(0xffffffffu, v, offset);
  }
  if (lane < kChains) smem[(threadIdx.x >> 5) * kChains + lane] = v;
  __syncthreads();
  float s = 0.f;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) s += smem[w * kChains + lane % kChains];
  __syncthreads();
  return s;
}

// Sums kItems values over each group of kGroup consecutive lanes (kItems <= kGroup, both powers
// of two) in log2(kGroup) shuffle rounds: each round halves the values a lane keeps, exchanging
// the other half with its partner (a reduce-scatter), then plain rounds finish the sum. Returns
// the group's sum of item `item` (set here); kGroup / kItems lanes return each item.
template <int kGroup, int kItems>
__device__ __forceinline__ float group_sum_scatter(float (&v)[kItems], int& item) {
  static_assert(kItems >= 1 && kItems <= kGroup && kGroup <= 32, "kItems <= kGroup <= 32");
  const int lane = threadIdx.x & 31;
  item = 0;
#pragma unroll
  for (int offset = kGroup / 2, count = kItems; offset >= 1; offset /= 2) {
    if (count > 1) {
      const int half = count / 2;
      const bool upper = (lane & offset) != 0;
#pragma unroll
      for (int k = 0; k < half; ++k) {
        const float send = upper ? v[k] : v[k + half];
        const float keep = upper ? v[k + half] : v[k];
        v[k] = keep + __shfl_xor_sync(0xffffffffu, send, offset);
      }
      item += upper ? half : 0;
      count = half;
    } else {
      v[0] += __shfl_xor_sync(0xffffffffu, v[0], offset);
    }
  }
  return v[0];
}

// ------------------------------------------------------------------------------ host helpers

// Returns from the calling launcher with the error of a CUDA runtime call that failed.
#define ZM_RETURN_IF_ERROR(expr)              \
  do {                                        \
    const cudaError_t zm_err_ = (expr);       \
    if (zm_err_ != cudaSuccess) return zm_err_; \
  } while (0)

// f(T{}) for the element type T of dtype: one switch for every launcher.
template <typename F>
cudaError_t dispatch_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kFloat32:
      return f(float{});
    case DType::kFloat16:
      return f(__half{});
    case DType::kBFloat16:
      return f(__nv_bfloat16{});
  }
  return cudaErrorInvalidValue;
}

// f(std::integral_constant<int, kMaxN>{}) for the d_state bucket serving d_state: N = 1 (VMamba
// v2) gets its own code; N <= 4 and N <= kMaxDState share loop bounds.
template <typename F>
cudaError_t dispatch_d_state(int d_state, F&& f) {
  if (d_state < 1 || d_state > kMaxDState) return cudaErrorInvalidValue;
  if (d_state == 1) return f(std::integral_constant<int, 1>{});
  if (d_state <= 4) return f(std::integral_constant<int, 4>{});
  return f(std::integral_constant<int, kMaxDState>{});
}

}  // namespace cuda
}  // namespace zeromamba
