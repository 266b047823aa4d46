// CUDA launcher of d2ext::atss_assign: one thread per (GT, level) for the nearest anchors, one
// per GT for its threshold, then two atomic passes that give every anchor its best GT exactly as
// the CPU's ordered pass does (highest score, then lowest GT index).
#include <algorithm>
#include <limits>

#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "atss_assign.h"
#include "atss_assign_checks.h"

namespace d2ext {
namespace {

constexpr int kThreads = 128;

#define D2EXT_GRID_LOOP(i, n) \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)

int64_t blocks_for(int64_t n) {
  return std::max<int64_t>(1, std::min<int64_t>((n + kThreads - 1) / kThreads, 65535));
}

// Level layout of the candidates, copied to the device: begin, count, offset, k per level.
struct DeviceLayout {
  const int64_t* level;  // 4 * num_levels values
  int64_t num_levels;
  int64_t total;
};

template <typename T>
__global__ void nearest_kernel(const T* anchors, const T* gt, int64_t num_gt, DeviceLayout layout, int64_t* cand,
                               T* dist) {
  D2EXT_GRID_LOOP(t, num_gt * layout.num_levels) {
    const int64_t j = t / layout.num_levels, l = t % layout.num_levels;
    const int64_t* lv = layout.level + 4 * l;
    if (lv[3] > 0) {
      const int64_t slot = j * layout.total + lv[2];
      nearest_anchors_single(anchors, lv[0], lv[1], gt + 4 * j, lv[3], cand + slot, dist + slot);
    }
  }
}

template <typename T>
__global__ void threshold_kernel(const T* anchors, const T* preds, const T* gt, int64_t num_gt, int64_t total,
                                 const int64_t* cand, double anchor_weight, double pred_weight, double* scores,
                                 double* thresholds) {
  D2EXT_GRID_LOOP(j, num_gt) {
    gt_candidate_scores_single(anchors, preds, gt + 4 * j, cand + j * total, total, anchor_weight, pred_weight,
                               scores + j * total, thresholds + j);
  }
}

// Non-negative doubles order like their bit patterns: atomicMax on the bits keeps the best score.
__global__ void best_score_kernel(const int64_t* cand, const double* scores, int64_t count,
                                  unsigned long long* best_bits) {
  D2EXT_GRID_LOOP(t, count) {
    if (scores[t] >= 0.0) {
      atomicMax(best_bits + cand[t], static_cast<unsigned long long>(__double_as_longlong(scores[t])));
    }
  }
}

__global__ void best_gt_kernel(const int64_t* cand, const double* scores, int64_t count, int64_t total,
                               const unsigned long long* best_bits, unsigned long long* best_gt) {
  D2EXT_GRID_LOOP(t, count) {
    const double s = scores[t];
    if (s >= 0.0 && static_cast<unsigned long long>(__double_as_longlong(s)) == best_bits[cand[t]]) {
      atomicMin(best_gt + cand[t], static_cast<unsigned long long>(t / total));
    }
  }
}

template <typename T>
__global__ void finalize_kernel(const unsigned long long* best_bits, const unsigned long long* best_gt,
                                int64_t num_anchors, int64_t* matched, T* matched_scores) {
  D2EXT_GRID_LOOP(r, num_anchors) {
    const bool is_matched = best_gt[r] != ~0ULL;
    matched[r] = is_matched ? static_cast<int64_t>(best_gt[r]) : -1;
    matched_scores[r] = is_matched ? static_cast<T>(__longlong_as_double(static_cast<long long>(best_bits[r]))) : T(0);
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> atss_assign_cuda(const at::Tensor& anchors_in, at::IntArrayRef num_anchors_per_level,
                                                    const at::Tensor& gt_in, int64_t topk,
                                                    const std::optional<at::Tensor>& preds_in, double anchor_weight,
                                                    double pred_weight) {
  check_atss_assign_args(anchors_in, num_anchors_per_level, gt_in, topk, preds_in);
  const c10::cuda::CUDAGuard guard(anchors_in.device());
  const auto anchors = anchors_in.contiguous();
  const auto gt = gt_in.contiguous();
  const bool has_preds = preds_in.has_value() && preds_in->defined();
  const auto preds = has_preds ? preds_in->contiguous() : at::Tensor();
  const int64_t num_anchors = anchors.size(0), num_gt = gt.size(0);
  auto matched_idxs = at::full({num_anchors}, -1, anchors.options().dtype(at::kLong));
  auto matched_scores = at::zeros({num_anchors}, anchors.options());
  auto thresholds = at::full({num_gt}, std::numeric_limits<double>::quiet_NaN(), anchors.options().dtype(at::kDouble));
  const CandidateLayout layout = candidate_layout(num_anchors_per_level, topk);
  if (num_gt == 0 || layout.total == 0 || num_anchors == 0) {
    return {matched_idxs, matched_scores, thresholds.to(anchors.scalar_type())};
  }
  const auto long_opts = anchors.options().dtype(at::kLong);
  std::vector<int64_t> host_levels;
  for (size_t l = 0; l < layout.level_k.size(); ++l) {
    host_levels.insert(host_levels.end(),
                       {layout.level_begin[l], layout.level_count[l], layout.level_offset[l], layout.level_k[l]});
  }
  auto host = at::empty({static_cast<int64_t>(host_levels.size())}, long_opts.device(at::kCPU));
  std::copy(host_levels.begin(), host_levels.end(), host.mutable_data_ptr<int64_t>());
  const auto levels = host.to(anchors.device());
  const DeviceLayout dev_layout{levels.const_data_ptr<int64_t>(), static_cast<int64_t>(layout.level_k.size()),
                                layout.total};
  const int64_t count = num_gt * layout.total;
  auto cand = at::empty({num_gt, layout.total}, long_opts);
  auto scores = at::empty({num_gt, layout.total}, anchors.options().dtype(at::kDouble));
  // uint64 buffers, held in int64 tensors: best score bits (0 = none yet) and best GT (all ones).
  auto best_bits = at::zeros({num_anchors}, long_opts);
  auto best_gt = at::full({num_anchors}, -1, long_opts);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(anchors.scalar_type(), "atss_assign_cuda", [&] {
    auto dist = at::empty({num_gt, layout.total}, anchors.options());
    const scalar_t* a = anchors.const_data_ptr<scalar_t>();
    const scalar_t* g = gt.const_data_ptr<scalar_t>();
    nearest_kernel<scalar_t><<<blocks_for(num_gt * dev_layout.num_levels), kThreads, 0, stream>>>(
        a, g, num_gt, dev_layout, cand.mutable_data_ptr<int64_t>(), dist.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    threshold_kernel<scalar_t><<<blocks_for(num_gt), kThreads, 0, stream>>>(
        a, has_preds ? preds.const_data_ptr<scalar_t>() : nullptr, g, num_gt, layout.total,
        cand.const_data_ptr<int64_t>(), anchor_weight, pred_weight, scores.mutable_data_ptr<double>(),
        thresholds.mutable_data_ptr<double>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    auto* bits = reinterpret_cast<unsigned long long*>(best_bits.mutable_data_ptr<int64_t>());
    auto* best = reinterpret_cast<unsigned long long*>(best_gt.mutable_data_ptr<int64_t>());
    best_score_kernel<<<blocks_for(count), kThreads, 0, stream>>>(cand.const_data_ptr<int64_t>(),
                                                                   scores.const_data_ptr<double>(), count, bits);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    best_gt_kernel<<<blocks_for(count), kThreads, 0, stream>>>(cand.const_data_ptr<int64_t>(),
                                                                scores.const_data_ptr<double>(), count, layout.total,
                                                                bits, best);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    finalize_kernel<scalar_t><<<blocks_for(num_anchors), kThreads, 0, stream>>>(
        bits, best, num_anchors, matched_idxs.mutable_data_ptr<int64_t>(), matched_scores.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {matched_idxs, matched_scores, thresholds.to(anchors.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(d2ext, CUDA, m) {
  m.impl("atss_assign", &atss_assign_cuda);
}

}  // namespace d2ext
