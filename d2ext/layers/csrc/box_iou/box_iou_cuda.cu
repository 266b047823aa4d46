// CUDA launcher of d2ext::pairwise_iou: a grid-stride loop over the shared per-pair body.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../loss_reduction.h"
#include "box_iou.h"
#include "box_iou_checks.h"

namespace d2ext {
namespace {

template <typename T>
__global__ void pairwise_iou_kernel(const T* a, const T* b, T* out, int64_t n, int64_t m, IouMode mode) {
  const int64_t total = n * m;
  for (int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; k < total;
       k += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    out[k] = box_iou_single(a + 4 * (k / m), b + 4 * (k % m), mode);
  }
}

at::Tensor pairwise_iou_cuda(const at::Tensor& boxes1, const at::Tensor& boxes2, int64_t mode) {
  check_pairwise_iou_args(boxes1, boxes2, mode);
  const c10::cuda::CUDAGuard guard(boxes1.device());
  const auto a = boxes1.contiguous();
  const auto b = boxes2.contiguous();
  const int64_t n = a.size(0);
  const int64_t m = b.size(0);
  auto out = at::empty({n, m}, a.options());
  if (n == 0 || m == 0) {
    return out;
  }
  constexpr int threads = 256;
  const int64_t blocks = std::min<int64_t>((n * m + threads - 1) / threads, 65535);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "pairwise_iou_cuda", [&] {
    pairwise_iou_kernel<scalar_t><<<blocks, threads, 0, stream>>>(
        a.const_data_ptr<scalar_t>(), b.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(),
        n, m, static_cast<IouMode>(mode));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

template <typename T>
__global__ void combined_iou_kernel(const T* a, const T* p, const T* g, T* out, int64_t n, int64_t m, T wa, T wp) {
  for (int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; k < n * m;
       k += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    out[k] = combined_iou_single(a + 4 * (k / m), p + 4 * (k / m), g + 4 * (k % m), wa, wp);
  }
}

template <typename T>
__global__ void aligned_iou_kernel(const T* a, const T* b, T* out, int64_t n, IouMode mode) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    out[i] = box_iou_single(a + 4 * i, b + 4 * i, mode);
  }
}

template <typename T>
__global__ void giou_loss_kernel(const T* p, const T* t, const T* w, int64_t n, const T* grad, int64_t step, T scale,
                                 T* out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    if (grad != nullptr) {
      giou_loss_single(p + 4 * i, t + 4 * i, out + 4 * i, grad[i * step] * scale * w[i]);
    } else {
      out[i] = w[i] * giou_loss_single(p + 4 * i, t + 4 * i, static_cast<T*>(nullptr), T(0));
    }
  }
}

int64_t blocks_for(int64_t n) {
  return std::max<int64_t>(1, std::min<int64_t>((n + 255) / 256, 65535));
}

at::Tensor combined_iou_cuda(const at::Tensor& anchors_in, const at::Tensor& preds_in, const at::Tensor& gt_in,
                             double anchor_weight, double pred_weight) {
  check_combined_iou_args(anchors_in, preds_in, gt_in);
  const c10::cuda::CUDAGuard guard(anchors_in.device());
  const auto anchors = anchors_in.contiguous();
  const auto preds = preds_in.contiguous();
  const auto gt = gt_in.contiguous();
  const int64_t n = anchors.size(0), m = gt.size(0);
  auto out = at::empty({n, m}, anchors.options());
  if (n == 0 || m == 0) {
    return out;
  }
  AT_DISPATCH_FLOATING_TYPES(anchors.scalar_type(), "combined_iou_cuda", [&] {
    combined_iou_kernel<scalar_t><<<blocks_for(n * m), 256, 0, c10::cuda::getCurrentCUDAStream()>>>(
        anchors.const_data_ptr<scalar_t>(), preds.const_data_ptr<scalar_t>(), gt.const_data_ptr<scalar_t>(),
        out.mutable_data_ptr<scalar_t>(), n, m, scalar_t(anchor_weight), scalar_t(pred_weight));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor aligned_iou_cuda(const at::Tensor& boxes1, const at::Tensor& boxes2, int64_t mode) {
  check_aligned_boxes("aligned_iou", boxes1, boxes2);
  TORCH_CHECK(mode == 0 || mode == 1, "aligned_iou: mode must be 0 (iou) or 1 (giou), got ", mode);
  const c10::cuda::CUDAGuard guard(boxes1.device());
  const auto a = boxes1.contiguous();
  const auto b = boxes2.contiguous();
  const int64_t n = a.size(0);
  auto out = at::empty({n}, a.options());
  if (n == 0) {
    return out;
  }
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "aligned_iou_cuda", [&] {
    aligned_iou_kernel<scalar_t><<<blocks_for(n), 256, 0, c10::cuda::getCurrentCUDAStream()>>>(
        a.const_data_ptr<scalar_t>(), b.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), n,
        static_cast<IouMode>(mode));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor giou_loss_cuda(const at::Tensor* grad_in, const at::Tensor& pred_in, const at::Tensor& target_in,
                          const std::optional<at::Tensor>& weight_in, int64_t reduction) {
  const char* op = "giou_loss";
  check_aligned_boxes(op, pred_in, target_in, "pred", "target");
  check_reduction(op, reduction);
  const c10::cuda::CUDAGuard guard(pred_in.device());
  const auto pred = pred_in.contiguous();
  const auto target = target_in.contiguous();
  const auto weight = row_tensor(op, "weight", weight_in, pred, 1.0);
  const int64_t n = pred.size(0);
  const bool backward = grad_in != nullptr;
  const bool none = static_cast<Reduction>(reduction) == Reduction::None;
  const auto grad = backward ? check_upstream(op, *grad_in, reduction, {n}) : at::Tensor();
  auto out = backward ? at::empty_like(pred) : at::empty({n}, pred.options());
  if (n > 0) {
    AT_DISPATCH_FLOATING_TYPES(pred.scalar_type(), "giou_loss_cuda", [&] {
      giou_loss_kernel<scalar_t><<<blocks_for(n), 256, 0, c10::cuda::getCurrentCUDAStream()>>>(
          pred.const_data_ptr<scalar_t>(), target.const_data_ptr<scalar_t>(), weight.const_data_ptr<scalar_t>(), n,
          backward ? grad.const_data_ptr<scalar_t>() : nullptr, none ? 1 : 0,
          scalar_t(upstream_scale(reduction, n)), out.mutable_data_ptr<scalar_t>());
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return (backward || none) ? out : reduce_rows(out, reduction, n);
}

}  // namespace

TORCH_LIBRARY_IMPL(d2ext, CUDA, m) {
  m.impl("pairwise_iou", &pairwise_iou_cuda);
  m.impl("aligned_iou", &aligned_iou_cuda);
  m.impl("combined_iou", &combined_iou_cuda);
  m.impl("giou_loss", [](const at::Tensor& pred, const at::Tensor& target, const std::optional<at::Tensor>& weight,
                         int64_t reduction) { return giou_loss_cuda(nullptr, pred, target, weight, reduction); });
  m.impl("_giou_loss_backward", [](const at::Tensor& grad, const at::Tensor& pred, const at::Tensor& target,
                                   const std::optional<at::Tensor>& weight, int64_t reduction) {
    return giou_loss_cuda(&grad, pred, target, weight, reduction);
  });
}

}  // namespace d2ext
