// Loss reductions and per-row argument handling shared by d2ext's loss launchers (CPU and
// CUDA), so that every loss accepts and rejects the same inputs with the same messages.
#pragma once

#include <optional>

#include <ATen/core/Tensor.h>
#include <ATen/ops/full.h>
#include <c10/util/Exception.h>

namespace d2ext {

// Must match REDUCTIONS in d2ext/layers/fused_losses.py.
enum class Reduction : int64_t { None = 0, Sum = 1, Mean = 2 };

inline void check_reduction(const char* op, int64_t reduction) {
  TORCH_CHECK(reduction >= 0 && reduction <= 2, op, ": reduction must be 0 (none), 1 (sum) or 2 (mean), got ",
              reduction);
}

// A per-row tensor (scores, weight, target): (N,), same dtype and device as `like` (the
// logits or boxes). Missing: filled with `fill`.
inline at::Tensor row_tensor(const char* op, const char* name, const std::optional<at::Tensor>& t,
                             const at::Tensor& like, double fill) {
  if (!t.has_value() || !t->defined()) {
    return at::full({like.size(0)}, fill, like.options());
  }
  TORCH_CHECK(t->dim() == 1 && t->size(0) == like.size(0), op, ": ", name, " must have shape (", like.size(0),
              ",), got ", t->sizes());
  TORCH_CHECK(t->scalar_type() == like.scalar_type(), op, ": ", name, " must have the dtype of the input (",
              like.scalar_type(), "), got ", t->scalar_type());
  TORCH_CHECK(t->device() == like.device(), op, ": ", name, " must be on ", like.device(), ", got ", t->device());
  return t->contiguous();
}

// Scale of the incoming gradient of each element: 1 / numel for "mean", else 1.
inline double upstream_scale(int64_t reduction, int64_t numel) {
  return static_cast<Reduction>(reduction) == Reduction::Mean ? 1.0 / static_cast<double>(numel > 0 ? numel : 1)
                                                               : 1.0;
}

// Checks the incoming gradient against the forward's output shape; returns it contiguous.
inline at::Tensor check_upstream(const char* op, const at::Tensor& grad, int64_t reduction,
                                 at::IntArrayRef none_shape) {
  if (static_cast<Reduction>(reduction) == Reduction::None) {
    TORCH_CHECK(grad.sizes() == none_shape, op, ": grad must have shape ", none_shape, ", got ", grad.sizes());
  } else {
    TORCH_CHECK(grad.numel() == 1, op, ": grad of a reduced loss must have one element, got ", grad.sizes());
  }
  return grad.contiguous();
}

// "sum" / "mean" of per-row sums ("none": the rows themselves).
inline at::Tensor reduce_rows(const at::Tensor& row_sums, int64_t reduction, int64_t numel) {
  if (static_cast<Reduction>(reduction) == Reduction::None) {
    return row_sums;
  }
  auto total = row_sums.sum();
  if (static_cast<Reduction>(reduction) == Reduction::Mean) {
    total = total.div(static_cast<double>(numel > 0 ? numel : 1));
  }
  return total;
}

}  // namespace d2ext
