import logging
import os
import weakref

from detectron2.data import MetadataCatalog, build_detection_train_loader
from detectron2.engine import DefaultTrainer, default_setup, hooks
from detectron2.evaluation import COCOEvaluator

from d2ext.checkpoint import Checkpointer
from d2ext.config import get_cfg
from d2ext.data import build_train_mapper

from . import ddp  # noqa: F401  (CPU-aware DDP for DefaultTrainer)

logger = logging.getLogger(__name__)


def build_evaluator(cfg, dataset_name, output_folder=None):
    """COCO-style box evaluation for any dataset whose metadata has evaluator_type "coco"."""
    output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference")
    evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", "coco")
    if evaluator_type != "coco":
        raise NotImplementedError(
            f"d2ext's trainer evaluates COCO-style datasets; {dataset_name!r} has "
            f"evaluator_type={evaluator_type!r}"
        )
    return COCOEvaluator(dataset_name, output_dir=output_folder)


class Trainer(DefaultTrainer):
    """Detectron2's DefaultTrainer with COCO evaluation and the training pipeline chosen by
    INPUT.TRAIN_PIPELINE ("detectron2": Detectron2's own; "ssd": the AP-loss recipe's), and
    d2ext's Checkpointer (loads mmdetection / torchvision files, d2ext/checkpoint)."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.checkpointer = Checkpointer(
            self._trainer.model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self)
        )
        for hook in self._hooks:
            if isinstance(hook, hooks.PeriodicCheckpointer):
                hook.checkpointer = self.checkpointer

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=build_train_mapper(cfg))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_evaluator(cfg, dataset_name, output_folder)


def setup_yaml(args):
    """Detectron2 config with every d2ext key, merged from args.config_file and args.opts."""
    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg
