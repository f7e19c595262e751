// CUDA on the CPU: the subset of the CUDA language and runtime that csrc/cuda uses, for the host
// compiler. The kernel lab (bench/kernel_lab) compiles the unmodified kernel sources against it
// (csrc/emu/include/ shadows <cuda_runtime.h>, <cuda_fp16.h> and <cuda_bf16.h>) and runs every
// launch on one CPU thread: each CUDA thread is a coroutine with its own stack, __syncthreads()
// and warp collectives are scheduling points, blocks run one after another.
//
// Memory accesses are seen through GCC's -fsanitize=thread instrumentation: the kernel objects
// are compiled with it and the emulator (runtime.cpp) defines the __tsan_* hooks itself, so every
// load and store of kernel code reaches the sanitizers (shared-memory races, uninitialised and
// out-of-bounds reads, out-of-bounds global accesses) and the memory-traffic model without any
// change to the kernels. __shared__ variables are function-local statics (blocks run one at a
// time); the lab finds them, and each kernel's static shared size, in the symbol table.
//
// Kernel sources use two macros that are plain CUDA under nvcc (common.cuh):
//   ZM_LAUNCH(kernel, grid, block, smem, stream)(args...)  = kernel<<<grid, block, smem, stream>>>
//   ZM_DYNAMIC_SHARED(T, name)                              = extern __shared__ T name[]
#pragma once

#ifndef CUDA_EMU
#define CUDA_EMU 1
#endif

#include <math.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <tuple>
#include <utility>

// ------------------------------------------------------------------ qualifiers and built-ins

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __shared__ static
#define __constant__ static const
#define CUDA_EMU_NO_SANITIZE __attribute__((no_sanitize_thread))

struct uint3 {
  unsigned int x, y, z;
};
// The 16-byte vector type the kernels load and store runs of elements with.
struct alignas(16) uint4 {
  unsigned int x, y, z, w;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1)
      : x(vx), y(vy), z(vz) {}
};

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorLaunchFailure = 4,
  cudaErrorInvalidConfiguration = 9,
};
enum cudaFuncAttribute {
  cudaFuncAttributeMaxDynamicSharedMemorySize = 8,
};
typedef struct CUstream_st* cudaStream_t;

namespace cuda_emu {

// The calling CUDA thread's indices and its launch's dimensions.
uint3 thread_idx();
uint3 block_idx();
dim3 block_dim();
dim3 grid_dim();

void syncthreads(const char* file, int line);
// Warp collectives. kind: 0 idx, 1 up, 2 down, 3 xor, 4 ballot, 5 any, 6 all. `bits` is the
// caller's value (or predicate), `arg` the lane argument; returns the partner's value.
uint64_t warp_collective(int kind, unsigned mask, uint64_t bits, int arg, int width,
                         const char* file, int line);

// atomicAdd; the traffic model takes the call site from the return address.
float atomic_add(float* address, float v);
double atomic_add(double* address, double v);
int atomic_add(int* address, int v);
unsigned atomic_add(unsigned* address, unsigned v);
unsigned long long atomic_add(unsigned long long* address, unsigned long long v);
float4 atomic_add(float4* address, float4 v);  // sm_90: global memory only

void* dynamic_shared();

// Runs a whole grid; `thunk(ctx)` runs the kernel body of the calling CUDA thread.
cudaError_t launch(const void* kernel, dim3 grid, dim3 block, size_t smem, void (*thunk)(void*),
                   void* ctx, const char* file, int line);
// The parameter block of a launch, registered as readable memory while it runs.
void* param_alloc(size_t bytes);
void param_free(void* p);

template <typename T>
inline uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8, "warp collectives move up to 8 bytes");
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <typename T>
inline T from_bits(uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}

template <typename T>
inline T shfl(int kind, const char* file, int line, unsigned mask, T v, int arg, int width = 32) {
  return from_bits<T>(warp_collective(kind, mask, to_bits(v), arg, width, file, line));
}

// kernel<<<grid, block, smem, stream>>>(args...): the arguments are converted to the kernel's
// parameter types and copied into a parameter block, as a CUDA launch does.
template <typename... P>
struct Launch {
  void (*kernel)(P...);
  dim3 grid, block;
  size_t smem;
  const char* file;
  int line;

  using Params = std::tuple<P...>;

  template <size_t... I>
  CUDA_EMU_NO_SANITIZE static void call(void* ctx, std::index_sequence<I...>) {
    auto* self = static_cast<std::pair<void (*)(P...), Params*>*>(ctx);
    self->first(std::get<I>(*self->second)...);
  }
  CUDA_EMU_NO_SANITIZE static void thunk(void* ctx) { call(ctx, std::index_sequence_for<P...>{}); }

  template <typename... A>
  CUDA_EMU_NO_SANITIZE void operator()(A&&... args) const {
    void* mem = param_alloc(sizeof(Params));
    Params* params = new (mem) Params(std::forward<A>(args)...);
    std::pair<void (*)(P...), Params*> ctx{kernel, params};
    launch(reinterpret_cast<const void*>(kernel), grid, block, smem, &thunk, &ctx, file, line);
    params->~Params();
    param_free(mem);
  }
};

template <typename... P>
Launch<P...> make_launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t,
                         const char* file, int line) {
  return Launch<P...>{kernel, grid, block, smem, file, line};
}

cudaError_t func_set_attribute(const void* kernel, cudaFuncAttribute attr, int value);

}  // namespace cuda_emu

#define threadIdx (::cuda_emu::thread_idx())
#define blockIdx (::cuda_emu::block_idx())
#define blockDim (::cuda_emu::block_dim())
#define gridDim (::cuda_emu::grid_dim())
#define warpSize 32

