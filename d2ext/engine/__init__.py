from .ddp import create_ddp_model
from .lazy import do_test, do_train, evaluate_lazy
from .predictor import Predictor
from .trainer import Trainer, build_evaluator, setup

__all__ = [
    "Predictor",
    "Trainer",
    "build_evaluator",
    "create_ddp_model",
    "do_test",
    "do_train",
    "evaluate_lazy",
    "setup",
]
