"""A detector's errors by class at one score threshold, as mmdetection's
tools/analysis_tools/confusion_matrix.py and the COCO error analysis (Hoiem et al.).

Rules, per image (:meth:`ErrorAnalysis.add`); boxes are XYXY, IoU is Detectron2's pairwise_iou:

* Detections with score < ``score_thr`` are dropped; the others are taken highest score first.
* Crowd ground truths are ignored, as COCO does: they are neither counted nor missed, and a
  detection that is not a true positive but lies in a crowd region of its class (intersection
  over the detection's area >= ``iou_thr``) counts nowhere but in ``ignored``.
* Each other detection is the first of:

  - ``tp``: IoU >= iou_thr with a GT of its class no detection matched yet (the GT of highest
    such IoU; it is matched now);
  - ``fp_dup``: IoU >= iou_thr with a GT of its class, but one a higher-scoring detection
    matched: a duplicate;
  - ``fp_loc``: IoU in [loc_iou_thr, iou_thr) with a GT of its class: a localisation error;
  - ``fp_cls``: IoU >= iou_thr with a GT of another class: a class confusion;
  - ``fp_bg``: none of these: a detection on background.

* A GT no detection matched is ``missed`` (whatever else overlaps it).

A detection counts in its predicted class; ``missed`` and ``num_gt`` in the GT's class.

The confusion matrix M is (K+1)x(K+1) as mmdetection's: rows are the GT classes then background,
columns the predicted classes then "no detection". A ``tp`` of class c adds 1 to M[c, c], an
``fp_cls`` to M[g, c] (g: the class of the other-class GT of highest IoU), any other false
positive (loc, dup, bg) to M[K, c], and a missed GT of class g to M[g, K]. So column c sums to
class c's counted detections, M[c, c] is its ``tp`` and M[g, K] its ``missed``. Unlike
mmdetection's, matching is one to one (a detection counts once, a GT is matched once) and a
duplicate is a false positive (mmdetection counts it on the diagonal again).
"""

from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from detectron2.structures import Boxes, pairwise_ioa, pairwise_iou

FP_KINDS = ("fp_loc", "fp_dup", "fp_cls", "fp_bg")
KINDS = ("tp", *FP_KINDS, "ignored")  # what a detection is
COUNTS = (*KINDS, "missed", "num_gt")  # the per-class counts


def _boxes(boxes) -> Boxes:
    return Boxes(torch.as_tensor(np.asarray(boxes, dtype=np.float32).reshape(-1, 4)))


class ErrorAnalysis:
    """Accumulates images' detections and ground truths into per-class counts (``counts``: a
    (K, len(COUNTS)) int array) and the confusion matrix (``confusion``: (K+1, K+1))."""

    def __init__(
        self,
        num_classes: int,
        score_thr: float = 0.0,
        iou_thr: float = 0.5,
        loc_iou_thr: float = 0.1,
    ):
        self.num_classes = num_classes
        self.score_thr, self.iou_thr, self.loc_iou_thr = score_thr, iou_thr, loc_iou_thr
        self.counts = np.zeros((num_classes, len(COUNTS)), dtype=np.int64)
        self.confusion = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)

    def add(
        self,
        boxes,
        scores,
        classes,
        gt_boxes,
        gt_classes,
        gt_crowd: Optional[Sequence[bool]] = None,
    ) -> List[Optional[str]]:
        """One image: detections (N XYXY boxes, scores, class indices) and ground truths (M XYXY
        boxes, class indices, crowd flags). Returns each detection's kind (KINDS), in the given
        order; None for one below ``score_thr``."""
        K, col = self.num_classes, {name: i for i, name in enumerate(COUNTS)}
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        classes = np.asarray(classes, dtype=np.int64).reshape(-1)
        gt_classes = np.asarray(gt_classes, dtype=np.int64).reshape(-1)
        crowd = np.zeros(len(gt_classes), bool) if gt_crowd is None else np.asarray(gt_crowd, bool)
        keep = np.flatnonzero(scores >= self.score_thr)
        order = keep[np.argsort(-scores[keep], kind="stable")]
        det_boxes, all_gt = _boxes(boxes), _boxes(gt_boxes)
        iou = pairwise_iou(det_boxes, all_gt[torch.as_tensor(~crowd)]).numpy()  # N x non-crowd
        in_crowd = pairwise_ioa(all_gt[torch.as_tensor(crowd)], det_boxes).numpy().T  # N x crowd
        gt_cls, crowd_cls = gt_classes[~crowd], gt_classes[crowd]
        matched = np.zeros(len(gt_cls), bool)
        kinds: List[Optional[str]] = [None] * len(scores)
        for i in order:
            c = classes[i]
            same = np.where(gt_cls == c, iou[i], -1.0)
            free = np.where(matched, -1.0, same)
            row = K  # the confusion matrix row: background unless tp or fp_cls
            if free.size and free.max() >= self.iou_thr:
                kind, row = "tp", c
                matched[free.argmax()] = True
            elif (in_crowd[i][crowd_cls == c] >= self.iou_thr).any():
                kind = "ignored"
            elif same.size and same.max() >= self.iou_thr:
                kind = "fp_dup"
            elif same.size and same.max() >= self.loc_iou_thr:
                kind = "fp_loc"
            else:
                other = np.where(gt_cls != c, iou[i], -1.0)
                if other.size and other.max() >= self.iou_thr:
                    kind, row = "fp_cls", gt_cls[other.argmax()]
                else:
                    kind = "fp_bg"
            kinds[i] = kind
            self.counts[c, col[kind]] += 1
            if kind != "ignored":
                self.confusion[row, c] += 1
        for g, was_matched in zip(gt_cls, matched):
            self.counts[g, col["num_gt"]] += 1
            if not was_matched:
                self.counts[g, col["missed"]] += 1
                self.confusion[g, K] += 1
        return kinds

    def per_class(self) -> List[Dict[str, int]]:
        """Each class's counts, by name (COUNTS)."""
        return [dict(zip(COUNTS, map(int, row))) for row in self.counts]

    def total(self) -> Dict[str, int]:
        return dict(zip(COUNTS, map(int, self.counts.sum(0))))


def _ratio(a: int, b: int) -> str:
    return f"{a / b:.3f}" if b else "-"


def markdown_table(analysis: ErrorAnalysis, class_names: Sequence[str]) -> str:
    """Per class and total: GTs, tp, missed, each kind of false positive, recall and precision."""
    header = [
        "class",
        "GT",
        "TP",
        "missed",
        "FP loc",
        "FP dup",
        "FP cls",
        "FP bg",
        "recall",
        "precision",
    ]
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    rows = list(zip(class_names, analysis.per_class())) + [("**total**", analysis.total())]
    for name, c in rows:
        detections = c["tp"] + sum(c[k] for k in FP_KINDS)
        values = [c[k] for k in ("num_gt", "tp", "missed", *FP_KINDS)]
        values += [_ratio(c["tp"], c["num_gt"]), _ratio(c["tp"], detections)]
        lines.append("| " + " | ".join([name, *map(str, values)]) + " |")
    return "\n".join(lines)


__all__ = ["COUNTS", "ErrorAnalysis", "FP_KINDS", "KINDS", "markdown_table"]
