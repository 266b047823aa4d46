from detectron2.config import CfgNode as CN

# Cycles between evaluations of the average (SOLVER.SWA.EVAL_PERIOD; train.swa.eval_period
# when a lazy config leaves it out).
SWA_EVAL_PERIOD = 1


def add_swa_config(cfg):
    """
    Adds SOLVER.SWA: Stochastic Weight Averaging after the main schedule ("SWA Object
    Detection", Zhang et al. 2020; the official mmdetection 2 code's configs/_base_/swa.py and
    SWAHook), for every method (d2ext/engine/swa.py). Lazy configs set the same values,
    lower-case, in ``train.swa`` (configs/VFNet/vfnet_R_50_FPN_1x_swa.py).

    With ENABLED, training runs SOLVER.MAX_ITER iterations of the main schedule (unchanged:
    SOLVER.STEPS, warmup etc. are relative to it), then NUM_CYCLES x CYCLE_ITERS more at the SWA
    learning rate; the model's weights are averaged at the end of each cycle. The average is
    written to OUTPUT_DIR/model_swa.pth after each cycle, kept in the training checkpoints (so
    --resume in the middle of SWA continues the same average) and evaluated on DATASETS.TEST
    every EVAL_PERIOD cycles and at the end (results in OUTPUT_DIR/inference_swa, metrics
    "swa/<task>/<metric>" at the iteration of each evaluation). The
    checkpoints (model_final.pth included) hold the trained, not the averaged, weights.

    SWA starts from the model at the end of the main schedule (the recipe's swa_load_from
    "best_bbox_mAP.pth", for a step 1x schedule the last epoch's). To add SWA to a finished run,
    --resume it in its OUTPUT_DIR with ENABLED True and the same SOLVER.MAX_ITER.
    """
    cfg.SOLVER.SWA = CN()
    cfg.SOLVER.SWA.ENABLED = False
    # Cycles after the main schedule, one average each: the recipe's 12 SWA epochs
    # (swa_runner max_epochs=12, cyclic_times=12, swa_interval=1).
    cfg.SOLVER.SWA.NUM_CYCLES = 12
    # Iterations per cycle: one epoch in the recipe. COCO train2017 (118k images) at batch 16
    # is ~7330 iterations; scale it with SOLVER.IMS_PER_BATCH and the dataset.
    cfg.SOLVER.SWA.CYCLE_ITERS = 7330
    # The SWA learning rate, as a factor of each parameter group's base LR (SOLVER.BASE_LR, x
    # SOLVER.BIAS_LR_FACTOR for biases ...): the recipe's swa_optimizer has the main optimizer's
    # LR (0.01 for VFNet, 0.02 for Faster / Mask R-CNN), i.e. 1.0.
    cfg.SOLVER.SWA.LR_FACTOR = 1.0
    # "cyclic": within each cycle the LR goes from LR_FACTOR x base LR down to
    # MIN_LR_RATIO x that, cosine-annealed, and jumps back at the next cycle: the recipe's
    # swa_lr_config (mmcv's "cyclic" policy with target_ratio=(1, 0.01), step_ratio_up=0.0: no
    # rising phase, no warmup). "constant": LR_FACTOR x base LR throughout.
    cfg.SOLVER.SWA.LR_SCHEDULE = "cyclic"
    cfg.SOLVER.SWA.MIN_LR_RATIO = 0.01
    # Clear the optimizer's state (SGD momentum) when SWA starts: the recipe trains the SWA
    # epochs with a newly built optimizer. False: the momentum carries over.
    cfg.SOLVER.SWA.RESET_OPTIMIZER = True
    # Evaluate the average every EVAL_PERIOD cycles, as it stands then (the recipe's SWAHook
    # evaluates it after every SWA epoch: 1); the final average is always evaluated. 0: only
    # the final average. Lazy configs may leave train.swa.eval_period out (then 1).
    cfg.SOLVER.SWA.EVAL_PERIOD = SWA_EVAL_PERIOD
