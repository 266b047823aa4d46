"""
Test-time augmentation (TTA) for every d2ext detector: the dense ones (ATSS, DynamicATSS, GFL
v1/v2, VFNet, MuSu, AP-loss RetinaNet: Detectron2 DenseDetectors) and GeneralizedRCNN models
(Libra R-CNN, Faster R-CNN).

Views. Detectron2's keys choose them, as its DatasetMapperTTA does: one view per
TEST.AUG.MIN_SIZES entry (shortest edge resized to it, longest edge at most TEST.AUG.MAX_SIZE,
with INPUT.RESIZE_BACKEND's resize, d2ext.data: "pil" Detectron2's ResizeShortestEdge, "cv2"
mmdetection's), each also horizontally flipped when TEST.AUG.FLIP (resize, then flip, as
Detectron2). The base size INPUT.MIN_SIZE_TEST is a view only when it is in MIN_SIZES.

Each view runs on its own through the model's own inference, ``model([{"image": view,
"height": H, "width": W}])``: the model rescales its detections to the input image (H, W)
(detector_postprocess), keeps at most TEST.DETECTIONS_PER_IMAGE of them (the wrapper caps each
view there again, by score), and a flipped view's boxes are un-flipped, x1' = W - x2,
x2' = W - x1 (mmdetection's ``bbox_flip``). So memory grows with the number of views only by
their few capped detections, never by feature maps: 10+ scales run one after the other.
Optionally (TEST.AUG.SCALE_RANGES, one [min, max] per MIN_SIZES entry) a view keeps only boxes
whose sqrt(area) in that view's resized image is in (min, max), official ATSS's remove_boxes.

Merge (TEST.AUG.MERGE), over the union of all views, then the TEST.AUG.DETECTIONS_PER_IMAGE
(0: TEST.DETECTIONS_PER_IMAGE) best by score:

- ``"nms"``: class-wise NMS at TEST.AUG.NMS_THRESH: mmdetection 3's
  ``DetTTAModel._merge_single_sample`` (mmdet/models/test_time_augs/det_tta.py:
  ``batched_nms(boxes, scores, labels, dict(type='nms', iou_threshold=...))`` then
  ``[:max_per_img]``). Same result (tests/modeling/test_tta.py). Detectron2's
  GeneralizedRCNNWithTTA merges this way too (fast_rcnn_inference_single_image at
  ROI_HEADS.NMS_THRESH_TEST); d2ext's threshold is TEST.AUG.NMS_THRESH for every method.
- ``"vote"``: official ATSS's merge (sfzhang15/ATSS atss_core/engine/bbox_aug_vote.py,
  TEST.BBOX_AUG.VOTE True): multi-class NMS per view (there in the model's own inference,
  select_over_all_levels at MODEL.ATSS.NMS_TH, capped at TEST.DETECTIONS_PER_IMG; here
  likewise each d2ext model's own NMS and cap), then box voting over the union
  (``merge_result_from_multi_scales`` with MERGE_TYPE "vote" -> ``bbox_vote``), per class: in
  decreasing score order, the best remaining box and every remaining box with IoU >=
  TEST.AUG.VOTE_THRESH with it form a cluster and leave the pool (a greedy NMS whose
  threshold is the vote threshold); a cluster of one box is kept as is, a larger one becomes
  one box, the score-weighted mean of its boxes, with its highest score.
- ``"soft-vote"``: official ATSS's MERGE_TYPE "soft-vote" (``soft_bbox_vote``, the setting of
  its best multi-scale result): "vote", and each box of a cluster of two or more is also kept
  with score x (1 - IoU with the cluster's best box) when that reaches
  TEST.AUG.SOFT_VOTE_SCORE_THRESH (official: MODEL.RETINANET.INFERENCE_TH).

Where d2ext differs from official ATSS's TTA (im_detect_bbox_aug_vote; its non-vote path,
bbox_aug.py, is not followed: it runs each view without NMS, up to PRE_NMS_TOP_N candidates per
level, and NMSes their union, where d2ext's "nms" is mmdetection's merge of capped views):

- Views are Detectron2's: MIN_SIZES x (identity, flip) at one TEST.AUG.MAX_SIZE. Official ATSS
  always adds the INPUT.MIN_SIZE_TEST view and its flip (H_FLIP), unfiltered by any scale
  range, flips the other SCALES when SCALE_H_FLIP, and uses INPUT.MAX_SIZE_TEST instead of
  TEST.BBOX_AUG.MAX_SIZE for scales below 800. Put MIN_SIZE_TEST in MIN_SIZES (with the range
  [0, inf)) for its view.
- Official ATSS's flip un-maps with the legacy +1 pixel (x1' = W - x2 - 1) and measures IoU
  and the scale ranges' areas with +1 widths; d2ext's boxes are continuous (Detectron2's and
  mmdetection 3's convention): x1' = W - x2, IoU and area without +1.
- Official ATSS maps every view's boxes to the first view's size, d2ext directly to the input
  image (H, W) (the same thing up to float rounding).
- The official merge keeps the best MODEL.ATSS.PRE_NMS_TOP_N (1000) of all classes after
  voting (ties at the cut kept, kthvalue); d2ext keeps TEST.AUG.DETECTIONS_PER_IMAGE (0:
  TEST.DETECTIONS_PER_IMAGE, 100), by score. Set it to 1000 for the official number.
- Voting runs in float64 on the CPU as the official numpy code; outputs are sorted by score.
- SCALE_RANGES filters the views for every merge rule (official ATSS: only its vote path).

Libra R-CNN (GeneralizedRCNN) goes through this same wrapper, not Detectron2's
GeneralizedRCNNWithTTA, so that every d2ext method has the same views, resize backend and
merge rules: ``model(inputs)`` in eval mode is GeneralizedRCNN's inference with
detector_postprocess, the interface the wrapper needs. Mask and keypoint heads are refused
(use Detectron2's GeneralizedRCNNWithTTA, which re-runs them on the merged boxes).
"""

