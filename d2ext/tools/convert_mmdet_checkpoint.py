"""
Converts an mmdetection (2.x / 3.x) checkpoint to a d2ext (Detectron2-format) checkpoint for the
model a config builds. Not needed to use one (MODEL.WEIGHTS loads mmdetection files directly,
converting on load); useful to inspect or ship the converted file.

    d2ext-convert-mmdet-checkpoint atss_r50_fpn_1x_coco_20200209-985f7bd0.pth \\
        atss_r50_fpn_1x_coco_d2ext.pth --config-file configs/MMDet/atss_r50_fpn_1x_coco.yaml

Every file key is mapped or reported by name; a model key the file cannot fill is an error.
"""

import argparse
import logging

import torch
from detectron2.config import CfgNode, instantiate
from detectron2.modeling import build_model

import d2ext  # noqa: F401  (registers d2ext's models)
from d2ext.checkpoint import convert_mmdet_checkpoint, is_mmdet_checkpoint
from d2ext.checkpoint.weights_only import load_weights_only
from d2ext.config import load_config
from d2ext.errors import InvalidCheckpointError
from d2ext.tools.cli import add_config_arguments, command


def build(args):
    """The model of --config-file with its overrides, on the CPU."""
    cfg = load_config(args.config_file, args.opts, allow_unsafe_yaml=args.allow_unsafe_yaml)
    if isinstance(cfg, CfgNode):
        cfg.MODEL.DEVICE = "cpu"
        return build_model(cfg)
    return instantiate(cfg.model)


def get_parser():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("input", help="mmdetection checkpoint (.pth)")
    parser.add_argument("output", help="d2ext checkpoint to write (.pth)")
    add_config_arguments(parser)
    parser.add_argument("opts", nargs="*", help="config overrides, KEY VALUE ...")
    return parser


@command
def main(argv=None):
    args = get_parser().parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:  # weights-only; mmengine metadata as inert placeholders
        loaded = load_weights_only(args.input)
    except OSError:
        raise
    except Exception as e:
        raise InvalidCheckpointError(
            f"{args.input} is not a valid checkpoint ({type(e).__name__}: {e})"
        ) from None
    if not is_mmdet_checkpoint(loaded):
        raise InvalidCheckpointError(
            f"{args.input} is not an mmdetection checkpoint (no 'state_dict' with backbone./neck./"
            "bbox_head./rpn_head./roi_head. keys)"
        )
    model = build(args)
    converted = convert_mmdet_checkpoint(loaded, model.state_dict(), source_name=args.input)
    model.load_state_dict(converted, strict=True)  # every model key filled, no extra key
    torch.save(
        {"model": converted, "__author__": f"mmdetection, converted by d2ext from {args.input}"},
        args.output,
    )
    print(f"wrote {args.output}: {len(converted)} tensors")
    return args.output


if __name__ == "__main__":
    main()