#define __syncthreads() ::cuda_emu::syncthreads(__FILE__, __LINE__)
#define __shfl_sync(...) ::cuda_emu::shfl(0, __FILE__, __LINE__, __VA_ARGS__)
#define __shfl_up_sync(...) ::cuda_emu::shfl(1, __FILE__, __LINE__, __VA_ARGS__)
#define __shfl_down_sync(...) ::cuda_emu::shfl(2, __FILE__, __LINE__, __VA_ARGS__)
#define __shfl_xor_sync(...) ::cuda_emu::shfl(3, __FILE__, __LINE__, __VA_ARGS__)
#define __ballot_sync(mask, pred) \
  static_cast<unsigned>(::cuda_emu::warp_collective(4, mask, (pred) != 0, 0, 32, __FILE__, __LINE__))
#define __any_sync(mask, pred) \
  static_cast<int>(::cuda_emu::warp_collective(5, mask, (pred) != 0, 0, 32, __FILE__, __LINE__))
#define __all_sync(mask, pred) \
  static_cast<int>(::cuda_emu::warp_collective(6, mask, (pred) != 0, 0, 32, __FILE__, __LINE__))
#define atomicAdd(address, v) ::cuda_emu::atomic_add(address, v)

#define ZM_LAUNCH(kernel, grid, block, smem, stream) \
  ::cuda_emu::make_launch(kernel, grid, block, smem, stream, __FILE__, __LINE__)
#define ZM_DYNAMIC_SHARED(T, name) T* const name = static_cast<T*>(::cuda_emu::dynamic_shared())

// ------------------------------------------------------------------------------ runtime API

cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorString(cudaError_t err);
cudaError_t cudaMemsetAsync(void* ptr, int value, size_t bytes, cudaStream_t stream = nullptr);
template <typename K>
cudaError_t cudaFuncSetAttribute(K* kernel, cudaFuncAttribute attr, int value) {
  return ::cuda_emu::func_set_attribute(reinterpret_cast<const void*>(kernel), attr, value);
}

// ---------------------------------------------------------------------------- math built-ins

namespace cuda_emu {
// The SFU's fast forms flush denormal results to zero; NaN and infinities pass as on the GPU.
inline float ftz(float v) { return std::fabs(v) < 1.17549435e-38f ? std::copysign(0.f, v) : v; }
}  // namespace cuda_emu

inline float __expf(float x) { return ::cuda_emu::ftz(std::exp2(x * 1.4426950408889634f)); }
inline float __exp10f(float x) { return ::cuda_emu::ftz(std::exp2(x * 3.3219280948873623f)); }
inline float __logf(float x) { return std::log2(::cuda_emu::ftz(x)) * 0.6931471805599453f; }
inline float __log2f(float x) { return std::log2(::cuda_emu::ftz(x)); }
inline float __fdividef(float a, float b) {
  // div.approx: 2^126 < |b| < 2^128 gives 0 (and NaN for an infinite a).
  const float ab = std::fabs(b);
  if (ab > 8.5070592e37f && ab < INFINITY) return std::isinf(a) ? NAN : 0.f;
  return a / b;
}
inline float __frcp_rn(float x) { return 1.f / x; }
inline float __saturatef(float x) { return x > 0.f ? (x < 1.f ? x : 1.f) : 0.f; }
inline float rsqrtf(float x) { return 1.f / std::sqrt(x); }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }

// ------------------------------------------------------------------------- half and bfloat16

struct __half {
  unsigned short __x;
};
struct __nv_bfloat16 {
  unsigned short __x;
};

namespace cuda_emu {
inline uint32_t float_bits(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  return x;
}
inline float bits_float(uint32_t x) {
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}
}  // namespace cuda_emu

inline float __half2float(__half h) {
  const uint32_t sign = static_cast<uint32_t>(h.__x & 0x8000u) << 16;
  const uint32_t exp = (h.__x >> 10) & 0x1f, mant = h.__x & 0x3ffu;
  if (exp == 0x1f) return ::cuda_emu::bits_float(sign | 0x7f800000u | (mant << 13));
  if (exp == 0) {  // zero or subnormal: mant * 2^-24
    const float v = static_cast<float>(mant) * 5.9604644775390625e-08f;
    return sign ? -v : v;
  }
  return ::cuda_emu::bits_float(sign | ((exp + 112) << 23) | (mant << 13));
}

// Round to nearest even, as cvt.rn.f16.f32; NaN becomes the canonical 0x7fff.
inline __half __float2half_rn(float f) {
  const uint32_t x = ::cuda_emu::float_bits(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t ax = x & 0x7fffffffu;
  uint16_t h;
  if (ax > 0x7f800000u) {
    h = 0x7fff;
    return __half{h};
  } else if (ax >= 0x477ff000u) {  // >= 65520 rounds to infinity
    h = 0x7c00;
  } else if (ax < 0x38800000u) {  // below 2^-14: subnormal, in units of 2^-24 (exact scaling)
    h = static_cast<uint16_t>(std::nearbyint(std::fabs(f) * 16777216.f));
  } else {
    const uint32_t r = ax + 0xfffu + ((ax >> 13) & 1u);
    h = static_cast<uint16_t>((r - 0x38000000u) >> 13);
  }
  return __half{static_cast<unsigned short>(sign | h)};
}
inline __half __float2half(float f) { return __float2half_rn(f); }

inline float __bfloat162float(__nv_bfloat16 h) {
  return ::cuda_emu::bits_float(static_cast<uint32_t>(h.__x) << 16);
}
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  const uint32_t x = ::cuda_emu::float_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return __nv_bfloat16{0x7fff};
  return __nv_bfloat16{static_cast<unsigned short>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16)};
}
inline __nv_bfloat16 __float2bfloat16(float f) { return __float2bfloat16_rn(f); }