from typing import Dict, List, Optional, Sequence, Tuple

import detectron2.data.transforms as T
import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import DatasetMapper
from detectron2.data.detection_utils import read_image
from detectron2.layers import batched_nms
from detectron2.structures import Boxes, Instances, pairwise_iou
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from d2ext.data.augmentation import check_resize_backend
from d2ext.data.cv2_resize import CV2ResizeShortestEdge
from d2ext.errors import ConfigError

MERGE_RULES = ("nms", "vote", "soft-vote")

__all__ = [
    "DetectorWithTTA",
    "MERGE_RULES",
    "box_vote",
    "build_tta_mapper",
    "merge_nms",
    "merge_vote",
    "unflip_boxes",
    "wrap_predictor_with_tta",
]


# -- geometry ------------------------------------------------------------------------------------
def unflip_boxes(boxes: Tensor, width) -> Tensor:
    """Boxes (N, 4) of a horizontally flipped image of width `width` in the unflipped image:
    x1' = W - x2, x2' = W - x1 (mmdetection's ``bbox_flip``, horizontal)."""
    out = boxes.clone()
    out[:, 0] = width - boxes[:, 2]
    out[:, 2] = width - boxes[:, 0]
    return out


def in_scale_range(boxes: Tensor, scale_x: float, scale_y: float, size_range) -> Tensor:
    """Which boxes (input-image coordinates) have min < sqrt(area) < max once scaled by
    (scale_x, scale_y) into a view (official ATSS's remove_boxes, without its +1)."""
    low, high = float(size_range[0]), float(size_range[1])
    area = (boxes[:, 2] - boxes[:, 0]) * scale_x * (boxes[:, 3] - boxes[:, 1]) * scale_y
    return (area > low * low) & (area < high * high)


# -- merge rules ---------------------------------------------------------------------------------
def merge_nms(
    boxes: Tensor, scores: Tensor, classes: Tensor, iou_thresh: float, max_detections: int
):
    """Class-wise NMS over the union of the views (mmdetection 3's DetTTAModel merge): the
    kept (boxes, scores, classes), by decreasing score, at most `max_detections`."""
    keep = batched_nms(boxes, scores, classes, iou_thresh)[:max_detections]
    return boxes[keep], scores[keep], classes[keep]


