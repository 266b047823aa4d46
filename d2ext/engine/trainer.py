import logging
import os

from detectron2.data import MetadataCatalog, build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer, default_setup

from d2ext.checkpoint import Checkpointer
from d2ext.config import get_cfg, get_num_classes, merge_from_file, num_classes_key
from d2ext.data import build_test_mapper, build_train_mapper
from d2ext.data.class_count import check_num_classes
from d2ext.evaluation import COCOEvaluator
from d2ext.modeling.input_checks import check_pixel_std

from . import ddp  # noqa: F401  (CPU-aware DDP for DefaultTrainer)
from .amp import AMPTrainer

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


def check_dataset_classes(cfg, dataset_names):
    """The configured method's NUM_CLASSES against the datasets' thing_classes (skipped, with a
    warning, for a meta-architecture d2ext.config does not know)."""
    try:
        key = num_classes_key(cfg)
    except KeyError as e:
        logger.warning(f"Class count not checked against {list(dataset_names)}: {e}")
        return
    check_num_classes(dataset_names, get_num_classes(cfg), key)


class Trainer(DefaultTrainer):
    """Detectron2's DefaultTrainer with COCO evaluation and the training pipeline chosen by
    INPUT.TRAIN_PIPELINE ("detectron2": Detectron2's own; "ssd": the AP-loss recipe's) and the
    resize of INPUT.RESIZE_BACKEND ("pil": Detectron2's; "cv2": mmdetection's), which
    checks MODEL.PIXEL_STD and the class count when it builds the model and the loaders, and
    d2ext's Checkpointer (resumes only from checkpoints inside OUTPUT_DIR; loads mmdetection /
    torchvision files, d2ext/checkpoint). SOLVER.AMP.ENABLED trains with d2ext's AMPTrainer:
    float16 on CUDA, bfloat16 on the CPU."""

    def __init__(self, cfg):
        super().__init__(cfg)
        if cfg.SOLVER.AMP.ENABLED:
            # DefaultTrainer built Detectron2's AMPTrainer, which asserts CUDA in every step;
            # nothing has run yet, and hooks and checkpointer reach it through self._trainer.
            d2 = self._trainer
            self._trainer = AMPTrainer(d2.model, d2.data_loader, d2.optimizer)

    @classmethod
    def build_model(cls, cfg):
        check_pixel_std(cfg.MODEL.PIXEL_STD)
        return super().build_model(cfg)

    @classmethod
    def build_train_loader(cls, cfg):
        loader = build_detection_train_loader(cfg, mapper=build_train_mapper(cfg))
        # After the loader: loading a registered json is what fills its thing_classes.
        check_dataset_classes(cfg, cfg.DATASETS.TRAIN)
        return loader

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        loader = build_detection_test_loader(cfg, dataset_name, mapper=build_test_mapper(cfg))
        check_dataset_classes(cfg, [dataset_name])
        return loader

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_evaluator(cfg, dataset_name, output_folder)

    def build_hooks(self):
        # DefaultTrainer.__init__ makes self.checkpointer just before it calls build_hooks (whose
        # PeriodicCheckpointer saves through it): swap in d2ext's, same model and checkpointables.
        self.checkpointer = Checkpointer(
            self.checkpointer.model, self.cfg.OUTPUT_DIR, **self.checkpointer.checkpointables
        )
        return super().build_hooks()


def setup_yaml(args):
    """Detectron2 config with every d2ext key, merged from args.config_file (safe yaml, see
    d2ext.config.safe_yaml) and args.opts."""
    cfg = get_cfg()
    merge_from_file(cfg, args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg
