"""COCO evaluation of a json without an "info" block (issue #15: pycocotools 2.0.10's loadRes
raises KeyError: 'info'), through the yaml trainer's evaluator and the lazy path's."""

import json

import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.structures import Boxes, Instances


@pytest.fixture
def dataset_without_info(tmp_path):
    images = [{"id": 1, "file_name": "a.jpg", "height": 100, "width": 120}]
    annotations = [
        {
            "id": 1,
            "image_id": 1,
            "category_id": 1,
            "bbox": [10, 10, 40, 30],
            "area": 1200,
            "iscrowd": 0,
        }
    ]
    categories = [{"id": 1, "name": "thing"}]
    path = tmp_path / "no_info.json"
    path.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    name = f"no_info_{tmp_path.name}"
    register_coco_instances(name, {}, str(path), str(tmp_path))
    DatasetCatalog.get(name)  # as the test loader does: fills thing_classes
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def _evaluate(evaluator):
    evaluator.reset()
    instances = Instances(
        (100, 120),
        pred_boxes=Boxes(torch.tensor([[10.0, 10.0, 50.0, 40.0]])),
        scores=torch.tensor([0.9]),
        pred_classes=torch.tensor([0]),
    )
    evaluator.process([{"image_id": 1}], [{"instances": instances}])
    return evaluator.evaluate()


def test_trainer_evaluator(dataset_without_info, tmp_path):
    from d2ext.config import get_cfg
    from d2ext.engine import Trainer

    cfg = get_cfg()
    cfg.OUTPUT_DIR = str(tmp_path)
    results = _evaluate(Trainer.build_evaluator(cfg, dataset_without_info))
    assert results["bbox"]["AP"] == pytest.approx(100.0)


def test_lazy_evaluator(dataset_without_info, tmp_path):
    from detectron2.evaluation import COCOEvaluator

    from d2ext.evaluation import add_missing_info

    evaluator = add_missing_info(COCOEvaluator(dataset_without_info, output_dir=str(tmp_path)))
    assert _evaluate(evaluator)["bbox"]["AP"] == pytest.approx(100.0)
