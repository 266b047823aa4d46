// Argument checks of the focal-family losses, shared by their CPU and CUDA launchers.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "../loss_reduction.h"
#include "focal_losses.h"

namespace d2ext {

inline void check_logits_and_labels(const char* op, const at::Tensor& logits, const at::Tensor& labels) {
  TORCH_CHECK(logits.dim() == 2, op, ": logits must have shape (N, K), got ", logits.sizes());
  TORCH_CHECK(logits.scalar_type() == at::kFloat || logits.scalar_type() == at::kDouble, op,
              ": logits must be float32 or float64, got ", logits.scalar_type());
  TORCH_CHECK(labels.dim() == 1 && labels.size(0) == logits.size(0), op, ": labels must have shape (",
              logits.size(0), ",), got ", labels.sizes());
  TORCH_CHECK(labels.scalar_type() == at::kLong, op, ": labels must be int64, got ", labels.scalar_type());
  TORCH_CHECK(labels.device() == logits.device(), op, ": labels must be on ", logits.device(), ", got ",
              labels.device());
}

// The CPU launchers' label check (CUDA: assert_label_in_range in the kernels): labels (n values,
// host memory) in [-1, num_classes], else an error naming the first bad label and its index.
inline void check_label_values(const char* op, const int64_t* labels, int64_t n, int64_t num_classes) {
  for (int64_t i = 0; i < n; ++i) {
    TORCH_CHECK(label_in_range(labels[i], num_classes), op, ": labels must be in [-1, ", num_classes,
                "] (-1 = ignored, ", num_classes, " = background), got ", labels[i], " at index ", i);
  }
}

inline void check_dfl_args(const char* op, const at::Tensor& logits, const at::Tensor& target) {
  TORCH_CHECK(logits.dim() == 2 && logits.size(1) >= 2, op, ": logits must have shape (N, n + 1) with n >= 1, got ",
              logits.sizes());
  TORCH_CHECK(logits.scalar_type() == at::kFloat || logits.scalar_type() == at::kDouble, op,
              ": logits must be float32 or float64, got ", logits.scalar_type());
  TORCH_CHECK(target.dim() == 1 && target.size(0) == logits.size(0), op, ": target must have shape (",
              logits.size(0), ",), got ", target.sizes());
  TORCH_CHECK(target.scalar_type() == logits.scalar_type(), op, ": target must have the dtype of logits (",
              logits.scalar_type(), "), got ", target.scalar_type());
  TORCH_CHECK(target.device() == logits.device(), op, ": target must be on ", logits.device(), ", got ",
              target.device());
}

}  // namespace d2ext
