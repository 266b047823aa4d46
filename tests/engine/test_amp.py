"""Mixed precision (SOLVER.AMP.ENABLED): one autocast training step per method against the
float32 step (CPU: bfloat16; CUDA, marked: float16), d2ext's AMPTrainer (dtype per device,
GradScaler state in checkpoints) and an AMP tools/train_net.py run of a tiny config."""

import os

import pytest
import torch
from conftest import CONFIGS, CUDA, build_tiny_model, make_inputs
from detectron2.utils.events import EventStorage
from engine.test_train_net import FAST, run

METHODS = [
    "atss",
    "dynamic_atss",
    "gfl",
    "gflv2",
    "vfnet",
    "atss_vfl",
    "musu",
    "aploss_retinanet",
    "libra_faster_rcnn",
]
BOXES = [[[10, 12, 50, 60], [60, 20, 110, 80]], [[30, 30, 90, 70]]]
# |loss_amp - loss_fp32| <= ATOL + RTOL * |loss_fp32| per loss. Measured on the CPU (bfloat16,
# this step): at most 0.58% relative (VFNet loss_cls; DynamicATSS loss_cls 0.2%, the others
# <= 0.13%) and 2e-5 absolute on Libra's near-zero (3e-5) R-CNN box loss. bfloat16 keeps 8
# mantissa bits (0.39% per rounding): 2% leaves ~3x the largest difference seen.
RTOL, ATOL = 0.02, 1e-4
AMP_DTYPE = {"cpu": torch.bfloat16, "cuda": torch.float16}


def tiny(method, ext="yaml"):
    return os.path.join(CONFIGS, "Synthetic", f"{method}_R_18_FPN_tiny.{ext}")


def training_step(method, device, amp):
    model = build_tiny_model(tiny(method), "MODEL.DEVICE", device)
    model.train()
    with EventStorage(0), torch.autocast(device, dtype=AMP_DTYPE[device], enabled=amp):
        losses = model(make_inputs(BOXES))
    sum(losses.values()).backward()
    return losses, [(n, p.grad) for n, p in model.named_parameters() if p.grad is not None]


@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize("method", METHODS)
def test_autocast_step_matches_float32(method, device):
    fp32, _ = training_step(method, device, amp=False)
    amp, grads = training_step(method, device, amp=True)
    assert amp.keys() == fp32.keys()
    for name, loss in amp.items():
        assert loss.dtype == torch.float32, (name, loss.dtype)  # losses are computed in float32
        diff, ref = abs(loss.item() - fp32[name].item()), abs(fp32[name].item())
        assert diff <= ATOL + RTOL * ref, (
            f"{name}: amp {loss.item():.6f} vs fp32 {fp32[name].item():.6f}"
        )
    assert grads, "no parameter got a gradient"
    bad = [n for n, g in grads if not torch.isfinite(g).all()]
    assert not bad, f"non-finite gradients: {bad[:5]}"


class _Toy(torch.nn.Module):
    """A linear model whose loss records the dtype its matmul ran in."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 1)
        self.dtypes = []

    def forward(self, batch):
        out = self.fc(batch)
        self.dtypes.append(out.dtype)
        return {"loss": out.float().pow(2).mean()}


def _loader():
    g = torch.Generator().manual_seed(0)
    while True:
        yield torch.randn(8, 4, generator=g)


def test_amp_trainer_on_cpu_runs_bfloat16_without_scaler():
    from d2ext.engine.amp import AMPTrainer

    model = _Toy()
    before = model.fc.weight.detach().clone()
    trainer = AMPTrainer(model, _loader(), torch.optim.SGD(model.parameters(), lr=0.1))
    assert trainer.precision == torch.bfloat16 and not trainer.grad_scaler.is_enabled()
    with EventStorage(0) as storage:
        trainer.storage = storage
        trainer.iter = 0
        trainer.run_step()
    assert model.dtypes == [torch.bfloat16]
    assert not torch.equal(model.fc.weight, before)  # the optimizer stepped


def test_amp_trainer_resumes_from_a_checkpoint_without_scaler_state():
    from d2ext.engine.amp import AMPTrainer

    model = _Toy()
    trainer = AMPTrainer(model, _loader(), torch.optim.SGD(model.parameters(), lr=0.1))
    state = trainer.state_dict()
    assert state["grad_scaler"] == {}  # a disabled (bfloat16) scaler has no state
    trainer.load_state_dict(state)
    del state["grad_scaler"]  # a float32 run's checkpoint
    trainer.load_state_dict(state)


@pytest.mark.cuda
def test_amp_trainer_on_cuda_runs_float16_with_scaler_in_checkpoint():
    from d2ext.engine.amp import AMPTrainer

    model = _Toy().cuda()
    loader = (b.cuda() for b in _loader())
    trainer = AMPTrainer(model, loader, torch.optim.SGD(model.parameters(), lr=0.1))
    assert trainer.precision == torch.float16 and trainer.grad_scaler.is_enabled()
    with EventStorage(0) as storage:
        trainer.storage = storage
        trainer.iter = 0
        trainer.run_step()
    assert model.dtypes == [torch.float16]
    state = trainer.state_dict()
    assert state["grad_scaler"]["scale"] > 0
    fresh = AMPTrainer(model, loader, torch.optim.SGD(model.parameters(), lr=0.1))
    state["grad_scaler"]["scale"] = 1024.0
    fresh.load_state_dict(state)
    assert fresh.grad_scaler.get_scale() == 1024.0


def test_train_net_amp_on_cpu_writes_a_checkpoint(tmp_path):
    out = str(tmp_path / "train")
    log = run(
        "--config-file",
        tiny("vfnet"),
        *FAST,
        "SOLVER.AMP.ENABLED",
        "True",
        "SOLVER.MAX_ITER",
        "3",
        "OUTPUT_DIR",
        out,
    )
    assert "Starting training from iteration 0" in log and "total_loss" in log
    final = os.path.join(out, "model_final.pth")
    assert os.path.isfile(final)
    checkpoint = torch.load(final, map_location="cpu", weights_only=False)
    assert "grad_scaler" in checkpoint["trainer"]["_trainer"]  # d2ext's AMPTrainer's state


def test_lazy_config_amp_on_cpu_trains(tmp_path):
    log = run(
        "--config-file",
        tiny("atss", "py"),
        "train.amp.enabled=True",
        "train.max_iter=2",
        "dataloader.train.total_batch_size=2",
        "dataloader.train.num_workers=0",
        f"train.output_dir={tmp_path}",
        "dataloader.train.mapper.augmentations.0.short_edge_length=[192]",
        "dataloader.test.dataset.names=d2ext_shapes_minival",
        "dataloader.test.mapper.augmentations.0.short_edge_length=160",
    )
    assert "Starting training from iteration 0" in log
    assert os.path.isfile(os.path.join(str(tmp_path), "model_final.pth"))
