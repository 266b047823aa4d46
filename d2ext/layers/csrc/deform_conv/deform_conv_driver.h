// The device-independent part of d2ext::deform_conv2d and its backward: argument checks, the
// chunking of the output positions, the channels-last copies and every matrix product (ATen's mm /
// addmm, one per weight group and chunk); the per-element loops come from the launcher's Loops:
//   Loops::kChunkElements                                    values of one column buffer
//   Loops::kImagesInParallel                                 may threads take whole images
//   Loops::im2col(data, chunk, columns)                      (columns, rows) sampled values
//   Loops::col2im(data, chunk, grad_columns, grad_input)     adds to the channels-last grad_input
//   Loops::offset_mask_grads(data, chunk, grad_columns, grad_offset, grad_mask)
//                                                            writes the chunk's positions
// The columns are stored transposed, one row of (group, tap, channel) values per output position
// (DeformGeometry::column_index), sampled from a channels-last (N, H, W, C) copy of the input: a
// tap's channels are then contiguous in both, and the sampling loops run along channels.
// Memory stays bounded: one (columns, C * kh * kw) buffer per call (per thread when threads take
// whole images), columns chosen so that it holds about Loops::kChunkElements values (or
// chunk_columns, when given). The backward pass rebuilds the columns chunk by chunk for the weight
// gradient instead of keeping the forward's.
#pragma once

#include <algorithm>
#include <array>
#include <optional>
#include <tuple>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/Exception.h>

#include "deform_conv.h"

