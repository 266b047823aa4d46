// Per-pair box overlap math shared by the CPU and CUDA launchers of d2ext::pairwise_iou.
// Boxes are (x1, y1, x2, y2). Inverted boxes (x2 < x1 or y2 < y1) count as zero-area, and a
// pair whose union is empty has IoU 0, matching d2ext/layers/reference.py. A NaN coordinate gives
// NaN (and a NaN gradient), as the reference: every select below is written `x <= 0 ? 0 : ...` /
// `x < 0 ? 0 : x`, which keeps NaN (comparisons with NaN are false), where `x > 0 ? x : 0` would
// turn a diverged box into a finite IoU / loss. Same select count: the normal path is unchanged.
#pragma once

#include "../host_device.h"

namespace d2ext {

// Must match the order of IOU_MODES in d2ext/layers/iou.py.
enum class IouMode : int { IoU = 0, GIoU = 1 };

// max(v, 0) that keeps NaN (fmax and `v > 0 ? v : 0` drop it).
template <typename T>
HOST_DEVICE_INLINE T clamp_min_zero(T v) {
  return v < T(0) ? T(0) : v;
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
  const T iou = uni <= T(0) ? T(0) : inter / uni;
  if (mode == IouMode::IoU) {
    return iou;
  }
  // The smallest enclosing box C penalises the empty part of C: GIoU = IoU - (|C| - |A u B|)/|C|.
  const T enclose_w = clamp_min_zero((a[2] > b[2] ? a[2] : b[2]) - (a[0] < b[0] ? a[0] : b[0]));
  const T enclose_h = clamp_min_zero((a[3] > b[3] ? a[3] : b[3]) - (a[1] < b[1] ? a[1] : b[1]));
  const T enclose = enclose_w * enclose_h;
  return enclose <= T(0) ? iou : iou - (enclose - uni) / enclose;
}

// DynamicATSS's combined IoU of anchor a (and its predicted box p) with GT g (METHODS.md §2.1):
// anchor_weight * IoU(a, g) + pred_weight * IoU(p, g).
template <typename T>
HOST_DEVICE_INLINE T combined_iou_single(const T* a, const T* p, const T* g, T anchor_weight, T pred_weight) {
  const T ua = box_iou_single(a, g, IouMode::IoU);
  const T up = box_iou_single(p, g, IouMode::IoU);
  return anchor_weight * ua + pred_weight * up;
}

// d max(a, b) / d a, splitting ties evenly as torch.maximum's gradient does.
template <typename T>
HOST_DEVICE_INLINE T d_max_d_first(T a, T b) {
  return a > b ? T(1) : (a == b ? T(0.5) : T(0));
}

// d clamp(v, min=0) / d v: 1 where v > 0, as torch.clamp's gradient (0 at the boundary: a
// zero-width box or a touching pair gets no gradient through that side, as in the reference).
template <typename T>
HOST_DEVICE_INLINE T d_relu(T v) {
  return v > T(0) ? T(1) : T(0);
}

// d GIoU / d v of a coordinate v of the predicted box, from d I / d v, d area(p) / d v and
// d C / d v: GIoU = I / U - 1 + U / C with U = area(p) + area(g) - I, so
// dGIoU = (dI - IoU dU) / U + (dU - (U / C) dC) / C  (terms with an empty U or C are 0).
template <typename T>
HOST_DEVICE_INLINE T giou_grad_coord(T d_inter, T d_area, T d_enclose, T iou, T inv_uni, T u_over_c, T inv_enc) {
  const T d_uni = d_area - d_inter;
  return (d_inter - iou * d_uni) * inv_uni + (d_uni - u_over_c * d_enclose) * inv_enc;
}

// GIoU loss 1 - GIoU(p, g) of one predicted box p against its target g. If grad is not null,
// writes scale * d loss / d p (4 values); the target gets no gradient.
template <typename T>
HOST_DEVICE_INLINE T giou_loss_single(const T* p, const T* g, T* grad, T scale) {
  const T pw_raw = p[2] - p[0], ph_raw = p[3] - p[1];
  const T pw = clamp_min_zero(pw_raw), ph = clamp_min_zero(ph_raw);
  const T iw_raw = (p[2] < g[2] ? p[2] : g[2]) - (p[0] > g[0] ? p[0] : g[0]);
  const T ih_raw = (p[3] < g[3] ? p[3] : g[3]) - (p[1] > g[1] ? p[1] : g[1]);
  const T iw = clamp_min_zero(iw_raw), ih = clamp_min_zero(ih_raw);
  const T ew_raw = (p[2] > g[2] ? p[2] : g[2]) - (p[0] < g[0] ? p[0] : g[0]);
  const T eh_raw = (p[3] > g[3] ? p[3] : g[3]) - (p[1] < g[1] ? p[1] : g[1]);
  const T ew = clamp_min_zero(ew_raw), eh = clamp_min_zero(eh_raw);
  const T inter = iw * ih;
  const T uni = pw * ph + box_area(g) - inter;
  const T enclose = ew * eh;
  const T iou = uni <= T(0) ? T(0) : inter / uni;
  const T giou = enclose <= T(0) ? iou : iou - (enclose - uni) / enclose;
  if (grad != nullptr) {
    // Partial derivatives of the predicted area, the intersection and the enclosing box with
    // respect to x1, y1, x2, y2 of p, then of GIoU = I / U - 1 + U / C through giou_grad_coord.
    // Written out per coordinate (no arrays, no inner loop) so that pairs vectorise.
    const T dr_pw = d_relu(pw_raw), dr_ph = d_relu(ph_raw);
    const T dr_iw = d_relu(iw_raw), dr_ih = d_relu(ih_raw);
    const T dr_ew = d_relu(ew_raw), dr_eh = d_relu(eh_raw);
    // NaN stays NaN here too, so a NaN box gets a NaN gradient (not a finite partial one).
    const T inv_uni = uni <= T(0) ? T(0) : T(1) / uni;
    const T inv_enc = enclose <= T(0) ? T(0) : T(1) / enclose;
    const T u_over_c = uni * inv_enc;
    grad[0] = -scale * giou_grad_coord(-d_max_d_first(p[0], g[0]) * dr_iw * ih, -ph * dr_pw,
                                       -d_max_d_first(-p[0], -g[0]) * dr_ew * eh, iou, inv_uni, u_over_c, inv_enc);
    grad[1] = -scale * giou_grad_coord(-d_max_d_first(p[1], g[1]) * dr_ih * iw, -pw * dr_ph,
                                       -d_max_d_first(-p[1], -g[1]) * dr_eh * ew, iou, inv_uni, u_over_c, inv_enc);
    grad[2] = -scale * giou_grad_coord(d_max_d_first(-p[2], -g[2]) * dr_iw * ih, ph * dr_pw,
                                       d_max_d_first(p[2], g[2]) * dr_ew * eh, iou, inv_uni, u_over_c, inv_enc);
    grad[3] = -scale * giou_grad_coord(d_max_d_first(-p[3], -g[3]) * dr_ih * iw, pw * dr_ph,
                                       d_max_d_first(p[3], g[3]) * dr_eh * ew, iou, inv_uni, u_over_c, inv_enc);
  }
  return T(1) - giou;
}

}  // namespace d2ext
