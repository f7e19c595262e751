// CUDA registrations of the kernel ops (schemas in csrc/ops.cpp): tensors -> the plain parameter
// structs of launch.h, outputs and workspaces allocated here, kernels launched on the current
// stream, every launch error reported through TORCH_CHECK.
//
// The CUDA backend takes float32, float16 and bfloat16 activations (float64 is for the cpu and
// reference backends). Environment: ZEROMAMBA_POISON=1 fills fresh outputs with NaN before the
// kernels run; ZEROMAMBA_DETERMINISTIC=1 (or torch.use_deterministic_algorithms(True)) makes the
// backward reductions run in a fixed order, without floating-point atomics.
#ifdef ZEROMAMBA_WITH_CUDA

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>
#include <torch/version.h>

#include <cstdlib>
#include <cstring>
#include <limits>
#include <optional>
#include <tuple>
#include <vector>

#include "launch.h"

namespace zeromamba {
namespace cuda {
namespace {

bool env_flag(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && std::strcmp(v, "1") == 0;
}

bool deterministic() {
  return env_flag("ZEROMAMBA_DETERMINISTIC") || at::globalContext().deterministicAlgorithms();
}

at::Tensor new_output(at::IntArrayRef sizes, const at::TensorOptions& options) {
  at::Tensor t = at::empty(sizes, options);
  if (env_flag("ZEROMAMBA_POISON")) t.fill_(std::numeric_limits<double>::quiet_NaN());
  return t;
}

at::Tensor workspace(int64_t floats, const at::Tensor& like) {
  return at::empty({floats}, like.options().dtype(at::kFloat));
}

void check_launch(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, op, ": CUDA kernel failed: ", cudaGetErrorString(err));
}

DType activation_dtype(const char* op, const char* name, const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat:
      return DType::kFloat32;
    case at::kHalf:
      return DType::kFloat16;
    case at::kBFloat16:
      return DType::kBFloat16;
    case at::kDouble:
      TORCH_CHECK(false, op, ": the cuda backend takes float32, float16 or bfloat16, but ", name,
                  " is float64 (use backend='cpu' or 'reference' for float64)");
    default:
      TORCH_CHECK(false, op, ": ", name, " must be float32, float16 or bfloat16, got ",
                  t.scalar_type());
  }
}

// An input on first's device with first's dtype, made contiguous for the kernels.
at::Tensor activation(const char* op, const char* name, const at::Tensor& t,
                      const at::Tensor& first) {
  TORCH_CHECK(t.is_cuda() && t.device() == first.device(), op, ": ", name, " must be on ",
              first.device(), ", got ", t.device());
  TORCH_CHECK(t.scalar_type() == first.scalar_type(), op, ": ", name, " must have the dtype of ",
              "the first input (", first.scalar_type(), "), got ", t.scalar_type());
  return t.contiguous();
}

// A float32 parameter of shape (rows[, N]) on first's device; empty when absent.
at::Tensor parameter(const char* op, const char* name, const std::optional<at::Tensor>& t,
                     const at::Tensor& first, int64_t rows) {
  if (!t.has_value()) return at::Tensor();
  TORCH_CHECK(t->is_cuda() && t->device() == first.device(), op, ": ", name, " must be on ",
              first.device(), ", got ", t->device());
  TORCH_CHECK(t->scalar_type() == at::kFloat, op, ": ", name, " must be float32, got ",
              t->scalar_type());
  TORCH_CHECK(t->dim() >= 1 && t->size(0) == rows, op, ": ", name, " must have ", rows,
              " rows, got shape ", t->sizes());
  return t->contiguous();
}

const float* data_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<float>() : nullptr;
}

// ------------------------------------------------------------------------------------ scans

struct ScanInputs {
  at::Tensor u, delta, A, B, C, D, bias;
  ScanParams params{};
};

// The activations, contiguous, with the first one's dtype and device checked on the others.
ScanInputs scan_activations(const char* op, const char* first_name, const at::Tensor& first,
                            const at::Tensor& delta, const at::Tensor& B, const at::Tensor& C) {
  ScanInputs in;
  in.params.dtype = activation_dtype(op, first_name, first);
  in.u = first.contiguous();
  in.delta = activation(op, "delta", delta, first);
  in.B = activation(op, "B", B, first);
  in.C = activation(op, "C", C, first);
  return in;
}