namespace d2ext {

// Pointers of one call.
template <typename T>
struct DeformData {
  DeformGeometry g;
  const T* input;   // (N, H, W, C): channels last
  const T* offset;  // (N, offset_groups * 2 * taps, out_h, out_w)
  const T* mask;    // (N, offset_groups * taps, out_h, out_w), or null (DCN v1: mask 1)
};

inline std::array<int64_t, 2> deform_pair(const char* name, c10::IntArrayRef v) {
  TORCH_CHECK(v.size() == 2 || v.size() == 1, "deform_conv2d: ", name, " must have 1 or 2 values, got ", v);
  return {v[0], v.size() == 2 ? v[1] : v[0]};
}

// Checks every argument (messages name the argument and both shapes) and returns the shape.
inline DeformGeometry check_deform_conv2d_args(const at::Tensor& input, const at::Tensor& offset,
                                               const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                               c10::IntArrayRef stride, c10::IntArrayRef padding,
                                               c10::IntArrayRef dilation, const std::optional<at::Tensor>& mask) {
  const char* op = "deform_conv2d";
  TORCH_CHECK(input.dim() == 4, op, ": input must be (N, C, H, W), got ", input.sizes());
  TORCH_CHECK(weight.dim() == 4, op, ": weight must be (C_out, C / groups, kh, kw), got ", weight.sizes());
  TORCH_CHECK(offset.dim() == 4, op, ": offset must be (N, 2 * offset_groups * kh * kw, H_out, W_out), got ",
              offset.sizes());
  TORCH_CHECK(input.scalar_type() == at::kFloat || input.scalar_type() == at::kDouble, op,
              ": input must be float32 or float64 (torch.autocast computes in float32), got ", input.scalar_type());
  const auto same = [&](const at::Tensor& t, const char* name) {
    TORCH_CHECK(t.scalar_type() == input.scalar_type(), op, ": ", name, " must have the input's dtype (",
                input.scalar_type(), "), got ", t.scalar_type());
    TORCH_CHECK(t.device() == input.device(), op, ": ", name, " must be on the input's device (", input.device(),
                "), got ", t.device());
  };
  same(offset, "offset");
  same(weight, "weight");
  const auto [sh, sw] = deform_pair("stride", stride);
  const auto [ph, pw] = deform_pair("padding", padding);
  const auto [dh, dw] = deform_pair("dilation", dilation);
  TORCH_CHECK(sh > 0 && sw > 0, op, ": stride must be positive, got ", stride);
  TORCH_CHECK(ph >= 0 && pw >= 0, op, ": padding must be >= 0, got ", padding);
  TORCH_CHECK(dh > 0 && dw > 0, op, ": dilation must be positive, got ", dilation);
  DeformGeometry g{};
  g.batch = input.size(0);
  g.channels = input.size(1);
  g.height = input.size(2);
  g.width = input.size(3);
  g.out_channels = weight.size(0);
  g.kh = weight.size(2);
  g.kw = weight.size(3);
  g.stride_h = sh, g.stride_w = sw, g.pad_h = ph, g.pad_w = pw, g.dilation_h = dh, g.dilation_w = dw;
  TORCH_CHECK(g.kh > 0 && g.kw > 0, op, ": empty kernel, weight ", weight.sizes());
  TORCH_CHECK(g.channels > 0, op, ": input has no channels, ", input.sizes());
  TORCH_CHECK(weight.size(1) > 0 && g.channels % weight.size(1) == 0, op, ": input channels (", g.channels,
              ") must be a multiple of weight.size(1) (", weight.size(1), ", C / groups)");
  g.groups = g.channels / weight.size(1);
  TORCH_CHECK(g.out_channels % g.groups == 0, op, ": output channels (", g.out_channels,
              ") must be a multiple of the groups (", g.groups, ")");
  g.out_h = (g.height + 2 * ph - dh * (g.kh - 1) - 1) / sh + 1;
  g.out_w = (g.width + 2 * pw - dw * (g.kw - 1) - 1) / sw + 1;
  TORCH_CHECK(g.height + 2 * ph - dh * (g.kh - 1) - 1 >= 0 && g.width + 2 * pw - dw * (g.kw - 1) - 1 >= 0, op,
              ": the output would be empty: input ", input.sizes(), ", kernel ", g.kh, "x", g.kw, ", padding ",
              padding, ", dilation ", dilation);
  const int64_t taps = g.taps();
  TORCH_CHECK(offset.size(1) > 0 && offset.size(1) % (2 * taps) == 0, op, ": offset.size(1) (", offset.size(1),
              ") must be 2 * offset_groups * kh * kw (kh * kw = ", taps, ")");
  g.offset_groups = offset.size(1) / (2 * taps);
  TORCH_CHECK(g.channels % g.offset_groups == 0, op, ": input channels (", g.channels,
              ") must be a multiple of the offset groups (", g.offset_groups, ")");
  const std::array<int64_t, 4> offset_shape{g.batch, 2 * g.offset_groups * taps, g.out_h, g.out_w};
  TORCH_CHECK(offset.sizes() == c10::IntArrayRef(offset_shape), op, ": offset must have shape ",
              c10::IntArrayRef(offset_shape), " for input ", input.sizes(), " and weight ", weight.sizes(), ", got ",
              offset.sizes());
  if (mask.has_value()) {
    same(*mask, "mask");
    const std::array<int64_t, 4> mask_shape{g.batch, g.offset_groups * taps, g.out_h, g.out_w};
    TORCH_CHECK(mask->sizes() == c10::IntArrayRef(mask_shape), op, ": mask must have shape ",
                c10::IntArrayRef(mask_shape), ", got ", mask->sizes());
  }
  if (bias.has_value()) {
    same(*bias, "bias");
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == g.out_channels, op, ": bias must have shape (",
                g.out_channels, "), got ", bias->sizes());
  }
  // Corner indices are int32 offsets in an input plane.
  TORCH_CHECK((g.height + 1) * (g.width + 1) < (int64_t(1) << 31), op, ": input planes of 2^31 pixels or more ",
              "are not supported, got ", g.height, "x", g.width);
  return g;
}

// How the chunks run. Chunks of whole images when a column budget holds at least one, otherwise
// `positions` output positions of one image. images_in_parallel (CPU, a batch of at least as
// many images as threads): one parallel region per call in which each thread takes whole images
// and runs their chunks with its own buffers, the loops and products inside single-threaded
// (nested at::parallel_for and BLAS calls run on the calling thread); a thread owns its images'
// outputs and input gradients, and the weight gradient is summed from one accumulator per
// thread. Otherwise the chunks run one after the other, each loop and product parallel inside:
// a few synchronisations per chunk instead of one per call.
struct DeformChunking {
  int64_t images, positions;
  bool images_in_parallel;
  int64_t slots;  // sets of per-thread buffers

  int64_t columns() const { return images * positions; }
};

