// Per-pair box overlap math shared by the CPU and CUDA launchers of d2ext::pairwise_iou.
// Boxes are (x1, y1, x2, y2). Inverted boxes (x2 < x1 or y2 < y1) count as zero-area, and a
// pair whose union is empty has IoU 0, matching d2ext/layers/reference.py.
#pragma once

#include "../host_device.h"

namespace d2ext {

// Must match the order of IOU_MODES in d2ext/layers/iou.py.
enum class IouMode : int { IoU = 0, GIoU = 1 };

template <typename T>
HOST_DEVICE_INLINE T clamp_min_zero(T v) {
  return v > T(0) ? v : T(0);
}

template <typename T>
HOST_DEVICE_INLINE T box_area(const T* b) {
  return clamp_min_zero(b[2] - b[0]) * clamp_min_zero(b[3] - b[1]);
}

// IoU (mode IoU) or generalized IoU (mode GIoU) of boxes a and b, each a pointer to 4 values.
template <typename T>
HOST_DEVICE_INLINE T box_iou_single(const T* a, const T* b, IouMode mode) {
  const T inter_w = clamp_min_zero((a[2] < b[2] ? a[2] : b[2]) - (a[0] > b[0] ? a[0] : b[0]));
  const T inter_h = clamp_min_zero((a[3] < b[3] ? a[3] : b[3]) - (a[1] > b[1] ? a[1] : b[1]));
  const T inter = inter_w * inter_h;
  const T uni = box_area(a) + box_area(b) - inter;
  const T iou = uni > T(0) ? inter / uni : T(0);
  if (mode == IouMode::IoU) {
    return iou;
  }
  // The smallest enclosing box C penalises the empty part of C: GIoU = IoU - (|C| - |A u B|)/|C|.
  const T enclose_w = clamp_min_zero((a[2] > b[2] ? a[2] : b[2]) - (a[0] < b[0] ? a[0] : b[0]));
  const T enclose_h = clamp_min_zero((a[3] > b[3] ? a[3] : b[3]) - (a[1] < b[1] ? a[1] : b[1]));
  const T enclose = enclose_w * enclose_h;
  return enclose > T(0) ? iou - (enclose - uni) / enclose : iou;
}

}  // namespace d2ext
