// Host interface of the CUDA kernels: plain parameter structs and launch functions.
//
// No torch header here or in any .cu/.cuh: the kernels compile with bare nvcc. The binding
// (ops_cuda.cpp) fills these structs from tensors, allocates outputs and workspaces, and turns a
// non-success cudaError_t into a TORCH_CHECK.
//
// All strides and sizes are in elements. Parameters A, D, delta_bias are fp32; activations are
// fp32, fp16 or bf16 (DType); the math and all accumulation are fp32.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace zeromamba {
namespace cuda {

enum class DType { kFloat32, kFloat16, kBFloat16 };

// The largest d_state (N) the scan kernels serve.
constexpr int kMaxDState = 16;

// One scan problem (names: docs/design.md §1), either
//  * selective_scan: u, delta (b, d, L), B/C (b, G, N, L): n_dir = 1, H = 1, W = L, groups = G
//    B/C groups of channels / groups channels each;
//  * ss2d_scan: x (b, C, H, W), delta (b, 4, C, H, W), B/C (b, 4, N, H, W), or their
//    channel-last forms: n_dir = 4; direction k reads B[:, k], so the kernels treat each
//    direction as a B/C group of all C channels (groups = 4). The layout is carried by the
//    strides alone; the extent of one (b, c) plane of every tensor must fit in 32 bits.
// Every tensor is addressed as base + b*s_b + [k*s_k] + c*s_c + h*s_h + w*s_w; a sequence step
// t of direction k visits the spatial position (h, w) given by docs/design.md §2.2.
struct ScanParams {
  DType dtype;
  int batch, channels, groups, d_state, H, W, n_dir;
  bool delta_softplus;

  const void* u;
  const void* delta;
  const float* A;           // (n_dir * channels, d_state)
  const void* B;
  const void* C;
  const float* D;           // (n_dir * channels,) or nullptr
  const float* delta_bias;  // (n_dir * channels,) or nullptr

  int64_t u_sb, u_sc, u_sh, u_sw;             // u / x, also y and du / dx
  int64_t dl_sb, dl_sk, dl_sc, dl_sh, dl_sw;  // delta, also ddelta
  int64_t bc_sb, bc_sg, bc_sn, bc_sh, bc_sw;  // B and C (same layout), also dB and dC
};

struct ScanFwdParams : ScanParams {
  void* y;           // layout of u
  bool y_float32;    // y is fp32 (out_float32 with half inputs) instead of dtype
  float* workspace;  // scan_fwd_workspace_floats(*this) floats (may be 0)
  cudaStream_t stream;
};

struct ScanBwdParams : ScanParams {
  const void* dy;     // layout of u
  bool dy_float32;    // dy is fp32 instead of dtype
  void* du;           // layout of u, dtype
  void* ddelta;       // layout of delta, dtype
  void* dB;           // layout of B, dtype
  void* dC;           // layout of C, dtype
  float* dA;          // (n_dir * channels, d_state)
  float* dD;          // (n_dir * channels,)
  float* ddelta_bias; // (n_dir * channels,)
  // Fixed-order reductions everywhere (no floating-point atomics): same bits on every run.
  bool deterministic;
  float* workspace;   // scan_bwd_workspace_floats(*this) floats
  cudaStream_t stream;
};

int64_t scan_fwd_workspace_floats(const ScanFwdParams& p);
int64_t scan_bwd_workspace_floats(const ScanBwdParams& p);
cudaError_t scan_fwd(const ScanFwdParams& p);
cudaError_t scan_bwd(const ScanBwdParams& p);

// slp_project (docs/design.md §4.6). The score GEMMs s1 = q1 feat[b], s2 = q2 feat[b] run in
// the caller (cuBLAS in the binding) into one fp32 buffer S (b, 2A, R), contiguous: rows
// 0..A-1 of batch b hold s1, rows A..2A-1 hold s2. These kernels do the per-row rest.
struct SlpScores {
  DType dtype;  // of out, dout and ds
  int batch, n_attr, R;
  const float* scores;  // S (b, 2A, R)
  cudaStream_t stream;
};

struct SlpFwdParams : SlpScores {
  void* out;  // (b, A), dtype
};

// ds = (ds1; ds2) for the gradient GEMMs: (2A, b, R) contiguous in dtype, ds1 in rows 0..A-1,
// with ds1 = dout * p * (s2 - out), ds2 = dout * p, p = softmax_r(s1).
struct SlpBwdParams : SlpScores {
  const void* dout;  // (b, A) contiguous, dtype
  void* ds;          // (2A, b, R), dtype
};

cudaError_t slp_fwd(const SlpFwdParams& p);
cudaError_t slp_bwd(const SlpBwdParams& p);

}  // namespace cuda
}  // namespace zeromamba