template <class Loops>
DeformChunking deform_chunking(const DeformGeometry& g, int64_t chunk_columns) {
  TORCH_CHECK(chunk_columns >= 0, "deform_conv2d: chunk_columns must be >= 0 (0: automatic), got ", chunk_columns);
  const int64_t hw = std::max<int64_t>(g.out_positions(), 1), rows = std::max<int64_t>(g.rows(), 1);
  const int64_t columns = chunk_columns > 0 ? chunk_columns : std::max<int64_t>(1, Loops::kChunkElements / rows);
  const int64_t threads = Loops::kImagesInParallel && !at::in_parallel_region() ? at::get_num_threads() : 1;
  // Images spread evenly enough over the threads (at most a third more than the average).
  if (threads > 1 && g.batch >= threads && (g.batch % threads == 0 || g.batch >= 3 * threads)) {
    // A buffer per thread of kChunkElements / threads values, but at least a quarter of that
    // budget (smaller products lose speed): one budget in all up to 4 threads, threads / 4 beyond.
    const int64_t per_thread = std::max(Loops::kChunkElements / threads, Loops::kChunkElements / 4);
    const int64_t thread_columns = chunk_columns > 0 ? chunk_columns : std::max<int64_t>(1, per_thread / rows);
    return {1, std::min(thread_columns, hw), true, threads};
  }
  if (columns >= hw) {
    return {std::max<int64_t>(1, std::min(g.batch, columns / hw)), hw, false, 1};
  }
  return {1, columns, false, 1};
}

// Calls fn(chunk, slot) for every chunk of the batch, slot being the per-thread buffers to use.
template <typename F>
void run_deform_chunks(const DeformGeometry& g, const DeformChunking& c, F&& fn) {
  const int64_t hw = g.out_positions();
  const auto images = [&](int64_t begin, int64_t end, int64_t slot) {
    for (int64_t b0 = begin; b0 < end; b0 += c.images) {
      for (int64_t p0 = 0; p0 < hw; p0 += c.positions) {
        fn(DeformChunk{b0, std::min(end, b0 + c.images), p0, std::min(hw, p0 + c.positions)}, slot);
      }
    }
  };
  if (!c.images_in_parallel) {
    images(0, g.batch, 0);
    return;
  }
  // Small images: several per thread, or all on the calling thread (a region costs more).
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 16) / std::max<int64_t>(g.rows() * hw, 1));
  at::parallel_for(0, g.batch, grain, [&](int64_t begin, int64_t end) {
    // (Thread-local: the calling thread's guard does not reach the pool's threads.)
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    images(begin, end, at::get_thread_num());
  });
}

// Per-slot buffers: the columns, and the output block of chunks of several images.
struct DeformBuffers {
  at::Tensor columns, out_block;

  DeformBuffers(const DeformGeometry& g, const DeformChunking& c, const at::TensorOptions& options) {
    columns = at::empty({c.slots, g.rows() * c.columns()}, options);
    if (c.images > 1) {  // products of several images, (C_out, images * positions), reordered after
      out_block = at::empty({g.out_channels * c.columns()}, options);
    }
  }

  // The chunk's (columns, rows) matrix.
  at::Tensor chunk_columns(const DeformGeometry& g, const DeformChunk& c, int64_t slot) const {
    return columns.select(0, slot).narrow(0, 0, g.rows() * c.columns()).view({c.columns(), g.rows()});
  }
};

inline at::Tensor channels_last_copy(const at::Tensor& t) {
  return t.permute({0, 2, 3, 1}).contiguous();
}

// The weight as (C_out, taps * C / groups): each output channel's row in the columns' order.
inline at::Tensor weight_matrix(const DeformGeometry& g, const at::Tensor& weight) {
  const int64_t per_group = g.channels_per_group();
  return weight.reshape({g.out_channels, per_group, g.taps()}).permute({0, 2, 1}).reshape(
      {g.out_channels, g.taps() * per_group});
}

