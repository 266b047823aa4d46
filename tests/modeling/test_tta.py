"""
Test-time augmentation (d2ext.modeling.DetectorWithTTA): the NMS merge against mmdetection 3's
DetTTAModel (the test oracle, tests/model_zoo/mmdet_oracle.py), official ATSS's box voting on a
hand-computed case, the flipped view's mapping back, every method's tiny model, and
tools/train_net.py --eval-only with TEST.AUG.ENABLED.
"""

import os
import sys

import numpy as np
import pytest
import torch
from conftest import CONFIGS, CUDA, tiny_cfg
from detectron2.data import DatasetCatalog
from detectron2.structures import Boxes, Instances
from engine.test_train_net import FAST, run
from torch import nn

from d2ext.config import set_score_thresh
from d2ext.modeling import DetectorWithTTA, build_tta_mapper
from d2ext.modeling.test_time_augmentation import box_vote, merge_vote, unflip_boxes

sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "model_zoo")
)

METHODS = [
    "atss",
    "dynamic_atss",
    "gfl",
    "gflv2",
    "vfnet",
    "musu",
    "aploss_retinanet",
    "libra_faster_rcnn",
]


def tiny(method):
    return os.path.join(CONFIGS, "Synthetic", f"{method}_R_18_FPN_tiny.yaml")


def cfg_of(method, opts=None):
    """The tiny config of `method` with the {key: value} `opts`."""
    return tiny_cfg(tiny(method), *[x for kv in (opts or {}).items() for x in kv])


def tta_cfg(method, opts=None):
    """A tiny config whose random-init model has detections (score threshold 0), 4 small views."""
    views = {"TEST.AUG.MIN_SIZES": (96, 128), "TEST.AUG.MAX_SIZE": 200, "TEST.AUG.FLIP": True}
    return set_score_thresh(cfg_of(method, {**views, **(opts or {})}), 0.0)


def build_model(cfg, seed=0):
    from detectron2.modeling import build_model as _build

    torch.manual_seed(seed)
    return _build(cfg).eval()


class QueuedModel(nn.Module):
    """A stand-in detector whose inference returns the given per-view Instances in turn (a
    GeneralizedRCNN / DenseDetector's output: already at "height" x "width")."""

    def __init__(self, outputs):
        super().__init__()
        self.outputs = list(outputs)
        self.inputs = []
        self.eval()

    def forward(self, batched_inputs):
        self.inputs.append(batched_inputs[0])
        return [{"instances": self.outputs.pop(0)}]


def random_view_detections(num_views, image_size, n=60, num_classes=5, seed=0):
    """Per view: n boxes jittered around shared objects (so the views overlap), random scores
    and classes, at the input image size."""
    g = torch.Generator().manual_seed(seed)
    h, w = image_size
    centres = torch.rand(20, 2, generator=g) * torch.tensor([w, h])
    sizes = 10 + torch.rand(20, 2, generator=g) * 60
    views = []
    for _ in range(num_views):
        idx = torch.randint(0, 20, (n,), generator=g)
        c = centres[idx] + torch.randn(n, 2, generator=g) * 3
        s = sizes[idx] * (1 + 0.1 * torch.randn(n, 2, generator=g))
        boxes = torch.cat([c - s / 2, c + s / 2], 1)
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
        scores = torch.rand(n, generator=g)
        classes = torch.randint(0, num_classes, (n,), generator=g)
        views.append((boxes, scores, classes))
    return views


