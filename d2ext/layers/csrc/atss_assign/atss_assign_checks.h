// Argument checks and candidate layout of d2ext::atss_assign, shared by both launchers.
#pragma once

#include <optional>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace d2ext {

inline void check_atss_assign_args(const at::Tensor& anchors, at::IntArrayRef num_anchors_per_level,
                                   const at::Tensor& gt_boxes, int64_t topk,
                                   const std::optional<at::Tensor>& pred_boxes) {
  TORCH_CHECK(anchors.dim() == 2 && anchors.size(1) == 4, "atss_assign: anchors must have shape (R, 4), got ",
              anchors.sizes());
  TORCH_CHECK(anchors.scalar_type() == at::kFloat || anchors.scalar_type() == at::kDouble,
              "atss_assign: anchors must be float32 or float64, got ", anchors.scalar_type());
  TORCH_CHECK(gt_boxes.dim() == 2 && gt_boxes.size(1) == 4, "atss_assign: gt_boxes must have shape (M, 4), got ",
              gt_boxes.sizes());
  TORCH_CHECK(gt_boxes.scalar_type() == anchors.scalar_type() && gt_boxes.device() == anchors.device(),
              "atss_assign: gt_boxes must have the dtype and device of anchors");
  int64_t total = 0;
  for (const auto n : num_anchors_per_level) {
    TORCH_CHECK(n >= 0, "atss_assign: num_anchors_per_level must be >= 0, got ", num_anchors_per_level);
    total += n;
  }
  TORCH_CHECK(total == anchors.size(0), "atss_assign: num_anchors_per_level ", num_anchors_per_level,
              " does not sum to the ", anchors.size(0), " anchors given");
  TORCH_CHECK(topk >= 1, "atss_assign: topk must be >= 1, got ", topk);
  if (pred_boxes.has_value() && pred_boxes->defined()) {
    TORCH_CHECK(pred_boxes->sizes() == anchors.sizes(), "atss_assign: pred_boxes must have the shape of anchors (",
                anchors.sizes(), "), got ", pred_boxes->sizes());
    TORCH_CHECK(pred_boxes->scalar_type() == anchors.scalar_type() && pred_boxes->device() == anchors.device(),
                "atss_assign: pred_boxes must have the dtype and device of anchors");
  }
}

// Where each level's candidates sit in a GT's row of candidates: min(topk, n_l) per level.
struct CandidateLayout {
  std::vector<int64_t> level_begin;   // first anchor of each level
  std::vector<int64_t> level_count;   // anchors of each level
  std::vector<int64_t> level_offset;  // first candidate slot of each level
  std::vector<int64_t> level_k;       // candidates of each level
  int64_t total = 0;                  // candidates per GT
};

inline CandidateLayout candidate_layout(at::IntArrayRef num_anchors_per_level, int64_t topk) {
  CandidateLayout layout;
  int64_t begin = 0;
  for (const auto n : num_anchors_per_level) {
    const int64_t k = n < topk ? n : topk;
    layout.level_begin.push_back(begin);
    layout.level_count.push_back(n);
    layout.level_offset.push_back(layout.total);
    layout.level_k.push_back(k);
    layout.total += k;
    begin += n;
  }
  return layout;
}

}  // namespace d2ext
