"""Training and evaluation from lazy (Python) configs, as Detectron2's lazyconfig_train_net."""

import logging
import os
from contextlib import contextmanager

from detectron2.config import instantiate
from detectron2.engine import SimpleTrainer, default_writers, hooks
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm
from omegaconf import OmegaConf

from d2ext.checkpoint import Checkpointer, load_weights
from d2ext.config import num_classes_key
from d2ext.config.tta import lazy_tta_settings
from d2ext.data import CV2ResizeShortestEdge
from d2ext.data.class_count import check_num_classes
from d2ext.evaluation import add_missing_info
from d2ext.modeling.test_time_augmentation import DetectorWithTTA

from .amp import AMPTrainer
from .ddp import create_ddp_model
from .swa import SWAHook, SWAParamScheduler, insert_swa_hook, swa_iters, swa_settings

logger = logging.getLogger("detectron2")


def model_num_classes(model):
    """The class count of a built detector (dense: model.num_classes; R-CNN: its ROI heads')."""
    model = getattr(model, "module", model)  # DistributedDataParallel
    if hasattr(model, "num_classes"):
        return model.num_classes
    roi_heads = getattr(model, "roi_heads", None)
    return getattr(roi_heads, "num_classes", None)


def check_loader_classes(cfg, model, loader_key):
    """The model's class count against the datasets of cfg.dataloader.<loader_key>."""
    names = OmegaConf.select(cfg, f"dataloader.{loader_key}.dataset.names", default=None)
    num_classes = model_num_classes(model)
    if names is None or num_classes is None:
        return
    names = [names] if isinstance(names, str) else list(names)
    try:
        key = num_classes_key(cfg)
    except KeyError:  # the count is the model's default, not in the config
        key = "model.num_classes"
    check_num_classes(names, num_classes, key)


def do_test(cfg, model):
    if "evaluator" not in cfg.dataloader:
        return {}
    loader = instantiate(cfg.dataloader.test)
    check_loader_classes(cfg, model, "test")
    # pycocotools 2.0.10 needs an "info" block in the ground truth (d2ext.evaluation).
    evaluator = add_missing_info(instantiate(cfg.dataloader.evaluator))
    results = inference_on_dataset(model, loader, evaluator)
    print_csv_format(results)
    return results


def do_train(args, cfg):
    model = instantiate(cfg.model)
    logger.info("Model:\n{}".format(model))
    model.to(cfg.train.device)
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    train_loader = instantiate(cfg.dataloader.train)
    check_loader_classes(cfg, model, "train")
    model = create_ddp_model(model, **cfg.train.ddp)
    # d2ext's AMPTrainer: float16 on CUDA, bfloat16 on the CPU (Detectron2's asserts CUDA).
    trainer = (AMPTrainer if cfg.train.amp.enabled else SimpleTrainer)(
        model, train_loader, optimizer
    )
    checkpointer = Checkpointer(model, cfg.train.output_dir, trainer=trainer)
    # train.swa (d2ext/config/swa.py): train.max_iter of the main schedule, then the SWA cycles.
    swa = swa_settings(cfg)
    max_iter = cfg.train.max_iter + swa_iters(swa)
    lr_multiplier = instantiate(cfg.lr_multiplier)
    if swa:
        lr_multiplier = SWAParamScheduler(lr_multiplier, cfg.train.max_iter, **swa)
    hook_list = [
        hooks.IterationTimer(),
        hooks.LRScheduler(scheduler=lr_multiplier),
        hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer)
        if comm.is_main_process()
        else None,
        hooks.EvalHook(cfg.train.eval_period, lambda: do_test(cfg, model)),
        hooks.PeriodicWriter(
            default_writers(cfg.train.output_dir, max_iter),
            period=cfg.train.log_period,
        )
        if comm.is_main_process()
        else None,
    ]
    if swa:
        swa_hook = SWAHook.from_settings(
            swa,
            cfg.train.max_iter,
            output_dir=cfg.train.output_dir,
            eval_function=lambda swa_model: do_test(cfg, swa_model),
        )
        hook_list = insert_swa_hook(hook_list, swa_hook)
    trainer.register_hooks(hook_list)
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
    # A checkpoint stores the iteration that just finished: resume at the next one.
    start_iter = trainer.iter + 1 if args.resume and checkpointer.has_checkpoint() else 0
    # EvalHook evaluates once more after the last iteration.
    trainer.train(start_iter, max_iter)