def test_nms_merge_equals_mmdet_det_tta_model():
    from mmdet_oracle import import_mmdet

    import_mmdet()
    from mmdet.models.test_time_augs import DetTTAModel
    from mmdet.structures import DetDataSample
    from mmengine.config import ConfigDict
    from mmengine.structures import InstanceData

    h, w = 300, 400
    image = torch.zeros(3, h, w, dtype=torch.uint8)
    aug = {"MIN_SIZES": (96, 128), "MAX_SIZE": 200, "MERGE": "nms", "NMS_THRESH": 0.6}
    cfg = cfg_of("gfl", {f"TEST.AUG.{k}": v for k, v in aug.items()})
    views = random_view_detections(4, (h, w))  # views (96, id), (96, flip), (128, id), (128, flip)
    flips = [False, True, False, True]

    # A model's raw output on a flipped view is in flipped coordinates (already at h x w).
    outputs = [
        Instances((h, w), pred_boxes=Boxes(b.clone()), scores=s, pred_classes=c)
        for b, s, c in views
    ]
    tta = DetectorWithTTA(cfg, QueuedModel(outputs))
    ours = tta([{"image": image, "height": h, "width": w}])[0]["instances"]
    assert ours.image_size == (h, w)

    class Module(nn.Module):
        def test_step(self, data):
            raise AssertionError("not run")

    mmdet_tta = DetTTAModel(
        module=Module(),
        tta_cfg=ConfigDict(nms=dict(type="nms", iou_threshold=0.6), max_per_img=100),
    )
    samples = []
    for (b, s, c), flip in zip(views, flips):
        sample = DetDataSample(
            metainfo=dict(
                ori_shape=(h, w), flip=flip, flip_direction="horizontal" if flip else None
            )
        )
        sample.pred_instances = InstanceData(bboxes=b.clone(), scores=s, labels=c)
        samples.append(sample)
    theirs = mmdet_tta._merge_single_sample(samples).pred_instances

    assert 10 < len(ours) <= 100 and len(ours) == len(theirs)
    torch.testing.assert_close(ours.pred_boxes.tensor, theirs.bboxes, rtol=0, atol=1e-5)
    torch.testing.assert_close(ours.scores, theirs.scores, rtol=0, atol=0)
    assert torch.equal(ours.pred_classes, theirs.labels)


def test_box_vote_hand_computed():
    boxes = torch.tensor(
        [
            [0, 0, 10, 10],  # A 0.9 class 0
            [1, 0, 11, 10],  # B 0.6 class 0: IoU(A, B) = 90 / 110 = 0.818 -> voted into A
            [0, 0, 10, 5],  # E 0.8 class 0: IoU(A, E) = 0.5 -> its own cluster
            [20, 20, 30, 30],  # C 0.5 class 0: alone
            [0, 0, 10, 10],  # D 0.3 class 1: same box as A, other class
        ],
        dtype=torch.float32,
    )
    scores = torch.tensor([0.9, 0.6, 0.8, 0.5, 0.3])
    classes = torch.tensor([0, 0, 0, 0, 1])
    b, s, c = merge_vote(boxes, scores, classes, vote_thresh=0.66, max_detections=100)
    # A + B: x1 = (0.9 * 0 + 0.6 * 1) / 1.5 = 0.4, x2 = (0.9 * 10 + 0.6 * 11) / 1.5 = 10.4,
    # score 0.9.
    expected = torch.tensor([[0.4, 0, 10.4, 10], [0, 0, 10, 5], [20, 20, 30, 30], [0, 0, 10, 10]])
    torch.testing.assert_close(b, expected)
    torch.testing.assert_close(s, torch.tensor([0.9, 0.8, 0.5, 0.3]))
    assert c.tolist() == [0, 0, 0, 1]

    # soft-vote: B also kept, 0.6 x (1 - 90 / 110); A's own decayed score is 0 < 0.05.
    b, s, c = merge_vote(boxes, scores, classes, 0.66, 100, soft_score_thresh=0.05)
    torch.testing.assert_close(s, torch.tensor([0.9, 0.8, 0.5, 0.3, 0.6 * (1 - 90 / 110)]))
    torch.testing.assert_close(b[4], boxes[1])
    assert c.tolist() == [0, 0, 0, 1, 0]

    # The cap keeps the best; a lone box and an empty class set pass through.
    b, s, c = merge_vote(boxes, scores, classes, 0.66, max_detections=2)
    assert s.tolist() == pytest.approx([0.9, 0.8])
    b, s = box_vote(boxes[:1].double(), scores[:1].double(), 0.66)
    assert torch.equal(b, boxes[:1].double()) and s.tolist() == pytest.approx([0.9])
    assert len(merge_vote(boxes[:0], scores[:0], classes[:0], 0.66, 100)[0]) == 0


