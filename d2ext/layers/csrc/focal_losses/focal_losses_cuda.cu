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
#include "focal_losses_registration.h"

namespace d2ext {
namespace {

constexpr int kThreads = 256;

int64_t num_blocks(int64_t rows) {
  return std::max<int64_t>(1, std::min<int64_t>((rows + kThreads - 1) / kThreads, 4096));
}

#define D2EXT_ROW_LOOP(i, n) \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)

template <SigmoidLoss K, bool G2, typename T>
__global__ void sigmoid_loss_forward_kernel(const T* x, const int64_t* labels, const T* scores, const T* weight,
                                            int64_t n, int64_t k, SigmoidLossParams<T> prm, T* out, T* row_sums) {
  D2EXT_ROW_LOOP(i, n) {
    assert_label_in_range(labels[i], k);
    row_sums[i] = sigmoid_loss_forward_row<K, G2>(x + i * k, k, labels[i], scores[i], weight[i], prm, out + i * k);
  }
}

template <SigmoidLoss K, bool G2, typename T>
__global__ void sigmoid_loss_backward_kernel(const T* grad, int64_t step, T scale, const T* x, const int64_t* labels,
                                             const T* scores, const T* weight, int64_t n, int64_t k,
                                             SigmoidLossParams<T> prm, T* grad_x) {
  D2EXT_ROW_LOOP(i, n) {
    assert_label_in_range(labels[i], k);
    sigmoid_loss_backward_row<K, G2>(x + i * k, k, labels[i], scores[i], weight[i], prm, grad + i * k * step, step, scale,
                              grad_x + i * k);
  }
}

// Forward: loss[i]; scratch (n, bins) holds the softmax terms. Backward: grad_x, (n, bins).
template <typename T>
__global__ void dfl_kernel(const T* x, const T* target, const T* weight, int64_t n, int64_t bins, T* losses,
                           T* grad) {
  D2EXT_ROW_LOOP(i, n) {
    losses[i] = weight[i] * distribution_focal_single(x + i * bins, bins, target[i], grad + i * bins, true, weight[i]);
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
  // Reduced losses still go through the (N, K) buffer: the rows' scratch space.
  auto out = at::empty_like(logits);
  auto row_sums = at::empty({n}, logits.options());
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "focal_losses_cuda", [&] {
    const auto prm = make_sigmoid_loss_params<scalar_t>(kind, alpha, gamma, iou_weighted);
    if (n == 0) {
      return;
    }
    dispatch_sigmoid_loss(kind, gamma, [&](auto kind_c, auto gamma2_c) {
      constexpr SigmoidLoss K = decltype(kind_c)::value;
      constexpr bool G2 = decltype(gamma2_c)::value;
      if (backward) {
        sigmoid_loss_backward_kernel<K, G2, scalar_t><<<num_blocks(n), kThreads, 0, stream>>>(
            grad.const_data_ptr<scalar_t>(), none ? 1 : 0, scalar_t(upstream_scale(reduction, n * k)),
            logits.const_data_ptr<scalar_t>(), labels.const_data_ptr<int64_t>(), scores.const_data_ptr<scalar_t>(),
            weight.const_data_ptr<scalar_t>(), n, k, prm, out.mutable_data_ptr<scalar_t>());
      } else {
        sigmoid_loss_forward_kernel<K, G2, scalar_t><<<num_blocks(n), kThreads, 0, stream>>>(
            logits.const_data_ptr<scalar_t>(), labels.const_data_ptr<int64_t>(), scores.const_data_ptr<scalar_t>(),
            weight.const_data_ptr<scalar_t>(), n, k, prm, out.mutable_data_ptr<scalar_t>(),
            row_sums.mutable_data_ptr<scalar_t>());
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  if (backward || none) {
    return out;
  }
  return reduce_rows(row_sums, reduction, n * k);
}

std::tuple<at::Tensor, at::Tensor> dfl_cuda(const at::Tensor& logits_in, const at::Tensor& target_in,
                                            const std::optional<at::Tensor>& weight_in, int64_t reduction) {
  const char* op = "distribution_focal_loss";
  check_dfl_args(op, logits_in, target_in);
  check_reduction(op, reduction);
  const c10::cuda::CUDAGuard guard(logits_in.device());
  const auto logits = logits_in.contiguous();
  const auto target = target_in.contiguous();
  const auto weight = row_tensor(op, "weight", weight_in, logits, 1.0);
  const int64_t n = logits.size(0), bins = logits.size(1);
  auto losses = at::empty({n}, logits.options());
  auto grad = at::empty_like(logits);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "dfl_cuda", [&] {
    if (n == 0) {
      return;
    }
    dfl_kernel<scalar_t><<<num_blocks(n), kThreads, 0, stream>>>(
        logits.const_data_ptr<scalar_t>(), target.const_data_ptr<scalar_t>(), weight.const_data_ptr<scalar_t>(), n,
        bins, losses.mutable_data_ptr<scalar_t>(), grad.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {reduce_rows(losses, reduction, n), grad};
}

}  // namespace

TORCH_LIBRARY_IMPL(d2ext, CUDA, m) {
  register_focal_losses<&sigmoid_loss_cuda, &dfl_cuda>(m);
}

}  // namespace d2ext
