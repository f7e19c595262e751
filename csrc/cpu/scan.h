// The CPU selective-scan core shared by selective_scan and ss2d_scan.
//
// Both ops are one recurrence over sequences described by strides:
//   batch b, direction k (n_dir = 1 for selective_scan, 4 for ss2d), channel c, spatial position p
//   (names as in docs/design.md §1).
//   Channel c of group g = c / (channels / groups) uses the B/C plane (b, k, g); its parameters
//   (A, D, delta_bias) are row k * channels + c; direction k visits position pos[k * L + t] at
//   step t (the identity when pos is null).
// The core walks V channels ("lanes") at once: their x/delta/dy are staged per thread into
// [p][lane] buffers in the compute dtype, so every step is a short vector loop whatever the layout
// (channel-first lanes are L apart, channel-last lanes are adjacent), and y or dx accumulates
// over the n_dir directions in the same buffer: no cross-scan copy, no per-direction outputs.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace zeromamba::cpu {

// A tensor indexed (b, k, c, p): x, delta, y, dy, dx, ddelta. Stride sk is 0 for tensors shared
// by the directions (x, y).
// The largest d_state the kernels take (the Python layer checks the same bound).
constexpr int kMaxDState = 16;

struct LaneTensor {
  void* data = nullptr;
  at::ScalarType dtype = at::kFloat;
  int64_t sb = 0, sk = 0, sc = 0, sp = 0;
};

// A tensor indexed (b, k, g, n, p): B, C, dB, dC.
struct StateTensor {
  void* data = nullptr;
  at::ScalarType dtype = at::kFloat;
  int64_t sb = 0, sk = 0, sg = 0, sn = 0, sp = 0;
};

struct ScanProblem {
  int64_t batch = 0, n_dir = 1, channels = 0, groups = 1, d_state = 1, L = 0;
  const int32_t* pos = nullptr;  // (n_dir, L) or null
  LaneTensor u, delta;
  StateTensor B, C;
  // Parameters, contiguous, in the compute dtype: A (rows, d_state); D, bias (rows,) or
  // null, rows = n_dir * channels.
  const void* A = nullptr;
  const void* D = nullptr;
  const void* bias = nullptr;
  bool softplus = false;
  at::ScalarType compute = at::kFloat;
};

// Gradients written by scan_backward. dA (rows, d_state), dD and dbias (rows,) are
// contiguous in the compute dtype.
struct ScanGrads {
  LaneTensor du, ddelta;
  StateTensor dB, dC;
  void* dA = nullptr;
  void* dD = nullptr;
  void* dbias = nullptr;
};

// y (indexed (b, c, p), sk = 0) = the scan summed over the n_dir directions, plus D-term.
void scan_forward(const ScanProblem& pb, const LaneTensor& y);

// Gradients of sum(dy * y) with respect to every input (dD = sum dy * u and dbias = sum ddelta
// even when D / bias are absent).
void scan_backward(const ScanProblem& pb, const LaneTensor& dy, const ScanGrads& grads);

}  // namespace zeromamba::cpu