// The softplus flag and the data pointers of the (contiguous) inputs, alike for both scans.
void set_scan_data(ScanInputs& in, bool softplus) {
  ScanParams& p = in.params;
  p.delta_softplus = softplus;
  p.u = in.u.data_ptr();
  p.delta = in.delta.data_ptr();
  p.A = in.A.data_ptr<float>();
  p.B = in.B.data_ptr();
  p.C = in.C.data_ptr();
  p.D = data_or_null(in.D);
  p.delta_bias = data_or_null(in.bias);
}

// selective_scan: u, delta (b, d, L); A (d, N); B, C (b, G, N, L); D, delta_bias (d,).
ScanInputs selective_scan_inputs(const char* op, const at::Tensor& u_in,
                                 const at::Tensor& delta_in, const at::Tensor& A_in,
                                 const at::Tensor& B_in, const at::Tensor& C_in,
                                 const std::optional<at::Tensor>& D_in,
                                 const std::optional<at::Tensor>& bias_in, bool softplus) {
  TORCH_CHECK(u_in.is_cuda(), op, ": u must be a CUDA tensor, got ", u_in.device());
  TORCH_CHECK(u_in.dim() == 3, op, ": u must be (b, d, L), got shape ", u_in.sizes());
  ScanInputs in = scan_activations(op, "u", u_in, delta_in, B_in, C_in);
  ScanParams& p = in.params;
  const int64_t b = u_in.size(0), d = u_in.size(1), L = u_in.size(2);
  TORCH_CHECK(in.delta.sizes() == u_in.sizes(), op, ": delta must have the shape of u ",
              u_in.sizes(), ", got ", in.delta.sizes());
  in.A = parameter(op, "A", A_in, u_in, d);
  TORCH_CHECK(in.A.dim() == 2 && in.A.size(1) >= 1 && in.A.size(1) <= 16, op,
              ": A must be (d, N) with 1 <= N <= 16, got shape ", in.A.sizes());
  const int64_t N = in.A.size(1);
  TORCH_CHECK(in.B.dim() == 4 && in.B.size(0) == b && in.B.size(2) == N && in.B.size(3) == L,
              op, ": B must be (b, G, N, L) = (", b, ", G, ", N, ", ", L, "), got shape ",
              in.B.sizes());
  const int64_t G = in.B.size(1);
  TORCH_CHECK(G >= 1 && d % G == 0, op, ": B has G = ", G, " groups, which must divide d = ", d);
  TORCH_CHECK(in.C.sizes() == in.B.sizes(), op, ": C must have the shape of B ", in.B.sizes(),
              ", got ", in.C.sizes());
  in.D = parameter(op, "D", D_in, u_in, d);
  in.bias = parameter(op, "delta_bias", bias_in, u_in, d);
  TORCH_CHECK(L < std::numeric_limits<int>::max() && d < std::numeric_limits<int>::max(), op,
              ": d and L must fit in 32 bits");

  p.batch = static_cast<int>(b);
  p.channels = static_cast<int>(d);
  p.groups = static_cast<int>(G);
  p.d_state = static_cast<int>(N);
  p.H = 1;
  p.W = static_cast<int>(L);
  p.n_dir = 1;
  set_scan_data(in, softplus);
  p.u_sb = d * L, p.u_sc = L, p.u_sh = 0, p.u_sw = 1;
  p.dl_sb = d * L, p.dl_sk = 0, p.dl_sc = L, p.dl_sh = 0, p.dl_sw = 1;
  p.bc_sb = G * N * L, p.bc_sg = N * L, p.bc_sn = L, p.bc_sh = 0, p.bc_sw = 1;
  return in;
}

