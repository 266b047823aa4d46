// CUDA launcher of d2ext::pairwise_iou: a grid-stride loop over the shared per-pair body.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

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

}  // namespace

TORCH_LIBRARY_IMPL(d2ext, CUDA, m) {
  m.impl("pairwise_iou", &pairwise_iou_cuda);
}

}  // namespace d2ext
