"""
Trains or evaluates a d2ext (or any Detectron2) model, from a yaml or a lazy (.py) config. The one
implementation behind ``tools/train_net.py`` (a checkout), ``d2ext-train`` and
``python -m d2ext.tools.train_net`` (an installed package):

    d2ext-train --config-file configs/Synthetic/atss_R_18_FPN_tiny.yaml
    python -m d2ext.tools.train_net --config-file ... --eval-only MODEL.WEIGHTS model_final.pth

Without GPUs, --num-gpus N runs N processes on the CPU (gloo). Yaml configs load with safe yaml
(--allow-unsafe-yaml lets a trusted file's python tags run); weights through d2ext's Checkpointer.
Your own data without code (the class count is then set from the training set's classes):

    d2ext-train --config-file configs/Synthetic/gfl_R_18_FPN_tiny.yaml \
        --coco-dataset mine_train train.json images/train --coco-dataset mine_val val.json images/val \
        --train-dataset mine_train --test-dataset mine_val OUTPUT_DIR output/mine
"""

from detectron2.engine import default_argument_parser, launch
from detectron2.evaluation import verify_results
from detectron2.utils import comm

import d2ext  # noqa: F401  (registers d2ext's models and datasets)
from d2ext.checkpoint import Checkpointer, load_weights
from d2ext.config import is_lazy_config
from d2ext.data.registration import add_dataset_arguments
from d2ext.engine import Trainer, do_train, evaluate_lazy, setup
from d2ext.tools.cli import add_safety_arguments, command


def evaluate(args, cfg):
    """Evaluates MODEL.WEIGHTS, or with --resume the last checkpoint of OUTPUT_DIR."""
    model = Trainer.build_model(cfg)
    checkpointer = Checkpointer(model, save_dir=cfg.OUTPUT_DIR)
    if args.resume and checkpointer.has_checkpoint():
        checkpointer.load(checkpointer.get_checkpoint_file())
    else:  # empty MODEL.WEIGHTS is an error: Detectron2 would score the random initialisation
        load_weights(model, cfg.MODEL.WEIGHTS)
    results = Trainer.test(cfg, model)
    if cfg.TEST.AUG.ENABLED:  # as Detectron2's train_net: both results, the TTA keys "<key>_TTA"
        results.update(Trainer.test_with_TTA(cfg, model))
    if comm.is_main_process():
        verify_results(cfg, results)
    return results


def run(args):
    cfg = setup(args)
    if is_lazy_config(args.config_file):
        return evaluate_lazy(args, cfg) if args.eval_only else do_train(args, cfg)
    if args.eval_only:
        return evaluate(args, cfg)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def get_parser():
    return add_dataset_arguments(add_safety_arguments(default_argument_parser()))


@command
def main(argv=None):
    args = get_parser().parse_args(argv)
    print("Command Line Args:", args)
    # launch() passes args to every process it starts: the opt-ins travel with them.
    return launch(
        run,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    main()