// ss2d_scan, channel-first: x (b, C, H, W), delta (b, 4, C, H, W), B/C (b, 4, N, H, W);
// channel-last: x (b, H, W, C), delta (b, 4, H, W, C), B/C (b, 4, H, W, N).
// A (4C, N); D, delta_bias (4C,).
ScanInputs ss2d_inputs(const char* op, const at::Tensor& x_in, const at::Tensor& delta_in,
                       const at::Tensor& A_in, const at::Tensor& B_in, const at::Tensor& C_in,
                       const std::optional<at::Tensor>& D_in,
                       const std::optional<at::Tensor>& bias_in, bool softplus,
                       bool channel_last) {
  TORCH_CHECK(x_in.is_cuda(), op, ": x must be a CUDA tensor, got ", x_in.device());
  TORCH_CHECK(x_in.dim() == 4, op, ": x must be ",
              channel_last ? "(b, H, W, C)" : "(b, C, H, W)", ", got shape ", x_in.sizes());
  ScanInputs in = scan_activations(op, "x", x_in, delta_in, B_in, C_in);
  ScanParams& p = in.params;
  const int64_t b = x_in.size(0);
  const int64_t c = channel_last ? x_in.size(3) : x_in.size(1);
  const int64_t H = channel_last ? x_in.size(1) : x_in.size(2);
  const int64_t W = channel_last ? x_in.size(2) : x_in.size(3);
  in.A = parameter(op, "A", A_in, x_in, 4 * c);
  TORCH_CHECK(in.A.dim() == 2 && in.A.size(1) >= 1 && in.A.size(1) <= 16, op,
              ": A must be (4C, N) with 1 <= N <= 16, got shape ", in.A.sizes());
  const int64_t N = in.A.size(1);
  const std::vector<int64_t> delta_shape =
      channel_last ? std::vector<int64_t>{b, 4, H, W, c} : std::vector<int64_t>{b, 4, c, H, W};
  const std::vector<int64_t> bc_shape =
      channel_last ? std::vector<int64_t>{b, 4, H, W, N} : std::vector<int64_t>{b, 4, N, H, W};
  TORCH_CHECK(in.delta.sizes() == at::IntArrayRef(delta_shape), op, ": delta must have shape ",
              at::IntArrayRef(delta_shape), ", got ", in.delta.sizes());
  TORCH_CHECK(in.B.sizes() == at::IntArrayRef(bc_shape), op, ": B must have shape ",
              at::IntArrayRef(bc_shape), ", got ", in.B.sizes());
  TORCH_CHECK(in.C.sizes() == at::IntArrayRef(bc_shape), op, ": C must have shape ",
              at::IntArrayRef(bc_shape), ", got ", in.C.sizes());
  in.D = parameter(op, "D", D_in, x_in, 4 * c);
  in.bias = parameter(op, "delta_bias", bias_in, x_in, 4 * c);
  TORCH_CHECK(H * W < std::numeric_limits<int>::max() && 4 * c < std::numeric_limits<int>::max(),
              op, ": H*W and 4C must fit in 32 bits");

  p.batch = static_cast<int>(b);
  p.channels = static_cast<int>(c);
  p.groups = 4;
  p.d_state = static_cast<int>(N);
  p.H = static_cast<int>(H);
  p.W = static_cast<int>(W);
  p.n_dir = 4;
  set_scan_data(in, softplus);
  const auto& xs = in.u.strides();
  const auto& ds = in.delta.strides();
  const auto& bs = in.B.strides();
  if (channel_last) {  // dims: x (b, H, W, C), delta (b, k, H, W, C), B (b, k, H, W, N)
    p.u_sb = xs[0], p.u_sc = xs[3], p.u_sh = xs[1], p.u_sw = xs[2];
    p.dl_sb = ds[0], p.dl_sk = ds[1], p.dl_sc = ds[4], p.dl_sh = ds[2], p.dl_sw = ds[3];
    p.bc_sb = bs[0], p.bc_sg = bs[1], p.bc_sn = bs[4], p.bc_sh = bs[2], p.bc_sw = bs[3];
  } else {  // dims: x (b, C, H, W), delta (b, k, C, H, W), B (b, k, N, H, W)
    p.u_sb = xs[0], p.u_sc = xs[1], p.u_sh = xs[2], p.u_sw = xs[3];
    p.dl_sb = ds[0], p.dl_sk = ds[1], p.dl_sc = ds[2], p.dl_sh = ds[3], p.dl_sw = ds[4];
    p.bc_sb = bs[0], p.bc_sg = bs[1], p.bc_sn = bs[2], p.bc_sh = bs[3], p.bc_sw = bs[4];
  }
  return in;
}

