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
#include "../simd_transpose.h"

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

// DFL of kLanes consecutive rows at once, bin-major: a row's 17 bins (GFL's default) are too few to
// fill SIMD registers, so the row body's max, exp and sum run across rows instead, on v, a
// (bins x kLanes) copy transposed in SIMD registers. Writes the rows' weighted losses and weighted gradients.
constexpr int kLanes = 16;

template <int kBins, typename T>
void dfl_block(const T* x, int64_t bins, const T* target, const T* weight_or_null, T* loss, T* grad, T* v) {
  const int64_t nb = kBins > 0 ? kBins : bins;
  T max_x[kLanes], sum_exp[kLanes], w_left[kLanes], w_right[kLanes], x_left[kLanes], x_right[kLanes];
  T weight[kLanes];
  int32_t left[kLanes];  // 32-bit lanes, as wide as float's
  for (int r = 0; r < kLanes; ++r) {
    weight[r] = weight_or_null ? weight_or_null[r] : T(1);
  }
  simd::transpose(x, nb, kLanes, nb, v, kLanes);  // v[b * kLanes + r] = x[r * nb + b]
  D2EXT_SIMD
  for (int r = 0; r < kLanes; ++r) {
    max_x[r] = v[r];
    sum_exp[r] = T(0);
  }
  for (int64_t b = 1; b < nb; ++b) {
    D2EXT_SIMD
    for (int r = 0; r < kLanes; ++r) {
      max_x[r] = v[b * kLanes + r] > max_x[r] ? v[b * kLanes + r] : max_x[r];
    }
  }
  for (int64_t b = 0; b < nb; ++b) {
    D2EXT_SIMD
    for (int r = 0; r < kLanes; ++r) {
      v[b * kLanes + r] = exp_nonpositive(v[b * kLanes + r] - max_x[r]);
      sum_exp[r] += v[b * kLanes + r];
    }
  }
  D2EXT_SIMD
  for (int r = 0; r < kLanes; ++r) {
    dfl_target_bins(target[r], static_cast<int32_t>(nb - 1), left[r], w_left[r], w_right[r]);
  }
  for (int r = 0; r < kLanes; ++r) {
    x_left[r] = x[r * nb + left[r]];
    x_right[r] = x[r * nb + left[r] + 1];
  }
  D2EXT_SIMD
  for (int r = 0; r < kLanes; ++r) {
    loss[r] = weight[r] * dfl_row_loss(max_x[r], sum_exp[r], x_left[r], x_right[r], w_left[r], w_right[r]);
    sum_exp[r] = T(1) / sum_exp[r];
  }
  for (int32_t b = 0; b < nb; ++b) {
    D2EXT_SIMD
    for (int r = 0; r < kLanes; ++r) {
      v[b * kLanes + r] = weight[r] * dfl_bin_grad(v[b * kLanes + r] * sum_exp[r], b, left[r], w_left[r], w_right[r]);
    }
  }
  simd::transpose(v, kLanes, nb, kLanes, grad, nb);
}

std::tuple<at::Tensor, at::Tensor> dfl_cpu(const at::Tensor& logits_in, const at::Tensor& target_in,
                                           const std::optional<at::Tensor>& weight_in, int64_t reduction) {
  const char* op = "distribution_focal_loss";
  check_dfl_args(op, logits_in, target_in);
  check_reduction(op, reduction);
  const auto logits = logits_in.contiguous();
  const auto target = target_in.contiguous();
  // No weight: null, not a tensor of ones to fill and read.
  const bool weighted = weight_in.has_value() && weight_in->defined();
  const auto weight = weighted ? row_tensor(op, "weight", weight_in, logits, 1.0) : at::Tensor();
  const int64_t n = logits.size(0), bins = logits.size(1);
  auto losses = at::empty({n}, logits.options());
  auto grad = at::empty_like(logits);
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "focal_losses_cpu", [&] {
    const scalar_t* x = logits.const_data_ptr<scalar_t>();
    const scalar_t* t = target.const_data_ptr<scalar_t>();
    const scalar_t* w = weighted ? weight.const_data_ptr<scalar_t>() : nullptr;
    scalar_t* l = losses.mutable_data_ptr<scalar_t>();
    scalar_t* g = grad.mutable_data_ptr<scalar_t>();
    auto rows = [&](auto bins_c) {
      constexpr int B = decltype(bins_c)::value;
      at::parallel_for(0, n, kGrainRows, [&](int64_t begin, int64_t end) {
        std::vector<scalar_t> v(bins * kLanes);
        int64_t i = begin;
        for (; i + kLanes <= end; i += kLanes) {
          dfl_block<B>(x + i * bins, bins, t + i, w ? w + i : nullptr, l + i, g + i * bins, v.data());
        }
        for (; i < end; ++i) {
          const scalar_t wi = w ? w[i] : scalar_t(1);
          l[i] = wi * distribution_focal_single<B>(x + i * bins, bins, t[i], g + i * bins, true, wi);
        }
      });
    };
    if (bins == 17) {
      rows(std::integral_constant<int, 17>());
    } else {
      rows(std::integral_constant<int, 0>());
    }
  });
  return {reduce_rows(losses, reduction, n), grad};
}

}  // namespace

TORCH_LIBRARY_IMPL(d2ext, CPU, m) {
  register_focal_losses<&sigmoid_loss_cpu, &dfl_cpu>(m);
}

}  // namespace d2ext
