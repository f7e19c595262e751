// C entry points of the kernel lab (bench/kernel_lab/emulator.py loads them with ctypes): the
// plain parameter structs of csrc/cuda/launch.h filled from flat arrays, then the real launch
// functions (scan_fwd, scan_bwd, slp_fwd, slp_bwd), so the launch configuration, workspace
// layout and every kernel run as they would on a GPU. The strides come from the tensors as the
// binding (csrc/cuda/ops_cuda.cpp) passes them.
//
// Every entry returns the cudaError_t of the launch function; a sanitizer error (a C++ exception
// from the emulator) returns -1 with its message in `err`.
#include <cstdio>
#include <cstring>
#include <exception>

#include "../cuda/launch.h"

namespace {

using zeromamba::cuda::DType;
using zeromamba::cuda::ScanBwdParams;
using zeromamba::cuda::ScanFwdParams;
using zeromamba::cuda::ScanParams;
using zeromamba::cuda::SlpBwdParams;
using zeromamba::cuda::SlpFwdParams;
using zeromamba::cuda::SlpScores;

// ints: dtype, batch, channels, groups, d_state, H, W, n_dir, delta_softplus, out/dy float32,
// deterministic, then 14 strides: u (b, c, h, w), delta (b, k, c, h, w), B/C (b, g, n, h, w).
// ptrs: u, delta, A, B, C, D, delta_bias.
void fill_scan(ScanParams& p, const long long* v, void* const* ptr) {
  p.dtype = static_cast<DType>(v[0]);
  p.batch = static_cast<int>(v[1]);
  p.channels = static_cast<int>(v[2]);
  p.groups = static_cast<int>(v[3]);
  p.d_state = static_cast<int>(v[4]);
  p.H = static_cast<int>(v[5]);
  p.W = static_cast<int>(v[6]);
  p.n_dir = static_cast<int>(v[7]);
  p.delta_softplus = v[8] != 0;
  const long long* s = v + 11;
  p.u_sb = s[0], p.u_sc = s[1], p.u_sh = s[2], p.u_sw = s[3];
  p.dl_sb = s[4], p.dl_sk = s[5], p.dl_sc = s[6], p.dl_sh = s[7], p.dl_sw = s[8];
  p.bc_sb = s[9], p.bc_sg = s[10], p.bc_sn = s[11], p.bc_sh = s[12], p.bc_sw = s[13];
  p.u = ptr[0];
  p.delta = ptr[1];
  p.A = static_cast<const float*>(ptr[2]);
  p.B = ptr[3];
  p.C = ptr[4];
  p.D = static_cast<const float*>(ptr[5]);
  p.delta_bias = static_cast<const float*>(ptr[6]);
}

// ptrs 7..: y, workspace.
ScanFwdParams scan_fwd_params(const long long* v, void* const* ptr) {
  ScanFwdParams p{};
  fill_scan(p, v, ptr);
  p.y_float32 = v[9] != 0;
  p.y = ptr[7];
  p.workspace = static_cast<float*>(ptr[8]);
  p.stream = nullptr;
  return p;
}

// ptrs 7..: dy, du, ddelta, dB, dC, dA, dD, ddelta_bias, workspace.
ScanBwdParams scan_bwd_params(const long long* v, void* const* ptr) {
  ScanBwdParams p{};
  fill_scan(p, v, ptr);
  p.dy_float32 = v[9] != 0;
  p.deterministic = v[10] != 0;
  p.dy = ptr[7];
  p.du = ptr[8];
  p.ddelta = ptr[9];
  p.dB = ptr[10];
  p.dC = ptr[11];
  p.dA = static_cast<float*>(ptr[12]);
  p.dD = static_cast<float*>(ptr[13]);
  p.ddelta_bias = static_cast<float*>(ptr[14]);
  p.workspace = static_cast<float*>(ptr[15]);
  p.stream = nullptr;
  return p;
}

// ints: dtype, batch, n_attr, R; ptrs: S (b, 2A, R) fp32, then out (fwd) or dout, ds (bwd).
void fill_slp(SlpScores& p, const long long* v, void* const* ptr) {
  p.dtype = static_cast<DType>(v[0]);
  p.batch = static_cast<int>(v[1]);
  p.n_attr = static_cast<int>(v[2]);
  p.R = static_cast<int>(v[3]);
  p.scores = static_cast<const float*>(ptr[0]);
  p.stream = nullptr;
}

template <typename F>
int guarded(char* err, int err_len, F&& f) {
  try {
    return static_cast<int>(f());
  } catch (const std::exception& e) {
    std::snprintf(err, static_cast<size_t>(err_len), "%s", e.what());
    return -1;
  }
}

}  // namespace

extern "C" {

long long zm_emu_scan_fwd_workspace(const long long* v, void* const* ptr) {
  return zeromamba::cuda::scan_fwd_workspace_floats(scan_fwd_params(v, ptr));
}

long long zm_emu_scan_bwd_workspace(const long long* v, void* const* ptr) {
  return zeromamba::cuda::scan_bwd_workspace_floats(scan_bwd_params(v, ptr));
}

int zm_emu_scan_fwd(const long long* v, void* const* ptr, char* err, int err_len) {
  return guarded(err, err_len, [&] { return zeromamba::cuda::scan_fwd(scan_fwd_params(v, ptr)); });
}

int zm_emu_scan_bwd(const long long* v, void* const* ptr, char* err, int err_len) {
  return guarded(err, err_len, [&] { return zeromamba::cuda::scan_bwd(scan_bwd_params(v, ptr)); });
}

int zm_emu_slp_fwd(const long long* v, void* const* ptr, char* err, int err_len) {
  return guarded(err, err_len, [&] {
    SlpFwdParams p{};
    fill_slp(p, v, ptr);
    p.out = ptr[1];
    return zeromamba::cuda::slp_fwd(p);
  });
}

int zm_emu_slp_bwd(const long long* v, void* const* ptr, char* err, int err_len) {
  return guarded(err, err_len, [&] {
    SlpBwdParams p{};
    fill_slp(p, v, ptr);
    p.dout = ptr[1];
    p.ds = ptr[2];
    return zeromamba::cuda::slp_bwd(p);
  });
}
}
