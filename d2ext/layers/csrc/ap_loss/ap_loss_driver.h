// The device-independent part of d2ext::ap_loss: gather positive and negative (anchor, class)
// scores, sort them, prefix sums and the interpolation, all with ATen ops; the two per-element
// loops (a precision per positive, a gradient per negative) come from the launcher's Loops:
//   Loops::precision(pos_sorted, pos_prefix, neg_sorted, neg_prefix, delta, prec, rank)
//   Loops::negative_grad(pos_sorted, pc, pcu, neg_scores, delta, out)
// Every tensor passed to them is a contiguous float64 tensor on the logits' device; and the label
// check (labels outside [-1, K] would silently count as background or ignored):
//   Loops::check_labels(labels, num_classes), labels contiguous int64.
#pragma once

#include <tuple>

#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <c10/util/Exception.h>

#include "../focal_losses/focal_losses_checks.h"

namespace d2ext {

// [0, x_0, x_0 + x_1, ...]: n + 1 prefix sums of a 1-D tensor.
inline at::Tensor prefix_sums(const at::Tensor& x) {
  auto out = at::zeros({x.size(0) + 1}, x.options());
  out.narrow(0, 1, x.size(0)).copy_(x.cumsum(0));
  return out;
}

template <class Loops>
std::tuple<at::Tensor, at::Tensor> ap_loss_impl(const at::Tensor& logits_in, const at::Tensor& labels_in, double delta,
                                                bool interpolated) {
  check_logits_and_labels("ap_loss", logits_in, labels_in);
  TORCH_CHECK(delta > 0, "ap_loss: delta must be > 0, got ", delta);
  const auto logits = logits_in.contiguous();
  const int64_t num_classes = logits.size(1);
  Loops::check_labels(labels_in.contiguous(), num_classes);
  const auto flat = logits.view({-1});
  auto grad = at::zeros_like(logits);
  // Entries: (anchor, class) pairs. Positive: an anchor's own class; negative: every other class
  // of a non-ignored anchor (label >= 0), background anchors included; ignored anchors: none.
  const auto valid = labels_in.ge(0);
  const auto pos_rows = (valid & labels_in.lt(num_classes)).nonzero().squeeze(1);
  const auto pos_entries = pos_rows * num_classes + labels_in.index_select(0, pos_rows);
  const int64_t num_pos = pos_entries.size(0);
  if (num_pos == 0) {
    return {at::zeros({}, logits.options()), grad};
  }
  auto neg_mask = valid.unsqueeze(1).expand({logits.size(0), num_classes}).contiguous().view({-1});
  neg_mask.index_fill_(0, pos_entries, false);
  const auto neg_entries = neg_mask.nonzero().squeeze(1);
  const auto pos_scores = flat.index_select(0, pos_entries).to(at::kDouble);
  const auto neg_scores = flat.index_select(0, neg_entries).to(at::kDouble).contiguous();

  auto [pos_sorted, pos_order] = pos_scores.sort(/*stable=*/true, 0, /*descending=*/false);
  pos_sorted = pos_sorted.contiguous();
  const auto neg_sorted = std::get<0>(neg_scores.sort(/*stable=*/true, 0, false)).contiguous();
  auto prec = at::empty_like(pos_sorted);
  auto rank = at::empty_like(pos_sorted);
  Loops::precision(pos_sorted, prefix_sums(pos_sorted), neg_sorted, prefix_sums(neg_sorted), delta, prec, rank);

  // Interpolated AP: in increasing score, a positive's precision is raised to the best one seen
  // so far, and its row of primary terms rescaled by (1 - p~) / (1 - prec) to match.
  const auto prec_tilde = interpolated ? std::get<0>(prec.cummax(0)) : prec;
  const auto rescale = ((1 - prec_tilde) / (1 - prec)).where(prec.lt(prec_tilde), at::full({}, 1.0, prec.options()));
  const auto weights = (rescale / rank).contiguous();  // c_i: weight of H(s_j - s_i) in d/ds_j
  auto neg_grad = at::empty_like(neg_scores);
  Loops::negative_grad(pos_sorted, prefix_sums(weights), prefix_sums(weights * pos_sorted), neg_scores, delta,
                       neg_grad);

  auto pos_grad = at::empty_like(pos_sorted);
  pos_grad.index_copy_(0, pos_order, -(1 - prec_tilde) / static_cast<double>(num_pos));
  auto grad_flat = grad.view({-1});
  grad_flat.index_copy_(0, pos_entries, pos_grad.to(logits.scalar_type()));
  grad_flat.index_copy_(0, neg_entries, (neg_grad / static_cast<double>(num_pos)).to(logits.scalar_type()));
  const auto loss = (1 - prec_tilde.mean()).to(logits.scalar_type());
  return {loss, grad};
}

}  // namespace d2ext
