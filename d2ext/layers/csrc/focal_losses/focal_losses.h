// Per-element math of d2ext's focal-family losses, shared by the CPU and CUDA launchers.
//
// Every sigmoid loss here has the form  L(x) = m(p) * CE(x, y),  p = sigmoid(x), where
// CE(x, y) = softplus(x) - y * x is binary cross-entropy with logits against target y (never
// log(sigmoid(x)): finite for any finite x) and m is the loss's modulating factor. Its gradient
// is  dL/dx = m'(x) * CE + m * (p - y),  with m' written so that no power of a quantity that can
// be 0 has a negative exponent. Formulas: METHODS.md §1.3 (focal), §3.3 (QFL, DFL), §4.3 (VFL).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "../host_device.h"

#if defined(__CUDACC__)
#include <c10/macros/Macros.h>  // CUDA_KERNEL_ASSERT
#endif

namespace d2ext {

// Must match SIGMOID_LOSS_KINDS in d2ext/layers/fused_losses.py.
enum class SigmoidLoss : int { Focal = 0, QualityFocal = 1, Varifocal = 2 };

// Runtime parameters, resolved once per call so that the element loop has no branch on them.
template <typename T>
struct SigmoidLossParams {
  T alpha_pos;   // focal: weight of the label's class (1 when alpha < 0: no weighting)
  T alpha_neg;   // focal: weight of the other classes; varifocal: weight of the negatives
  T gamma;       // focal / varifocal exponent; quality focal: beta
  T iou_weight;  // varifocal: 1 if positives are weighted by their target score, else 0
};

template <typename T>
SigmoidLossParams<T> make_sigmoid_loss_params(SigmoidLoss kind, double alpha, double gamma, bool iou_weighted) {
  if (kind == SigmoidLoss::Focal) {
    return {T(alpha < 0 ? 1.0 : alpha), T(alpha < 0 ? 1.0 : 1.0 - alpha), T(gamma), T(0)};
  }
  return {T(1), T(alpha), T(gamma), T(iou_weighted ? 1 : 0)};
}

// exp and log1p in the argument's precision. On the CPU, float uses the call-free polynomials
// below so that the row loops vectorize; CUDA and double use the math library.
HOST_DEVICE_INLINE float int_bits_as_float(int32_t i) {
#if defined(__CUDA_ARCH__)
  return __int_as_float(i);
#else
  float f;
  std::memcpy(&f, &i, sizeof(f));
  return f;
#endif
}
HOST_DEVICE_INLINE int32_t float_bits_as_int(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_int(f);
#else
  int32_t i;
  std::memcpy(&i, &f, sizeof(i));
  return i;
#endif
}

// a * b + c, fused on the CPU: the polynomials below are chains of these, and setup.py turns off
// contraction (for the ATSS assignment's exact rounding), so they ask for it here. With the CPU
// variants (cpu_isa.h) this header is compiled for the baseline ISA, so `__FMA__` cannot tell;
// the builtin is one instruction once inlined into the AVX2 / AVX-512 variants and a call to
// libm's exact fmaf in the baseline one: every variant rounds alike.
HOST_DEVICE_INLINE float mul_add(float a, float b, float c) {
#if (defined(__FMA__) || D2EXT_CPU_VARIANTS) && !defined(__CUDA_ARCH__)
  return __builtin_fmaf(a, b, c);
#else
  return a * b + c;
#endif
}

// exp(x) for x <= 0 in float: Cody-Waite reduction x = n ln2 + r, |r| <= ln2 / 2, a degree-7
// Taylor polynomial (error < 1e-8 relative), times 2^n built from bits. x < -87 returns
// exp(-87) ~ 1.6e-38 instead of a denormal or 0 (the losses then underflow the same way).
HOST_DEVICE_INLINE float exp_nonpositive(float x) {
#if defined(__CUDA_ARCH__)
  return expf(x);
#else
  x = x < -87.0f ? -87.0f : x;
  const float shifter = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float n = mul_add(x, 1.44269504088896341f, shifter) - shifter;
  const float r = mul_add(-n, 1.428606765330187e-06f, mul_add(-n, 0.693145751953125f, x));  // n ln2_hi exact
  float p = 1.0f / 5040.0f;
  p = mul_add(p, r, 1.0f / 720.0f);
  p = mul_add(p, r, 1.0f / 120.0f);
  p = mul_add(p, r, 1.0f / 24.0f);
  p = mul_add(p, r, 1.0f / 6.0f);
  p = mul_add(p, r, 0.5f);
  p = mul_add(p, r, 1.0f);
  p = mul_add(p, r, 1.0f);
  return p * int_bits_as_float((static_cast<int32_t>(n) + 127) << 23);
#endif
}
HOST_DEVICE_INLINE double exp_nonpositive(double x) { return exp(x); }

// log(1 + t) for t in [0, 1] in float: 2 atanh(s), s = t / (2 + t) <= 1/3, by its odd series to
// s^13 (error < 2e-8 relative, exact near 0 where log(1 + t) would lose t).
HOST_DEVICE_INLINE float log1p_unit(float t) {
#if defined(__CUDA_ARCH__)
  return log1pf(t);
#else
  const float s = t / (2.0f + t);
  const float s2 = s * s;
  float p = 1.0f / 13.0f;
  p = mul_add(p, s2, 1.0f / 11.0f);
  p = mul_add(p, s2, 1.0f / 9.0f);
  p = mul_add(p, s2, 1.0f / 7.0f);
  p = mul_add(p, s2, 1.0f / 5.0f);
  p = mul_add(p, s2, 1.0f / 3.0f);
  p = mul_add(p, s2, 1.0f);
  return 2.0f * s * p;
#endif
}
HOST_DEVICE_INLINE double log1p_unit(double t) { return log1p(t); }

// log(s) for s >= 1 (a sum of exponentials that includes exp(0)) in float: s = 2^k (1 + t),
// t in [0, 1), as k ln2 + log1p_unit(t), call-free so that loops over rows vectorise.
HOST_DEVICE_INLINE float log_at_least_one(float s) {
#if defined(__CUDA_ARCH__)
  return logf(s);
#else
  const int32_t bits = float_bits_as_int(s);
  const int32_t k = (bits >> 23) - 127;
  const float t = int_bits_as_float((bits & 0x007fffff) | 0x3f800000) - 1.0f;
  return static_cast<float>(k) * 0.693147180559945309f + log1p_unit(t);
#endif
}
HOST_DEVICE_INLINE double log_at_least_one(double s) { return log(s); }

HOST_DEVICE_INLINE float exp_(float x) { return expf(x); }
HOST_DEVICE_INLINE double exp_(double x) { return exp(x); }
HOST_DEVICE_INLINE float log_(float x) { return logf(x); }
HOST_DEVICE_INLINE double log_(double x) { return log(x); }
HOST_DEVICE_INLINE float pow_(float x, float y) { return powf(x, y); }
HOST_DEVICE_INLINE double pow_(double x, double y) { return pow(x, y); }

// x^gamma, as a multiplication when gamma == 2 is known at compile time (Gamma2) so that the
// row loops need no call; x^(gamma - 1) likewise.
template <bool Gamma2, typename T>
HOST_DEVICE_INLINE T power(T x, T gamma) {
  if constexpr (Gamma2) {
    return x * x;
  } else {
    return pow_(x, gamma);
  }
}

template <bool Gamma2, typename T>
HOST_DEVICE_INLINE T power_minus_one(T x, T gamma) {
  if constexpr (Gamma2) {
    return x;
  } else {
    return pow_(x, gamma - T(1));
  }
}

// sigmoid(x), 1 - sigmoid(x) and softplus(-|x|) = log(1 + exp(-|x|)) from a single exp, without
// cancellation for large |x|.
template <typename T>
struct SigmoidParts {
  T p, one_minus_p, log1p_exp_neg_abs;
};

template <typename T>
HOST_DEVICE_INLINE SigmoidParts<T> sigmoid_parts(T x) {
  const T e = exp_nonpositive(x >= T(0) ? -x : x);
  const T inv = T(1) / (T(1) + e);
  const T small = e * inv;  // sigmoid(-|x|)
  return {x >= T(0) ? inv : small, x >= T(0) ? small : inv, log1p_unit(e)};
}

template <typename T>
struct LossAndGrad {
  T loss;
  T grad;  // d loss / d x
};

// One logit x of a row whose class matches the row's label (is_label) or not; score is the
// row's soft target (quality focal, varifocal), unused by the focal loss.
// Kind and Gamma2 (gamma == 2) are template arguments so that each launcher loop is specialised
// and free of per-element dispatch.
template <SigmoidLoss Kind, bool Gamma2, typename T>
HOST_DEVICE_INLINE LossAndGrad<T> sigmoid_loss_single(T x, bool is_label, T score,
                                                      const SigmoidLossParams<T>& prm) {
  const SigmoidParts<T> sp = sigmoid_parts(x);
  const T p = sp.p, one_minus_p = sp.one_minus_p;
  T y, m, dm;  // target, modulating factor and its derivative in x
  // Selections between the label's class and the others are blends with t in {0, 1}, so that
  // the element loop has no branch and vectorises.
  const T t = is_label ? T(1) : T(0);
  if constexpr (Kind == SigmoidLoss::Focal) {
    // m = a * q^gamma with q = 1 - p_t, the probability of the wrong answer; dq/dx = -+ p(1-p),
    // so dm/dx = -+ a * gamma * q^gamma * (1 - q).
    y = t;
    const T a = t * prm.alpha_pos + (T(1) - t) * prm.alpha_neg;
    const T q = t * one_minus_p + (T(1) - t) * p;
    const T q_gamma = power<Gamma2>(q, prm.gamma);
    m = a * q_gamma;
    dm = (T(1) - T(2) * t) * a * prm.gamma * q_gamma * (T(1) - q);
  } else if constexpr (Kind == SigmoidLoss::QualityFocal) {
    // m = |p - y|^beta; dm/dx = beta * |p - y|^(beta - 1) * sign(p - y) * p(1-p).
    y = t * score;
    const T d = p - y;
    const T ad = fabs(d);
    m = power<Gamma2>(ad, prm.gamma);
    dm = ad > T(0) ? prm.gamma * power_minus_one<Gamma2>(ad, prm.gamma) * (d > T(0) ? T(1) : T(-1)) * p * one_minus_p
                   : T(0);
  } else {
    // Varifocal: positives (target > 0) weighted by their target (or 1); negatives by
    // alpha * p^gamma, as the focal loss's negatives.
    const T pos = score > T(0) ? t : T(0);
    y = pos * score;
    const T p_gamma = power<Gamma2>(p, prm.gamma);
    m = pos * (prm.iou_weight * y + (T(1) - prm.iou_weight)) + (T(1) - pos) * prm.alpha_neg * p_gamma;
    dm = (T(1) - pos) * prm.alpha_neg * prm.gamma * p_gamma * one_minus_p;
  }
  // Binary cross-entropy with logits: softplus(x) - y x = max(x, 0) - y x + log(1 + exp(-|x|)).
  const T ce = (x > T(0) ? x : T(0)) - x * y + sp.log1p_exp_neg_abs;
  return {m * ce, dm * ce + m * (p - y)};
}

// Distribution focal loss (METHODS.md §3.3) of n + 1 bin logits x against a target t in [0, n]:
// cross-entropy to the two bins around t, weighted by linear interpolation,
//   loss = logsumexp(x) - w_left x[left] - w_right x[left + 1],
// and its gradient softmax(x) - two_hot. The pieces below are shared by the row body (CUDA,
// and CPU rows outside whole blocks) and the CPU launcher's blocks of rows.

// The bins around target (clamped to [0, last]) and their interpolation weights.
template <typename T, typename Index>
HOST_DEVICE_INLINE void dfl_target_bins(T target, Index last, Index& left, T& w_left, T& w_right) {
  T t = target > T(0) ? target : T(0);  // NaN -> 0: never an index out of the row
  t = t < T(last) ? t : T(last);
  const T top = T(last - 1);
  left = static_cast<Index>(t < top ? t : top);  // floor (t >= 0); t == n: all weight on bin n
  w_left = T(left + 1) - t;
  w_right = t - T(left);
}

// Loss of a row from its max logit, sum of exp(x - max) and the logits of its two target bins.
template <typename T>
HOST_DEVICE_INLINE T dfl_row_loss(T max_x, T sum_exp, T x_left, T x_right, T w_left, T w_right) {
  return max_x + log_at_least_one(sum_exp) - w_left * x_left - w_right * x_right;
}

// Gradient of bin i from its softmax term: minus the two-hot target.
template <typename T, typename Index>
HOST_DEVICE_INLINE T dfl_bin_grad(T softmax, Index i, Index left, T w_left, T w_right) {
  return softmax - ((i == left ? w_left : T(0)) + (i == left + 1 ? w_right : T(0)));
}

// One row (kBins > 0: its bin count known at compile time). buf (n + 1 values) receives the
// row's softmax terms; with write_grad it ends as grad_scale times the gradient. Returns the loss.
template <int kBins = 0, typename T>
HOST_DEVICE_INLINE T distribution_focal_single(const T* x, int64_t bins, T target, T* buf, bool write_grad,
                                               T grad_scale) {
  const int64_t num_bins = kBins > 0 ? kBins : bins;
  int64_t left;
  T w_left, w_right;
  dfl_target_bins(target, num_bins - 1, left, w_left, w_right);
  // SIMD reductions: a serial max and sum over the bins would be two chains of dependent
  // instructions per row, the row's critical path.
  T max_x = x[0];
  D2EXT_SIMD_MAX(max_x)
  for (int64_t i = 1; i < num_bins; ++i) {
    max_x = x[i] > max_x ? x[i] : max_x;
  }
  T sum_exp = T(0);
  D2EXT_SIMD_SUM(sum_exp)
  for (int64_t i = 0; i < num_bins; ++i) {
    buf[i] = exp_nonpositive(x[i] - max_x);
    sum_exp += buf[i];
  }
  if (write_grad) {
    const T inv = T(1) / sum_exp;
    D2EXT_SIMD
    for (int64_t i = 0; i < num_bins; ++i) {
      buf[i] = grad_scale * dfl_bin_grad(buf[i] * inv, i, left, w_left, w_right);
    }
  }
  return dfl_row_loss(max_x, sum_exp, x[left], x[left + 1], w_left, w_right);
}

}  // namespace d2ext

