// The per-element bodies of d2ext::deform_conv2d (DCN v1, and v2 with a mask), shared by the CPU
// and CUDA launchers: where a kernel tap samples, and the bilinear sample there with its
// derivatives, with torchvision's / mmcv's semantics:
//   - the tap (i, j) of output (oy, ox) samples y = oy * stride_h - pad_h + i * dilation_h +
//     offset_y, x likewise, offset_y / offset_x = channels 2k / 2k + 1 of its offset group,
//     k = i * kw + j; the column value is mask * bilinear(y, x) (mask 1 in v1);
//   - bilinear reads the four pixels around (y, x), each zero outside the image, so a point
//     within one pixel outside the border still sees the border pixels and one further out reads
//     zero (NaN too);
//   - the offset derivatives are one-sided at whole pixels: those of the cell right of / below
//     the point (torchvision's get_coordinate_weight), also at y = -1 or x = -1, where the value is
//     0 but the derivative is not.
#pragma once

#include <cmath>
#include <cstdint>

#include "../host_device.h"

namespace d2ext {

// The convolution's shape: input (N, C, H, W), weight (C_out, C / groups, kh, kw), offset
// (N, 2 * offset_groups * kh * kw, out_h, out_w), mask (N, offset_groups * kh * kw, out_h, out_w).
struct DeformGeometry {
  int64_t batch, channels, height, width;
  int64_t out_channels, out_h, out_w;
  int64_t kh, kw, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;
  int64_t groups, offset_groups;

  HOST_DEVICE int64_t taps() const { return kh * kw; }
  HOST_DEVICE int64_t out_positions() const { return out_h * out_w; }
  HOST_DEVICE int64_t channels_per_offset_group() const { return channels / offset_groups; }
  HOST_DEVICE int64_t channels_per_group() const { return channels / groups; }
  // Values per column position: (group, tap, channel of the group), so that each weight group's
  // (taps * channels) values are contiguous and a tap's channels are adjacent.
  HOST_DEVICE int64_t rows() const { return channels * kh * kw; }
  HOST_DEVICE int64_t column_index(int64_t c, int64_t k) const {
    const int64_t per_group = channels_per_group(), grp = c / per_group;
    return (grp * kh * kw + k) * per_group + (c - grp * per_group);
  }
};

// A block of output positions whose columns are built and multiplied at once: positions
// [p0, p1) of images [b0, b1) (several whole images, or a part of one). Column j of the block is
// (b, p) with j = (b - b0) * positions() + (p - p0); the launchers store the columns transposed,
// (columns, rows), each position's values contiguous (channels last).
struct DeformChunk {
  int64_t b0, b1, p0, p1;