at::Tensor scan_forward(const char* op, ScanInputs& in, bool out_float32) {
  const c10::cuda::CUDAGuard guard(in.u.device());
  ScanFwdParams p;
  static_cast<ScanParams&>(p) = in.params;
  const bool half = p.dtype != DType::kFloat32;
  p.y_float32 = half && out_float32;
  at::Tensor y = new_output(in.u.sizes(), in.u.options().dtype(p.y_float32 ? at::kFloat
                                                                             : in.u.scalar_type()));
  p.y = y.data_ptr();
  at::Tensor ws = workspace(scan_fwd_workspace_floats(p), in.u);
  p.workspace = ws.data_ptr<float>();
  p.stream = c10::cuda::getCurrentCUDAStream().stream();
  check_launch(scan_fwd(p), op);
  return y;
}

using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                         at::Tensor>;

Grads scan_backward(const char* op, const at::Tensor& dy_in, ScanInputs& in) {
  const c10::cuda::CUDAGuard guard(in.u.device());
  TORCH_CHECK(dy_in.is_cuda() && dy_in.device() == in.u.device(), op, ": dy must be on ",
              in.u.device(), ", got ", dy_in.device());
  TORCH_CHECK(dy_in.sizes() == in.u.sizes(), op, ": dy must have the output's shape ",
              in.u.sizes(), ", got ", dy_in.sizes());
  TORCH_CHECK(dy_in.scalar_type() == in.u.scalar_type() || dy_in.scalar_type() == at::kFloat, op,
              ": dy must be ", in.u.scalar_type(), " or float32, got ", dy_in.scalar_type());
  const at::Tensor dy = dy_in.contiguous();
  ScanBwdParams p;
  static_cast<ScanParams&>(p) = in.params;
  p.dy = dy.data_ptr();
  p.dy_float32 = dy.scalar_type() == at::kFloat;
  at::Tensor du = new_output(in.u.sizes(), in.u.options());
  at::Tensor ddelta = new_output(in.delta.sizes(), in.delta.options());
  at::Tensor dB = new_output(in.B.sizes(), in.B.options());
  at::Tensor dC = new_output(in.C.sizes(), in.C.options());
  at::Tensor dA = new_output(in.A.sizes(), in.A.options());
  at::Tensor dD = new_output({in.A.size(0)}, in.A.options());
  at::Tensor dbias = new_output({in.A.size(0)}, in.A.options());
  p.du = du.data_ptr();
  p.ddelta = ddelta.data_ptr();
  p.dB = dB.data_ptr();
  p.dC = dC.data_ptr();
  p.dA = dA.data_ptr<float>();
  p.dD = dD.data_ptr<float>();
  p.ddelta_bias = dbias.data_ptr<float>();
  p.deterministic = deterministic();
  at::Tensor ws = workspace(scan_bwd_workspace_floats(p), in.u);
  p.workspace = ws.data_ptr<float>();
  p.stream = c10::cuda::getCurrentCUDAStream().stream();
  check_launch(scan_bwd(p), op);
  return {du, ddelta, dA, dB, dC, dD, dbias};
}

at::Tensor selective_scan_fwd(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                              const at::Tensor& B, const at::Tensor& C,
                              const std::optional<at::Tensor>& D,
                              const std::optional<at::Tensor>& delta_bias, bool delta_softplus,
                              bool out_float32) {
  const char* op = "selective_scan_fwd";
  ScanInputs in = selective_scan_inputs(op, u, delta, A, B, C, D, delta_bias, delta_softplus);
  return scan_forward(op, in, out_float32);
}

Grads selective_scan_bwd(const at::Tensor& dy, const at::Tensor& u, const at::Tensor& delta,
                         const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                         const std::optional<at::Tensor>& D,
                         const std::optional<at::Tensor>& delta_bias, bool delta_softplus) {
  const char* op = "selective_scan_bwd";
  ScanInputs in = selective_scan_inputs(op, u, delta, A, B, C, D, delta_bias, delta_softplus);
  return scan_backward(op, dy, in);
}