namespace d2ext {

// The labels the integer-label losses accept: -1 (ignored) to num_classes (background). The row
// bodies below would read any other label silently (> K as background, < -1 as ignored), so the
// launchers refuse them: the CPU ones with an error (check_label_values, focal_losses_checks.h),
// the CUDA ones with a device-side assert (assert_label_in_range), which needs no host sync.
HOST_DEVICE_INLINE bool label_in_range(int64_t label, int64_t num_classes) {
  return label >= -1 && label <= num_classes;
}

#if defined(__CUDACC__)
// Stops the kernel: the next CUDA call fails with "device-side assert triggered", and stderr names
// this function and the failed condition. Not CUDA_KERNEL_ASSERT_PRINTF (torch keeps its
// kernels' printf asserts behind C10_ENABLE_VERBOSE_ASSERT): the same call on the CPU names the
// label and its index.
__device__ __forceinline__ void assert_label_in_range(int64_t label, int64_t num_classes) {
  CUDA_KERNEL_ASSERT(label_in_range(label, num_classes));
}
#endif

// One row of the sigmoid family: K logits x of an anchor with integer label (K = background,
// -1 = ignored: label_in_range), soft target score and weight. Writes the K losses to out (K
// values: the output row, or scratch space when only the sum is wanted) and returns their sum.
template <SigmoidLoss Kind, bool Gamma2, typename T>
HOST_DEVICE_INLINE T sigmoid_loss_forward_row(const T* x, int64_t num_classes, int64_t label, T score, T weight,
                                              const SigmoidLossParams<T>& prm, T* out) {
  T row_sum = T(0);
  if (label < 0) {  // ignored row
    for (int64_t j = 0; j < num_classes; ++j) {
      out[j] = T(0);
    }
    return row_sum;
  }
  D2EXT_SIMD
  for (int64_t j = 0; j < num_classes; ++j) {
    out[j] = weight * sigmoid_loss_single<Kind, Gamma2>(x[j], j == label, score, prm).loss;
  }
  for (int64_t j = 0; j < num_classes; ++j) {
    row_sum += out[j];
  }
  return row_sum;
}

// Gradient of one row. The incoming gradient of element j is upstream[j * upstream_step] *
// upstream_scale: step 1 for reduction "none", step 0 (one scalar) for "sum" and "mean".
template <SigmoidLoss Kind, bool Gamma2, typename T>
HOST_DEVICE_INLINE void sigmoid_loss_backward_row(const T* x, int64_t num_classes, int64_t label, T score, T weight,
                                                  const SigmoidLossParams<T>& prm, const T* upstream,
                                                  int64_t upstream_step, T upstream_scale, T* grad) {
  if (label < 0) {  // ignored row
    for (int64_t j = 0; j < num_classes; ++j) {
      grad[j] = T(0);
    }
    return;
  }
  D2EXT_SIMD
  for (int64_t j = 0; j < num_classes; ++j) {
    const T g = upstream[j * upstream_step] * upstream_scale;
    grad[j] = g * weight * sigmoid_loss_single<Kind, Gamma2>(x[j], j == label, score, prm).grad;
  }
}

}  // namespace d2ext

namespace d2ext {

// Calls f(kind as a std::integral_constant, std::bool_constant<gamma == 2>): the launchers'
// bridge from runtime arguments to the specialised loops.
template <typename F>
void dispatch_sigmoid_loss(SigmoidLoss kind, double gamma, F&& f) {
  auto with_gamma = [&](auto kind_constant) {
    if (gamma == 2.0) {
      f(kind_constant, std::true_type{});
    } else {
      f(kind_constant, std::false_type{});
    }
  };
  switch (kind) {
    case SigmoidLoss::Focal:
      return with_gamma(std::integral_constant<SigmoidLoss, SigmoidLoss::Focal>{});
    case SigmoidLoss::QualityFocal:
      return with_gamma(std::integral_constant<SigmoidLoss, SigmoidLoss::QualityFocal>{});
    case SigmoidLoss::Varifocal:
      return with_gamma(std::integral_constant<SigmoidLoss, SigmoidLoss::Varifocal>{});
  }
}

}  // namespace d2ext
