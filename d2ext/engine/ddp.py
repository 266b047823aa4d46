from detectron2.engine import defaults as _d2_defaults
from detectron2.utils import comm

_d2_create_ddp_model = _d2_defaults.create_ddp_model


def create_ddp_model(model, *, fp16_compression=False, **kwargs):
    """
    Detectron2's create_ddp_model, made to work for CPU models: DistributedDataParallel refuses
    device_ids for a CPU module, which Detectron2 always passes. With this, `--num-gpus N` on a
    machine without GPUs trains N gloo processes on the CPU.
    """
    if comm.get_world_size() > 1 and next(model.parameters()).device.type == "cpu":
        kwargs.setdefault("device_ids", None)
    return _d2_create_ddp_model(model, fp16_compression=fp16_compression, **kwargs)


# DefaultTrainer.__init__ calls the module-level name; route it through the CPU-aware version.
_d2_defaults.create_ddp_model = create_ddp_model
