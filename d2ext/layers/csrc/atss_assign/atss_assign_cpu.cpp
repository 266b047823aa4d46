// CPU launcher of d2ext::atss_assign: candidates and thresholds per GT in parallel, then one
// pass resolving anchors claimed by several GTs. Extra memory O(R + M * levels * k).
#include <limits>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include "atss_assign.h"
#include "atss_assign_checks.h"

namespace d2ext {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> atss_assign_cpu(const at::Tensor& anchors_in, at::IntArrayRef num_anchors_per_level,
                                                   const at::Tensor& gt_in, int64_t topk,
                                                   const std::optional<at::Tensor>& preds_in, double anchor_weight,
                                                   double pred_weight) {
  check_atss_assign_args(anchors_in, num_anchors_per_level, gt_in, topk, preds_in);
  const auto anchors = anchors_in.contiguous();
  const auto gt = gt_in.contiguous();
  const bool has_preds = preds_in.has_value() && preds_in->defined();
  const auto preds = has_preds ? preds_in->contiguous() : at::Tensor();
  const int64_t num_anchors = anchors.size(0), num_gt = gt.size(0);
  auto matched_idxs = at::full({num_anchors}, -1, anchors.options().dtype(at::kLong));
  auto matched_scores = at::zeros({num_anchors}, anchors.options());
  // NaN for a GT without candidates (no anchors) or a single one (unbiased std undefined).
  auto thresholds = at::full({num_gt}, std::numeric_limits<double>::quiet_NaN(), anchors.options().dtype(at::kDouble));
  const CandidateLayout layout = candidate_layout(num_anchors_per_level, topk);
  if (num_gt == 0 || layout.total == 0) {
    return {matched_idxs, matched_scores, thresholds.to(anchors.scalar_type())};
  }
  auto cand = at::empty({num_gt, layout.total}, anchors.options().dtype(at::kLong));
  auto scores = at::empty({num_gt, layout.total}, anchors.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES(anchors.scalar_type(), "atss_assign_cpu", [&] {
    const scalar_t* a = anchors.const_data_ptr<scalar_t>();
    const scalar_t* p = has_preds ? preds.const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* g = gt.const_data_ptr<scalar_t>();
    int64_t* c = cand.mutable_data_ptr<int64_t>();
    double* s = scores.mutable_data_ptr<double>();
    double* th = thresholds.mutable_data_ptr<double>();
    at::parallel_for(0, num_gt, 1, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> dist(layout.total);
      for (int64_t j = begin; j < end; ++j) {
        int64_t* row = c + j * layout.total;
        for (size_t l = 0; l < layout.level_k.size(); ++l) {
          if (layout.level_k[l] > 0) {
            nearest_anchors_single(a, layout.level_begin[l], layout.level_count[l], g + 4 * j, layout.level_k[l],
                                   row + layout.level_offset[l], dist.data() + layout.level_offset[l]);
          }
        }
        gt_candidate_scores_single(a, p, g + 4 * j, row, layout.total, anchor_weight, pred_weight,
                                   s + j * layout.total, th + j);
      }
    });
    // Highest score wins; GTs in increasing order with a strict comparison keep the lower index
    // on ties.
    std::vector<double> best(num_anchors, -1.0);
    int64_t* m = matched_idxs.mutable_data_ptr<int64_t>();
    for (int64_t j = 0; j < num_gt; ++j) {
      for (int64_t k = 0; k < layout.total; ++k) {
        const double score = s[j * layout.total + k];
        const int64_t anchor = c[j * layout.total + k];
        if (score >= 0.0 && score > best[anchor]) {
          best[anchor] = score;
          m[anchor] = j;
        }
      }
    }
    scalar_t* out = matched_scores.mutable_data_ptr<scalar_t>();
    for (int64_t r = 0; r < num_anchors; ++r) {
      out[r] = m[r] >= 0 ? static_cast<scalar_t>(best[r]) : scalar_t(0);
    }
  });
  return {matched_idxs, matched_scores, thresholds.to(anchors.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(d2ext, CPU, m) {
  m.impl("atss_assign", &atss_assign_cpu);
}

}  // namespace d2ext