def evaluate_lazy(args, cfg):
    """Evaluates the last checkpoint of train.output_dir (--resume, when it has one) or
    train.init_checkpoint."""
    model = instantiate(cfg.model)
    model.to(cfg.train.device)
    model = create_ddp_model(model)
    checkpointer = Checkpointer(model, cfg.train.output_dir)
    if args.resume and checkpointer.has_checkpoint():
        checkpointer.load(checkpointer.get_checkpoint_file())
    else:  # empty train.init_checkpoint is an error: it would score the random initialisation
        load_weights(model, cfg.train.init_checkpoint, key="train.init_checkpoint")
    results = do_test(cfg, model)
    tta = lazy_tta_settings(cfg)
    if tta is not None:  # as train_net's yaml path: both results, the TTA keys "<key>_TTA"
        results.update({k + "_TTA": v for k, v in do_test_with_tta(cfg, model, tta).items()})
    return results


def do_test_with_tta(cfg, model, settings):
    """:func:`do_test` of `model` wrapped in :class:`d2ext.modeling.DetectorWithTTA` with
    `settings` (:func:`d2ext.config.lazy_tta_settings`). The test loader's mapper runs without
    its resize, so that each view is resized from the original image."""
    if "evaluator" not in cfg.dataloader:
        return {}
    resizes = cfg.dataloader.test.mapper.augmentations
    backend = "cv2" if any(_target(a) is CV2ResizeShortestEdge for a in resizes) else "pil"
    image_format = OmegaConf.select(cfg, "dataloader.test.mapper.image_format", default="BGR")
    with _set(cfg.dataloader.test.mapper, "augmentations", []):
        loader = instantiate(cfg.dataloader.test)
    output_dir = cfg.dataloader.evaluator.get("output_dir")  # as yaml's OUTPUT_DIR/inference_TTA
    tta_dir = os.path.join(output_dir, "inference_TTA") if output_dir else output_dir
    with _set(cfg.dataloader.evaluator, "output_dir", tta_dir):
        evaluator = add_missing_info(instantiate(cfg.dataloader.evaluator))
    per_view = _detections_per_image(model)
    tta_model = DetectorWithTTA(
        model,
        **{**settings, "max_detections": settings["max_detections"] or per_view},
        max_detections_per_view=per_view,
        resize_backend=backend,
        input_format=image_format,
    )
    logger.info("Running inference with test-time augmentation ...")
    results = inference_on_dataset(tta_model, loader, evaluator)
    logger.info("Evaluation results with TTA:")
    print_csv_format(results)
    return results


@contextmanager
def _set(node, key, value):
    """`node[key]` is `value` inside the block, its own value again after."""
    saved = node.get(key)
    node[key] = value
    try:
        yield
    finally:
        node[key] = saved


def _target(node):
    return node.get("_target_") if hasattr(node, "get") else type(node)


def _detections_per_image(model) -> int:
    """The detections a built model keeps per image (dense: max_detections_per_image; R-CNN:
    its box predictor's test_topk_per_image), 100 when it says nothing."""
    model = getattr(model, "module", model)
    if hasattr(model, "max_detections_per_image"):
        return int(model.max_detections_per_image)
    predictor = getattr(getattr(model, "roi_heads", None), "box_predictor", None)
    return int(getattr(predictor, "test_topk_per_image", 100))