  HOST_DEVICE int64_t images() const { return b1 - b0; }
  HOST_DEVICE int64_t positions() const { return p1 - p0; }
  HOST_DEVICE int64_t columns() const { return images() * positions(); }
};

HOST_DEVICE_INLINE float floor_of(float v) { return floorf(v); }
HOST_DEVICE_INLINE double floor_of(double v) { return floor(v); }

// Column j of chunk c: its image b, output position p = oy * out_w + ox.
struct DeformColumn {
  int64_t b, p, oy, ox;
};

HOST_DEVICE_INLINE DeformColumn deform_column(const DeformGeometry& g, const DeformChunk& c, int64_t j) {
  const int64_t np = c.positions(), bi = j / np, p = c.p0 + (j - bi * np), oy = p / g.out_w;
  return {c.b0 + bi, p, oy, p - oy * g.out_w};
}

// One coordinate of where a tap samples: out * stride - pad + tap * dilation + offset, as
// torchvision: the integer grid position first (exact in T), then the offset added in T. I: the
// integer type (int32_t in the CPU's SIMD loops).
template <typename T, typename I>
HOST_DEVICE_INLINE T deform_tap_coordinate(I out, I stride, I pad, I tap, I dilation, T offset) {
  return static_cast<T>(out * stride - pad + tap * dilation) + offset;
}

// Where tap (i, jj) (k = i * kw + jj) of a column samples, given its offsets.
template <typename T>
HOST_DEVICE_INLINE void deform_tap_position(const DeformGeometry& g, const DeformColumn& col, int64_t i, int64_t jj,
                                            T offset_y, T offset_x, T* y, T* x) {
  *y = deform_tap_coordinate<T, int64_t>(col.oy, g.stride_h, g.pad_h, i, g.dilation_h, offset_y);
  *x = deform_tap_coordinate<T, int64_t>(col.ox, g.stride_w, g.pad_w, jj, g.dilation_w, offset_x);
}

// The bilinear sample of an (height, width) plane at (y, x) as four corners, in the order
// (y_l, x_l), (y_l, x_h), (y_h, x_l), (y_h, x_h) with y_l = floor(y), y_h = y_l + 1:
//   index[q]  the corner's offset in the plane (0 where it is outside: always a readable pixel),
//   weight[q] its bilinear weight (0 outside), so sample = sum_q weight[q] * plane[index[q]];
//   dy[q], dx[q] (if not null) the derivatives of weight[q] in y and x (0 outside), so
//   d sample / dy = sum_q dy[q] * plane[index[q]].
// Branch-free (selects), so that a loop over points vectorises on the CPU.
template <typename T>
HOST_DEVICE_INLINE void bilinear_corners(T y, T x, int32_t height, int32_t width, int32_t* index, T* weight, T* dy,
                                         T* dx) {
  // Every corner is outside unless -1 <= y < height and -1 <= x < width; checked first (NaN
  // fails it) so that the conversions below are defined: other points are moved to (-2, -2).
  const bool near = y >= T(-1) && y < static_cast<T>(height) && x >= T(-1) && x < static_cast<T>(width);
  const T fy = floor_of(near ? y : T(-2));
  const T fx = floor_of(near ? x : T(-2));
  const int32_t yl = static_cast<int32_t>(fy), xl = static_cast<int32_t>(fx);
  const T ly = (near ? y : T(-2)) - fy, lx = (near ? x : T(-2)) - fx;
  const T hy = T(1) - ly, hx = T(1) - lx;
  const bool y0 = yl >= 0 && yl < height, y1 = yl >= -1 && yl + 1 < height;
  const bool x0 = xl >= 0 && xl < width, x1 = xl >= -1 && xl + 1 < width;
  const bool in[4] = {y0 && x0, y0 && x1, y1 && x0, y1 && x1};
  const int32_t at[4] = {yl * width + xl, yl * width + xl + 1, (yl + 1) * width + xl, (yl + 1) * width + xl + 1};
  const T wy[4] = {hy, hy, ly, ly}, wx[4] = {hx, lx, hx, lx};
  const T sy[4] = {T(-1), T(-1), T(1), T(1)}, sx[4] = {T(-1), T(1), T(-1), T(1)};
  for (int q = 0; q < 4; ++q) {
    index[q] = in[q] ? at[q] : 0;
    weight[q] = in[q] ? wy[q] * wx[q] : T(0);
    if (dy != nullptr) {
      dy[q] = in[q] ? sy[q] * wx[q] : T(0);
      dx[q] = in[q] ? sx[q] * wy[q] : T(0);
    }
  }
}

// The sampling corners of tap (i, jj) of a column for offset group og: pixel indices and bilinear
// weights times the mask (for the columns and the input gradient), and optionally the unmasked
// weights and the y / x derivative weights (for the offset and mask gradients); *mask_out gets
// the mask (1 without one).
template <typename T>
HOST_DEVICE_INLINE void deform_corners(const DeformGeometry& g, const DeformColumn& col, const T* offset,
                                       const T* mask, int64_t og, int64_t i, int64_t jj, int32_t* index,
                                       T* masked_weight, T* weight = nullptr, T* dy = nullptr, T* dx = nullptr,
                                       T* mask_out = nullptr) {
  const int64_t hw = g.out_positions(), taps = g.taps(), k = i * g.kw + jj;
  const T* off = offset + ((col.b * g.offset_groups + og) * 2 * taps + 2 * k) * hw + col.p;
  const T m = mask != nullptr ? mask[((col.b * g.offset_groups + og) * taps + k) * hw + col.p] : T(1);
  T y, x, w[4];
  deform_tap_position<T>(g, col, i, jj, off[0], off[hw], &y, &x);
  bilinear_corners<T>(y, x, static_cast<int32_t>(g.height), static_cast<int32_t>(g.width), index, w, dy, dx);
  for (int q = 0; q < 4; ++q) {
    masked_weight[q] = m * w[q];
    if (weight != nullptr) {
      weight[q] = w[q];
    }
  }
  if (mask_out != nullptr) {
    *mask_out = m;
  }
}

}  // namespace d2ext
