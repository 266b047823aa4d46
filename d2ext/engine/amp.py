"""Mixed-precision training on the model's device: float16 + GradScaler on CUDA, bfloat16 (no
scaler: its exponent range is float32's) on the CPU, where Detectron2's AMPTrainer refuses to run
(it asserts CUDA)."""

import logging
import time

import torch
from detectron2.engine import AMPTrainer as _D2AMPTrainer
from detectron2.utils.events import get_event_storage

logger = logging.getLogger(__name__)

# The autocast dtype per device type.
PRECISION = {"cuda": torch.float16, "cpu": torch.bfloat16}


def model_device_type(model: torch.nn.Module) -> str:
    """ "cuda" or "cpu": the device type of the model's (first) parameter."""
    param = next(model.parameters(), None)
    return param.device.type if param is not None else "cpu"


class AMPTrainer(_D2AMPTrainer):
    """
    Detectron2's AMPTrainer (its GradScaler state goes into checkpoints through state_dict) with
    ``torch.autocast`` on the model's device instead of the CUDA-only one. A checkpoint without
    (or with an empty, CPU) GradScaler state resumes with a fresh scaler.
    """

    def __init__(self, model, data_loader, optimizer, **kwargs):
        device_type = model_device_type(model)
        if device_type not in PRECISION:
            raise ValueError(
                f"SOLVER.AMP.ENABLED: mixed precision runs on {sorted(PRECISION)}, not {device_type!r}"
            )
        precision = PRECISION[device_type]
        # A scaler only for float16; a disabled one passes the loss and optimizer.step through.
        kwargs.setdefault(
            "grad_scaler", torch.amp.GradScaler(device_type, enabled=precision == torch.float16)
        )
        super().__init__(model, data_loader, optimizer, precision=precision, **kwargs)
        self.device_type = device_type
        logger.info(
            f"Mixed precision: {precision} autocast on {device_type}"
            + (" with a GradScaler" if self.grad_scaler.is_enabled() else "")
        )

    def run_step(self):
        # Detectron2's AMPTrainer.run_step, with torch.autocast(self.device_type).
        assert self.model.training, "[AMPTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start

        if self.zero_grad_before_forward:
            self.optimizer.zero_grad()
        with torch.autocast(device_type=self.device_type, dtype=self.precision):
            loss_dict = self.model(data)
            if isinstance(loss_dict, torch.Tensor):
                losses = loss_dict
                loss_dict = {"total_loss": loss_dict}
            else:
                losses = sum(loss_dict.values())

        if not self.zero_grad_before_forward:
            self.optimizer.zero_grad()

        self.grad_scaler.scale(losses).backward()

        if self.log_grad_scaler:
            get_event_storage().put_scalar("[metric]grad_scaler", self.grad_scaler.get_scale())

        self.after_backward()

        if self.async_write_metrics:
            self.concurrent_executor.submit(
                self._write_metrics, loss_dict, data_time, iter=self.iter
            )
        else:
            self._write_metrics(loss_dict, data_time)

        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()

    def load_state_dict(self, state_dict):
        scaler_state = state_dict.get("grad_scaler") or {}
        if self.grad_scaler.is_enabled() and not scaler_state:
            # From a float32 run or a bfloat16 (CPU) one: nothing to restore.
            logger.warning("The checkpoint has no GradScaler state: starting with a fresh scaler")
            super(_D2AMPTrainer, self).load_state_dict(state_dict)
            return
        super().load_state_dict({**state_dict, "grad_scaler": scaler_state})
