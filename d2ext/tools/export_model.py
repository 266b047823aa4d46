"""
Exports a d2ext (or Detectron2) model to TorchScript or ONNX, as Detectron2's
tools/deploy/export_model.py:

    d2ext-export --config-file configs/Synthetic/atss_R_18_FPN_tiny.yaml --format onnx \
        --export-method tracing --sample-image img.png --output out/ MODEL.WEIGHTS model_final.pth

Tracing exports one graph (post-processing included) from a (3, H, W) float image in the
config's INPUT.FORMAT, resized to the test size (INPUT.RESIZE_BACKEND), to pred_boxes, pred_classes, scores,
image_size; every image size works (ONNX: dynamic height and width, opset 19). Scripting
(TorchScript only) returns per-image field dicts, finished by d2ext.export.postprocess_scripted.
"""

import argparse
import os

import torch
from detectron2.config import CfgNode
from detectron2.data import build_detection_test_loader, detection_utils
from detectron2.modeling import build_model
from detectron2.utils.logger import setup_logger

import d2ext  # noqa: F401  (registers d2ext's models and datasets)
from d2ext.checkpoint import load_weights
from d2ext.data import build_augmentation, build_test_mapper
from d2ext.data.registration import add_dataset_arguments
from d2ext.errors import ConfigError, DataError
from d2ext.export import ONNX_OPSET, export_onnx, export_scripting, export_torchscript_tracing
from d2ext.tools.cli import add_config_arguments, command, config_from_args


def get_parser():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--format", choices=["torchscript", "onnx"], default="torchscript")
    parser.add_argument("--export-method", choices=["tracing", "scripting"], default="tracing")
    add_config_arguments(parser)
    parser.add_argument(
        "--sample-image", help="image to trace with (default: the first test image)"
    )
    parser.add_argument("--output", required=True, help="output directory")
    parser.add_argument("--opset", type=int, default=ONNX_OPSET, help="ONNX opset (>= 17)")
    add_dataset_arguments(parser, train=False)  # --test-dataset: the default sample image's
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides (KEY VALUE ...)")
    return parser


def setup_cfg(args):
    cfg = config_from_args(args)
    if not isinstance(cfg, CfgNode):
        raise ConfigError(
            f"{args.config_file}: export takes yaml configs (a lazy .py config was given)"
        )
    cfg.DATALOADER.NUM_WORKERS = 0
    if not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    return cfg


def sample_image(cfg, path=None) -> torch.Tensor:
    """(3, H, W) float image preprocessed as the test mapper does (shortest-edge resize of
    INPUT.RESIZE_BACKEND)."""
    if path is None:
        loader = build_detection_test_loader(
            cfg, cfg.DATASETS.TEST[0], mapper=build_test_mapper(cfg)
        )
        batch = next(iter(loader))
        return batch[0]["image"].float()
    if not os.path.isfile(path):
        raise DataError(f"--sample-image {path!r} does not exist")
    image = detection_utils.read_image(path, format=cfg.INPUT.FORMAT)
    aug = build_augmentation(cfg, is_train=False)[0]  # the test resize of INPUT.RESIZE_BACKEND
    image = aug.get_transform(image).apply_image(image)
    return torch.as_tensor(image.astype("float32").transpose(2, 0, 1))


@command
def main(argv=None):
    parser = get_parser()
    args = parser.parse_args(argv)
    logger = setup_logger(name="d2ext")
    if args.export_method == "scripting" and args.format != "torchscript":
        parser.error(
            f"--export-method scripting exports to torchscript only, not --format {args.format}"
        )
    cfg = setup_cfg(args)
    os.makedirs(args.output, exist_ok=True)
    model = build_model(cfg)
    load_weights(model, cfg.MODEL.WEIGHTS)  # an empty MODEL.WEIGHTS is an error, not a random model
    model.eval()

    if args.export_method == "scripting":
        path = os.path.join(args.output, "model.ts")
        export_scripting(model, path)
    else:
        image = sample_image(cfg, args.sample_image).to(cfg.MODEL.DEVICE)
        if args.format == "onnx":
            path = os.path.join(args.output, "model.onnx")
            names = export_onnx(model, image, path, opset=args.opset)
            logger.info(f"ONNX input: image (3, height, width); outputs: {', '.join(names)}")
        else:
            path = os.path.join(args.output, "model.ts")
            torch.jit.save(export_torchscript_tracing(model, image), path)
    logger.info(f"Exported {cfg.MODEL.META_ARCHITECTURE} ({args.export_method}) to {path}")
    return path


if __name__ == "__main__":
    main()
