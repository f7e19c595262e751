// CPU kernels of slp_project_{fwd,bwd} (docs/design.md §2.4, §4.3), fused:
//   s1 = q1 feat[b], s2 = q2 feat[b] for a tile of attribute rows at a time (BLAS on (tile, F) x
//   (F, R) slices, written into a per-thread buffer), then per row out = sum_r softmax(s1) s2.
// Neither the pooled (b, A, F) tensor nor the (b, A, R) scores exist; the extra memory is one
// (2 tile, R) score buffer per thread, and in the backward one (F, R) dfeat buffer per thread plus
// one (2, A, F) dq partial per batch chunk (reduced in a fixed order).

#include "common.h"  // first: sets the optimisation pragma
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <tuple>

namespace zeromamba::cpu {
namespace {

constexpr int64_t kTile = 128;  // attribute rows per score tile

struct SlpArgs {
  at::Tensor feat, q1, q2;  // feat in its dtype, contiguous; q1, q2 in the compute dtype
  at::ScalarType compute;
  int64_t b, F, R, A;
};

SlpArgs slp_args(const at::Tensor& feat, const at::Tensor& q1, const at::Tensor& q2) {
  TORCH_CHECK(feat.dim() == 3, "slp_project: feat must be (b, F, R), got ", feat.sizes());
  TORCH_CHECK(q1.dim() == 2 && q1.size(1) == feat.size(1),
              "slp_project: q1 must be (A, F) with F = feat.shape[1], got ", q1.sizes());
  TORCH_CHECK(q2.sizes() == q1.sizes(), "slp_project: q2 must have shape ", q1.sizes(), ", got ",
              q2.sizes());
  TORCH_CHECK(feat.size(2) >= 1, "slp_project: feat needs at least one region (R >= 1)");
  const auto st = feat.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kDouble || st == at::kHalf || st == at::kBFloat16,
              "slp_project: feat must be float32, float16, bfloat16 or float64, got ", st);
  check_activation(feat, "feat", st);
  check_activation(q1, "q1", st);
  check_activation(q2, "q2", st);
  const auto ct = compute_dtype(st);
  return {feat.contiguous(), q1.to(ct).contiguous(), q2.to(ct).contiguous(), ct,
          feat.size(0), feat.size(1), feat.size(2), q1.size(0)};
}

// The scores of rows i0 .. i0 + rows of batch row fb (F, R), written into buf: s1 then s2.
struct Scores {
  at::Tensor s1, s2;
};

Scores scores(const SlpArgs& s, const at::Tensor& fb, int64_t i0, int64_t rows, at::Tensor& buf) {
  Scores sc{buf.narrow(0, 0, rows * s.R).view({rows, s.R}),
            buf.narrow(0, rows * s.R, rows * s.R).view({rows, s.R})};
  at::mm_out(sc.s1, s.q1.narrow(0, i0, rows), fb);
  at::mm_out(sc.s2, s.q2.narrow(0, i0, rows), fb);
  return sc;
}

// Softmax of each row of s1 (in place: s1 becomes p) and out[i] = sum_r p[i, r] s2[i, r].
template <typename acc_t>
void softmax_dot(acc_t* s1, const acc_t* s2, int64_t rows, int64_t R, acc_t* out) {
  for (int64_t i = 0; i < rows; ++i) {
    acc_t* p = s1 + i * R;
    const acc_t* v = s2 + i * R;
    const acc_t m = *std::max_element(p, p + R);
    acc_t z = 0, o = 0;
    // libm's exp, not the fast polynomial: with few regions and near-cancelling features the
    // gradient w.r.t. q1 is ill-conditioned and the last ulps of p matter; R exps per row are
    // negligible next to the two (F, R) products that produce the row.
    for (int64_t r = 0; r < R; ++r) {
      p[r] = std::exp(p[r] - m);
      z += p[r];
      o += p[r] * v[r];
    }
    const acc_t inv = acc_t(1) / z;
    for (int64_t r = 0; r < R; ++r) p[r] *= inv;
    out[i] = o * inv;
  }
}

// d s2 = dout p;  d s1 = dout p (s2 - out), written over s2 and s1 (s1 holds p).
template <typename acc_t>
void softmax_dot_grad(acc_t* s1, acc_t* s2, const acc_t* out, const acc_t* dout, int64_t rows,
                      int64_t R) {
  for (int64_t i = 0; i < rows; ++i) {
    acc_t* p = s1 + i * R;
    acc_t* v = s2 + i * R;
    const acc_t g = dout[i], o = out[i];
#pragma omp simd
    for (int64_t r = 0; r < R; ++r) {
      const acc_t pr = p[r];
      p[r] = g * pr * (v[r] - o);
      v[r] = g * pr;
    }
  }
}

template <typename acc_t>
void forward_impl(const SlpArgs& s, at::Tensor& out) {
  const int64_t tiles = (s.A + kTile - 1) / kTile;
  at::parallel_for(0, s.b * tiles, 1, [&](int64_t begin, int64_t end) {
    const at::AutoDispatchBelowADInplaceOrView below_autograd;  // thread-local: set per worker
    at::Tensor buf = at::empty({2 * kTile * s.R}, s.q1.options());
    at::Tensor o = at::empty({kTile}, s.q1.options());
    for (int64_t item = begin; item < end; ++item) {
      const int64_t bi = item / tiles, i0 = (item % tiles) * kTile;
      const int64_t rows = std::min(kTile, s.A - i0);
      const at::Tensor fb = s.feat[bi].to(s.compute);  // (F, R)
      const Scores sc = scores(s, fb, i0, rows, buf);
      softmax_dot(sc.s1.data_ptr<acc_t>(), sc.s2.data_ptr<acc_t>(), rows, s.R,
                  o.data_ptr<acc_t>());
      out[bi].narrow(0, i0, rows).copy_(o.narrow(0, 0, rows));
    }
  });
}

// Chunk c of the batch accumulates its dq1 / dq2 into dq[c] (chunks, 2, A, F).
template <typename acc_t>
void backward_impl(const SlpArgs& s, const at::Tensor& dout, at::Tensor& dfeat, at::Tensor& dq) {
  const int64_t chunks = dq.size(0);
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    const at::AutoDispatchBelowADInplaceOrView below_autograd;  // thread-local: set per worker
    at::Tensor buf = at::empty({2 * kTile * s.R}, s.q1.options());
    acc_t o[kTile];
    for (int64_t c = begin; c < end; ++c) {
      at::Tensor dq1 = dq[c][0], dq2 = dq[c][1];
      for (int64_t bi = c * s.b / chunks; bi < (c + 1) * s.b / chunks; ++bi) {
        const at::Tensor fb = s.feat[bi].to(s.compute);  // (F, R)
        at::Tensor dfb = at::zeros({s.F, s.R}, s.q1.options());
        const acc_t* g = dout.data_ptr<acc_t>() + bi * s.A;
        for (int64_t i0 = 0; i0 < s.A; i0 += kTile) {
          const int64_t rows = std::min(kTile, s.A - i0);
          const Scores sc = scores(s, fb, i0, rows, buf);  // recomputed, become d s1, d s2
          acc_t* s1 = sc.s1.data_ptr<acc_t>();
          acc_t* s2 = sc.s2.data_ptr<acc_t>();
          softmax_dot(s1, s2, rows, s.R, o);
          softmax_dot_grad(s1, s2, o, g + i0, rows, s.R);
          dfb.addmm_(s.q1.narrow(0, i0, rows).t(), sc.s1);
          dfb.addmm_(s.q2.narrow(0, i0, rows).t(), sc.s2);
          dq1.narrow(0, i0, rows).addmm_(sc.s1, fb.t());
          dq2.narrow(0, i0, rows).addmm_(sc.s2, fb.t());
        }
        dfeat[bi].copy_(dfb);
      }
    }
  });
}

