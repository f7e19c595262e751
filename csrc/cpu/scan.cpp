// The CPU selective-scan core (see scan.h): forward and backward, templated on the compute type
// and on d_state (d_state = 1 is its own specialisation; others run a loop of runtime length <=
// kMaxDState). The kernels themselves are in scan_kernels.h, compiled here once per instruction
// set.
//
// Work split: a work item is (b, group g, a block of lane groups); a lane group is V channels of
// one group scanned together. The n_dir directions of a channel are done by the same item, so y /
// dx accumulate race-free in a per-thread buffer. In the backward, dB / dC (summed over the
// channels of a group) go into per-item partial buffers that are reduced in a fixed order
// afterwards, and dA / dD / ddelta_bias into per-batch partials: results are deterministic for a
// given thread count, no atomics.
//
// Per direction, softplus and exp(dt A) are first computed for all positions in one vectorised
// pass (independent elements); the sequential walk over the direction's order is then only
// multiply-adds. The backward recomputes the forward states: a pass stores the state at the start
// of every chunk of T steps (skipped when one chunk holds the sequence), then each chunk, last
// first, recomputes its states into a small buffer and runs the reverse-time scan of dh through it.

#include "common.h"  // first: sets the optimisation pragma
#include "scan.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <initializer_list>
#include <type_traits>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>  // the AVX tile transpose of the staging copies (scan_kernels.h)
#endif

namespace zeromamba::cpu {
namespace {

constexpr int64_t kChunkBudget = 1 << 18;  // elements of a thread's backward chunk buffers

// One copy of the kernels per instruction set, V = lanes (channels) per step, one fp32 vector:
// AVX-512 (16 lanes) and AVX2 + FMA (8 lanes), picked at run time when the CPU has them, and the
// baseline of the build (8 lanes).
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define ZEROMAMBA_X86_ISAS 1
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")
#define ZEROMAMBA_AVX 1
namespace avx512 {
constexpr int V = 16;
#include "scan_kernels.h"
}  // namespace avx512
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
constexpr int V = 8;
#include "scan_kernels.h"
}  // namespace avx2
#pragma GCC pop_options
#undef ZEROMAMBA_AVX
#endif

#define ZEROMAMBA_AVX 0
namespace baseline {
constexpr int V = 8;
#include "scan_kernels.h"
}  // namespace baseline

enum class Isa { kBaseline, kAvx2, kAvx512 };

Isa best_isa() {
#ifdef ZEROMAMBA_X86_ISAS
  static const Isa isa = [] {
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw"))
      return Isa::kAvx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::kAvx2;
    return Isa::kBaseline;
  }();
  return isa;
#else
  return Isa::kBaseline;
#endif
}

void check(const ScanProblem& pb) {
  TORCH_CHECK(pb.d_state >= 1 && pb.d_state <= kMaxDState, "zeromamba: d_state must be in 1..",
              kMaxDState, ", got ", pb.d_state);
  TORCH_CHECK(pb.compute == at::kFloat || pb.compute == at::kDouble,
              "zeromamba: scan compute dtype must be float32 or float64");
}

}  // namespace

void scan_forward(const ScanProblem& pb, const LaneTensor& y) {
  check(pb);
  if (pb.batch == 0 || pb.channels == 0 || pb.L == 0) return;
#ifdef ZEROMAMBA_X86_ISAS
  if (best_isa() == Isa::kAvx512) return avx512::forward(pb, y);
  if (best_isa() == Isa::kAvx2) return avx2::forward(pb, y);
#endif
  baseline::forward(pb, y);
}

void scan_backward(const ScanProblem& pb, const LaneTensor& dy, const ScanGrads& grads) {
  check(pb);
  if (pb.batch == 0 || pb.channels == 0 || pb.L == 0) {  // empty sums
    const int64_t rows = pb.n_dir * pb.channels;
    for (void* t : {grads.dA, grads.dD, grads.dbias}) {
      const int64_t n = t == grads.dA ? rows * pb.d_state : rows;
      if (pb.compute == at::kFloat) {
        std::fill_n(static_cast<float*>(t), n, 0.0f);
      } else {
        std::fill_n(static_cast<double*>(t), n, 0.0);
      }
    }
    return;
  }
#ifdef ZEROMAMBA_X86_ISAS
  if (best_isa() == Isa::kAvx512) return avx512::backward(pb, dy, grads);
  if (best_isa() == Isa::kAvx2) return avx2::backward(pb, dy, grads);
#endif
  baseline::backward(pb, dy, grads);
}

}  // namespace zeromamba::cpu
