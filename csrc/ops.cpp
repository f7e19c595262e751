// Op schemas of the zeromamba library (docs/design.md §2).
//
// Two layers:
//  * public ops (selective_scan, ss2d_scan, slp_project and their *_backward) take a `backend`
//    name; their implementation, autograd and fake kernels are registered from Python
//    (zeromamba/ops.py), because two backends (reference, triton) are Python.
//  * kernel ops (*_fwd, *_bwd) are the device kernels: C++ for the CPU dispatch key
//    (csrc/cpu/), CUDA for the CUDA key (csrc/cuda/). C++/libtorch users call these directly.
// cross_scan / cross_merge are pure layout ops, written once here with ATen views.

#include <torch/library.h>
#include <ATen/ATen.h>

namespace zeromamba {

// (b, C, H, W) -> (b, 4, C, H*W): row-major, column-major and both reversed.
at::Tensor cross_scan(const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 4, "cross_scan: x must be (b, C, H, W), got shape ", x.sizes());
  at::Tensor row = x.flatten(2);
  at::Tensor col = x.transpose(2, 3).flatten(2);
  return at::stack({row, col, row.flip(-1), col.flip(-1)}, 1);
}

// (b, 4, C, H*W) -> (b, C, H, W): the adjoint of cross_scan (adds the four orders back).
at::Tensor cross_merge(const at::Tensor& ys, int64_t H, int64_t W) {
  TORCH_CHECK(ys.dim() == 4 && ys.size(1) == 4,
              "cross_merge: ys must be (b, 4, C, L), got shape ", ys.sizes());
  TORCH_CHECK(H > 0 && W > 0 && ys.size(3) == H * W, "cross_merge: ys has L = ", ys.size(3),
              " but H * W = ", H, " * ", W);
  const int64_t b = ys.size(0), C = ys.size(2);
  at::Tensor row = ys.select(1, 0) + ys.select(1, 2).flip(-1);  // indexed h*W + w
  at::Tensor col = ys.select(1, 1) + ys.select(1, 3).flip(-1);  // indexed w*H + h
  return row.view({b, C, H, W}) + col.view({b, C, W, H}).transpose(2, 3);
}

}  // namespace zeromamba

TORCH_LIBRARY(zeromamba, m) {
  m.set_python_module("zeromamba.ops");

  // ---- public ops (Python implementation, autograd and fake kernels) ----
  m.def(
      "selective_scan(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D=None, "
      "Tensor? delta_bias=None, bool delta_softplus=False, bool out_float32=False, "
      "str? backend=None) -> Tensor");
  m.def(
      "selective_scan_backward(Tensor dy, Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, "
      "Tensor? D, Tensor? delta_bias, bool delta_softplus, str? backend=None) "
      "-> (Tensor du, Tensor ddelta, Tensor dA, Tensor dB, Tensor dC, Tensor dD, "
      "Tensor ddelta_bias)");
  m.def(
      "ss2d_scan(Tensor x, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D=None, "
      "Tensor? delta_bias=None, bool delta_softplus=True, bool channel_last=False, "
      "bool out_float32=False, str? backend=None) -> Tensor");
  m.def(
      "ss2d_scan_backward(Tensor dy, Tensor x, Tensor delta, Tensor A, Tensor B, Tensor C, "
      "Tensor? D, Tensor? delta_bias, bool delta_softplus, bool channel_last, "
      "str? backend=None) "
      "-> (Tensor dx, Tensor ddelta, Tensor dA, Tensor dB, Tensor dC, Tensor dD, "
      "Tensor ddelta_bias)");
  m.def("slp_project(Tensor feat, Tensor q1, Tensor q2, str? backend=None) -> Tensor");
  m.def(
      "slp_project_backward(Tensor dout, Tensor feat, Tensor q1, Tensor q2, str? backend=None) "
      "-> (Tensor dfeat, Tensor dq1, Tensor dq2)");

  // ---- layout ops (ATen, every device, autograd derived) ----
  m.def("cross_scan(Tensor x) -> Tensor");
  m.def("cross_merge(Tensor ys, int H, int W) -> Tensor");
  m.impl("cross_scan", c10::DispatchKey::CompositeImplicitAutograd, &zeromamba::cross_scan);
  m.impl("cross_merge", c10::DispatchKey::CompositeImplicitAutograd, &zeromamba::cross_merge);

  // ---- device kernels (CPU: csrc/cpu, CUDA: csrc/cuda) ----
  m.def(
      "selective_scan_fwd(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D, "
      "Tensor? delta_bias, bool delta_softplus, bool out_float32) -> Tensor");
  m.def(
      "selective_scan_bwd(Tensor dy, Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, "
      "Tensor? D, Tensor? delta_bias, bool delta_softplus) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "ss2d_scan_fwd(Tensor x, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D, "
      "Tensor? delta_bias, bool delta_softplus, bool channel_last, bool out_float32) -> Tensor");
  m.def(
      "ss2d_scan_bwd(Tensor dy, Tensor x, Tensor delta, Tensor A, Tensor B, Tensor C, "
      "Tensor? D, Tensor? delta_bias, bool delta_softplus, bool channel_last) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("slp_project_fwd(Tensor feat, Tensor q1, Tensor q2) -> Tensor");
  m.def(
      "slp_project_bwd(Tensor dout, Tensor feat, Tensor q1, Tensor q2) "
      "-> (Tensor, Tensor, Tensor)");
}
