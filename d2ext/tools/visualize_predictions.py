"""
Draws a trained model's predictions on the first images of its test dataset (Detectron2's
Visualizer), ground truth on the left, predictions on the right, into one PNG.

    d2ext-visualize-predictions --config-file configs/Synthetic/atss_R_18_FPN_tiny.yaml \
        --output output/atss_R_18_FPN_tiny/predictions.png \
        MODEL.WEIGHTS output/atss_R_18_FPN_tiny/model_final.pth
"""

import argparse
import logging

import cv2
import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.detection_utils import read_image
from detectron2.utils.logger import setup_logger
from detectron2.utils.visualizer import Visualizer

import d2ext  # noqa: F401  (registers d2ext's models and datasets)
from d2ext.config import get_score_thresh, score_thresh_key
from d2ext.data.registration import add_dataset_arguments
from d2ext.engine import Predictor
from d2ext.errors import ConfigError
from d2ext.tools.cli import add_config_arguments, command, config_from_args


def get_parser():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_arguments(parser)
    parser.add_argument("--output", required=True, help="PNG file to write")
    parser.add_argument("--num-images", type=int, default=6)
    parser.add_argument(
        "--score-thresh", type=float, default=0.5, help="draw predictions with at least this score"
    )
    add_dataset_arguments(parser, train=False)  # --test-dataset: the images drawn
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides (KEY VALUE ...)")
    return parser


def _titled(image_rgb, title):
    header = np.full((18, image_rgb.shape[1], 3), 255, dtype=np.uint8)
    cv2.putText(header, title, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([header, image_rgb])


def side_by_side(image_rgb, record, outputs, metadata, score_thresh):
    gt = Visualizer(image_rgb, metadata).draw_dataset_dict(record).get_image()
    instances = outputs["instances"].to("cpu")
    instances = instances[instances.scores >= score_thresh]
    pred = Visualizer(image_rgb, metadata).draw_instance_predictions(instances).get_image()
    return np.hstack(
        [_titled(gt, "ground truth"), _titled(pred, f"prediction (score >= {score_thresh})")]
    )


def setup_cfg(args):
    cfg = config_from_args(args)
    if not isinstance(cfg, CfgNode):
        raise ConfigError(
            f"{args.config_file}: visualize_predictions takes yaml configs (a lazy .py config was given)"
        )
    # The model's own test threshold no higher than the drawing threshold, or the picture would
    # miss detections --score-thresh asks for.
    key = score_thresh_key(cfg)
    cfg.merge_from_list([key, min(get_score_thresh(cfg), args.score_thresh)])
    if not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    return cfg


@command
def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logger(name="d2ext")
    cfg = setup_cfg(args)
    dataset_name = cfg.DATASETS.TEST[0]
    metadata = MetadataCatalog.get(dataset_name)
    predictor = Predictor(cfg)  # MODEL.WEIGHTS (empty: an error), INPUT.RESIZE_BACKEND's resize
    rows = []
    for record in DatasetCatalog.get(dataset_name)[: args.num_images]:
        image_bgr = read_image(record["file_name"], format="BGR")
        rows.append(
            side_by_side(
                image_bgr[:, :, ::-1], record, predictor(image_bgr), metadata, args.score_thresh
            )
        )
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    cv2.imwrite(args.output, np.vstack(rows)[:, :, ::-1])
    logging.getLogger("d2ext").info(
        f"Ground truth (left) and predictions (right) written to {args.output}"
    )


if __name__ == "__main__":
    main()
