// CPU kernels of selective_scan_{fwd,bwd} and ss2d_scan_{fwd,bwd} (schemas in csrc/ops.cpp):
// argument checks, layout description for the shared scan core (scan.cpp) and output allocation.

#include "common.h"  // first: sets the optimisation pragma
#include <torch/library.h>

#include <limits>
#include <tuple>
#include <vector>

#include "scan.h"

namespace zeromamba::cpu {
namespace {

using Grads7 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                          at::Tensor>;

LaneTensor lanes(const at::Tensor& t, int64_t sb, int64_t sk, int64_t sc, int64_t sp) {
  return {t.data_ptr(), t.scalar_type(), sb, sk, sc, sp};
}

StateTensor states(const at::Tensor& t, int64_t sb, int64_t sk, int64_t sg, int64_t sn,
                   int64_t sp) {
  return {t.data_ptr(), t.scalar_type(), sb, sk, sg, sn, sp};
}

// A layout pointed at another tensor of the same shape (an output, or dy).
template <typename Layout>
Layout with_data(Layout t, const at::Tensor& data) {
  t.data = data.data_ptr();
  t.dtype = data.scalar_type();
  return t;
}

void check_dtype(const at::Tensor& t, const char* name) {
  const auto st = t.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kDouble || st == at::kHalf || st == at::kBFloat16,
              name, " must be float32, float16, bfloat16 or float64, got ", st);
}

void check_shape(const at::Tensor& t, const char* name, at::IntArrayRef expected) {
  TORCH_CHECK(t.sizes() == expected, name, " must have shape ", expected, ", got ", t.sizes());
}

// Parameters (A, D, delta_bias) in the compute dtype, contiguous; D / bias may be absent.
struct Params {
  at::Tensor A, D, bias;
};

Params params(const at::Tensor& A, const std::optional<at::Tensor>& D,
              const std::optional<at::Tensor>& bias, int64_t rows, int64_t d_state,
              at::ScalarType act) {
  const auto ct = compute_dtype(act);
  check_param(A, "A", act);
  check_shape(A, "A", {rows, d_state});
  TORCH_CHECK(d_state >= 1 && d_state <= kMaxDState, "d_state N = A.shape[1] must be in 1..",
              kMaxDState, ", got ", d_state);
  Params p;
  p.A = A.to(ct).contiguous();
  if (D.has_value()) {
    check_param(*D, "D", act);
    check_shape(*D, "D", {rows});
    p.D = D->to(ct).contiguous();
  }
  if (bias.has_value()) {
    check_param(*bias, "delta_bias", act);
    check_shape(*bias, "delta_bias", {rows});
    p.bias = bias->to(ct).contiguous();
  }
  return p;
}

// The problem's sizes, parameters and flags (its activation layouts are set by the caller).
void set_problem(ScanProblem& pb, const Params& p, int64_t batch, int64_t n_dir,
                 int64_t channels, int64_t groups, int64_t d_state, int64_t L,
                 bool delta_softplus, at::ScalarType act) {
  pb.batch = batch;
  pb.n_dir = n_dir;
  pb.channels = channels;
  pb.groups = groups;
  pb.d_state = d_state;
  pb.L = L;
  pb.A = p.A.data_ptr();
  pb.D = p.D.defined() ? p.D.data_ptr() : nullptr;
  pb.bias = p.bias.defined() ? p.bias.data_ptr() : nullptr;
  pb.softplus = delta_softplus;
  pb.compute = compute_dtype(act);
}

at::ScalarType out_dtype(at::ScalarType act, bool out_float32) {
  return out_float32 && (act == at::kHalf || act == at::kBFloat16) ? at::kFloat : act;
}

void check_dy(const at::Tensor& dy, at::IntArrayRef shape, at::ScalarType act) {
  check_shape(dy, "dy", shape);
  TORCH_CHECK(dy.device().is_cpu(), "dy must be a CPU tensor");
  TORCH_CHECK(dy.scalar_type() == act || dy.scalar_type() == out_dtype(act, true),
              "dy must have the dtype of the forward output, got ", dy.scalar_type());
}

// Allocates the gradients, runs the core and casts dA / dD / ddelta_bias to A's dtype.
Grads7 run_backward(const ScanProblem& pb, const LaneTensor& dyT, const at::Tensor& u,
                    const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
                    const at::Tensor& C, LaneTensor du_layout, LaneTensor dd_layout,
                    StateTensor dB_layout, StateTensor dC_layout) {
  const int64_t rows = A.size(0);
  const auto param_opts = A.options().dtype(pb.compute);
  at::Tensor du = new_output(u.sizes(), u.options());
  at::Tensor ddelta = new_output(delta.sizes(), delta.options());
  at::Tensor dB = new_output(B.sizes(), B.options());
  at::Tensor dC = new_output(C.sizes(), C.options());
  at::Tensor dA = new_output({rows, A.size(1)}, param_opts);
  at::Tensor dD = new_output({rows}, param_opts);
  at::Tensor dbias = new_output({rows}, param_opts);
  ScanGrads g;
  g.du = with_data(du_layout, du);
  g.ddelta = with_data(dd_layout, ddelta);
  g.dB = with_data(dB_layout, dB);
  g.dC = with_data(dC_layout, dC);
  g.dA = dA.data_ptr();
  g.dD = dD.data_ptr();
  g.dbias = dbias.data_ptr();
  scan_backward(pb, dyT, g);
  const auto pt = A.scalar_type();
  return {du, ddelta, dA.to(pt), dB, dC, dD.to(pt), dbias.to(pt)};
}

// ---------------------------------------------------------------------------- selective_scan

struct ScanArgs {
  at::Tensor u, delta, B, C;
  Params p;
  ScanProblem pb;
};

ScanArgs scan_args(const at::Tensor& u_in, const at::Tensor& delta_in, const at::Tensor& A,
                   const at::Tensor& B_in, const at::Tensor& C_in,
                   const std::optional<at::Tensor>& D, const std::optional<at::Tensor>& bias,
                   bool delta_softplus) {
  TORCH_CHECK(u_in.dim() == 3, "u must be (b, d, L), got ", u_in.sizes());
  TORCH_CHECK(B_in.dim() == 4, "B must be (b, G, N, L), got ", B_in.sizes());
  check_dtype(u_in, "u");
  const auto act = u_in.scalar_type();
  const int64_t b = u_in.size(0), d = u_in.size(1), L = u_in.size(2);
  const int64_t G = B_in.size(1), d_state = A.dim() == 2 ? A.size(1) : 0;
  TORCH_CHECK(G >= 1 && d % G == 0, "B has G = ", G, " groups, which must divide d = ", d);
  ScanArgs s;
  s.p = params(A, D, bias, d, d_state, act);
  for (auto [t, name] : {std::pair{&u_in, "u"}, {&delta_in, "delta"}, {&B_in, "B"}, {&C_in, "C"}})
    check_activation(*t, name, act);
  check_shape(delta_in, "delta", {b, d, L});
  check_shape(B_in, "B", {b, G, d_state, L});
  check_shape(C_in, "C", {b, G, d_state, L});
  s.u = u_in.contiguous();
  s.delta = delta_in.contiguous();
  s.B = B_in.contiguous();
  s.C = C_in.contiguous();
  ScanProblem& pb = s.pb;
  set_problem(pb, s.p, b, 1, d, G, d_state, L, delta_softplus, act);
  pb.u = lanes(s.u, d * L, 0, L, 1);
  pb.delta = lanes(s.delta, d * L, 0, L, 1);
  pb.B = states(s.B, G * d_state * L, 0, d_state * L, L, 1);
  pb.C = states(s.C, G * d_state * L, 0, d_state * L, L, 1);
  return s;
}

at::Tensor selective_scan_fwd(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                              const at::Tensor& B, const at::Tensor& C,
                              const std::optional<at::Tensor>& D,
                              const std::optional<at::Tensor>& delta_bias, bool delta_softplus,
                              bool out_float32) {
  ScanArgs s = scan_args(u, delta, A, B, C, D, delta_bias, delta_softplus);
  const int64_t d = s.pb.channels, L = s.pb.L;
  at::Tensor y = new_output(u.sizes(), u.options().dtype(out_dtype(u.scalar_type(), out_float32)));
  scan_forward(s.pb, lanes(y, d * L, 0, L, 1));
  return y;
}

Grads7 selective_scan_bwd(const at::Tensor& dy_in, const at::Tensor& u, const at::Tensor& delta,
                          const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                          const std::optional<at::Tensor>& D,
                          const std::optional<at::Tensor>& delta_bias, bool delta_softplus) {
  ScanArgs s = scan_args(u, delta, A, B, C, D, delta_bias, delta_softplus);
  check_dy(dy_in, u.sizes(), u.scalar_type());
  const at::Tensor dy = dy_in.contiguous();
  const int64_t d = s.pb.channels, L = s.pb.L, G = s.pb.groups, d_state = s.pb.d_state;
  const LaneTensor lane_layout = lanes(dy, d * L, 0, L, 1);
  const StateTensor state_layout = states(s.B, G * d_state * L, 0, d_state * L, L, 1);
  return run_backward(s.pb, lane_layout, s.u, s.delta, A, s.B, s.C, lane_layout, lane_layout,
                      state_layout, state_layout);
}

// ---------------------------------------------------------------------------- ss2d_scan

// Position visited at step t of each direction (docs/design.md §2.2), as (4, L) int32.
std::vector<int32_t> scan_positions(int64_t H, int64_t W) {
  const int64_t L = H * W;
  TORCH_CHECK(L <= std::numeric_limits<int32_t>::max(), "ss2d_scan: H * W too large");
  std::vector<int32_t> pos(4 * L);
  for (int64_t t = 0; t < L; ++t) {
    pos[t] = static_cast<int32_t>(t);                              // row-major
    pos[L + t] = static_cast<int32_t>((t % H) * W + t / H);        // column-major
    pos[2 * L + t] = static_cast<int32_t>(L - 1 - t);              // reversed row-major
  }
  for (int64_t t = 0; t < L; ++t) pos[3 * L + t] = pos[L + (L - 1 - t)];  // reversed column-major
  return pos;
}

struct Ss2dArgs {
  at::Tensor x, delta, B, C;
  Params p;
  std::vector<int32_t> pos;
  ScanProblem pb;
  LaneTensor x_layout;  // also the layout of y, dy, dx
  LaneTensor delta_layout;
  StateTensor bc_layout;
};

Ss2dArgs ss2d_args(const at::Tensor& x_in, const at::Tensor& delta_in, const at::Tensor& A,
                   const at::Tensor& B_in, const at::Tensor& C_in,
                   const std::optional<at::Tensor>& D, const std::optional<at::Tensor>& bias,
                   bool delta_softplus, bool channel_last) {
  TORCH_CHECK(x_in.dim() == 4, "x must be ", channel_last ? "(b, H, W, C)" : "(b, C, H, W)",
              ", got ", x_in.sizes());
  check_dtype(x_in, "x");
  const auto act = x_in.scalar_type();
  const int64_t b = x_in.size(0);
  const int64_t c = channel_last ? x_in.size(3) : x_in.size(1);
  const int64_t H = channel_last ? x_in.size(1) : x_in.size(2);
  const int64_t W = channel_last ? x_in.size(2) : x_in.size(3);
  const int64_t L = H * W, d_state = A.dim() == 2 ? A.size(1) : 0;
  Ss2dArgs s;
  s.p = params(A, D, bias, 4 * c, d_state, act);
  for (auto [t, name] : {std::pair{&x_in, "x"}, {&delta_in, "delta"}, {&B_in, "B"}, {&C_in, "C"}})
    check_activation(*t, name, act);
  if (channel_last) {
    check_shape(delta_in, "delta", {b, 4, H, W, c});
    check_shape(B_in, "B", {b, 4, H, W, d_state});
    check_shape(C_in, "C", {b, 4, H, W, d_state});
  } else {
    check_shape(delta_in, "delta", {b, 4, c, H, W});
    check_shape(B_in, "B", {b, 4, d_state, H, W});
    check_shape(C_in, "C", {b, 4, d_state, H, W});
  }
  s.x = x_in.contiguous();
  s.delta = delta_in.contiguous();
  s.B = B_in.contiguous();
  s.C = C_in.contiguous();
  s.pos = scan_positions(H, W);
  if (channel_last) {
    s.x_layout = lanes(s.x, L * c, 0, 1, c);
    s.delta_layout = lanes(s.delta, 4 * L * c, L * c, 1, c);
    s.bc_layout = states(s.B, 4 * L * d_state, L * d_state, 0, 1, d_state);
  } else {
    s.x_layout = lanes(s.x, c * L, 0, L, 1);
    s.delta_layout = lanes(s.delta, 4 * c * L, c * L, L, 1);
    s.bc_layout = states(s.B, 4 * d_state * L, d_state * L, 0, L, 1);
  }
  ScanProblem& pb = s.pb;
  set_problem(pb, s.p, b, 4, c, 1, d_state, L, delta_softplus, act);
  pb.pos = s.pos.data();
  pb.u = s.x_layout;
  pb.delta = s.delta_layout;
  pb.B = s.bc_layout;
  pb.C = s.bc_layout;
  pb.C.data = s.C.data_ptr();
  return s;
}

at::Tensor ss2d_scan_fwd(const at::Tensor& x, const at::Tensor& delta, const at::Tensor& A,
                         const at::Tensor& B, const at::Tensor& C,
                         const std::optional<at::Tensor>& D,
                         const std::optional<at::Tensor>& delta_bias, bool delta_softplus,
                         bool channel_last, bool out_float32) {
  Ss2dArgs s = ss2d_args(x, delta, A, B, C, D, delta_bias, delta_softplus, channel_last);
  at::Tensor y = new_output(x.sizes(), x.options().dtype(out_dtype(x.scalar_type(), out_float32)));
  scan_forward(s.pb, with_data(s.x_layout, y));
  return y;
}

Grads7 ss2d_scan_bwd(const at::Tensor& dy_in, const at::Tensor& x, const at::Tensor& delta,
                     const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                     const std::optional<at::Tensor>& D,
                     const std::optional<at::Tensor>& delta_bias, bool delta_softplus,
                     bool channel_last) {
  Ss2dArgs s = ss2d_args(x, delta, A, B, C, D, delta_bias, delta_softplus, channel_last);
  check_dy(dy_in, x.sizes(), x.scalar_type());
  const at::Tensor dy = dy_in.contiguous();
  return run_backward(s.pb, with_data(s.x_layout, dy), s.x, s.delta, A, s.B, s.C, s.x_layout,
                      s.delta_layout, s.bc_layout, s.bc_layout);
}

}  // namespace
}  // namespace zeromamba::cpu

TORCH_LIBRARY_IMPL(zeromamba, CPU, m) {
  m.impl("selective_scan_fwd", &zeromamba::cpu::selective_scan_fwd);
  m.impl("selective_scan_bwd", &zeromamba::cpu::selective_scan_bwd);
  m.impl("ss2d_scan_fwd", &zeromamba::cpu::ss2d_scan_fwd);
  m.impl("ss2d_scan_bwd", &zeromamba::cpu::ss2d_scan_bwd);
}