// The (C_out, columns) block of a (N, C_out, H_out, W_out) tensor that chunk c covers: a view for
// one image; for several, `block` filled with a copy (fill=true) or left for write_block.
inline at::Tensor output_block(const DeformGeometry& g, const at::Tensor& t, const DeformChunk& c,
                               const at::Tensor& block, bool fill) {
  const int64_t hw = g.out_positions();
  if (c.images() == 1) {
    return t.select(0, c.b0).view({g.out_channels, hw}).narrow(1, c.p0, c.positions());
  }
  auto b = block.narrow(0, 0, g.out_channels * c.columns()).view({g.out_channels, c.images(), hw});
  if (fill) {
    b.copy_(t.narrow(0, c.b0, c.images()).view({c.images(), g.out_channels, hw}).transpose(0, 1));
  }
  return b.view({g.out_channels, c.columns()});
}

inline void write_block(const DeformGeometry& g, at::Tensor& t, const DeformChunk& c, const at::Tensor& block) {
  if (c.images() > 1) {
    const int64_t hw = g.out_positions();
    t.narrow(0, c.b0, c.images()).view({c.images(), g.out_channels, hw})
        .copy_(block.view({g.out_channels, c.images(), hw}).transpose(0, 1));
  }
}

template <class Loops>
at::Tensor deform_conv2d_forward_impl(const at::Tensor& input_in, const at::Tensor& offset_in,
                                      const at::Tensor& weight_in, const std::optional<at::Tensor>& bias,
                                      c10::IntArrayRef stride, c10::IntArrayRef padding, c10::IntArrayRef dilation,
                                      const std::optional<at::Tensor>& mask_in, int64_t chunk_columns) {
  // The products below are internal: no autograd graph for them (autograd is the op's own).
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  const auto g = check_deform_conv2d_args(input_in, offset_in, weight_in, bias, stride, padding, dilation, mask_in);
  const auto chunking = deform_chunking<Loops>(g, chunk_columns);
  auto out = at::empty({g.batch, g.out_channels, g.out_h, g.out_w}, input_in.options());
  if (out.numel() == 0) {
    return out;
  }
  const auto input = channels_last_copy(input_in);
  const auto offset = offset_in.contiguous();
  const auto mask = mask_in.has_value() ? mask_in->contiguous() : at::Tensor();
  const int64_t group_rows = g.rows() / g.groups, group_out = g.out_channels / g.groups;
  const auto weight = weight_matrix(g, weight_in);
  const DeformBuffers buffers(g, chunking, input.options());
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "deform_conv2d", [&] {
    const DeformData<scalar_t> data{g, input.const_data_ptr<scalar_t>(), offset.const_data_ptr<scalar_t>(),
                                    mask.defined() ? mask.const_data_ptr<scalar_t>() : nullptr};
    run_deform_chunks(g, chunking, [&](const DeformChunk& c, int64_t slot) {
      const at::Tensor columns = buffers.chunk_columns(g, c, slot);
      Loops::im2col(data, c, columns.mutable_data_ptr<scalar_t>());
      at::Tensor block = output_block(g, out, c, buffers.out_block, /*fill=*/false);
      for (int64_t k = 0; k < g.groups; ++k) {
        at::Tensor dst = block.narrow(0, k * group_out, group_out);
        at::mm_out(dst, weight.narrow(0, k * group_out, group_out), columns.narrow(1, k * group_rows, group_rows).t());
      }
      write_block(g, out, c, block);
    });
  });
  if (bias.has_value()) {
    out.add_(bias->view({1, g.out_channels, 1, 1}));
  }
  return out;
}

