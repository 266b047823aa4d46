// CUDA launcher of d2ext::deform_conv2d and its backward: the driver's chunks and matrix products
// (deform_conv_driver.h, cuBLAS through ATen) around grid-stride kernels over the shared bodies
// of deform_conv.h, channels last as on the CPU:
//   im2col             one thread per column value (position, group, tap, channel);
//   col2im             one thread per column value, atomic adds into the channels-last input
//                      gradient (nearby taps share pixels);
//   offset_mask_grads  one thread per (position, offset group, tap), summing over its channels.
// Adjacent threads take adjacent channels, so the input reads and the atomic adds are coalesced.
#include <algorithm>
#include <array>
#include <optional>
#include <tuple>

#include <ATen/core/Tensor.h>
#include <ATen/cuda/Atomic.cuh>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "deform_conv.h"
#include "deform_conv_driver.h"

namespace d2ext {
namespace {

constexpr int kThreads = 256;

int64_t blocks_for(int64_t n) {
  return std::max<int64_t>(1, std::min<int64_t>((n + kThreads - 1) / kThreads, 65535));
}

#define D2EXT_GRID_LOOP(e, n) \
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < (n); \
       e += static_cast<int64_t>(blockDim.x) * gridDim.x)

// Column value e of a chunk: its column j, offset group og, tap (i, jj) and channel.
struct ColumnValue {
  int64_t j, og, i, jj, channel;
};

__device__ __forceinline__ ColumnValue column_value(const DeformGeometry& g, int64_t e) {
  const int64_t rows = g.rows(), per_group = g.channels_per_group(), taps = g.taps();
  const int64_t j = e / rows, r = e - j * rows;
  const int64_t gk = r / per_group, cg = r - gk * per_group;  // r = (group * taps + k) * per_group + cg
  const int64_t grp = gk / taps, k = gk - grp * taps;
  const int64_t channel = grp * per_group + cg, i = k / g.kw;
  return {j, channel / g.channels_per_offset_group(), i, k - i * g.kw, channel};
}

template <typename T>
__global__ void im2col_kernel(DeformData<T> d, DeformChunk c, T* columns) {
  const DeformGeometry& g = d.g;
  D2EXT_GRID_LOOP(e, c.columns() * g.rows()) {
    const ColumnValue v = column_value(g, e);
    const DeformColumn col = deform_column(g, c, v.j);
    int32_t index[4];
    T w[4];
    deform_corners<T>(g, col, d.offset, d.mask, v.og, v.i, v.jj, index, w);
    const T* image = d.input + col.b * g.height * g.width * g.channels + v.channel;
    columns[e] = w[0] * image[index[0] * g.channels] + w[1] * image[index[1] * g.channels] +
                 w[2] * image[index[2] * g.channels] + w[3] * image[index[3] * g.channels];
  }
}

template <typename T>
__global__ void col2im_kernel(DeformData<T> d, DeformChunk c, const T* grad_columns, T* grad_input) {
  const DeformGeometry& g = d.g;
  D2EXT_GRID_LOOP(e, c.columns() * g.rows()) {
    const ColumnValue v = column_value(g, e);
    const DeformColumn col = deform_column(g, c, v.j);
    int32_t index[4];
    T w[4];
    deform_corners<T>(g, col, d.offset, d.mask, v.og, v.i, v.jj, index, w);
    T* image = grad_input + col.b * g.height * g.width * g.channels + v.channel;
    const T grad = grad_columns[e];
    for (int q = 0; q < 4; ++q) {
      if (w[q] != T(0)) {  // corners outside: skipped, as torchvision skips them
        gpuAtomicAdd(image + index[q] * g.channels, w[q] * grad);
      }
    }
  }
}

template <typename T>
__global__ void offset_mask_grads_kernel(DeformData<T> d, DeformChunk c, const T* grad_columns, T* grad_offset,
                                         T* grad_mask) {
  const DeformGeometry& g = d.g;
  const int64_t taps = g.taps(), per_og = g.channels_per_offset_group(), hw = g.out_positions();
  D2EXT_GRID_LOOP(e, c.columns() * g.offset_groups * taps) {
    const int64_t j = e / (g.offset_groups * taps), rest = e - j * g.offset_groups * taps;
    const int64_t og = rest / taps, k = rest - og * taps, i = k / g.kw;
    const DeformColumn col = deform_column(g, c, j);
    int32_t index[4];
    T masked[4], w[4], dy[4], dx[4], m;
    deform_corners<T>(g, col, d.offset, d.mask, og, i, k - i * g.kw, index, masked, w, dy, dx, &m);
    const T* image = d.input + col.b * g.height * g.width * g.channels;
    const T* src = grad_columns + j * g.rows();
    T acc[4] = {T(0), T(0), T(0), T(0)};
    for (int64_t ch = og * per_og; ch < (og + 1) * per_og; ++ch) {
      const T v = src[g.column_index(ch, k)];
      for (int q = 0; q < 4; ++q) {
        acc[q] += v * image[index[q] * g.channels + ch];
      }
    }
    const int64_t at = ((col.b * g.offset_groups + og) * 2 * taps + 2 * k) * hw + col.p;
    grad_offset[at] = m * (dy[0] * acc[0] + dy[1] * acc[1] + dy[2] * acc[2] + dy[3] * acc[3]);
    grad_offset[at + hw] = m * (dx[0] * acc[0] + dx[1] * acc[1] + dx[2] * acc[2] + dx[3] * acc[3]);
    if (grad_mask != nullptr) {
      grad_mask[((col.b * g.offset_groups + og) * taps + k) * hw + col.p] =
          w[0] * acc[0] + w[1] * acc[1] + w[2] * acc[2] + w[3] * acc[3];
    }
  }
}

struct CudaDeformLoops {
  // Column buffer of about 16M values (64 MB in float32): large products for the GPU.
  static constexpr int64_t kChunkElements = int64_t(1) << 24;
  static constexpr bool kImagesInParallel = false;  // one chunk after the other, on the stream

