// Shared pieces of the CPU kernels: output allocation (with poison), dtype staging between the
// tensors' storage types and the compute type, and the scalar math (fast exp / softplus for fp32).
#pragma once

// The fp32 lane loops vectorise only if GCC may if-convert floating-point selects, which it
// refuses while it must preserve floating-point traps; nothing here relies on traps. This has to
// precede every other include of the translation unit (so that all inlined code agrees), hence
// each kernel source includes this header first.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

#include <ATen/ATen.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>

namespace zeromamba::cpu {

// ZEROMAMBA_POISON=1: fresh outputs start as NaN, so an element a kernel forgets fails the tests.
inline bool poison_enabled() {
  const char* v = std::getenv("ZEROMAMBA_POISON");
  return v != nullptr && std::strcmp(v, "1") == 0;
}

inline at::Tensor new_output(at::IntArrayRef sizes, const at::TensorOptions& options) {
  at::Tensor t = at::empty(sizes, options);
  if (poison_enabled()) t.fill_(std::numeric_limits<double>::quiet_NaN());
  return t;
}

// The compute dtype: float64 for float64 activations, float32 for everything else.
inline at::ScalarType compute_dtype(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

// Runs f(src_t{}) with src_t the C++ type of a floating dtype the kernels accept.
template <typename F>
inline void with_storage_type(at::ScalarType st, F&& f) {
  switch (st) {
    case at::kFloat: f(float{}); break;
    case at::kDouble: f(double{}); break;
    case at::kHalf: f(at::Half{}); break;
    case at::kBFloat16: f(at::BFloat16{}); break;
    default: TORCH_CHECK(false, "zeromamba: unsupported dtype ", st);
  }
}

// Activations share one dtype in {fp32, fp16, bf16, fp64}; parameters are fp32 (or fp64 with fp64
// activations). Cheap checks for C++ users; the Python layer has validated already.
inline void check_activation(const at::Tensor& t, const char* name, at::ScalarType dtype) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor");
  TORCH_CHECK(t.scalar_type() == dtype, name, " must have dtype ", dtype, ", got ",
              t.scalar_type());
}

inline void check_param(const at::Tensor& t, const char* name, at::ScalarType act) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor");
  const bool ok = t.scalar_type() == at::kFloat || (act == at::kDouble && t.is_floating_point() &&
                                                    t.scalar_type() == at::kDouble);
  TORCH_CHECK(ok, name, " must be float32 (or float64 with float64 inputs), got ",
              t.scalar_type());
}

// ---------------------------------------------------------------------------- math
// fp32: a polynomial exp and a polynomial log1p written as plain arithmetic with selects, so the
// lane loops vectorise (libm's expf/log1pf do not). Measured against fp64 libm over their whole
// input ranges (tests/test_cpu_math.py): exp within 2.4e-7 relative (2 ulp), softplus within
// 3e-7, its derivative sigmoid within 2.4e-7. fp64 uses libm (the accuracy path).

inline float exp_fast(float x) {
  // The clamp keeps the arithmetic below finite; 2^k is applied as two normal factors, so results
  // overflow to +inf above ln(FLT_MAX) and underflow gradually to 0 as expf does. The clamps are
  // written so that a NaN falls through them (`x > hi ? hi : x` keeps NaN) and stays NaN.
  const float xh = x > 89.0f ? 89.0f : x;
  const float xc = xh < -104.0f ? -104.0f : xh;
  const float kf = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round(x / ln 2)
  const float r = (xc - kf * 0.693359375f) + kf * 2.12194440e-4f;  // x - k ln2, two-part ln2
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float er = p * r * r + r + 1.0f;
  // In [-150, 128] (a NaN converts to INT_MIN: the factors are then garbage, er is NaN).
  const int32_t k = static_cast<int32_t>(kf);
  const int32_t k1 = k >> 1, k2 = k - k1;  // each in [-75, 64]: 2^k1, 2^k2 are normal
  return (er * __builtin_bit_cast(float, (k1 + 127) << 23)) *
         __builtin_bit_cast(float, (k2 + 127) << 23);
}

// log1p(e) for e in [0, 1] as e P(e), P of degree 8 fitted to log1p(e) / e on [0, 1] (weighted
// least squares on the relative error; 1.9e-7 in fp32 Horner). No division, unlike the
// atanh-series form 2 atanh(e / (2 + e)): a vector division costs as much as the whole polynomial.
inline float log1p_unit(float e) {
  float p = 5.229014903306961e-3f;
  p = p * e - 2.9490482062101364e-2f;
  p = p * e + 7.820189744234085e-2f;
  p = p * e - 1.3661202788352966e-1f;
  p = p * e + 1.910504549741745e-1f;
  p = p * e - 2.484273612499237e-1f;
  p = p * e + 3.331906497478485e-1f;
  p = p * e - 4.999949038028717e-1f;
  p = p * e + 9.999999403953552e-1f;
  return p * e;
}

template <typename T>
struct Math;

template <>
struct Math<float> {
  static float exp(float x) { return exp_fast(x); }
  // softplus(x) = max(x, 0) + log1p(exp(-|x|)), identity above 20 (torch's threshold).
  static float softplus(float x) {
    const float sp = (x > 0.0f ? x : 0.0f) + log1p_unit(exp_fast(-std::fabs(x)));
    return x > 20.0f ? x : sp;
  }
  // The same, also returning its derivative sigmoid(x) (1 above the threshold).
  static float softplus(float x, float* sig) {
    // Everything computed unconditionally, then selected: keeps the lane loops branch-free.
    const float e = exp_fast(-std::fabs(x));
    const float inv = 1.0f / (1.0f + e);
    const float e_inv = e * inv;
    const float sp = (x > 0.0f ? x : 0.0f) + log1p_unit(e);
    const bool lin = x > 20.0f;
    *sig = lin ? 1.0f : (x >= 0.0f ? inv : e_inv);
    return lin ? x : sp;
  }
};

template <>
struct Math<double> {
  static double exp(double x) { return std::exp(x); }
  static double softplus(double x) {
    return x > 20.0 ? x : std::fmax(x, 0.0) + std::log1p(std::exp(-std::fabs(x)));
  }
  static double softplus(double x, double* sig) {
    if (x > 20.0) {
      *sig = 1.0;
      return x;
    }
    const double e = std::exp(-std::fabs(x));
    *sig = (x >= 0.0 ? 1.0 : e) / (1.0 + e);
    return std::fmax(x, 0.0) + std::log1p(e);
  }
};

}  // namespace zeromamba::cpu