// Gradients of input, offset, weight and mask (output_mask says which are wanted; the others are
// returned empty, as is the mask's without a mask). The offset and mask gradients come from one
// pass: asking for either computes both.
template <class Loops>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> deform_conv2d_backward_impl(
    const at::Tensor& grad_in, const at::Tensor& input_in, const at::Tensor& offset_in, const at::Tensor& weight_in,
    c10::IntArrayRef stride, c10::IntArrayRef padding, c10::IntArrayRef dilation,
    const std::optional<at::Tensor>& mask_in, int64_t chunk_columns, std::array<bool, 4> output_mask) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  const auto g =
      check_deform_conv2d_args(input_in, offset_in, weight_in, std::nullopt, stride, padding, dilation, mask_in);
  const std::array<int64_t, 4> out_shape{g.batch, g.out_channels, g.out_h, g.out_w};
  TORCH_CHECK(grad_in.sizes() == c10::IntArrayRef(out_shape), "deform_conv2d backward: grad must have shape ",
              c10::IntArrayRef(out_shape), ", got ", grad_in.sizes());
  TORCH_CHECK(grad_in.scalar_type() == input_in.scalar_type() && grad_in.device() == input_in.device(),
              "deform_conv2d backward: grad must have the input's dtype and device");
  const auto chunking = deform_chunking<Loops>(g, chunk_columns);
  const bool want_input = output_mask[0], want_weight = output_mask[2];
  const bool want_coords = output_mask[1] || (output_mask[3] && mask_in.has_value());
  const auto options = input_in.options();
  const auto none = at::empty({0}, options);
  const int64_t group_rows = g.rows() / g.groups, group_out = g.out_channels / g.groups;
  // The input's gradient channels last, (N, H, W, C), returned as (N, C, H, W).
  auto grad_input = want_input ? at::zeros({g.batch, g.height, g.width, g.channels}, options) : none;
  // Every position of every chunk is written: no zeros needed.
  auto grad_offset = want_coords ? at::empty(offset_in.sizes(), options) : none;
  auto grad_mask = want_coords && mask_in.has_value() ? at::empty(mask_in->sizes(), options) : none;
  // The weight's gradient in the columns' order, (C_out, taps * C / groups), one accumulator per
  // slot.
  auto grad_weight = want_weight ? at::zeros({chunking.slots, g.out_channels, group_rows}, options) : none;
  if (g.batch > 0 && g.out_channels > 0 && (want_input || want_coords || want_weight)) {
    const auto grad = grad_in.contiguous();
    const auto input = channels_last_copy(input_in);
    const auto offset = offset_in.contiguous();
    const auto mask = mask_in.has_value() ? mask_in->contiguous() : at::Tensor();
    const auto weight = weight_matrix(g, weight_in);
    const DeformBuffers buffers(g, chunking, options);
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "deform_conv2d_backward", [&] {
      const DeformData<scalar_t> data{g, input.const_data_ptr<scalar_t>(), offset.const_data_ptr<scalar_t>(),
                                      mask.defined() ? mask.const_data_ptr<scalar_t>() : nullptr};
      run_deform_chunks(g, chunking, [&](const DeformChunk& c, int64_t slot) {
        const at::Tensor block = output_block(g, grad, c, buffers.out_block, /*fill=*/true);  // (C_out, columns)
        // One buffer: first the columns' gradient, then the columns themselves.
        const at::Tensor columns = buffers.chunk_columns(g, c, slot);
        if (want_input || want_coords) {
          for (int64_t k = 0; k < g.groups; ++k) {
            at::Tensor dst = columns.narrow(1, k * group_rows, group_rows);
            at::mm_out(dst, block.narrow(0, k * group_out, group_out).t(), weight.narrow(0, k * group_out, group_out));
          }
          if (want_input) {
            Loops::col2im(data, c, columns.const_data_ptr<scalar_t>(), grad_input.mutable_data_ptr<scalar_t>());
          }
          if (want_coords) {
            Loops::offset_mask_grads(data, c, columns.const_data_ptr<scalar_t>(),
                                     grad_offset.mutable_data_ptr<scalar_t>(),
                                     mask.defined() ? grad_mask.mutable_data_ptr<scalar_t>() : nullptr);
          }
        }
        if (want_weight) {
          Loops::im2col(data, c, columns.mutable_data_ptr<scalar_t>());
          const at::Tensor accumulator = grad_weight.select(0, slot);
          for (int64_t k = 0; k < g.groups; ++k) {
            accumulator.narrow(0, k * group_out, group_out)
                .addmm_(block.narrow(0, k * group_out, group_out), columns.narrow(1, k * group_rows, group_rows));
          }
        }
      });
    });
  } else if (want_coords) {  // nothing to sample: zero gradients
    grad_offset.zero_();
    grad_mask.zero_();
  }
  if (want_input) {
    grad_input = grad_input.permute({0, 3, 1, 2}).contiguous();
  }
  if (want_weight) {
    grad_weight = (chunking.slots > 1 ? grad_weight.sum(0) : grad_weight.select(0, 0))
                      .view({g.out_channels, g.taps(), group_rows / g.taps()})
                      .permute({0, 2, 1})
                      .contiguous()
                      .view(weight_in.sizes());
  }
  return {grad_input, grad_offset, grad_weight, grad_mask};
}

}  // namespace d2ext
