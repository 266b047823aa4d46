"""
Trains or evaluates a d2ext (or any Detectron2) model, from a yaml or a lazy (.py) config. The one
implementation behind ``tools/train_net.py`` (a checkout), ``d2ext-train`` and
``python -m d2ext.tools.train_net`` (an installed package):

    d2ext-train --config-file configs/Synthetic/atss_R_18_FPN_tiny.yaml
    python -m d2ext.tools.train_net --config-file ... --eval-only MODEL.WEIGHTS model_final.pth

Without GPUs, --num-gpus N runs N processes on the CPU (gloo). Yaml configs load with safe yaml:
--allow-unsafe-yaml (or D2EXT_ALLOW_UNSAFE_YAML=1) lets a trusted file's python tags run.
"""
import os

from detectron2.engine import default_argument_parser, launch
from detectron2.evaluation import verify_results
from detectron2.utils import comm

import d2ext  # noqa: F401  (registers d2ext's models and datasets)
from d2ext.checkpoint import Checkpointer
from d2ext.config import ALLOW_UNSAFE_YAML_ENV
from d2ext.engine import Trainer, do_train, evaluate_lazy, setup_lazy, setup_yaml


def run(args):
    if args.config_file.endswith(".py"):
        cfg = setup_lazy(args)
        return evaluate_lazy(args, cfg) if args.eval_only else do_train(args, cfg)

    cfg = setup_yaml(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        checkpointer = Checkpointer(model, save_dir=cfg.OUTPUT_DIR)
        if not cfg.MODEL.WEIGHTS and not (args.resume and checkpointer.has_checkpoint()):
            # Detectron2 would evaluate the randomly initialised model.
            raise FileNotFoundError(
                "--eval-only has no weights to evaluate: MODEL.WEIGHTS is empty"
                + (f" and OUTPUT_DIR={cfg.OUTPUT_DIR!r} has no last_checkpoint" if args.resume else "")
            )
        checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        results = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, results)
        return results
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def main(argv=None):
    parser = default_argument_parser()
    parser.add_argument(
        "--allow-unsafe-yaml", action="store_true",
        help="load yaml configs with python tags (yaml.unsafe_load: the file can run code)",
    )
    args = parser.parse_args(argv)
    if args.allow_unsafe_yaml:
        os.environ[ALLOW_UNSAFE_YAML_ENV] = "1"  # inherited by the processes launch() starts
    print("Command Line Args:", args)
    launch(
        run,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    main()
