// Per-element math of d2ext's focal-family losses, shared by the CPU and CUDA launchers.
//
// Every sigmoid loss here has the form  L(x) = m(p) * CE(x, y),  p = sigmoid(x), where
// CE(x, y) = softplus(x) - y * x is binary cross-entropy with logits against target y (never
// log(sigmoid(x)): finite for any finite x) and m is the loss's modulating factor. Its gradient
// is  dL/dx = m'(x) * CE + m * (p - y),  with m' written so that no power of a quantity that can
// be 0 has a negative exponent. Formulas: METHODS.md §1.3 (focal), §3.3 (QFL, DFL), §4.3 (VFL).
#pragma once

#include <cmath>

#include "../host_device.h"

namespace d2ext {

// Must match SIGMOID_LOSS_KINDS in d2ext/layers/fused_losses.py.
enum class SigmoidLoss : int { Focal = 0, QualityFocal = 1, Varifocal = 2 };

template <typename T>
struct SigmoidLossParams {
  SigmoidLoss kind;
  T alpha;    // focal: weight of positives (< 0: none); varifocal: weight of negatives
  T gamma;    // focal / varifocal exponent; quality focal: beta
  bool iou_weighted;  // varifocal: positives weighted by their target score
};

template <typename T>
HOST_DEVICE_INLINE T stable_sigmoid(T x) {
  if (x >= T(0)) {
    return T(1) / (T(1) + exp(-x));
  }
  const T e = exp(x);
  return e / (T(1) + e);
}

// softplus(x) - y * x, evaluated without cancellation for large |x|.
template <typename T>
HOST_DEVICE_INLINE T bce_with_logits(T x, T y) {
  return (x > T(0) ? x : T(0)) - x * y + log1p(exp(-fabs(x)));
}

template <typename T>
struct LossAndGrad {
  T loss;
  T grad;  // d loss / d x
};

// One logit x of a row whose class matches the row's label (is_label) or not; score is the
// row's soft target (quality focal, varifocal), unused by the focal loss.
template <typename T>
HOST_DEVICE_INLINE LossAndGrad<T> sigmoid_loss_single(T x, bool is_label, T score,
                                                      const SigmoidLossParams<T>& prm) {
  const T p = stable_sigmoid(x);
  const T one_minus_p = stable_sigmoid(-x);
  T y, m, dm;  // target, modulating factor and its derivative in x
  if (prm.kind == SigmoidLoss::Focal) {
    // m = a * q^gamma with q = 1 - p_t, the probability of the wrong answer; dq/dx = -+ p(1-p),
    // so dm/dx = -+ a * gamma * q^gamma * (1 - q).
    y = is_label ? T(1) : T(0);
    const T a = prm.alpha < T(0) ? T(1) : (is_label ? prm.alpha : T(1) - prm.alpha);
    const T q = is_label ? one_minus_p : p;
    const T q_gamma = pow(q, prm.gamma);
    m = a * q_gamma;
    dm = (is_label ? T(-1) : T(1)) * a * prm.gamma * q_gamma * (T(1) - q);
  } else if (prm.kind == SigmoidLoss::QualityFocal) {
    // m = |p - y|^beta; dm/dx = beta * |p - y|^(beta - 1) * sign(p - y) * p(1-p).
    y = is_label ? score : T(0);
    const T d = p - y;
    const T ad = fabs(d);
    m = pow(ad, prm.gamma);
    dm = ad > T(0) ? prm.gamma * pow(ad, prm.gamma - T(1)) * (d > T(0) ? T(1) : T(-1)) * p * one_minus_p
                   : T(0);
  } else {
    // Varifocal: positives (target > 0) weighted by their target (or 1); negatives by
    // alpha * p^gamma, as the focal loss's negatives.
    y = (is_label && score > T(0)) ? score : T(0);
    if (y > T(0)) {
      m = prm.iou_weighted ? y : T(1);
      dm = T(0);
    } else {
      const T p_gamma = pow(p, prm.gamma);
      m = prm.alpha * p_gamma;
      dm = prm.alpha * prm.gamma * p_gamma * one_minus_p;
    }
  }
  const T ce = bce_with_logits(x, y);
  return {m * ce, dm * ce + m * (p - y)};
}

// Distribution focal loss of one row of n + 1 bin logits against target t in [0, n]:
// cross-entropy to the two bins around t, weighted by linear interpolation. Writes the gradient
// (softmax minus the two-hot target) to grad if it is not null. Returns the loss.
template <typename T>
HOST_DEVICE_INLINE T distribution_focal_single(const T* x, int64_t num_bins, T target, T* grad, T grad_scale) {
  // grad_scale: the row's incoming gradient times its weight.
  const int64_t last = num_bins - 1;
  T t = target < T(0) ? T(0) : (target > T(last) ? T(last) : target);
  int64_t left = static_cast<int64_t>(floor(t));
  if (left > last - 1) {
    left = last - 1;  // t == n: all weight on the last bin
  }
  const T w_left = T(left + 1) - t;
  const T w_right = t - T(left);
  T max_x = x[0];
  for (int64_t i = 1; i < num_bins; ++i) {
    max_x = x[i] > max_x ? x[i] : max_x;
  }
  T sum_exp = T(0);
  for (int64_t i = 0; i < num_bins; ++i) {
    sum_exp += exp(x[i] - max_x);
  }
  const T log_sum_exp = max_x + log(sum_exp);
  if (grad != nullptr) {
    for (int64_t i = 0; i < num_bins; ++i) {
      T g = exp(x[i] - log_sum_exp);
      g -= (i == left ? w_left : T(0)) + (i == left + 1 ? w_right : T(0));
      grad[i] = grad_scale * g;
    }
  }
  return log_sum_exp - w_left * x[left] - w_right * x[left + 1];
}

}  // namespace d2ext

namespace d2ext {

// One row of the sigmoid family: K logits x of an anchor with integer label (K = background,
// < 0 = ignored), soft target score and weight. Writes the K losses to out (if not null) and
// returns their sum.
template <typename T>
HOST_DEVICE_INLINE T sigmoid_loss_forward_row(const T* x, int64_t num_classes, int64_t label, T score, T weight,
                                              const SigmoidLossParams<T>& prm, T* out) {
  T row_sum = T(0);
  for (int64_t j = 0; j < num_classes; ++j) {
    const T loss = label < 0 ? T(0) : weight * sigmoid_loss_single(x[j], j == label, score, prm).loss;
    if (out != nullptr) {
      out[j] = loss;
    }
    row_sum += loss;
  }
  return row_sum;
}

// Gradient of one row. The incoming gradient of element j is upstream[j * upstream_step] *
// upstream_scale: step 1 for reduction "none", step 0 (one scalar) for "sum" and "mean".
template <typename T>
HOST_DEVICE_INLINE void sigmoid_loss_backward_row(const T* x, int64_t num_classes, int64_t label, T score, T weight,
                                                  const SigmoidLossParams<T>& prm, const T* upstream,
                                                  int64_t upstream_step, T upstream_scale, T* grad) {
  for (int64_t j = 0; j < num_classes; ++j) {
    const T g = upstream[j * upstream_step] * upstream_scale;
    grad[j] = label < 0 ? T(0) : g * weight * sigmoid_loss_single(x[j], j == label, score, prm).grad;
  }
}

}  // namespace d2ext