at::Tensor slp_project_fwd(const at::Tensor& feat_in, const at::Tensor& q1_in,
                           const at::Tensor& q2_in) {
  // The ATen calls below are kernel internals: no autograd (and out= BLAS calls on inputs that
  // require grad are allowed).
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  const SlpArgs s = slp_args(feat_in, q1_in, q2_in);
  at::Tensor out = new_output({s.b, s.A}, feat_in.options());
  if (s.b == 0 || s.A == 0) return out;
  if (s.compute == at::kDouble) {
    forward_impl<double>(s, out);
  } else {
    forward_impl<float>(s, out);
  }
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> slp_project_bwd(const at::Tensor& dout_in,
                                                               const at::Tensor& feat_in,
                                                               const at::Tensor& q1_in,
                                                               const at::Tensor& q2_in) {
  // The ATen calls below are kernel internals: no autograd (and out= BLAS calls on inputs that
  // require grad are allowed).
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  const SlpArgs s = slp_args(feat_in, q1_in, q2_in);
  TORCH_CHECK(dout_in.sizes() == at::IntArrayRef({s.b, s.A}),
              "slp_project_bwd: dout must have shape (b, A) = (", s.b, ", ", s.A, "), got ",
              dout_in.sizes());
  const at::Tensor dout = dout_in.to(s.compute).contiguous();
  at::Tensor dfeat = new_output(feat_in.sizes(), feat_in.options());
  // dq1 / dq2 sum over the batch: one partial per batch chunk, summed in chunk order.
  const int64_t chunks = std::clamp<int64_t>(at::get_num_threads(), 1, std::max<int64_t>(s.b, 1));
  at::Tensor dq = at::zeros({chunks, 2, s.A, s.F}, s.q1.options());
  if (s.compute == at::kDouble) {
    backward_impl<double>(s, dout, dfeat, dq);
  } else {
    backward_impl<float>(s, dout, dfeat, dq);
  }
  return {dfeat, dq.select(1, 0).sum(0).to(q1_in.scalar_type()),
          dq.select(1, 1).sum(0).to(q2_in.scalar_type())};
}

}  // namespace
}  // namespace zeromamba::cpu

TORCH_LIBRARY_IMPL(zeromamba, CPU, m) {
  m.impl("slp_project_fwd", &zeromamba::cpu::slp_project_fwd);
  m.impl("slp_project_bwd", &zeromamba::cpu::slp_project_bwd);
}