at::Tensor ss2d_scan_fwd(const at::Tensor& x, const at::Tensor& delta, const at::Tensor& A,
                         const at::Tensor& B, const at::Tensor& C,
                         const std::optional<at::Tensor>& D,
                         const std::optional<at::Tensor>& delta_bias, bool delta_softplus,
                         bool channel_last, bool out_float32) {
  const char* op = "ss2d_scan_fwd";
  ScanInputs in = ss2d_inputs(op, x, delta, A, B, C, D, delta_bias, delta_softplus, channel_last);
  return scan_forward(op, in, out_float32);
}

Grads ss2d_scan_bwd(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& delta,
                    const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                    const std::optional<at::Tensor>& D, const std::optional<at::Tensor>& delta_bias,
                    bool delta_softplus, bool channel_last) {
  const char* op = "ss2d_scan_bwd";
  ScanInputs in = ss2d_inputs(op, x, delta, A, B, C, D, delta_bias, delta_softplus, channel_last);
  return scan_backward(op, dy, in);
}

// ------------------------------------------------------------------------------ slp_project

struct SlpInputs {
  at::Tensor feat, q;  // feat (b, F, R); q = (q1; q2) (2A, F)
  int64_t A = 0;
  DType dtype = DType::kFloat32;
};

// feat (b, F, R); q1, q2 (A, F); one dtype.
SlpInputs slp_inputs(const char* op, const at::Tensor& feat, const at::Tensor& q1,
                     const at::Tensor& q2) {
  TORCH_CHECK(feat.is_cuda(), op, ": feat must be a CUDA tensor, got ", feat.device());
  TORCH_CHECK(feat.dim() == 3, op, ": feat must be (b, F, R), got shape ", feat.sizes());
  SlpInputs in;
  in.dtype = activation_dtype(op, "feat", feat);
  const at::Tensor q1c = activation(op, "q1", q1, feat);
  const at::Tensor q2c = activation(op, "q2", q2, feat);
  TORCH_CHECK(q1c.dim() == 2 && q1c.size(1) == feat.size(1), op,
              ": q1 must be (A, F) with F = ", feat.size(1), ", got shape ", q1c.sizes());
  TORCH_CHECK(q2c.sizes() == q1c.sizes(), op, ": q2 must have the shape of q1 ", q1c.sizes(),
              ", got ", q2c.sizes());
  TORCH_CHECK(feat.size(2) >= 1, op, ": feat must have at least one region, got shape ",
              feat.sizes());
  TORCH_CHECK(feat.size(0) * q1c.size(0) < std::numeric_limits<int>::max() &&
                  feat.size(2) < std::numeric_limits<int>::max(),
              op, ": b * A and R must fit in 32 bits");
  in.feat = feat.contiguous();
  in.q = at::cat({q1c, q2c});
  in.A = q1c.size(0);
  return in;
}

// The score GEMMs S[b] = q feat[b]: (b, 2A, R) fp32, s1 in rows 0..A-1 and s2 in rows A..2A-1.
// cuBLAS with fp32 accumulation: tensor cores for fp16/bf16, and for fp32 where torch allows
// tf32 (torch.backends.cuda.matmul.allow_tf32). q is broadcast over the batch (stride 0, no copy).
at::Tensor slp_scores(const SlpInputs& in) {
  const at::Tensor q = in.q.expand({in.feat.size(0), in.q.size(0), in.q.size(1)});
  if (in.dtype == DType::kFloat32) return at::bmm(q, in.feat);
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 8)
  return at::bmm(q, in.feat, at::kFloat);  // half in, fp32 out
#else
  return at::bmm(q.to(at::kFloat), in.feat.to(at::kFloat));
#endif
}

SlpScores slp_params(const SlpInputs& in, const at::Tensor& scores) {
  SlpScores p{};
  p.dtype = in.dtype;
  p.batch = static_cast<int>(in.feat.size(0));
  p.n_attr = static_cast<int>(in.A);
  p.R = static_cast<int>(in.feat.size(2));
  p.scores = scores.data_ptr<float>();
  p.stream = c10::cuda::getCurrentCUDAStream().stream();
  return p;
}

