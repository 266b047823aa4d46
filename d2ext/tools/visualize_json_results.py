r"""
Draws an evaluation's detections (COCO results json: the coco_instances_results.json that
COCOEvaluator writes) next to the ground truth of their dataset, one image file per dataset image,
as Detectron2's tools/visualize_json_results.py: predictions on the left, ground truth on the right.

    d2ext-visualize-json-results --input output/atss_R_18_FPN_tiny/inference/coco_instances_results.json \
        --output output/results --dataset d2ext_shapes_val --conf-threshold 0.5

--coco-dataset / --voc-dataset / --import register your own dataset for --dataset.
"""

import argparse
import json
import logging
import os
from collections import defaultdict
from numbers import Number

import cv2
import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.detection_utils import read_image
from detectron2.structures import Boxes, BoxMode, Instances
from detectron2.utils.logger import setup_logger
from detectron2.utils.visualizer import Visualizer

import d2ext  # noqa: F401  (registers d2ext's datasets)
from d2ext.data.registration import add_registration_arguments, check_registered, register_from_args
from d2ext.errors import DataError
from d2ext.tools.cli import add_debug_argument, command

logger = logging.getLogger("d2ext")


def get_parser():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--input", required=True, help="COCO results json (a list of detections)")
    parser.add_argument("--output", required=True, help="folder for the image files")
    parser.add_argument(
        "--dataset", default="coco_2017_val", help="the registered dataset the results are of"
    )
    parser.add_argument(
        "--conf-threshold", type=float, default=0.5, help="draw detections with at least this score"
    )
    add_registration_arguments(parser)  # --coco-dataset ...: your own --dataset
    add_debug_argument(parser)
    return parser


def is_detection(p) -> bool:
    return (
        isinstance(p, dict)
        and {"image_id", "category_id", "bbox", "score"} <= p.keys()
        and isinstance(p["category_id"], int)
        and isinstance(p["score"], Number)
        and isinstance(p["bbox"], list)
        and len(p["bbox"]) == 4
        and all(isinstance(v, Number) for v in p["bbox"])
    )


def load_predictions(path):
    """The detections of a COCO results json, grouped by image id; a DataError naming the file
    when it cannot be read or is not a list of detections."""
    try:
        with open(path) as f:
            predictions = json.load(f)  # data only: the file cannot run code
    except OSError as e:
        raise DataError(f"--input {path}: {e.strerror}") from None
    except ValueError as e:  # not json, not text
        raise DataError(f"--input {path} is not json: {e}") from None
    if not isinstance(predictions, list) or not all(is_detection(p) for p in predictions):
        raise DataError(
            f"--input {path} is not a list of detections (dicts with image_id, category_id, bbox, score)"
        )
    by_image = defaultdict(list)
    for p in predictions:
        by_image[p["image_id"]].append(p)
    return by_image


def contiguous_id_map(dataset_name):
    """Results json category id -> the dataset's contiguous class index (what Visualizer draws)."""
    metadata = MetadataCatalog.get(dataset_name)
    if hasattr(metadata, "thing_dataset_id_to_contiguous_id"):
        return dict(metadata.thing_dataset_id_to_contiguous_id)
    num_classes = len(metadata.thing_classes)
    if "lvis" in dataset_name:  # LVIS results count categories from 1
        return {i + 1: i for i in range(num_classes)}
    # COCOEvaluator writes contiguous ids for a dataset without the mapping (e.g. Pascal VOC).
    return {i: i for i in range(num_classes)}


def check_categories(predictions, id_map, path):
    """Before drawing anything: category ids of another dataset mean the wrong --dataset."""
    unknown = {
        p["category_id"] for per_image in predictions.values() for p in per_image
    } - id_map.keys()
    if unknown:
        raise DataError(
            f"--input {path}: category_id {sorted(unknown)} is not one of the dataset's {sorted(id_map)}"
        )


def create_instances(predictions, image_size, id_map, threshold):
    """The detections of one image with score >= threshold, as Instances Visualizer draws."""
    chosen = [p for p in predictions if p["score"] >= threshold]
    instances = Instances(image_size)
    instances.scores = torch.tensor([p["score"] for p in chosen], dtype=torch.float32)
    boxes = np.asarray([p["bbox"] for p in chosen], dtype=np.float64).reshape(-1, 4)
    instances.pred_boxes = Boxes(BoxMode.convert(boxes, BoxMode.XYWH_ABS, BoxMode.XYXY_ABS))
    instances.pred_classes = torch.tensor(
        [id_map[p["category_id"]] for p in chosen], dtype=torch.int64
    )
    if chosen and all("segmentation" in p for p in chosen):
        instances.pred_masks = [p["segmentation"] for p in chosen]
    return instances


@command
def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logger(name="d2ext")
    predictions = load_predictions(args.input)
    register_from_args(args)
    check_registered(args.dataset, "--dataset")
    records = DatasetCatalog.get(args.dataset)
    metadata = MetadataCatalog.get(
        args.dataset
    )  # after loading: that fills a COCO json's class names
    id_map = contiguous_id_map(args.dataset)
    check_categories(predictions, id_map, args.input)
    if predictions and not predictions.keys() & {r["image_id"] for r in records}:
        logger.warning(
            f"No image id of {args.input} is in {args.dataset}: are they results of another dataset?"
        )
    os.makedirs(args.output, exist_ok=True)
    written = []
    for record in records:
        image = read_image(record["file_name"], format="RGB")
        instances = create_instances(
            predictions[record["image_id"]], image.shape[:2], id_map, args.conf_threshold
        )
        drawn_pred = Visualizer(image, metadata).draw_instance_predictions(instances).get_image()
        drawn_gt = Visualizer(image, metadata).draw_dataset_dict(record).get_image()
        path = os.path.join(args.output, os.path.basename(record["file_name"]))
        cv2.imwrite(path, np.concatenate([drawn_pred, drawn_gt], axis=1)[:, :, ::-1])
        written.append(path)
    logger.info(
        f"{len(written)} images (predictions left, ground truth right) written to {args.output}"
    )
    return written


if __name__ == "__main__":
    main()
