"""
Runs a trained model on your images or a video and draws its detections (Detectron2's
Visualizer, with the class names of the config's test dataset), as Detectron2's demo/demo.py:

    d2ext-demo --config-file configs/Synthetic/atss_R_18_FPN_tiny.yaml --input 'imgs/*.jpg' \
        --output out/ --confidence-threshold 0.4 --opts MODEL.WEIGHTS model_final.pth

--input takes image files, globs and folders; --video-input a video file.
--tta runs the model with test-time augmentation (TEST.AUG.MIN_SIZES / MAX_SIZE / FLIP / MERGE ...,
d2ext.modeling.DetectorWithTTA), each view resized from the original image.
--confidence-threshold sets the meta-architecture's own test threshold key
(d2ext.config.method_keys) and also drops final scores below it: ATSS-style scores
(sqrt(class probability x centerness)) can be lower than the class probability thresholded.
"""

import argparse
import glob
import json
import os
import time

import cv2
import torch
import tqdm
from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.data.detection_utils import read_image
from detectron2.utils.logger import setup_logger
from detectron2.utils.visualizer import Visualizer

import d2ext  # noqa: F401  (registers d2ext's models and datasets)
from d2ext.config import score_thresh_key
from d2ext.data.registration import add_dataset_arguments
from d2ext.engine import Predictor
from d2ext.errors import ConfigError, DataError
from d2ext.modeling import wrap_predictor_with_tta
from d2ext.tools.cli import add_config_arguments, command, config_from_args
from d2ext.utils.progress import progress_options

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def get_parser():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_arguments(parser)
    parser.add_argument("--input", nargs="+", help="image files, globs ('dir/*.jpg') or folders")
    parser.add_argument("--video-input", help="a video file")
    parser.add_argument(
        "--output", help="folder for the drawn images / video (default: show nothing, print only)"
    )
    parser.add_argument("--confidence-threshold", type=float, default=0.5)
    parser.add_argument(
        "--save-json", action="store_true", help="also write <output>/predictions.json"
    )
    parser.add_argument(
        "--tta",
        action="store_true",
        help="test-time augmentation: the views of TEST.AUG.MIN_SIZES (x flip when "
        "TEST.AUG.FLIP), merged by TEST.AUG.MERGE",
    )
    add_dataset_arguments(parser, train=False)  # --test-dataset: the class names drawn
    parser.add_argument(
        "--opts", default=[], nargs=argparse.REMAINDER, help="config overrides KEY VALUE ..."
    )
    return parser


def setup_cfg(args):
    if not 0.0 <= args.confidence_threshold <= 1.0:
        raise ConfigError(
            f"--confidence-threshold must be in [0, 1], got {args.confidence_threshold}"
        )
    cfg = config_from_args(args)
    if not isinstance(cfg, CfgNode):
        raise ConfigError(
            f"{args.config_file}: the demo runs yaml configs (a lazy .py config was given)"
        )
    cfg.merge_from_list([score_thresh_key(cfg), args.confidence_threshold])
    if not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    return cfg


def expand_inputs(inputs):
    """Image paths from files, globs and folders (sorted per argument); raises on a path that
    matches nothing."""
    paths = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(
                p
                for p in glob.glob(os.path.join(item, "*"))
                if p.lower().endswith(IMAGE_EXTENSIONS)
            )
        else:
            found = sorted(glob.glob(os.path.expanduser(item)))
        if not found:
            raise DataError(f"--input {item!r} matches no image")
        paths += found
    return paths


class Demo:
    """A predictor and a drawer for one config."""

    def __init__(self, cfg, confidence_threshold, tta=False):
        self.cfg = cfg
        self.threshold = confidence_threshold
        self.predictor = Predictor(cfg)  # d2ext's loading and INPUT.RESIZE_BACKEND's resize
        if tta:  # the predictor's model wrapped; the views resize the original image
            wrap_predictor_with_tta(self.predictor, cfg)
        names = cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "__unused"
        self.metadata = MetadataCatalog.get(names)

    def predict(self, image_bgr):
        """The detections (Instances on the CPU) of one BGR image with score >= the threshold."""
        instances = self.predictor(image_bgr)["instances"].to("cpu")
        return instances[instances.scores >= self.threshold]

    def draw(self, image_bgr, instances):
        visualizer = Visualizer(image_bgr[:, :, ::-1], self.metadata)
        return visualizer.draw_instance_predictions(instances).get_image()[:, :, ::-1]


def as_json(path, instances):
    return {
        "file_name": path,
        "boxes": instances.pred_boxes.tensor.tolist(),
        "scores": instances.scores.tolist(),
        "classes": instances.pred_classes.tolist(),
    }


def run_images(demo, paths, output, save_json, logger):
    records = []
    for path in tqdm.tqdm(paths, disable=len(paths) == 1, **progress_options()):
        image = read_image(path, format="BGR")
        start = time.perf_counter()
        instances = demo.predict(image)
        logger.info(f"{path}: {len(instances)} detections in {time.perf_counter() - start:.3f} s")
        records.append(as_json(path, instances))
        if output:
            cv2.imwrite(os.path.join(output, os.path.basename(path)), demo.draw(image, instances))
    if save_json and output:
        with open(os.path.join(output, "predictions.json"), "w") as f:
            json.dump(records, f)
    return records


def run_video(demo, path, output, logger):
    video = cv2.VideoCapture(path)
    if not video.isOpened():
        raise DataError(f"--video-input {path!r} cannot be opened")
    fps = video.get(cv2.CAP_PROP_FPS) or 25.0
    frames = int(video.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    writer = None
    frames_iter = range(frames) if frames else iter(int, 1)
    for _ in tqdm.tqdm(frames_iter, total=frames, **progress_options()):
        ok, frame = video.read()
        if not ok:
            break
        drawn = demo.draw(frame, demo.predict(frame))
        if output:
            if writer is None:
                name = os.path.splitext(os.path.basename(path))[0] + ".mp4"
                writer = cv2.VideoWriter(
                    os.path.join(output, name),
                    cv2.VideoWriter_fourcc(*"mp4v"),
                    fps,
                    drawn.shape[1::-1],
                )
            writer.write(drawn)
    video.release()
    if writer is not None:
        writer.release()


@command
def main(argv=None):
    parser = get_parser()
    args = parser.parse_args(argv)
    logger = setup_logger(name="d2ext")
    if not args.input and not args.video_input:
        parser.error("give --input images or --video-input")
    cfg = setup_cfg(args)
    demo = Demo(cfg, args.confidence_threshold, tta=args.tta)
    if args.output:
        os.makedirs(args.output, exist_ok=True)
    if args.input:
        return run_images(demo, expand_inputs(args.input), args.output, args.save_json, logger)
    return run_video(demo, args.video_input, args.output, logger)


if __name__ == "__main__":
    main()
