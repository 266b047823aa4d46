#!/usr/bin/env python
"""
Trains or evaluates a d2ext (or any Detectron2) model, from a yaml or a lazy (.py) config.

    python tools/train_net.py --config-file configs/ATSS/atss_R_50_FPN_1x.yaml --num-gpus 8
    python tools/train_net.py --config-file configs/ATSS/atss_R_50_FPN_1x.yaml --eval-only \
        MODEL.WEIGHTS output/atss_R_50_FPN_1x/model_final.pth
    python tools/train_net.py --config-file configs/ATSS/atss_R_50_FPN_1x.py train.max_iter=100
    python tools/train_net.py --config-file configs/MMDet/atss_r50_fpn_1x_coco.yaml --eval-only \
        MODEL.WEIGHTS atss_r50_fpn_1x_coco_20200209-985f7bd0.pth   # an mmdetection checkpoint

Without GPUs, --num-gpus N runs N processes on the CPU (gloo).
"""
from detectron2.engine import default_argument_parser, launch
from detectron2.evaluation import verify_results
from detectron2.utils import comm

import d2ext  # noqa: F401  (registers d2ext's models and datasets)
from d2ext.checkpoint import Checkpointer
from d2ext.engine import Trainer, do_train, evaluate_lazy, setup_lazy, setup_yaml


def main(args):
    if args.config_file.endswith(".py"):
        cfg = setup_lazy(args)
        return evaluate_lazy(args, cfg) if args.eval_only else do_train(args, cfg)

    cfg = setup_yaml(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        Checkpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        results = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, results)
        return results
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
