from .ddp import create_ddp_model
from .lazy import do_test, do_train, evaluate_lazy, setup_lazy
from .trainer import Trainer, build_evaluator, setup_yaml

__all__ = [
    "Trainer",
    "build_evaluator",
    "create_ddp_model",
    "do_test",
    "do_train",
    "evaluate_lazy",
    "setup_lazy",
    "setup_yaml",
]
