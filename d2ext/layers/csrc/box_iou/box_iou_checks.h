// Argument checks of d2ext::pairwise_iou, shared by both launchers so errors read the same.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace d2ext {

inline void check_pairwise_iou_args(const at::Tensor& boxes1, const at::Tensor& boxes2, int64_t mode) {
  TORCH_CHECK(boxes1.dim() == 2 && boxes1.size(1) == 4,
              "pairwise_iou: boxes1 must have shape (N, 4), got ", boxes1.sizes());
  TORCH_CHECK(boxes2.dim() == 2 && boxes2.size(1) == 4,
              "pairwise_iou: boxes2 must have shape (M, 4), got ", boxes2.sizes());
  TORCH_CHECK(boxes1.scalar_type() == boxes2.scalar_type(),
              "pairwise_iou: boxes1 and boxes2 must have the same dtype, got ",
              boxes1.scalar_type(), " and ", boxes2.scalar_type());
  TORCH_CHECK(boxes1.device() == boxes2.device(),
              "pairwise_iou: boxes1 and boxes2 must be on the same device, got ",
              boxes1.device(), " and ", boxes2.device());
  TORCH_CHECK(mode == 0 || mode == 1, "pairwise_iou: mode must be 0 (iou) or 1 (giou), got ", mode);
}

}  // namespace d2ext

namespace d2ext {

// Two (N, 4) box sets paired row by row, named in the messages as name1 and name2.
inline void check_aligned_boxes(const char* op, const at::Tensor& boxes1, const at::Tensor& boxes2,
                                const char* name1 = "boxes1", const char* name2 = "boxes2") {
  TORCH_CHECK(boxes1.dim() == 2 && boxes1.size(1) == 4, op, ": ", name1, " must have shape (N, 4), got ",
              boxes1.sizes());
  TORCH_CHECK(boxes2.sizes() == boxes1.sizes(), op, ": ", name2, " must have the shape of ", name1, " (",
              boxes1.sizes(), "), got ", boxes2.sizes());
  TORCH_CHECK(boxes1.scalar_type() == at::kFloat || boxes1.scalar_type() == at::kDouble, op, ": ", name1,
              " must be float32 or float64, got ", boxes1.scalar_type());
  TORCH_CHECK(boxes2.scalar_type() == boxes1.scalar_type(), op, ": ", name1, " and ", name2,
              " must have the same dtype, got ", boxes1.scalar_type(), " and ", boxes2.scalar_type());
  TORCH_CHECK(boxes2.device() == boxes1.device(), op, ": ", name1, " and ", name2,
              " must be on the same device, got ", boxes1.device(), " and ", boxes2.device());
}

}  // namespace d2ext

namespace d2ext {

inline void check_combined_iou_args(const at::Tensor& anchors, const at::Tensor& preds, const at::Tensor& gt) {
  check_aligned_boxes("combined_iou", anchors, preds, "anchors", "pred_boxes");
  TORCH_CHECK(gt.dim() == 2 && gt.size(1) == 4, "combined_iou: gt_boxes must have shape (M, 4), got ", gt.sizes());
  TORCH_CHECK(gt.scalar_type() == anchors.scalar_type() && gt.device() == anchors.device(),
              "combined_iou: gt_boxes must have the dtype and device of anchors");
}

}  // namespace d2ext
