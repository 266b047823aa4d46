// CUDA launcher of d2ext::ap_loss: the two per-element loops of ap_loss_driver.h as kernels.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "ap_loss.h"
#include "ap_loss_driver.h"

namespace d2ext {
namespace {

constexpr int kThreads = 256;

int64_t blocks_for(int64_t n) {
  return std::max<int64_t>(1, std::min<int64_t>((n + kThreads - 1) / kThreads, 65535));
}

__global__ void precision_kernel(const double* ps, const double* pp, int64_t num_pos, const double* ns,
                                 const double* np, int64_t num_neg, double delta, double* prec, double* rank) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < num_pos;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    prec[i] = ap_precision_single(ps[i], ps, pp, num_pos, ns, np, num_neg, delta, rank + i);
  }
}

__global__ void negative_grad_kernel(const double* ps, const double* pc, const double* pcu, int64_t num_pos,
                                     const double* t, int64_t num_neg, double delta, double* out) {
  for (int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; j < num_neg;
       j += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    out[j] = weighted_step_sum_below(ps, pc, pcu, num_pos, t[j], delta);
  }
}

__global__ void check_labels_kernel(const int64_t* labels, int64_t n, int64_t num_classes) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    assert_label_in_range(labels[i], num_classes);
  }
}

struct CudaLoops {
  // A device-side assert, as the focal-family kernels: no host sync for the check.
  static void check_labels(const at::Tensor& labels, int64_t num_classes) {
    const int64_t n = labels.size(0);
    if (n == 0) {
      return;
    }
    check_labels_kernel<<<blocks_for(n), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        labels.const_data_ptr<int64_t>(), n, num_classes);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  static void precision(const at::Tensor& pos_sorted, const at::Tensor& pos_prefix, const at::Tensor& neg_sorted,
                        const at::Tensor& neg_prefix, double delta, at::Tensor& prec, at::Tensor& rank) {
    const int64_t num_pos = pos_sorted.size(0);
    precision_kernel<<<blocks_for(num_pos), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        pos_sorted.const_data_ptr<double>(), pos_prefix.const_data_ptr<double>(), num_pos,
        neg_sorted.const_data_ptr<double>(), neg_prefix.const_data_ptr<double>(), neg_sorted.size(0), delta,
        prec.mutable_data_ptr<double>(), rank.mutable_data_ptr<double>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  static void negative_grad(const at::Tensor& pos_sorted, const at::Tensor& pc, const at::Tensor& pcu,
                            const at::Tensor& neg_scores, double delta, at::Tensor& out) {
    const int64_t num_neg = neg_scores.size(0);
    if (num_neg == 0) {
      return;
    }
    negative_grad_kernel<<<blocks_for(num_neg), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        pos_sorted.const_data_ptr<double>(), pc.const_data_ptr<double>(), pcu.const_data_ptr<double>(),
        pos_sorted.size(0), neg_scores.const_data_ptr<double>(), num_neg, delta, out.mutable_data_ptr<double>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

std::tuple<at::Tensor, at::Tensor> ap_loss_cuda(const at::Tensor& logits, const at::Tensor& labels, double delta,
                                                bool interpolated) {
  const c10::cuda::CUDAGuard guard(logits.device());
  return ap_loss_impl<CudaLoops>(logits, labels, delta, interpolated);
}

}  // namespace

TORCH_LIBRARY_IMPL(d2ext, CUDA, m) {
  m.impl("ap_loss", &ap_loss_cuda);
}

}  // namespace d2ext
