// Per-element math of d2ext::ap_loss (AP-loss, Chen et al.; METHODS.md §6.3), shared by the CPU
// and CUDA launchers. The O(P * N) sums over (positive, negative) pairs of the paper become, after
// sorting both score lists once, two binary searches and prefix sums per element, because the step
// function H is 0, then linear, then 1 in the score difference:
//   sum_j H(v_j - s) = #{v_j > s + delta} + sum_{v_j in [s - delta, s + delta]} ((v_j - s) / 2delta + 1/2)
// All sums are in double.
#pragma once

#include <cstdint>

#include "../host_device.h"

namespace d2ext {

// First index in sorted v[0, n) with v >= x (lower bound) or v > x (upper bound).
template <typename T>
HOST_DEVICE_INLINE int64_t bound_search(const T* v, int64_t n, double x, bool upper) {
  int64_t lo = 0, hi = n;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    const double vm = static_cast<double>(v[mid]);
    if (upper ? (vm <= x) : (vm < x)) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

// sum_j H(v_j - s) over the sorted scores v[0, n) with prefix sums prefix[0..n] (prefix[i] =
// v_0 + ... + v_{i-1}), H(x) = clip(x / (2 delta) + 1/2, 0, 1).
template <typename T>
HOST_DEVICE_INLINE double step_sum_above(const T* v, const double* prefix, int64_t n, double s, double delta) {
  const int64_t lo = bound_search(v, n, s - delta, false);
  const int64_t hi = bound_search(v, n, s + delta, true);
  const double linear = (prefix[hi] - prefix[lo] - static_cast<double>(hi - lo) * s) / (2.0 * delta) +
                        0.5 * static_cast<double>(hi - lo);
  return static_cast<double>(n - hi) + linear;
}

// sum_i c_i H(t - u_i) over the sorted positive scores u[0, n) with prefix sums of c (pc) and of
// c * u (pcu): the weighted count of positives that negative score t outranks.
template <typename T>
HOST_DEVICE_INLINE double weighted_step_sum_below(const T* u, const double* pc, const double* pcu, int64_t n, double t,
                                                  double delta) {
  const int64_t lo = bound_search(u, n, t - delta, false);  // u < t - delta: H = 1
  const int64_t hi = bound_search(u, n, t + delta, true);   // u > t + delta: H = 0
  return pc[lo] + (t / (2.0 * delta) + 0.5) * (pc[hi] - pc[lo]) - (pcu[hi] - pcu[lo]) / (2.0 * delta);
}

// Precision of the positive with score s: R+ / (R+ + R-), with R+ = 1 + sum_{k != i} H(s_k - s)
// (its own term H(0) = 1/2 removed) and R- = sum_j H(v_j - s). Writes R+ + R- to rank.
template <typename T>
HOST_DEVICE_INLINE double ap_precision_single(double s, const T* pos_sorted, const double* pos_prefix, int64_t num_pos,
                                              const T* neg_sorted, const double* neg_prefix, int64_t num_neg,
                                              double delta, double* rank) {
  const double r_plus = 1.0 + step_sum_above(pos_sorted, pos_prefix, num_pos, s, delta) - 0.5;
  const double r_minus = step_sum_above(neg_sorted, neg_prefix, num_neg, s, delta);
  *rank = r_plus + r_minus;
  return r_plus / *rank;
}

}  // namespace d2ext
