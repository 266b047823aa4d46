#!/usr/bin/env python
"""
Converts an mmdetection (2.x / 3.x) checkpoint to a d2ext (Detectron2-format) checkpoint for the
model a config builds. Not needed to use one (MODEL.WEIGHTS loads mmdetection files directly,
converting on load); useful to inspect or ship the converted file.

    python tools/convert_mmdet_checkpoint.py atss_r50_fpn_1x_coco_20200209-985f7bd0.pth \\
        atss_r50_fpn_1x_coco_d2ext.pth --config-file configs/MMDet/atss_r50_fpn_1x_coco.yaml

Every file key is mapped or reported by name; a model key the file cannot fill is an error.
"""
import argparse
import logging
import sys

import torch

import d2ext  # noqa: F401  (registers d2ext's models)
from d2ext.checkpoint import convert_mmdet_checkpoint, is_mmdet_checkpoint
from d2ext.checkpoint.weights_only import load_weights_only


def build(config_file, opts):
    if config_file.endswith(".py"):
        from detectron2.config import LazyConfig, instantiate

        cfg = LazyConfig.apply_overrides(LazyConfig.load(config_file), opts)
        return instantiate(cfg.model)
    from d2ext.config import get_cfg
    from detectron2.modeling import build_model

    cfg = get_cfg()
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts) + ["MODEL.DEVICE", "cpu"])
    return build_model(cfg)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help="mmdetection checkpoint (.pth)")
    parser.add_argument("output", help="d2ext checkpoint to write (.pth)")
    parser.add_argument("--config-file", required=True, help="d2ext config of the model (yaml or .py)")
    parser.add_argument("opts", nargs="*", help="config overrides, KEY VALUE ...")
    args = parser.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    loaded = load_weights_only(args.input)  # weights-only; mmengine metadata as placeholders
    if not is_mmdet_checkpoint(loaded):
        sys.exit(f"{args.input} is not an mmdetection checkpoint (no 'state_dict' with backbone./neck./"
                 f"bbox_head./rpn_head./roi_head. keys)")
    model = build(args.config_file, args.opts)
    converted = convert_mmdet_checkpoint(loaded, model.state_dict(), source_name=args.input)
    model.load_state_dict(converted, strict=True)  # every model key filled, no extra key
    torch.save({"model": converted, "__author__": f"mmdetection, converted by d2ext from {args.input}"},
               args.output)
    print(f"wrote {args.output}: {len(converted)} tensors")


if __name__ == "__main__":
    main()
