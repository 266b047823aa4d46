// CPU launchers of the box IoU ops and the GIoU loss: parallel loops over the shared per-pair
// bodies (box_iou_cpu_kernels.inc, one copy per CPU variant: cpu_isa.h).
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
#include "../cpu_isa.h"

#define D2EXT_CPU_KERNELS_FILE "box_iou/box_iou_cpu_kernels.inc"
#include "../cpu_isa_variants.h"

TORCH_LIBRARY_IMPL(d2ext, CPU, m) {
  m.impl("pairwise_iou", D2EXT_CPU_KERNEL(pairwise_iou_cpu));
  m.impl("aligned_iou", D2EXT_CPU_KERNEL(aligned_iou_cpu));
  m.impl("combined_iou", D2EXT_CPU_KERNEL(combined_iou_cpu));
  m.impl("giou_loss", [](const at::Tensor& pred, const at::Tensor& target, const std::optional<at::Tensor>& weight,
                         int64_t reduction) {
    return D2EXT_CPU_KERNEL(giou_loss_cpu)(nullptr, pred, target, weight, reduction);
  });
  m.impl("_giou_loss_backward", [](const at::Tensor& grad, const at::Tensor& pred, const at::Tensor& target,
                                   const std::optional<at::Tensor>& weight, int64_t reduction) {
    return D2EXT_CPU_KERNEL(giou_loss_cpu)(&grad, pred, target, weight, reduction);
  });
}
