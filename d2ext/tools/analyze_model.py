"""
Counts a model's FLOPs, activations or parameters, or prints its structure, as Detectron2's
tools/analyze_model.py, from a yaml or a lazy (.py) config:

    d2ext-analyze-model --tasks flop parameter -n 10 \
        --config-file configs/Synthetic/vfnet_R_18_FPN_tiny.yaml MODEL.WEIGHTS model_final.pth
    d2ext-analyze-model --tasks flop --config-file configs/Synthetic/atss_R_18_FPN_tiny.py \
        dataloader.test.dataset.names=d2ext_shapes_minival

(--tasks takes several values: put the config overrides after --config-file, not after --tasks.)

FLOPs and activations depend on the input (image size, number of proposals): they are counted
on the first --num-inputs images of the config's test loader by tracing the model (fvcore: one
multiply-add is one flop), with d2ext's handles for the ops fvcore does not know (deformable
convolution, RoIAlign, ...: d2ext/utils/flops.py); any op still not counted is listed. The
weights are MODEL.WEIGHTS (train.init_checkpoint) when set, the random initialisation otherwise:
the counts do not depend on them.
"""

import argparse
import itertools
import logging
from collections import Counter

import numpy as np
import torch
from detectron2.config import CfgNode, instantiate
from detectron2.modeling import build_model as detectron2_build_model
from detectron2.utils.logger import setup_logger
from fvcore.nn import flop_count_table, parameter_count_table

import d2ext  # noqa: F401  (registers d2ext's models and datasets)
from d2ext.checkpoint import load_weights
from d2ext.data.registration import add_dataset_arguments
from d2ext.engine import Trainer
from d2ext.errors import ConfigError, DataError
from d2ext.modeling.input_checks import check_pixel_std
from d2ext.tools.cli import add_config_arguments, command, config_from_args
from d2ext.utils.flops import activation_count_analysis, flop_count_analysis, skipped_ops

logger = logging.getLogger("d2ext")
TASKS = ("flop", "activation", "parameter", "structure")


def get_parser():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", choices=TASKS, required=True, nargs="+")
    parser.add_argument(
        "-n",
        "--num-inputs",
        type=int,
        default=100,
        help="test images to average flops / activations over (both depend on the input)",
    )
    add_config_arguments(parser)
    add_dataset_arguments(parser, train=False)  # --test-dataset: the images counted on
    parser.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        help="config overrides (KEY VALUE ... for yaml, key=value for .py)",
    )
    return parser


# -- a yaml or lazy config's model, weights and test loader (shared with d2ext.tools.benchmark) --
def setup_cfg(args):
    """The config of ``args``, on the CPU when CUDA is missing; a yaml config frozen."""
    cfg = config_from_args(args)
    cuda = torch.cuda.is_available()
    if isinstance(cfg, CfgNode):
        if not cuda:
            cfg.MODEL.DEVICE = "cpu"
        cfg.freeze()
    elif not cuda and "train" in cfg:
        cfg.train.device = "cpu"
    return cfg


def build_model(cfg):
    """The config's model on its device (a yaml one checked as d2ext's Trainer checks it, without
    logging the whole model)."""
    if isinstance(cfg, CfgNode):
        check_pixel_std(cfg.MODEL.PIXEL_STD)
        return detectron2_build_model(cfg)
    return instantiate(cfg.model).to(cfg.train.device)


def weights_of(cfg):
    """(weights file, the key it came from): MODEL.WEIGHTS or train.init_checkpoint."""
    if isinstance(cfg, CfgNode):
        return cfg.MODEL.WEIGHTS, "MODEL.WEIGHTS"
    return cfg.train.get("init_checkpoint", ""), "train.init_checkpoint"


def load_model_weights(model, cfg):
    """The config's weights through load_weights, or (empty) the model's random initialisation,
    which load_weights logs."""
    weights, key = weights_of(cfg)
    return load_weights(model, weights, key=key, allow_random_init=True)


def first_test_dataset(cfg) -> str:
    if isinstance(cfg, CfgNode):
        names = cfg.DATASETS.TEST
    else:
        names = cfg.dataloader.test.dataset.names
        names = [names] if isinstance(names, str) else names
    if not names:
        raise ConfigError(
            "no test dataset to run the model on: set DATASETS.TEST or --test-dataset"
        )
    return names[0]


def build_test_loader(cfg, num_workers=0):
    """The config's test loader (its first test dataset, batch size 1), with ``num_workers``."""
    name = first_test_dataset(cfg)
    if isinstance(cfg, CfgNode):
        cfg = cfg.clone()
        cfg.defrost()
        cfg.DATALOADER.NUM_WORKERS = num_workers
        return Trainer.build_test_loader(cfg, name)  # d2ext's test mapper
    cfg.dataloader.test.num_workers = num_workers
    return instantiate(cfg.dataloader.test)


def model_and_inputs(cfg, num_inputs):
    """The model (eval mode, weights loaded) and the first ``num_inputs`` test batches."""
    loader = build_test_loader(cfg)  # first: a config without a test dataset fails early
    model = load_model_weights(build_model(cfg), cfg).eval()
    inputs = list(itertools.islice(loader, num_inputs))
    if not inputs:
        raise DataError(f"test dataset {first_test_dataset(cfg)!r} has no images")
    return model, inputs


# -- the tasks ------------------------------------------------------------------------------------
def image_size(batch) -> str:
    return "x".join(str(s) for s in batch[0]["image"].shape[-2:])


def do_flop(cfg, args):
    model, inputs = model_and_inputs(cfg, args.num_inputs)
    by_operator, totals, skipped = Counter(), [], Counter()
    with torch.no_grad():
        for i, batch in enumerate(inputs):
            # Skipped ops are reported below; fvcore's note on modules never called, once.
            flops = flop_count_analysis(model, batch).unsupported_ops_warnings(False)
            flops.uncalled_modules_warnings(i == 0)
            by_operator += flops.by_operator()
            totals.append(flops.total())
            skipped += skipped_ops(flops)
            if i == 0:
                table = flop_count_table(flops)
    n = len(totals)
    print(f"FLOPs per module of the first input ({image_size(inputs[0])}):\n{table}")
    print(
        f"Average GFLOPs per operator over {n} input(s): "
        + ", ".join(f"{op}: {v / n / 1e9:.4f}" for op, v in by_operator.most_common())
    )
    print(f"Total GFLOPs: {np.mean(totals) / 1e9:.4f}±{np.std(totals) / 1e9:.4f} over {n} input(s)")
    report_skipped(skipped, n)
    return {
        "total": float(np.mean(totals)),
        "by_operator": {k: v / n for k, v in by_operator.items()},
        "skipped": dict(skipped),
        "table": table,
    }


def report_skipped(skipped, n):
    if skipped:
        print(
            f"Not counted (skipped) ops, occurrences over {n} input(s): "
            + ", ".join(f"{op}: {count}" for op, count in skipped.most_common())
        )
    else:
        print("Every op met was counted or does no multiply-adds (d2ext/utils/flops.py).")


def do_activation(cfg, args):
    model, inputs = model_and_inputs(cfg, args.num_inputs)
    by_operator, totals = Counter(), []
    with torch.no_grad():
        for batch in inputs:
            activations = activation_count_analysis(model, batch)
            by_operator += activations.by_operator()
            totals.append(activations.total())
    n = len(totals)
    print(
        f"Average (million) activations per operator over {n} input(s): "
        + ", ".join(f"{op}: {v / n / 1e6:.4f}" for op, v in by_operator.most_common())
    )
    print(f"Total (million) activations: {np.mean(totals) / 1e6:.4f}±{np.std(totals) / 1e6:.4f}")
    return {
        "total": float(np.mean(totals)),
        "by_operator": {k: v / n for k, v in by_operator.items()},
    }


def do_parameter(cfg, args):
    model = build_model(cfg)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print("Parameter count:\n" + parameter_count_table(model, max_depth=5))
    print(f"Parameters: {total} ({trainable} trainable)")
    return {"total": total, "trainable": trainable}


def do_structure(cfg, args):
    model = build_model(cfg)
    print("Model structure:\n" + str(model))
    return {"structure": str(model)}


@command
def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logger(name="d2ext")
    setup_logger(name="fvcore")
    if args.num_inputs < 1:
        raise ConfigError(f"--num-inputs must be >= 1, got {args.num_inputs}")
    cfg = setup_cfg(args)
    run = {
        "flop": do_flop,
        "activation": do_activation,
        "parameter": do_parameter,
        "structure": do_structure,
    }
    return {task: run[task](cfg, args) for task in args.tasks}


if __name__ == "__main__":
    main()
