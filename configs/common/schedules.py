# The schedules of the ATSS-family papers: step decay with a *constant* warmup (1/3 for 500
# iterations), not Detectron2's linear 1000-iteration one.
from detectron2.config import LazyCall as L
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler


def step_schedule(max_iter, milestones, warmup_iters=500, warmup_factor=1.0 / 3):
    return L(WarmupParamScheduler)(
        scheduler=L(MultiStepParamScheduler)(
            values=[1.0, 0.1, 0.01], milestones=list(milestones), num_updates=max_iter
        ),
        warmup_length=warmup_iters / max_iter,
        warmup_method="constant",
        warmup_factor=warmup_factor,
    )


# COCO 1x: 90k iterations at batch 16, x0.1 at 60k and 80k.
lr_multiplier_1x = step_schedule(90000, [60000, 80000])