def test_unflip_boxes():
    boxes = torch.tensor([[10.0, 5.0, 30.0, 25.0]])
    assert unflip_boxes(boxes, 100).tolist() == [[70.0, 5.0, 90.0, 25.0]]
    assert torch.equal(unflip_boxes(unflip_boxes(boxes, 100), 100), boxes)


@pytest.fixture(scope="module")
def gfl_tta():
    cfg = tta_cfg("gfl")
    return DetectorWithTTA(cfg, build_model(cfg))


def mirror(boxes, width):
    return torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], 1)


def test_flipped_view_of_a_symmetric_image_maps_back(gfl_tta):
    g = torch.Generator().manual_seed(0)
    h, w = 120, 160
    half = (torch.rand(h, w // 2, 3, generator=g) * 255).to(torch.uint8).numpy()
    image = np.concatenate([half, half[:, ::-1]], axis=1)  # left-right symmetric
    assert np.array_equal(image, image[:, ::-1])
    for index in range(len(gfl_tta.min_sizes)):
        plain = gfl_tta.view_detections(image, h, w, index, flip=False)
        flipped = gfl_tta.view_detections(image, h, w, index, flip=True)
        assert len(plain) > 0 and len(plain) == len(flipped)
        # The flipped input equals the plain one: same raw outputs, so the un-flipped boxes of
        # the flipped view are the plain view's mirrored.
        torch.testing.assert_close(
            flipped.pred_boxes.tensor, mirror(plain.pred_boxes.tensor, w), rtol=0, atol=1e-4
        )
        torch.testing.assert_close(flipped.scores, plain.scores, rtol=0, atol=0)
        assert torch.equal(flipped.pred_classes, plain.pred_classes)


def test_flipped_view_is_the_mirrored_view_of_the_flipped_image(gfl_tta):
    g = torch.Generator().manual_seed(1)
    h, w = 120, 150
    image = (torch.rand(h, w, 3, generator=g) * 255).to(torch.uint8).numpy()
    flipped = gfl_tta.view_detections(image, h, w, 1, flip=True)
    plain_of_flipped = gfl_tta.view_detections(
        np.ascontiguousarray(image[:, ::-1]), h, w, 1, flip=False
    )
    assert len(flipped) > 0
    torch.testing.assert_close(
        flipped.pred_boxes.tensor, mirror(plain_of_flipped.pred_boxes.tensor, w), rtol=0, atol=1e-4
    )


@pytest.fixture(scope="module")
def minival_pair():
    return DatasetCatalog.get("d2ext_shapes_minival")[:2]


@pytest.mark.parametrize("method", METHODS)
def test_every_method_with_tta(method, minival_pair):
    merge = "vote" if METHODS.index(method) % 2 else "nms"
    cfg = tta_cfg(method, {"TEST.AUG.MERGE": merge, "TEST.DETECTIONS_PER_IMAGE": 50})
    tta = DetectorWithTTA(cfg, build_model(cfg))
    assert not tta.training and len(tta.views()) == 4
    mapper = build_tta_mapper(cfg)
    inputs = [mapper(d) for d in minival_pair]
    for x in inputs:  # the original image, resized only by the views
        assert tuple(x["image"].shape[1:]) == (x["height"], x["width"])
    outputs = tta(inputs)
    for x, out in zip(inputs, outputs):
        r = out["instances"]
        h, w = x["height"], x["width"]
        assert r.image_size == (h, w)
        assert 0 < len(r) <= 50
        boxes = r.pred_boxes.tensor
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= w).all()
        assert (boxes[:, 1] >= 0).all() and (boxes[:, 3] <= h).all()
        assert (r.scores[:-1] >= r.scores[1:]).all()
        assert r.pred_classes.min() >= 0 and r.pred_classes.max() < 5


def test_bad_keys_are_refused():
    from d2ext.errors import ConfigError

    cfg = cfg_of("gfl", {"TEST.AUG.MERGE": "mean"})
    with pytest.raises(ConfigError, match="TEST.AUG.MERGE"):
        DetectorWithTTA(cfg, QueuedModel([]))
    cfg = cfg_of("gfl", {"TEST.AUG.MIN_SIZES": (96, 128), "TEST.AUG.SCALE_RANGES": [[0, 64]]})
    with pytest.raises(ConfigError, match="SCALE_RANGES"):
        DetectorWithTTA(cfg, QueuedModel([]))


def test_scale_ranges_filter_by_size_in_the_view():
    # Views 100 and 200 of a 100 x 100 image; the box's side is 40 in view 0 and 80 in view 2.
    h = w = 100
    aug = {"MIN_SIZES": (100, 200), "MAX_SIZE": 400, "FLIP": False, "SCALE_RANGES": [[0, 64]] * 2}
    cfg = cfg_of("gfl", {f"TEST.AUG.{k}": v for k, v in aug.items()})
    box = Instances(
        (h, w),
        pred_boxes=Boxes(torch.tensor([[10.0, 10.0, 50.0, 50.0]])),
        scores=torch.tensor([0.5]),
        pred_classes=torch.tensor([0]),
    )
    model = QueuedModel([box, box])
    out = DetectorWithTTA(cfg, model)([{"image": torch.zeros(3, h, w, dtype=torch.uint8)}])[0][
        "instances"
    ]
    assert len(out) == 1  # kept from the 100 view only (40 < 64); 80 in the 200 view
    assert [tuple(x["image"].shape[1:]) for x in model.inputs] == [(100, 100), (200, 200)]


@pytest.mark.parametrize("backend", ["pil", "cv2"])
def test_views_resize_with_the_backend_then_flip(backend):
    from d2ext.data import CV2ResizeShortestEdge

    h, w = 100, 150
    opts = {
        "TEST.AUG.MIN_SIZES": (64, 101),
        "TEST.AUG.MAX_SIZE": 1000,
        "INPUT.RESIZE_BACKEND": backend,
    }
    cfg = cfg_of("gfl", opts)
    empty = Instances(
        (h, w),
        pred_boxes=Boxes(torch.zeros(0, 4)),
        scores=torch.zeros(0),
        pred_classes=torch.zeros(0, dtype=torch.int64),
    )
    model = QueuedModel([empty] * 4)
    tta = DetectorWithTTA(cfg, model)
    assert (type(tta.resizes[0]) is CV2ResizeShortestEdge) == (backend == "cv2")
    image = (torch.rand(3, h, w, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    out = tta([{"image": image, "height": h, "width": w}])[0]["instances"]
    assert len(out) == 0 and out.image_size == (h, w)
    assert [tuple(x["image"].shape[1:]) for x in model.inputs] == [
        (64, 96),
        (64, 96),
        (101, 152),
        (101, 152),
    ]
    assert all(x["height"] == h and x["width"] == w for x in model.inputs)
    # Resize, then flip (Detectron2's order): the flipped view is the mirrored resized image.
    assert torch.equal(model.inputs[1]["image"], model.inputs[0]["image"].flip(-1))
    assert torch.equal(model.inputs[3]["image"], model.inputs[2]["image"].flip(-1))


def test_predictor_with_tta(minival_pair):
    from detectron2.data.detection_utils import read_image

    from d2ext.engine import Predictor
    from d2ext.modeling import wrap_predictor_with_tta

    cfg = tta_cfg("atss")
    predictor = wrap_predictor_with_tta(Predictor(cfg, allow_random_init=True))
    assert isinstance(predictor.model, DetectorWithTTA) and not predictor.model.training
    image = read_image(minival_pair[0]["file_name"], "BGR")
    r = predictor(image)["instances"]
    assert r.image_size == image.shape[:2] and len(r) > 0


@pytest.mark.parametrize("device", [CUDA])
@pytest.mark.parametrize("merge", ["nms", "vote", "soft-vote"])
def test_tta_on_device(device, merge, minival_pair):
    ranges = [[0, 10000], [16, 10000]]
    opts = {"MODEL.DEVICE": device, "TEST.AUG.MERGE": merge, "TEST.AUG.SCALE_RANGES": ranges}
    cfg = tta_cfg("gfl", opts)
    tta = DetectorWithTTA(cfg, build_model(cfg))
    mapper = build_tta_mapper(cfg)
    for x, out in zip(minival_pair, tta([mapper(d) for d in minival_pair])):
        r = out["instances"]
        assert r.image_size == (x["height"], x["width"]) and len(r) > 0
        assert (
            r.pred_boxes.tensor.device.type
            == r.scores.device.type
            == r.pred_classes.device.type
            == "cuda"
        )


@pytest.mark.slow
def test_train_net_eval_only_prints_plain_and_tta_results(tmp_path):
    config = tiny("atss")
    out = str(tmp_path / "train")
    run("--config-file", config, *FAST, "SOLVER.MAX_ITER", "1", "OUTPUT_DIR", out)
    weights = os.path.join(out, "model_final.pth")
    # Two sizes x flip, official ATSS's vote merge with a scale range per size.
    tta = (
        "TEST.AUG.ENABLED True TEST.AUG.MIN_SIZES (96,128) TEST.AUG.MAX_SIZE 256 "
        "TEST.AUG.MERGE vote TEST.AUG.SCALE_RANGES [[0,10000],[8,10000]]"
    ).split()
    log = run(
        *("--config-file", config, "--eval-only", "MODEL.WEIGHTS", weights),
        *("INPUT.MIN_SIZE_TEST", "128", "DATASETS.TEST", "('d2ext_shapes_minival',)"),
        *("MODEL.ATSS.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE", "20"),
        *tta,
        *("OUTPUT_DIR", str(tmp_path / "eval")),
    )
    assert "Running inference with test-time augmentation" in log
    assert log.count("Evaluation results for bbox") == 2, log[-4000:]
    assert "with TTA in csv format" in log
    for folder in ("inference", "inference_TTA"):
        assert os.path.isfile(
            os.path.join(str(tmp_path / "eval"), folder, "coco_instances_results.json")
        )


@pytest.mark.slow
def test_lazy_eval_only_prints_plain_and_tta_results(tmp_path):
    from d2ext.config import load_config, score_thresh_key

    lazy = tiny("atss")[: -len(".yaml")] + ".py"
    out = str(tmp_path / "train")
    run(
        *("--config-file", lazy, "train.max_iter=1", "dataloader.train.total_batch_size=2"),
        *("dataloader.train.num_workers=0", f"train.output_dir={out}"),
        "dataloader.train.mapper.augmentations.0.short_edge_length=[128]",
        "dataloader.test.dataset.names=d2ext_shapes_minival",
        "dataloader.test.mapper.augmentations.0.short_edge_length=128",
    )
    thresh = score_thresh_key(load_config(lazy))
    log = run(
        *("--config-file", lazy, "--eval-only", f"train.output_dir={tmp_path / 'eval'}"),
        f"train.init_checkpoint={os.path.join(out, 'model_final.pth')}",
        *("dataloader.test.dataset.names=d2ext_shapes_minival", f"{thresh}=0.0"),
        "dataloader.test.mapper.augmentations.0.short_edge_length=128",
        *("test_aug.enabled=True", "test_aug.min_sizes=[96,128]", "test_aug.max_size=256"),
        *("test_aug.merge=soft-vote", "test_aug.detections_per_image=20"),
    )
    assert "Running inference with test-time augmentation" in log
    assert log.count("Evaluation results for bbox") == 2, log[-4000:]
    assert "Evaluation results with TTA" in log
    with pytest.raises(Exception, match="did you mean 'test_aug.flip'"):
        load_config(lazy, ["test_aug.flp=False"])
