"""
Trains or evaluates a d2ext (or Detectron2) model for installed packages, with the arguments of
tools/train_net.py (Detectron2's default_argument_parser):

    d2ext-train --config-file configs/Synthetic/atss_R_18_FPN_tiny.yaml
    python -m d2ext.tools.train_net --config-file ... --eval-only MODEL.WEIGHTS model_final.pth
"""
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import default_argument_parser, launch
from detectron2.evaluation import verify_results
from detectron2.utils import comm

import d2ext  # noqa: F401  (registers d2ext's models and datasets)
from d2ext.engine import Trainer, do_train, evaluate_lazy, setup_lazy, setup_yaml


def run(args):
    if args.config_file.endswith(".py"):
        cfg = setup_lazy(args)
        return evaluate_lazy(args, cfg) if args.eval_only else do_train(args, cfg)
    cfg = setup_yaml(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        results = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, results)
        return results
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def main(argv=None):
    args = default_argument_parser().parse_args(argv)
    print("Command Line Args:", args)
    launch(run, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))


if __name__ == "__main__":
    main()