def box_vote(
    boxes: Tensor, scores: Tensor, vote_thresh: float, soft_score_thresh: Optional[float] = None
):
    """
    Official ATSS's ``bbox_vote`` (``soft_bbox_vote`` with `soft_score_thresh`) on the boxes of
    one class: in decreasing score order, the best remaining box and the remaining boxes with
    IoU >= `vote_thresh` with it form a cluster; one box stays as it is, a larger cluster
    becomes the score-weighted mean of its boxes with the highest score. With
    `soft_score_thresh`, the boxes of a larger cluster are also kept with score x (1 - IoU),
    when that is >= `soft_score_thresh`. Returns (boxes, scores), by cluster.
    """
    order = torch.argsort(scores, descending=True, stable=True)
    boxes, scores = boxes[order], scores[order]
    iou = pairwise_iou(Boxes(boxes), Boxes(boxes))
    remaining = torch.ones(len(boxes), dtype=torch.bool, device=boxes.device)
    out_boxes, out_scores = [], []
    while bool(remaining.any()):
        top = int(torch.nonzero(remaining)[0])
        members = remaining & (iou[top] >= vote_thresh)
        members[top] = True  # pairwise_iou of a zero-area box with itself is 0
        remaining &= ~members
        member_boxes, member_scores = boxes[members], scores[members]
        if len(member_scores) == 1:
            out_boxes.append(member_boxes)
            out_scores.append(member_scores)
            continue
        voted = (member_boxes * member_scores[:, None]).sum(0, keepdim=True) / member_scores.sum()
        out_boxes.append(voted)
        out_scores.append(member_scores.max().reshape(1))
        if soft_score_thresh is not None:
            decayed = member_scores * (1 - iou[top][members])
            soft = decayed >= soft_score_thresh
            out_boxes.append(member_boxes[soft])
            out_scores.append(decayed[soft])
    if not out_boxes:
        return boxes.new_zeros((0, 4)), scores.new_zeros((0,))
    return torch.cat(out_boxes), torch.cat(out_scores)


def merge_vote(
    boxes: Tensor,
    scores: Tensor,
    classes: Tensor,
    vote_thresh: float,
    max_detections: int,
    soft_score_thresh: Optional[float] = None,
):
    """Official ATSS's merge: :func:`box_vote` per class (float64, on the CPU, as its numpy
    code), then the `max_detections` best of all classes, by decreasing score."""
    device, dtype = boxes.device, boxes.dtype
    boxes64, scores64, classes_cpu = (
        boxes.detach().cpu().double(),
        scores.detach().cpu().double(),
        classes.cpu(),
    )
    out_boxes, out_scores, out_classes = [], [], []
    for c in torch.unique(classes_cpu):
        idx = torch.nonzero(classes_cpu == c).flatten()
        b, s = box_vote(boxes64[idx], scores64[idx], vote_thresh, soft_score_thresh)
        out_boxes.append(b)
        out_scores.append(s)
        out_classes.append(torch.full((len(s),), int(c), dtype=classes_cpu.dtype))
    if not out_boxes:
        return boxes[:0], scores[:0], classes[:0]
    b, s, c = torch.cat(out_boxes), torch.cat(out_scores), torch.cat(out_classes)
    keep = torch.argsort(s, descending=True, stable=True)[:max_detections]
    return b[keep].to(device, dtype), s[keep].to(device, scores.dtype), c[keep].to(device)


