"""Training mappers: Detectron2's DatasetMapper, or one whose augmentations see the GT boxes."""

import copy

import detectron2.data.transforms as T
import numpy as np
import torch
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.structures import BoxMode

from .augmentation import resize_with_backend
from .transforms import build_ssd_augmentations

TRAIN_PIPELINES = ("detectron2", "ssd")


class BoxAwareDatasetMapper(DatasetMapper):
    """
    DatasetMapper for detection whose augmentations receive the ground-truth boxes
    (``T.AugInput(image, boxes=...)``; Detectron2's mapper passes none, so box-dependent
    augmentations such as ``T.MinIoURandomCrop`` do nothing there), and which drops the
    instances whose box centre leaves the augmented image, as SSD's random crop does.
    Semantic segmentation and precomputed proposals are not supported.
    """

    def __call__(self, dataset_dict):
        dataset_dict = copy.deepcopy(dataset_dict)  # modified below
        image = utils.read_image(dataset_dict["file_name"], format=self.image_format)
        utils.check_image_size(dataset_dict, image)
        annos = dataset_dict.get("annotations", []) if self.is_train else []
        # Crowd boxes are dropped below (as by DatasetMapper); they must not steer the crop
        # either (the reference loads no crowd annotation).
        annos = [a for a in annos if a.get("iscrowd", 0) == 0]
        boxes = np.array(
            [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in annos],
            dtype=np.float32,
        ).reshape(-1, 4)  # (M, 4)
        aug_input = T.AugInput(image, boxes=boxes)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        image_shape = image.shape[:2]  # h, w
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if not self.is_train:
            dataset_dict.pop("annotations", None)
            return dataset_dict
        if "annotations" in dataset_dict:
            centers = transforms.apply_coords((boxes[:, :2] + boxes[:, 2:]) / 2)  # (M, 2)
            inside = (
                (centers[:, 0] > 0)
                & (centers[:, 0] < image_shape[1])
                & (centers[:, 1] > 0)
                & (centers[:, 1] < image_shape[0])
            )
            dataset_dict["annotations"] = [a for a, keep in zip(annos, inside) if keep]
            self._transform_annotations(dataset_dict, transforms, image_shape)
        return dataset_dict


def build_train_mapper(cfg):
    """The training mapper selected by INPUT.TRAIN_PIPELINE (d2ext/config/data.py); the
    "detectron2" pipeline resizes with INPUT.RESIZE_BACKEND."""
    pipeline = cfg.INPUT.TRAIN_PIPELINE
    if pipeline == "detectron2":
        return detectron2_mapper(cfg, is_train=True)
    if pipeline == "ssd":
        if cfg.INPUT.RESIZE_BACKEND != "pil":
            raise ValueError(
                f"INPUT.RESIZE_BACKEND {cfg.INPUT.RESIZE_BACKEND!r} applies to INPUT.TRAIN_PIPELINE "
                f"'detectron2'; the 'ssd' pipeline resizes with PIL"
            )
        return BoxAwareDatasetMapper(cfg, is_train=True, augmentations=build_ssd_augmentations(cfg))
    raise ValueError(f"INPUT.TRAIN_PIPELINE must be one of {TRAIN_PIPELINES}, got {pipeline!r}")


def build_test_mapper(cfg):
    """Detectron2's test mapper, resizing with INPUT.RESIZE_BACKEND."""
    return detectron2_mapper(cfg, is_train=False)


def detectron2_mapper(cfg, is_train: bool) -> DatasetMapper:
    """DatasetMapper(cfg, is_train) (its augmentations: INPUT.CROP, resize, flip) whose resize
    is INPUT.RESIZE_BACKEND's."""
    args = DatasetMapper.from_config(cfg, is_train)
    args["augmentations"] = resize_with_backend(cfg, args["augmentations"])
    return DatasetMapper(**args)
