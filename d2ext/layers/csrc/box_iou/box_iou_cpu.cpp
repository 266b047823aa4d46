// CPU launcher of d2ext::pairwise_iou: a parallel loop over the shared per-pair body.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

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

}  // namespace

TORCH_LIBRARY_IMPL(d2ext, CPU, m) {
  m.impl("pairwise_iou", &pairwise_iou_cpu);
}

}  // namespace d2ext
