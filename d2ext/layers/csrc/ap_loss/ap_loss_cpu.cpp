// CPU launcher of d2ext::ap_loss: the two per-element loops of ap_loss_driver.h, in parallel.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "ap_loss.h"
#include "ap_loss_driver.h"

namespace d2ext {
namespace {

constexpr int64_t kGrain = 1024;

struct CpuLoops {
  static void precision(const at::Tensor& pos_sorted, const at::Tensor& pos_prefix, const at::Tensor& neg_sorted,
                        const at::Tensor& neg_prefix, double delta, at::Tensor& prec, at::Tensor& rank) {
    const double* ps = pos_sorted.const_data_ptr<double>();
    const double* pp = pos_prefix.const_data_ptr<double>();
    const double* ns = neg_sorted.const_data_ptr<double>();
    const double* np = neg_prefix.const_data_ptr<double>();
    double* out = prec.mutable_data_ptr<double>();
    double* r = rank.mutable_data_ptr<double>();
    const int64_t num_pos = pos_sorted.size(0), num_neg = neg_sorted.size(0);
    at::parallel_for(0, num_pos, kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        out[i] = ap_precision_single(ps[i], ps, pp, num_pos, ns, np, num_neg, delta, r + i);
      }
    });
  }

  static void negative_grad(const at::Tensor& pos_sorted, const at::Tensor& pc, const at::Tensor& pcu,
                            const at::Tensor& neg_scores, double delta, at::Tensor& out) {
    const double* ps = pos_sorted.const_data_ptr<double>();
    const double* c = pc.const_data_ptr<double>();
    const double* cu = pcu.const_data_ptr<double>();
    const double* t = neg_scores.const_data_ptr<double>();
    double* o = out.mutable_data_ptr<double>();
    const int64_t num_pos = pos_sorted.size(0);
    at::parallel_for(0, neg_scores.size(0), kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t j = begin; j < end; ++j) {
        o[j] = weighted_step_sum_below(ps, c, cu, num_pos, t[j], delta);
      }
    });
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(d2ext, CPU, m) {
  m.impl("ap_loss", &ap_loss_impl<CpuLoops>);
}

}  // namespace d2ext
