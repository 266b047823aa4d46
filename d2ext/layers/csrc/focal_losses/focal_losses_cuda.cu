// CUDA launchers of the focal-family losses: one thread per row, grid-stride, calling the same
// bodies as the CPU launchers (focal_losses.h).
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "focal_losses.h"
#include "focal_losses_checks.h"

namespace d2ext {
namespace {

constexpr int kThreads = 256;

int64_t num_blocks(int64_t rows) {
  return std::max<int64_t>(1, std::min<int64_t>((rows + kThreads - 1) / kThreads, 4096));
}

#define D2EXT_ROW_LOOP(i, n) \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)

template <typename T>
__global__ void sigmoid_loss_forward_kernel(const T* x, const int64_t* labels, const T* scores, const T* weight,
                                            int64_t n, int64_t k, SigmoidLossParams<T> prm, T* out, T* row_sums) {
  D2EXT_ROW_LOOP(i, n) {
    row_sums[i] = sigmoid_loss_forward_row(x + i * k, k, labels[i], scores[i], weight[i], prm,
                                           out != nullptr ? out + i * k : nullptr);
  }
}

template <typename T>
__global__ void sigmoid_loss_backward_kernel(const T* grad, int64_t step, T scale, const T* x, const int64_t* labels,
                                             const T* scores, const T* weight, int64_t n, int64_t k,
                                             SigmoidLossParams<T> prm, T* grad_x) {
  D2EXT_ROW_LOOP(i, n) {
    sigmoid_loss_backward_row(x + i * k, k, labels[i], scores[i], weight[i], prm, grad + i * k * step, step, scale,
                              grad_x + i * k);
  }
}

template <typename T>
__global__ void dfl_kernel(const T* x, const T* target, const T* weight, int64_t n, int64_t bins, const T* grad,
                           int64_t step, T scale, T* out) {
  D2EXT_ROW_LOOP(i, n) {
    if (grad != nullptr) {
      distribution_focal_single(x + i * bins, bins, target[i], out + i * bins, grad[i * step] * scale * weight[i]);
    } else {
      out[i] = weight[i] * distribution_focal_single(x + i * bins, bins, target[i], static_cast<T*>(nullptr), T(0));
    }
  }
}

at::Tensor sigmoid_loss_cuda(const char* op, const at::Tensor* grad_in, const at::Tensor& logits_in,
                             const at::Tensor& labels_in, const std::optional<at::Tensor>& scores_in,
                             const std::optional<at::Tensor>& weight_in, SigmoidLoss kind, double alpha, double gamma,
                             bool iou_weighted, int64_t reduction) {
  check_logits_and_labels(op, logits_in, labels_in);
  check_reduction(op, reduction);
  const c10::cuda::CUDAGuard guard(logits_in.device());
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
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "focal_losses_cuda", [&] {
    const SigmoidLossParams<scalar_t> prm{kind, scalar_t(alpha), scalar_t(gamma), iou_weighted};
    if (n == 0) {
      return;
    }
    if (backward) {
      sigmoid_loss_backward_kernel<scalar_t><<<num_blocks(n), kThreads, 0, stream>>>(
          grad.const_data_ptr<scalar_t>(), none ? 1 : 0, scalar_t(upstream_scale(reduction, n * k)),
          logits.const_data_ptr<scalar_t>(), labels.const_data_ptr<int64_t>(), scores.const_data_ptr<scalar_t>(),
          weight.const_data_ptr<scalar_t>(), n, k, prm, out.mutable_data_ptr<scalar_t>());
    } else {
      sigmoid_loss_forward_kernel<scalar_t><<<num_blocks(n), kThreads, 0, stream>>>(
          logits.const_data_ptr<scalar_t>(), labels.const_data_ptr<int64_t>(), scores.const_data_ptr<scalar_t>(),
          weight.const_data_ptr<scalar_t>(), n, k, prm, none ? out.mutable_data_ptr<scalar_t>() : nullptr,
          row_sums.mutable_data_ptr<scalar_t>());
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  if (backward || none) {
    return out;
  }
  return reduce_rows(row_sums, reduction, n * k);
}

at::Tensor dfl_cuda(const at::Tensor* grad_in, const at::Tensor& logits_in, const at::Tensor& target_in,
                    const std::optional<at::Tensor>& weight_in, int64_t reduction) {
  const char* op = "distribution_focal_loss";
  check_dfl_args(op, logits_in, target_in);
  check_reduction(op, reduction);
  const c10::cuda::CUDAGuard guard(logits_in.device());
  const auto logits = logits_in.contiguous();
  const auto target = target_in.contiguous();
  const auto weight = row_tensor(op, "weight", weight_in, logits, 1.0);
  const int64_t n = logits.size(0), bins = logits.size(1);
  const bool backward = grad_in != nullptr;
  const auto grad = backward ? check_upstream(op, *grad_in, reduction, {n}) : at::Tensor();
  auto out = backward ? at::empty_like(logits) : at::empty({n}, logits.options());
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "dfl_cuda", [&] {
    if (n == 0) {
      return;
    }
    dfl_kernel<scalar_t><<<num_blocks(n), kThreads, 0, stream>>>(
        logits.const_data_ptr<scalar_t>(), target.const_data_ptr<scalar_t>(), weight.const_data_ptr<scalar_t>(), n,
        bins, backward ? grad.const_data_ptr<scalar_t>() : nullptr,
        static_cast<Reduction>(reduction) == Reduction::None ? 1 : 0, scalar_t(upstream_scale(reduction, n)),
        out.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  if (backward || static_cast<Reduction>(reduction) == Reduction::None) {
    return out;
  }
  return reduce_rows(out, reduction, n);
}

}  // namespace

TORCH_LIBRARY_IMPL(d2ext, CUDA, m) {
  m.impl("sigmoid_focal_loss", [](const at::Tensor& logits, const at::Tensor& labels,
                                  const std::optional<at::Tensor>& weight, double alpha, double gamma,
                                  int64_t reduction) {
    return sigmoid_loss_cuda("sigmoid_focal_loss", nullptr, logits, labels, std::nullopt, weight, SigmoidLoss::Focal,
                             alpha, gamma, false, reduction);
  });
  m.impl("_sigmoid_focal_loss_backward", [](const at::Tensor& grad, const at::Tensor& logits, const at::Tensor& labels,
                                            const std::optional<at::Tensor>& weight, double alpha, double gamma,
                                            int64_t reduction) {
    return sigmoid_loss_cuda("sigmoid_focal_loss", &grad, logits, labels, std::nullopt, weight, SigmoidLoss::Focal,
                             alpha, gamma, false, reduction);
  });
  m.impl("quality_focal_loss", [](const at::Tensor& logits, const at::Tensor& labels, const at::Tensor& scores,
                                  const std::optional<at::Tensor>& weight, double beta, int64_t reduction) {
    return sigmoid_loss_cuda("quality_focal_loss", nullptr, logits, labels, scores, weight, SigmoidLoss::QualityFocal,
                             0.0, beta, false, reduction);
  });
  m.impl("_quality_focal_loss_backward", [](const at::Tensor& grad, const at::Tensor& logits, const at::Tensor& labels,
                                            const at::Tensor& scores, const std::optional<at::Tensor>& weight,
                                            double beta, int64_t reduction) {
    return sigmoid_loss_cuda("quality_focal_loss", &grad, logits, labels, scores, weight, SigmoidLoss::QualityFocal,
                             0.0, beta, false, reduction);
  });
  m.impl("varifocal_loss", [](const at::Tensor& logits, const at::Tensor& labels, const at::Tensor& scores,
                              const std::optional<at::Tensor>& weight, double alpha, double gamma, bool iou_weighted,
                              int64_t reduction) {
    return sigmoid_loss_cuda("varifocal_loss", nullptr, logits, labels, scores, weight, SigmoidLoss::Varifocal, alpha,
                             gamma, iou_weighted, reduction);
  });
  m.impl("_varifocal_loss_backward", [](const at::Tensor& grad, const at::Tensor& logits, const at::Tensor& labels,
                                        const at::Tensor& scores, const std::optional<at::Tensor>& weight, double alpha,
                                        double gamma, bool iou_weighted, int64_t reduction) {
    return sigmoid_loss_cuda("varifocal_loss", &grad, logits, labels, scores, weight, SigmoidLoss::Varifocal, alpha,
                             gamma, iou_weighted, reduction);
  });
  m.impl("distribution_focal_loss", [](const at::Tensor& logits, const at::Tensor& target,
                                       const std::optional<at::Tensor>& weight, int64_t reduction) {
    return dfl_cuda(nullptr, logits, target, weight, reduction);
  });
  m.impl("_distribution_focal_loss_backward", [](const at::Tensor& grad, const at::Tensor& logits,
                                                 const at::Tensor& target, const std::optional<at::Tensor>& weight,
                                                 int64_t reduction) {
    return dfl_cuda(&grad, logits, target, weight, reduction);
  });
}

}  // namespace d2ext
