// Per-GT math of d2ext::atss_assign (ATSS, METHODS.md §1.1; DynamicATSS's combined IoU, §2.1),
// shared by the CPU and CUDA launchers. Nothing here is of size anchors x GT: each GT keeps only
// its candidates (k per level).
//
// Exactness: every decision equals d2ext/layers/reference.py's atss_assign (the dense version),
// because both compute the same float operations in the same order: centres (a + b) / 2,
// squared distance dx*dx + dy*dy, IoUs by box_iou_single, and the candidates' mean / unbiased std
// and combined scores in double. The mul/add helpers below forbid FMA contraction on CUDA,
// which would change the last bit of a distance and so the order of two candidates.
#pragma once

#include <cmath>
#include <cstdint>

#include "../box_iou/box_iou.h"
#include "../host_device.h"

namespace d2ext {

// An anchor centre must lie this far inside a GT box to be positive for it (pixels).
constexpr double kCenterInsideEps = 0.01;

template <typename T>
HOST_DEVICE_INLINE T mul_rn(T a, T b) {
#if defined(__CUDA_ARCH__)
  if constexpr (sizeof(T) == 4) {
    return __fmul_rn(a, b);
  } else {
    return __dmul_rn(a, b);
  }
#else
  return a * b;
#endif
}

template <typename T>
HOST_DEVICE_INLINE T add_rn(T a, T b) {
#if defined(__CUDA_ARCH__)
  if constexpr (sizeof(T) == 4) {
    return __fadd_rn(a, b);
  } else {
    return __dadd_rn(a, b);
  }
#else
  return a + b;
#endif
}

template <typename T>
HOST_DEVICE_INLINE T center_of(const T* box, int axis) {
  return (box[axis] + box[axis + 2]) / T(2);
}

template <typename T>
HOST_DEVICE_INLINE T sq_center_distance(const T* anchor, const T* gt) {
  const T dx = center_of(anchor, 0) - center_of(gt, 0);
  const T dy = center_of(anchor, 1) - center_of(gt, 1);
  return add_rn(mul_rn(dx, dx), mul_rn(dy, dy));
}

// The k anchors of [begin, begin + n) whose centres are closest to the GT's centre, ordered by
// (distance, index): ties go to the lower index. Writes k indices to idx (dist: scratch, k).
template <typename T>
HOST_DEVICE_INLINE void nearest_anchors_single(const T* anchors, int64_t begin, int64_t n, const T* gt, int64_t k,
                                               int64_t* idx, T* dist) {
  int64_t filled = 0;
  for (int64_t a = begin; a < begin + n; ++a) {
    const T d = sq_center_distance(anchors + 4 * a, gt);
    // Anchors come in increasing index, so a tie with the current worst is not better.
    if (filled == k && !(d < dist[k - 1])) {
      continue;
    }
    int64_t pos = filled < k ? filled++ : k - 1;
    while (pos > 0 && d < dist[pos - 1]) {
      dist[pos] = dist[pos - 1];
      idx[pos] = idx[pos - 1];
      --pos;
    }
    dist[pos] = d;
    idx[pos] = a;
  }
}

// The assignment score of anchor a for the GT: anchor_weight * IoU(anchor, gt) (+ pred_weight *
// IoU(predicted box, gt) when preds is not null), and the two IoUs.
template <typename T>
HOST_DEVICE_INLINE double candidate_score(const T* anchors, const T* preds, const T* gt, int64_t a,
                                          double anchor_weight, double pred_weight, double* iou_anchor,
                                          double* iou_pred) {
  *iou_anchor = static_cast<double>(box_iou_single(anchors + 4 * a, gt, IouMode::IoU));
  *iou_pred = preds != nullptr ? static_cast<double>(box_iou_single(preds + 4 * a, gt, IouMode::IoU)) : 0.0;
  const double s = mul_rn(anchor_weight, *iou_anchor);
  return preds != nullptr ? add_rn(s, mul_rn(pred_weight, *iou_pred)) : s;
}

template <typename T>
HOST_DEVICE_INLINE bool center_inside(const T* anchor, const T* gt) {
  const T cx = center_of(anchor, 0), cy = center_of(anchor, 1);
  T m = cx - gt[0];
  m = (cy - gt[1]) < m ? (cy - gt[1]) : m;
  m = (gt[2] - cx) < m ? (gt[2] - cx) : m;
  m = (gt[3] - cy) < m ? (gt[3] - cy) : m;
  return m > T(kCenterInsideEps);
}

// For one GT and its `count` candidates: the score of each candidate that is positive for it
// (score >= threshold and centre inside), -1 for the others, and the GT's threshold. It is
// anchor_weight * (mean + std of the anchor IoUs) [+ pred_weight * (mean + std of the predicted
// boxes' IoUs)], with unbiased stds: with one candidate it is NaN and nothing is positive.
template <typename T>
HOST_DEVICE_INLINE void gt_candidate_scores_single(const T* anchors, const T* preds, const T* gt,
                                                   const int64_t* cand, int64_t count, double anchor_weight,
                                                   double pred_weight, double* scores, double* threshold_out) {
  double ua, up, sum_a = 0.0, sum_p = 0.0;
  for (int64_t c = 0; c < count; ++c) {
    candidate_score(anchors, preds, gt, cand[c], anchor_weight, pred_weight, &ua, &up);
    sum_a = add_rn(sum_a, ua);
    sum_p = add_rn(sum_p, up);
  }
  const double mean_a = sum_a / count, mean_p = sum_p / count;
  double ss_a = 0.0, ss_p = 0.0;
  for (int64_t c = 0; c < count; ++c) {
    candidate_score(anchors, preds, gt, cand[c], anchor_weight, pred_weight, &ua, &up);
    ss_a = add_rn(ss_a, mul_rn(ua - mean_a, ua - mean_a));
    ss_p = add_rn(ss_p, mul_rn(up - mean_p, up - mean_p));
  }
  const double std_a = sqrt(ss_a / (count - 1)), std_p = sqrt(ss_p / (count - 1));
  double threshold = mul_rn(anchor_weight, add_rn(mean_a, std_a));
  if (preds != nullptr) {
    threshold = add_rn(threshold, mul_rn(pred_weight, add_rn(mean_p, std_p)));
  }
  *threshold_out = threshold;
  for (int64_t c = 0; c < count; ++c) {
    const double s = candidate_score(anchors, preds, gt, cand[c], anchor_weight, pred_weight, &ua, &up);
    scores[c] = (s >= threshold && center_inside(anchors + 4 * cand[c], gt)) ? s : -1.0;
  }
}

}  // namespace d2ext
