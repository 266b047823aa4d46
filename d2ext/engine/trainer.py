import logging
import os
import weakref
from collections import OrderedDict

from detectron2.config import CfgNode
from detectron2.data import (
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
)
from detectron2.engine import DefaultTrainer, SimpleTrainer, TrainerBase, default_setup
from detectron2.evaluation import (
    PascalVOCDetectionEvaluator,
    inference_on_dataset,
    print_csv_format,
)
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from d2ext.checkpoint import Checkpointer
from d2ext.config import get_num_classes, num_classes_key
from d2ext.data import build_test_mapper, build_train_mapper
from d2ext.data.class_count import check_num_classes
from d2ext.errors import DataError
from d2ext.evaluation import COCOEvaluator
from d2ext.modeling.input_checks import check_pixel_std
from d2ext.modeling.test_time_augmentation import DetectorWithTTA, build_tta_mapper

from .amp import AMPTrainer
from .ddp import create_ddp_model
from .swa import SWAHook, extend_lr_scheduler, insert_swa_hook, swa_iters, swa_settings

logger = logging.getLogger(__name__)


def build_evaluator(cfg, dataset_name, output_folder=None):
    """COCO-style box evaluation (evaluator_type "coco", the default) or Pascal VOC's (a dataset
    registered with register_pascal_voc, e.g. --voc-dataset)."""
    output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference")
    evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", "coco")
    if evaluator_type == "coco":
        return COCOEvaluator(dataset_name, output_dir=output_folder)
    if evaluator_type == "pascal_voc":
        return PascalVOCDetectionEvaluator(dataset_name)
    raise DataError(
        f"d2ext's trainer evaluates COCO-style and Pascal VOC datasets; {dataset_name!r} has "
        f"evaluator_type={evaluator_type!r}"
    )


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
    float16 on CUDA, bfloat16 on the CPU. SOLVER.SWA.ENABLED adds SWA cycles after the
    SOLVER.MAX_ITER iterations of the main schedule (d2ext/engine/swa.py)."""

    def __init__(self, cfg):
        # DefaultTrainer.__init__'s steps, with d2ext's CPU-aware DDP, AMP trainer and
        # Checkpointer (Detectron2's module-level create_ddp_model is not replaced).
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = create_ddp_model(model, broadcast_buffers=False)
        trainer_class = AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer
        self._trainer = trainer_class(model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = Checkpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        swa = swa_settings(cfg)
        if swa:  # SOLVER.MAX_ITER of the main schedule, then the SWA cycles (d2ext/engine/swa.py)
            self.scheduler = extend_lr_scheduler(self.scheduler, optimizer, swa)
            self.max_iter += swa_iters(swa)
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def build_hooks(self):
        """DefaultTrainer's hooks, with :class:`d2ext.engine.swa.SWAHook` when SOLVER.SWA.ENABLED
        (its average evaluated on DATASETS.TEST, results in OUTPUT_DIR/inference_swa)."""
        ret = super().build_hooks()
        swa = swa_settings(self.cfg)
        if not swa:
            return ret
        cfg = self.cfg

        def test_swa(model):
            folder = os.path.join(cfg.OUTPUT_DIR, "inference_swa")
            evaluators = [self.build_evaluator(cfg, name, folder) for name in cfg.DATASETS.TEST]
            return self.test(cfg, model, evaluators)

        hook = SWAHook.from_settings(
            swa, cfg.SOLVER.MAX_ITER, output_dir=cfg.OUTPUT_DIR, eval_function=test_swa
        )
        return insert_swa_hook(ret, hook)

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

    @classmethod
    def test_with_TTA(cls, cfg, model):
        """Detectron2 train_net's ``Trainer.test_with_TTA`` for every d2ext method: `model`
        wrapped in :class:`d2ext.modeling.DetectorWithTTA` (TEST.AUG.*), evaluated on each
        DATASETS.TEST, results in OUTPUT_DIR/inference_TTA, keys suffixed "_TTA". The loader
        gives the wrapper the original images (:func:`d2ext.modeling.build_tta_mapper`), which
        it resizes once per view."""
        logger.info("Running inference with test-time augmentation ...")
        tta_model = DetectorWithTTA(cfg, model)
        results = OrderedDict()
        for dataset_name in cfg.DATASETS.TEST:
            loader = build_detection_test_loader(cfg, dataset_name, mapper=build_tta_mapper(cfg))
            check_dataset_classes(cfg, [dataset_name])
            evaluator = cls.build_evaluator(
                cfg, dataset_name, output_folder=os.path.join(cfg.OUTPUT_DIR, "inference_TTA")
            )
            results[dataset_name] = inference_on_dataset(tta_model, loader, evaluator)
            if comm.is_main_process():
                logger.info(f"Evaluation results for {dataset_name} with TTA in csv format:")
                print_csv_format(results[dataset_name])
        if len(results) == 1:  # as DefaultTrainer.test
            results = list(results.values())[0]
        return OrderedDict((k + "_TTA", v) for k, v in results.items())


def setup_d2ext_logger(cfg):
    """d2ext's own log records (e.g. a class count set from the data) in the run's log, as
    default_setup does for Detectron2's."""
    output_dir = cfg.OUTPUT_DIR if isinstance(cfg, CfgNode) else cfg.train.output_dir
    setup_logger(output_dir, distributed_rank=comm.get_rank(), name="d2ext")


def setup(args):
    """The config of a tool's ``args`` (d2ext.tools.cli.config_from_args: datasets, config file,
    overrides), frozen when it is a yaml config, and Detectron2's default_setup (logging, the
    config saved in OUTPUT_DIR, seeding)."""
    from d2ext.tools.cli import config_from_args

    cfg = config_from_args(args, on_loaded=setup_d2ext_logger)
    if isinstance(cfg, CfgNode):
        cfg.freeze()
    default_setup(cfg, args)
    return cfg
