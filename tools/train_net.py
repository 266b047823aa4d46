#!/usr/bin/env python
"""
Trains or evaluates a d2ext (or any Detectron2) model, from a yaml or a lazy (.py) config.

    python tools/train_net.py --config-file configs/ATSS/atss_R_50_FPN_1x.yaml --num-gpus 8
    python tools/train_net.py --config-file configs/ATSS/atss_R_50_FPN_1x.yaml --eval-only \
        MODEL.WEIGHTS output/atss_R_50_FPN_1x/model_final.pth
    python tools/train_net.py --config-file configs/ATSS/atss_R_50_FPN_1x.py train.max_iter=100
    python tools/train_net.py --config-file configs/MMDet/atss_r50_fpn_1x_coco.yaml --eval-only \
        MODEL.WEIGHTS atss_r50_fpn_1x_coco_20200209-985f7bd0.pth   # an mmdetection checkpoint

Without GPUs, --num-gpus N runs N processes on the CPU (gloo). Yaml configs load with safe yaml:
--allow-unsafe-yaml (or D2EXT_ALLOW_UNSAFE_YAML=1) lets a trusted file's python tags run.
The implementation is d2ext/tools/train_net.py (installed: d2ext-train).
"""
import os

# Before torch loads: idle OpenMP threads spin 10k rounds, then sleep. libgomp's default spin made a
# step ~3-5x slower next to one busy process, PASSIVE ~19% slower idle (README "Threads").
# A user's OMP_WAIT_POLICY or GOMP_SPINCOUNT wins.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")

from d2ext.tools.train_net import main  # noqa: E402

if __name__ == "__main__":
    main()
