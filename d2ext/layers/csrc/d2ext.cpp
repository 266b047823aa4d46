// The one registration file of d2ext's ops: every schema lives here, the kernels register
// themselves per dispatch key next to their launchers, and fake (Meta) kernels and autograd
// formulas are registered from Python in d2ext/layers/_fake.py.
#include <Python.h>
#include <torch/library.h>

// An importable module so that `import d2ext._C` loads the library (and runs the registrations
// below) without pybind11.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}

TORCH_LIBRARY(d2ext, m) {
  m.set_python_module("d2ext.layers._fake");
  // (N, 4) x (M, 4) -> (N, M); mode 0 = IoU, 1 = GIoU. Not differentiable (used for matching).
  m.def("pairwise_iou(Tensor boxes1, Tensor boxes2, int mode=0) -> Tensor");
  // DynamicATSS's combined IoU, (R, 4) anchors and their (R, 4) predicted boxes x (M, 4) GTs ->
  // (R, M): anchor_weight * IoU(anchor, gt) + pred_weight * IoU(pred_box, gt), in one pass.
  m.def("combined_iou(Tensor anchors, Tensor pred_boxes, Tensor gt_boxes, float anchor_weight=1.0, "
        "float pred_weight=1.0) -> Tensor");
  // (N, 4) x (N, 4) -> (N,): the overlap of each pair. Not differentiable.
  m.def("aligned_iou(Tensor boxes1, Tensor boxes2, int mode=0) -> Tensor");
  // Weighted GIoU loss 1 - GIoU(pred_i, target_i); reduction as the losses below. Differentiable in
  // pred only.
  m.def("giou_loss(Tensor pred, Tensor target, Tensor? weight, int reduction) -> Tensor");
  m.def("_giou_loss_backward(Tensor grad, Tensor pred, Tensor target, Tensor? weight, int reduction) -> Tensor");

  // ATSS assignment of one image without an anchors x GT matrix (METHODS.md §1.1): returns each
  // anchor's matched GT (-1 = background) and its score, IoU(anchor, gt) or, with pred_boxes,
  // anchor_weight * IoU(anchor, gt) + pred_weight * IoU(pred_box, gt) (DynamicATSS, §2.1), and
  // each GT's threshold (NaN with fewer than 2 candidates). topk is candidates per level and GT
  // (k * anchors per location).
  m.def("atss_assign(Tensor anchors, int[] num_anchors_per_level, Tensor gt_boxes, int topk, "
        "Tensor? pred_boxes=None, float anchor_weight=1.0, float pred_weight=1.0) -> (Tensor, Tensor, Tensor)");

  // Focal-family losses over (N, K) logits with integer labels (K = background, -1 = ignored) and
  // per-row soft scores / weights. reduction: 0 none -> (N, K) (DFL: (N,)), 1 sum, 2 mean -> ().
  // Backward ops return the gradient of the logits only (labels, scores, weights are targets).
  m.def("sigmoid_focal_loss(Tensor logits, Tensor labels, Tensor? weight, float alpha, float gamma, "
        "int reduction) -> Tensor");
  m.def("_sigmoid_focal_loss_backward(Tensor grad, Tensor logits, Tensor labels, Tensor? weight, float alpha, "
        "float gamma, int reduction) -> Tensor");
  m.def("quality_focal_loss(Tensor logits, Tensor labels, Tensor scores, Tensor? weight, float beta, "
        "int reduction) -> Tensor");
  m.def("_quality_focal_loss_backward(Tensor grad, Tensor logits, Tensor labels, Tensor scores, Tensor? weight, "
        "float beta, int reduction) -> Tensor");
  m.def("varifocal_loss(Tensor logits, Tensor labels, Tensor scores, Tensor? weight, float alpha, float gamma, "
        "bool iou_weighted, int reduction) -> Tensor");
  m.def("_varifocal_loss_backward(Tensor grad, Tensor logits, Tensor labels, Tensor scores, Tensor? weight, "
        "float alpha, float gamma, bool iou_weighted, int reduction) -> Tensor");
  // DFL returns the reduced loss and, from the same pass over the bins, the gradient of the sum of
  // the weighted per-row losses (N, n + 1), which autograd scales by the incoming gradient: a
  // separate backward would recompute every row's softmax.
  m.def("distribution_focal_loss(Tensor logits, Tensor target, Tensor? weight, int reduction) -> (Tensor, Tensor)");

  // AP-loss over every (anchor, class) entry of (N, K) logits with integer labels, ranked jointly
  // (METHODS.md §6.3), in O((P + N) log(P + N)): returns the loss (1 - AP, interpolated or not)
  // and the error-driven update, which autograd returns (times the incoming gradient) as the
  // gradient of the logits.
  m.def("ap_loss(Tensor logits, Tensor labels, float delta=1.0, bool interpolated=True) -> (Tensor, Tensor)");

  // Deformable convolution (DCN v1; v2 with a mask), torchvision.ops.deform_conv2d's semantics:
  // input (N, C, H, W), offset (N, 2 * offset_groups * kh * kw, H_out, W_out) as (dy, dx) per
  // kernel tap, weight (C_out, C / groups, kh, kw), mask (N, offset_groups * kh * kw, H_out,
  // W_out); groups and offset_groups from the shapes. chunk_columns: output positions whose
  // sampled columns are built at once (0: automatic, a bounded buffer).
  m.def("deform_conv2d(Tensor input, Tensor offset, Tensor weight, Tensor? bias=None, int[2] stride=1, "
        "int[2] padding=0, int[2] dilation=1, Tensor? mask=None, int chunk_columns=0) -> Tensor");
  // Gradients of input, offset, weight and mask, those of output_mask (the others empty; offset and
  // mask come from one pass). The bias gradient is grad's sum, taken by autograd.
  m.def("_deform_conv2d_backward(Tensor grad, Tensor input, Tensor offset, Tensor weight, int[2] stride, "
        "int[2] padding, int[2] dilation, Tensor? mask, int chunk_columns, bool[4] output_mask) "
        "-> (Tensor, Tensor, Tensor, Tensor)");
}
