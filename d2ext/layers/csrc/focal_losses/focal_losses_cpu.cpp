// CPU launchers of the focal-family losses: parallel loops over rows calling the shared bodies
// of focal_losses.h. Registered for d2ext::{sigmoid_focal,quality_focal,varifocal,
// distribution_focal}_loss and their _backward ops.
#include <vector>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include "focal_losses.h"
#include "focal_losses_checks.h"
#include "focal_losses_registration.h"

namespace d2ext {
namespace {

constexpr int64_t kGrainRows = 64;

// Forward (grad_in null) or backward (the gradient of the logits) of a sigmoid-family loss.
at::Tensor sigmoid_loss_cpu(const char* op, const at::Tensor* grad_in, const at::Tensor& logits_in,
                            const at::Tensor& labels_in, const std::optional<at::Tensor>& scores_in,
                            const std::optional<at::Tensor>& weight_in, SigmoidLoss kind, double alpha, double gamma,
                            bool iou_weighted, int64_t reduction) {
  check_logits_and_labels(op, logits_in, labels_in);
  check_reduction(op, reduction);
  const auto logits = logits_in.contiguous();
  const auto labels = labels_in.contiguous();
  const auto scores = row_tensor(op, "scores", scores_in, logits, 0.0);
  const auto weight = row_tensor(op, "weight", weight_in, logits, 1.0);
  const int64_t n = logits.size(0), k = logits.size(1);
  const bool none = static_cast<Reduction>(reduction) == Reduction::None;
  const bool backward = grad_in != nullptr;
  const auto grad = backward ? check_upstream(op, *grad_in, reduction, logits.sizes()) : at::Tensor();
  auto out = (backward || none) ? at::empty_like(logits) : at::empty({0}, logits.options());
  auto row_sums = at::empty({n}, logits.options());
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "focal_losses_cpu", [&] {
    const auto prm = make_sigmoid_loss_params<scalar_t>(kind, alpha, gamma, iou_weighted);
    const scalar_t* x = logits.const_data_ptr<scalar_t>();
    const int64_t* lab = labels.const_data_ptr<int64_t>();
    const scalar_t* s = scores.const_data_ptr<scalar_t>();
    const scalar_t* w = weight.const_data_ptr<scalar_t>();
    const scalar_t* g = backward ? grad.const_data_ptr<scalar_t>() : nullptr;
    const int64_t step = none ? 1 : 0;
    const scalar_t scale = scalar_t(upstream_scale(reduction, n * k));
    scalar_t* o = (backward || none) ? out.mutable_data_ptr<scalar_t>() : nullptr;
    scalar_t* rs = row_sums.mutable_data_ptr<scalar_t>();
    dispatch_sigmoid_loss(kind, gamma, [&](auto kind_c, auto gamma2_c) {
      constexpr SigmoidLoss K = decltype(kind_c)::value;
      constexpr bool G2 = decltype(gamma2_c)::value;
      at::parallel_for(0, n, kGrainRows, [&](int64_t begin, int64_t end) {
        std::vector<scalar_t> scratch(o ? 0 : k);  // a row's losses when only sums are returned
        for (int64_t i = begin; i < end; ++i) {
          if (backward) {
            sigmoid_loss_backward_row<K, G2>(x + i * k, k, lab[i], s[i], w[i], prm, g + i * k * step, step, scale,
                                             o + i * k);
          } else {
            rs[i] = sigmoid_loss_forward_row<K, G2>(x + i * k, k, lab[i], s[i], w[i], prm, o ? o + i * k : scratch.data());
          }
        }
      });
    });
  });
  if (backward || none) {
    return out;
  }
  return reduce_rows(row_sums, reduction, n * k);
}

at::Tensor dfl_cpu(const at::Tensor* grad_in, const at::Tensor& logits_in, const at::Tensor& target_in,
                   const std::optional<at::Tensor>& weight_in, int64_t reduction) {
  const char* op = "distribution_focal_loss";
  check_dfl_args(op, logits_in, target_in);
  check_reduction(op, reduction);
  const auto logits = logits_in.contiguous();
  const auto target = target_in.contiguous();
  const auto weight = row_tensor(op, "weight", weight_in, logits, 1.0);
  const int64_t n = logits.size(0), bins = logits.size(1);
  const bool backward = grad_in != nullptr;
  const auto grad = backward ? check_upstream(op, *grad_in, reduction, {n}) : at::Tensor();
  const int64_t step = static_cast<Reduction>(reduction) == Reduction::None ? 1 : 0;
  auto out = backward ? at::empty_like(logits) : at::empty({n}, logits.options());
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "focal_losses_cpu", [&] {
    const scalar_t scale = scalar_t(upstream_scale(reduction, n));
    const scalar_t* x = logits.const_data_ptr<scalar_t>();
    const scalar_t* t = target.const_data_ptr<scalar_t>();
    const scalar_t* w = weight.const_data_ptr<scalar_t>();
    const scalar_t* g = backward ? grad.const_data_ptr<scalar_t>() : nullptr;
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, n, kGrainRows, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> scratch(bins);  // the softmax terms of a row, forward only
      for (int64_t i = begin; i < end; ++i) {
        if (backward) {
          distribution_focal_single(x + i * bins, bins, t[i], o + i * bins, true, g[i * step] * scale * w[i]);
        } else {
          o[i] = w[i] * distribution_focal_single(x + i * bins, bins, t[i], scratch.data(), false, scalar_t(0));
        }
      }
    });
  });
  if (backward || static_cast<Reduction>(reduction) == Reduction::None) {
    return out;
  }
  return reduce_rows(out, reduction, n);
}

}  // namespace

TORCH_LIBRARY_IMPL(d2ext, CPU, m) {
  register_focal_losses<&sigmoid_loss_cpu, &dfl_cpu>(m);
}

}  // namespace d2ext