# -- the wrapper ---------------------------------------------------------------------------------
def _image_as_numpy(image) -> np.ndarray:
    """An HWC numpy image from a CHW tensor (or an HWC array). A float image holding integers
    0..255 (DefaultPredictor's input) becomes the uint8 image it was, so that it is resized as
    the data loader's uint8 images are (PIL for the "pil" backend)."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        if image.is_floating_point() and bool(
            ((image >= 0) & (image <= 255) & (image == image.round())).all()
        ):
            image = image.to(torch.uint8)
        return image.permute(1, 2, 0).numpy()
    return np.asarray(image)


class DetectorWithTTA(nn.Module):
    """
    A built d2ext detector (a Detectron2 DenseDetector or a GeneralizedRCNN) with test-time
    augmentation: same call and output as the model's inference (a list of dataset dicts with
    "image" (CHW) or "file_name", and optionally "height" / "width"; a list of
    ``{"instances": Instances}`` at (height, width)). See the module docstring for the views
    and merge rules. ``DetectorWithTTA(cfg, model)`` reads TEST.AUG.*.

    The image given should be the original (unresized) one, as :func:`build_tta_mapper`'s;
    a resized one works (the views are resized from it and the detections mapped to "height" x
    "width") but loses detail for views larger than it.
    """

    @configurable
    def __init__(
        self,
        model: nn.Module,
        *,
        min_sizes: Sequence[int],
        max_size: int,
        flip: bool = True,
        merge: str = "nms",
        nms_thresh: float = 0.6,
        vote_thresh: float = 0.66,
        soft_vote_score_thresh: float = 0.05,
        scale_ranges: Sequence[Sequence[float]] = (),
        max_detections_per_view: int = 100,
        max_detections: int = 100,
        resize_backend: str = "pil",
        input_format: str = "BGR",
    ):
        super().__init__()
        if isinstance(model, DistributedDataParallel):
            model = model.module
        _check_supported(model)
        min_sizes = [int(s) for s in min_sizes]
        if not min_sizes or min(min_sizes) <= 0:
            raise ConfigError(f"TEST.AUG.MIN_SIZES must be positive sizes, got {min_sizes}")
        if int(max_size) <= 0:
            raise ConfigError(f"TEST.AUG.MAX_SIZE must be positive, got {max_size}")
        if merge not in MERGE_RULES:
            raise ConfigError(f"TEST.AUG.MERGE must be one of {MERGE_RULES}, got {merge!r}")
        for key, value in (
            ("TEST.AUG.NMS_THRESH", nms_thresh),
            ("TEST.AUG.VOTE_THRESH", vote_thresh),
        ):
            if not 0.0 < float(value) <= 1.0:
                raise ConfigError(f"{key} must be in (0, 1], got {value}")
        scale_ranges = [tuple(float(v) for v in r) for r in scale_ranges]
        if scale_ranges and (
            len(scale_ranges) != len(min_sizes)
            or any(len(r) != 2 or r[0] >= r[1] for r in scale_ranges)
        ):
            raise ConfigError(
                "TEST.AUG.SCALE_RANGES must be empty or one [min, max] (min < max) per "
                f"TEST.AUG.MIN_SIZES entry {min_sizes}, got {scale_ranges}"
            )
        for key, value in (
            ("TEST.DETECTIONS_PER_IMAGE", max_detections_per_view),
            ("TEST.AUG.DETECTIONS_PER_IMAGE", max_detections),
        ):
            if int(value) <= 0:
                raise ConfigError(f"{key} must be positive, got {value}")
        self.model = model
        self.min_sizes = min_sizes
        self.max_size = int(max_size)
        self.flip = bool(flip)
        self.merge = merge
        self.nms_thresh = float(nms_thresh)
        self.vote_thresh = float(vote_thresh)
        self.soft_vote_score_thresh = float(soft_vote_score_thresh)
        self.scale_ranges = scale_ranges
        self.max_detections_per_view = int(max_detections_per_view)
        self.max_detections = int(max_detections)
        backend = check_resize_backend(resize_backend)
        resize_class = CV2ResizeShortestEdge if backend == "cv2" else T.ResizeShortestEdge
        self.resizes = [resize_class(s, self.max_size, "choice") for s in min_sizes]
        self.input_format = input_format
        self.train(model.training)

    @classmethod
    def from_config(cls, cfg, model):
        aug = cfg.TEST.AUG
        return {
            "model": model,
            "min_sizes": aug.MIN_SIZES,
            "max_size": aug.MAX_SIZE,
            "flip": aug.FLIP,
            "merge": aug.MERGE,
            "nms_thresh": aug.NMS_THRESH,
            "vote_thresh": aug.VOTE_THRESH,
            "soft_vote_score_thresh": aug.SOFT_VOTE_SCORE_THRESH,
            "scale_ranges": aug.SCALE_RANGES,
            "max_detections_per_view": cfg.TEST.DETECTIONS_PER_IMAGE,
            "max_detections": aug.DETECTIONS_PER_IMAGE or cfg.TEST.DETECTIONS_PER_IMAGE,
            "resize_backend": cfg.INPUT.RESIZE_BACKEND,
            "input_format": cfg.INPUT.FORMAT,
        }

    def views(self) -> List[Tuple[int, bool]]:
        """(index into MIN_SIZES, flipped) of each view, in the order they run."""
        return [
            (i, f)
            for i in range(len(self.min_sizes))
            for f in ((False, True) if self.flip else (False,))
        ]

    def forward(self, batched_inputs: List[Dict]):
        if self.model.training:
            raise RuntimeError("DetectorWithTTA runs inference only: call .eval() first")
        with torch.no_grad():
            return [{"instances": self.inference_one_image(x)} for x in batched_inputs]

    def _read(self, dataset_dict) -> Tuple[np.ndarray, int, int]:
        if "image" in dataset_dict:
            image = _image_as_numpy(dataset_dict["image"])
        else:
            image = read_image(dataset_dict["file_name"], self.input_format)
        height = int(dataset_dict.get("height", image.shape[0]))
        width = int(dataset_dict.get("width", image.shape[1]))
        return image, height, width

    def view_detections(
        self, image: np.ndarray, height: int, width: int, index: int, flip: bool
    ) -> Instances:
        """The detections of one view (MIN_SIZES[index], flipped or not) of an HWC image, in
        the input image's coordinates (height x width), un-flipped, capped, scale-filtered."""
        resized = self.resizes[index].get_transform(image).apply_image(image)
        if flip:
            resized = resized[:, ::-1]
        tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)))
        out = self.model([{"image": tensor, "height": height, "width": width}])[0]["instances"]
        if len(out) > self.max_detections_per_view:
            out = out[torch.topk(out.scores, self.max_detections_per_view).indices]
        boxes = out.pred_boxes.tensor
        if flip:
            boxes = unflip_boxes(boxes, width)
        result = Instances(
            (height, width),
            pred_boxes=Boxes(boxes),
            scores=out.scores,
            pred_classes=out.pred_classes,
        )
        if self.scale_ranges:
            scale_y, scale_x = resized.shape[0] / height, resized.shape[1] / width
            result = result[in_scale_range(boxes, scale_x, scale_y, self.scale_ranges[index])]
        return result

    def merge_detections(self, boxes: Tensor, scores: Tensor, classes: Tensor):
        """The merge rule on the union of the views' (boxes, scores, classes)."""
        if self.merge == "nms":
            return merge_nms(boxes, scores, classes, self.nms_thresh, self.max_detections)
        soft = self.soft_vote_score_thresh if self.merge == "soft-vote" else None
        return merge_vote(boxes, scores, classes, self.vote_thresh, self.max_detections, soft)

    def inference_one_image(self, dataset_dict) -> Instances:
        image, height, width = self._read(dataset_dict)
        # Each view's few detections only are kept: its feature maps are freed before the next.
        views = [self.view_detections(image, height, width, i, f) for i, f in self.views()]
        boxes = torch.cat([v.pred_boxes.tensor for v in views])
        scores = torch.cat([v.scores for v in views])
        classes = torch.cat([v.pred_classes for v in views])
        boxes, scores, classes = self.merge_detections(boxes, scores, classes)
        return Instances(
            (height, width), pred_boxes=Boxes(boxes), scores=scores, pred_classes=classes
        )


