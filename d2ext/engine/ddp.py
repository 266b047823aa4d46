from detectron2.engine.defaults import create_ddp_model as _d2_create_ddp_model
from detectron2.utils import comm


def create_ddp_model(model, *, fp16_compression=False, **kwargs):
    """
    Detectron2's create_ddp_model, made to work for CPU models: DistributedDataParallel refuses
    device_ids for a CPU module, which Detectron2 always passes. With this, `--num-gpus N` on a
    machine without GPUs trains N gloo processes on the CPU. d2ext's Trainer and lazy training
    call it; Detectron2's own create_ddp_model is left unchanged.
    """
    if comm.get_world_size() > 1 and next(model.parameters()).device.type == "cpu":
        kwargs.setdefault("device_ids", None)
    return _d2_create_ddp_model(model, fp16_compression=fp16_compression, **kwargs)