  template <typename T>
  static void im2col(const DeformData<T>& d, const DeformChunk& c, T* columns) {
    im2col_kernel<T><<<blocks_for(c.columns() * d.g.rows()), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        d, c, columns);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  template <typename T>
  static void col2im(const DeformData<T>& d, const DeformChunk& c, const T* grad_columns, T* grad_input) {
    col2im_kernel<T><<<blocks_for(c.columns() * d.g.rows()), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        d, c, grad_columns, grad_input);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  template <typename T>
  static void offset_mask_grads(const DeformData<T>& d, const DeformChunk& c, const T* grad_columns, T* grad_offset,
                                T* grad_mask) {
    const int64_t n = c.columns() * d.g.offset_groups * d.g.taps();
    offset_mask_grads_kernel<T><<<blocks_for(n), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        d, c, grad_columns, grad_offset, grad_mask);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

at::Tensor deform_conv2d_cuda(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& weight,
                              const std::optional<at::Tensor>& bias, c10::IntArrayRef stride,
                              c10::IntArrayRef padding, c10::IntArrayRef dilation,
                              const std::optional<at::Tensor>& mask, int64_t chunk_columns) {
  const c10::cuda::CUDAGuard guard(input.device());
  return deform_conv2d_forward_impl<CudaDeformLoops>(input, offset, weight, bias, stride, padding, dilation, mask,
                                                     chunk_columns);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> deform_conv2d_backward_cuda(
    const at::Tensor& grad, const at::Tensor& input, const at::Tensor& offset, const at::Tensor& weight,
    c10::IntArrayRef stride, c10::IntArrayRef padding, c10::IntArrayRef dilation,
    const std::optional<at::Tensor>& mask, int64_t chunk_columns, std::array<bool, 4> output_mask) {
  const c10::cuda::CUDAGuard guard(input.device());
  return deform_conv2d_backward_impl<CudaDeformLoops>(grad, input, offset, weight, stride, padding, dilation, mask,
                                                      chunk_columns, output_mask);
}

}  // namespace

TORCH_LIBRARY_IMPL(d2ext, CUDA, m) {
  m.impl("deform_conv2d", &deform_conv2d_cuda);
  m.impl("_deform_conv2d_backward", &deform_conv2d_backward_cuda);
}

}  // namespace d2ext
