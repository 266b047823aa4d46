// Registers one device's focal-family launchers for the seven schemas of csrc/d2ext.cpp, so the
// CPU and CUDA files differ only in their launchers:
//   SigmoidLoss(op, grad or nullptr, logits, labels, scores, weight, kind, alpha, gamma,
//               iou_weighted, reduction)
//   Dfl(logits, target, weight, reduction) -> (loss, gradient of the summed weighted row losses)
#pragma once

#include <optional>

#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include "focal_losses.h"

namespace d2ext {

using OptTensor = std::optional<at::Tensor>;

template <auto SigmoidLossFn, auto DflFn>
void register_focal_losses(torch::Library& m) {
  m.impl("sigmoid_focal_loss", [](const at::Tensor& x, const at::Tensor& labels, const OptTensor& weight, double alpha,
                                  double gamma, int64_t reduction) {
    return SigmoidLossFn("sigmoid_focal_loss", nullptr, x, labels, std::nullopt, weight, SigmoidLoss::Focal, alpha,
                         gamma, false, reduction);
  });
  m.impl("_sigmoid_focal_loss_backward", [](const at::Tensor& grad, const at::Tensor& x, const at::Tensor& labels,
                                            const OptTensor& weight, double alpha, double gamma, int64_t reduction) {
    return SigmoidLossFn("sigmoid_focal_loss", &grad, x, labels, std::nullopt, weight, SigmoidLoss::Focal, alpha,
                         gamma, false, reduction);
  });
  m.impl("quality_focal_loss", [](const at::Tensor& x, const at::Tensor& labels, const at::Tensor& scores,
                                  const OptTensor& weight, double beta, int64_t reduction) {
    return SigmoidLossFn("quality_focal_loss", nullptr, x, labels, scores, weight, SigmoidLoss::QualityFocal, 0.0,
                         beta, false, reduction);
  });
  m.impl("_quality_focal_loss_backward", [](const at::Tensor& grad, const at::Tensor& x, const at::Tensor& labels,
                                            const at::Tensor& scores, const OptTensor& weight, double beta,
                                            int64_t reduction) {
    return SigmoidLossFn("quality_focal_loss", &grad, x, labels, scores, weight, SigmoidLoss::QualityFocal, 0.0, beta,
                         false, reduction);
  });
  m.impl("varifocal_loss", [](const at::Tensor& x, const at::Tensor& labels, const at::Tensor& scores,
                              const OptTensor& weight, double alpha, double gamma, bool iou_weighted,
                              int64_t reduction) {
    return SigmoidLossFn("varifocal_loss", nullptr, x, labels, scores, weight, SigmoidLoss::Varifocal, alpha, gamma,
                         iou_weighted, reduction);
  });
  m.impl("_varifocal_loss_backward", [](const at::Tensor& grad, const at::Tensor& x, const at::Tensor& labels,
                                        const at::Tensor& scores, const OptTensor& weight, double alpha, double gamma,
                                        bool iou_weighted, int64_t reduction) {
    return SigmoidLossFn("varifocal_loss", &grad, x, labels, scores, weight, SigmoidLoss::Varifocal, alpha, gamma,
                         iou_weighted, reduction);
  });
  m.impl("distribution_focal_loss", DflFn);
}

}  // namespace d2ext
