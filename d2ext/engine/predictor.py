"""A DefaultPredictor-compatible predictor that loads its weights and resizes its input as the
rest of d2ext does."""

from detectron2.data import MetadataCatalog
from detectron2.engine import DefaultPredictor
from detectron2.modeling import build_model

from d2ext.checkpoint import load_weights
from d2ext.data import build_augmentation
from d2ext.errors import ConfigError
from d2ext.modeling.input_checks import check_pixel_std


class Predictor(DefaultPredictor):
    """
    Detectron2's DefaultPredictor (same call: a BGR HxWxC image in, the model's output dict out)
    with d2ext's loading: MODEL.WEIGHTS through d2ext's Checkpointer (mmdetection files converted,
    ``.pkl`` read without running it; empty weights an error unless ``allow_random_init``) and the
    test resize of INPUT.RESIZE_BACKEND (Detectron2's predictor always resizes with PIL).
    """

    def __init__(self, cfg, *, allow_random_init: bool = False):
        # Not super().__init__: DefaultPredictor loads MODEL.WEIGHTS with DetectionCheckpointer.
        self.cfg = cfg.clone()  # cfg can be modified by model
        check_pixel_std(self.cfg.MODEL.PIXEL_STD)
        self.model = build_model(self.cfg)
        self.model.eval()
        if len(cfg.DATASETS.TEST):
            self.metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0])
        load_weights(self.model, cfg.MODEL.WEIGHTS, allow_random_init=allow_random_init)
        self.aug = build_augmentation(cfg, is_train=False)[0]
        self.input_format = cfg.INPUT.FORMAT
        if self.input_format not in ("RGB", "BGR"):
            raise ConfigError(
                f"INPUT.FORMAT must be RGB or BGR for the predictor, got {self.input_format!r}"
            )
