// CPU launcher of d2ext::pairwise_iou: a parallel loop over the shared per-pair body.
#include <type_traits>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include "../loss_reduction.h"
#include "box_iou.h"
#include "box_iou_checks.h"

namespace d2ext {
namespace {

// Work items per parallel chunk: enough pairs to amortise a task (ATen's own grain is 32768).
constexpr int64_t kGrainPairs = 32768;

at::Tensor pairwise_iou_cpu(const at::Tensor& boxes1, const at::Tensor& boxes2, int64_t mode) {
  check_pairwise_iou_args(boxes1, boxes2, mode);
  const auto a = boxes1.contiguous();
  const auto b = boxes2.contiguous();
  const int64_t n = a.size(0);
  const int64_t m = b.size(0);
  auto out = at::empty({n, m}, a.options());
  if (n == 0 || m == 0) {
    return out;
  }
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "pairwise_iou_cpu", [&] {
    const scalar_t* pa = a.const_data_ptr<scalar_t>();
    const scalar_t* pb = b.const_data_ptr<scalar_t>();
    scalar_t* po = out.mutable_data_ptr<scalar_t>();
    const auto iou_mode = static_cast<IouMode>(mode);
    at::parallel_for(0, n, kGrainPairs / m + 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        for (int64_t j = 0; j < m; ++j) {
          po[i * m + j] = box_iou_single(pa + 4 * i, pb + 4 * j, iou_mode);
        }
      }
    });
  });
  return out;
}

at::Tensor combined_iou_cpu(const at::Tensor& anchors_in, const at::Tensor& preds_in, const at::Tensor& gt_in,
                            double anchor_weight, double pred_weight) {
  check_combined_iou_args(anchors_in, preds_in, gt_in);
  const auto anchors = anchors_in.contiguous();
  const auto preds = preds_in.contiguous();
  const auto gt = gt_in.contiguous();
  const int64_t n = anchors.size(0), m = gt.size(0);
  auto out = at::empty({n, m}, anchors.options());
  if (n == 0 || m == 0) {
    return out;
  }
  AT_DISPATCH_FLOATING_TYPES(anchors.scalar_type(), "combined_iou_cpu", [&] {
    const scalar_t* a = anchors.const_data_ptr<scalar_t>();
    const scalar_t* p = preds.const_data_ptr<scalar_t>();
    const scalar_t* g = gt.const_data_ptr<scalar_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    const scalar_t wa = scalar_t(anchor_weight), wp = scalar_t(pred_weight);
    at::parallel_for(0, n, kGrainPairs / m + 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        for (int64_t j = 0; j < m; ++j) {
          o[i * m + j] = combined_iou_single(a + 4 * i, p + 4 * i, g + 4 * j, wa, wp);
        }
      }
    });
  });
  return out;
}

at::Tensor aligned_iou_cpu(const at::Tensor& boxes1, const at::Tensor& boxes2, int64_t mode) {
  check_aligned_boxes("aligned_iou", boxes1, boxes2);
  TORCH_CHECK(mode == 0 || mode == 1, "aligned_iou: mode must be 0 (iou) or 1 (giou), got ", mode);
  const auto a = boxes1.contiguous();
  const auto b = boxes2.contiguous();
  const int64_t n = a.size(0);
  auto out = at::empty({n}, a.options());
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "aligned_iou_cpu", [&] {
    const scalar_t* pa = a.const_data_ptr<scalar_t>();
    const scalar_t* pb = b.const_data_ptr<scalar_t>();
    scalar_t* po = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, n, kGrainPairs, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        po[i] = box_iou_single(pa + 4 * i, pb + 4 * i, static_cast<IouMode>(mode));
      }
    });
  });
  return out;
}

// Forward (grad_in null: the losses, reduced) or backward (the gradient of pred) of the GIoU loss.
at::Tensor giou_loss_cpu(const at::Tensor* grad_in, const at::Tensor& pred_in, const at::Tensor& target_in,
                         const std::optional<at::Tensor>& weight_in, int64_t reduction) {
  const char* op = "giou_loss";
  check_aligned_boxes(op, pred_in, target_in, "pred", "target");
  check_reduction(op, reduction);
  const auto pred = pred_in.contiguous();
  const auto target = target_in.contiguous();
  const auto weight = row_tensor(op, "weight", weight_in, pred, 1.0);
  const int64_t n = pred.size(0);
  const bool backward = grad_in != nullptr;
  const bool none = static_cast<Reduction>(reduction) == Reduction::None;
  const auto grad = backward ? check_upstream(op, *grad_in, reduction, {n}) : at::Tensor();
  auto out = backward ? at::empty_like(pred) : at::empty({n}, pred.options());
  AT_DISPATCH_FLOATING_TYPES(pred.scalar_type(), "giou_loss_cpu", [&] {
    const scalar_t* p = pred.const_data_ptr<scalar_t>();
    const scalar_t* t = target.const_data_ptr<scalar_t>();
    const scalar_t* w = weight.const_data_ptr<scalar_t>();
    const scalar_t* g = backward ? grad.const_data_ptr<scalar_t>() : nullptr;
    const scalar_t scale = scalar_t(upstream_scale(reduction, n));
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    // Loops with no branch in the body (the upstream gradient per pair or one for all known at
    // compile time), so that pairs run in SIMD lanes.
    const auto backward_pairs = [&](auto per_pair_c, int64_t begin, int64_t end) {
      constexpr bool per_pair = decltype(per_pair_c)::value;
      D2EXT_SIMD
      for (int64_t i = begin; i < end; ++i) {
        giou_loss_single(p + 4 * i, t + 4 * i, o + 4 * i, (per_pair ? g[i] : g[0]) * scale * w[i]);
      }
    };
    at::parallel_for(0, n, kGrainPairs, [&](int64_t begin, int64_t end) {
      if (backward && none) {
        backward_pairs(std::true_type(), begin, end);
      } else if (backward) {
        backward_pairs(std::false_type(), begin, end);
      } else {
        D2EXT_SIMD
        for (int64_t i = begin; i < end; ++i) {
          o[i] = w[i] * giou_loss_single(p + 4 * i, t + 4 * i, static_cast<scalar_t*>(nullptr), scalar_t(0));
        }
      }
    });
  });
  return (backward || none) ? out : reduce_rows(out, reduction, n);
}

}  // namespace

TORCH_LIBRARY_IMPL(d2ext, CPU, m) {
  m.impl("pairwise_iou", &pairwise_iou_cpu);
  m.impl("aligned_iou", &aligned_iou_cpu);
  m.impl("combined_iou", &combined_iou_cpu);
  m.impl("giou_loss", [](const at::Tensor& pred, const at::Tensor& target, const std::optional<at::Tensor>& weight,
                         int64_t reduction) { return giou_loss_cpu(nullptr, pred, target, weight, reduction); });
  m.impl("_giou_loss_backward", [](const at::Tensor& grad, const at::Tensor& pred, const at::Tensor& target,
                                   const std::optional<at::Tensor>& weight, int64_t reduction) {
    return giou_loss_cpu(&grad, pred, target, weight, reduction);
  });
}

}  // namespace d2ext