at::Tensor slp_project_fwd(const at::Tensor& feat, const at::Tensor& q1, const at::Tensor& q2) {
  const char* op = "slp_project_fwd";
  const c10::cuda::CUDAGuard guard(feat.device());
  const SlpInputs in = slp_inputs(op, feat, q1, q2);
  at::Tensor out = new_output({feat.size(0), in.A}, in.feat.options());
  if (out.numel() == 0) return out;
  const at::Tensor scores = slp_scores(in);
  SlpFwdParams p;
  static_cast<SlpScores&>(p) = slp_params(in, scores);
  p.out = out.data_ptr();
  check_launch(slp_fwd(p), op);
  return out;
}

// dfeat[b] = q^T ds[:, b] (a batched GEMM reading ds in place), dq = ds feat^T as one GEMM over
// every (b, r): no atomics, the same bits on every run.
std::tuple<at::Tensor, at::Tensor, at::Tensor> slp_project_bwd(const at::Tensor& dout,
                                                               const at::Tensor& feat,
                                                               const at::Tensor& q1,
                                                               const at::Tensor& q2) {
  const char* op = "slp_project_bwd";
  const c10::cuda::CUDAGuard guard(feat.device());
  const SlpInputs in = slp_inputs(op, feat, q1, q2);
  const at::Tensor dout_c = activation(op, "dout", dout, feat);
  TORCH_CHECK(dout_c.dim() == 2 && dout_c.size(0) == feat.size(0) && dout_c.size(1) == in.A, op,
              ": dout must be (b, A) = (", feat.size(0), ", ", in.A, "), got shape ",
              dout_c.sizes());
  const int64_t b = feat.size(0), F = feat.size(1), R = feat.size(2), A = in.A;
  if (b == 0 || A == 0 || F == 0) {  // out ignores feat (A = 0) or no term has a summand
    return {at::zeros_like(in.feat), at::zeros({A, F}, in.feat.options()),
            at::zeros({A, F}, in.feat.options())};
  }
  const at::Tensor scores = slp_scores(in);
  at::Tensor ds = at::empty({2 * A, b, R}, in.feat.options());
  SlpBwdParams p;
  static_cast<SlpScores&>(p) = slp_params(in, scores);
  p.dout = dout_c.data_ptr();
  p.ds = ds.data_ptr();
  check_launch(slp_bwd(p), op);
  // dfeat: q^T (F, 2A) broadcast, ds viewed (b, 2A, R) with strides (R, b R, 1).
  at::Tensor dfeat = at::bmm(in.q.t().expand({b, F, 2 * A}), ds.permute({1, 0, 2}));
  // dq: ds (2A, b R) times feat^T (b R, F); feat's (b, r) is one index only after a copy.
  const at::Tensor feat_t = in.feat.permute({1, 0, 2}).reshape({F, b * R});
  const at::Tensor ds2d = ds.view({2 * A, b * R});
  at::Tensor dq1 = at::mm(ds2d.narrow(0, 0, A), feat_t.t());
  at::Tensor dq2 = at::mm(ds2d.narrow(0, A, A), feat_t.t());
  return {dfeat, dq1, dq2};
}

}  // namespace
}  // namespace cuda
}  // namespace zeromamba

TORCH_LIBRARY_IMPL(zeromamba, CUDA, m) {
  m.impl("selective_scan_fwd", &zeromamba::cuda::selective_scan_fwd);
  m.impl("selective_scan_bwd", &zeromamba::cuda::selective_scan_bwd);
  m.impl("ss2d_scan_fwd", &zeromamba::cuda::ss2d_scan_fwd);
  m.impl("ss2d_scan_bwd", &zeromamba::cuda::ss2d_scan_bwd);
  m.impl("slp_project_fwd", &zeromamba::cuda::slp_project_fwd);
  m.impl("slp_project_bwd", &zeromamba::cuda::slp_project_bwd);
}

#endif  // ZEROMAMBA_WITH_CUDA