def _check_supported(model: nn.Module):
    roi_heads = getattr(model, "roi_heads", None)
    if roi_heads is not None and (
        getattr(roi_heads, "mask_on", False) or getattr(roi_heads, "keypoint_on", False)
    ):
        raise ConfigError(
            "d2ext's TTA merges boxes only; a model with a mask or keypoint head needs "
            "Detectron2's GeneralizedRCNNWithTTA (detectron2.modeling)"
        )
    if hasattr(model, "roi_heads") and getattr(model, "proposal_generator", True) is None:
        raise ConfigError(
            "d2ext's TTA does not support precomputed proposals (MODEL.LOAD_PROPOSALS)"
        )


def build_tta_mapper(cfg) -> DatasetMapper:
    """The test mapper without its resize: the TTA wrapper gets the original image and resizes
    it once per view (Detectron2's train_net resizes the test loader's resized image again)."""
    args = DatasetMapper.from_config(cfg, is_train=False)
    args["augmentations"] = []
    return DatasetMapper(**args)


class _NoResize(T.Augmentation):
    def get_transform(self, image):
        return T.NoOpTransform()


def wrap_predictor_with_tta(predictor, cfg=None):
    """A DefaultPredictor (d2ext's Predictor) whose model runs with TTA: its model wrapped in
    :class:`DetectorWithTTA` (TEST.AUG.* of `cfg`, default the predictor's) and its own resize
    removed, so that each view is resized from the original image. Returns the predictor."""
    predictor.model = DetectorWithTTA(cfg if cfg is not None else predictor.cfg, predictor.model)
    predictor.model.eval()
    predictor.aug = _NoResize()
    return predictor
