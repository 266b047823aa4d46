"""A user's own COCO-format or VOC-style data, from the command line only: no code and no
class-count key. A 3-class COCO subset (non-contiguous category ids) of the bundled synthetic
shapes is made from their minival split."""

import json
import os

import pytest
from conftest import CONFIGS
from engine.test_train_net import run


@pytest.fixture(scope="module")
def own_coco(tmp_path_factory):
    """train.json / val.json with 3 of the 5 shape classes (ids 7, 3, 12), images in two folders."""
    import shutil

    from detectron2.data import DatasetCatalog

    import d2ext  # noqa: F401  (registers the synthetic dataset)
    from d2ext.data.synthetic import dataset_root

    DatasetCatalog.get("d2ext_shapes_minival")  # generated on first use
    source = os.path.join(dataset_root(), "minival")
    coco = json.load(open(os.path.join(source, "annotations.json")))
    root = tmp_path_factory.mktemp("own")
    keep = {1: 7, 2: 3, 3: 12}  # shape class id -> the user's category id
    images = coco["images"]
    for split, subset in (("train", images[:24]), ("val", images[24:32])):
        (root / split).mkdir()
        ids = {im["id"] for im in subset}
        for im in subset:
            shutil.copy(
                os.path.join(source, "images", os.path.basename(im["file_name"])), root / split
            )
        data = {
            "images": [dict(im, file_name=os.path.basename(im["file_name"])) for im in subset],
            "annotations": [
                dict(a, category_id=keep[a["category_id"]])
                for a in coco["annotations"]
                if a["image_id"] in ids and a["category_id"] in keep
            ],
            "categories": [{"id": new, "name": f"class{new}"} for new in keep.values()],
        }
        (root / f"{split}.json").write_text(json.dumps(data))
    return root


def _own_args(root):
    return [
        "--coco-dataset",
        "mine_train",
        str(root / "train.json"),
        str(root / "train"),
        "--coco-dataset",
        "mine_val",
        str(root / "val.json"),
        str(root / "val"),
        "--train-dataset",
        "mine_train",
        "--test-dataset",
        "mine_val",
    ]


@pytest.mark.slow
def test_gfl_trains_and_evaluates_on_own_coco_data_without_a_class_count(own_coco, tmp_path):
    config = os.path.join(CONFIGS, "Synthetic", "gfl_R_18_FPN_tiny.yaml")
    log = run(
        "--config-file",
        config,
        *_own_args(own_coco),
        "SOLVER.MAX_ITER",
        "2",
        "SOLVER.IMS_PER_BATCH",
        "2",
        "TEST.EVAL_PERIOD",
        "0",
        "OUTPUT_DIR",
        str(tmp_path),
    )
    assert "MODEL.GFL.NUM_CLASSES set to 3 from the classes of mine_train" in log
    assert os.path.isfile(tmp_path / "model_final.pth")
    # --eval-only of what it wrote, again with no class-count key.
    log = run(
        "--config-file",
        config,
        *_own_args(own_coco),
        "--eval-only",
        "MODEL.WEIGHTS",
        str(tmp_path / "model_final.pth"),
        "OUTPUT_DIR",
        str(tmp_path / "eval"),
    )
    assert "copypaste: Task: bbox" in log


@pytest.mark.slow
def test_lazy_config_on_own_data(own_coco, tmp_path):
    config = os.path.join(CONFIGS, "Synthetic", "atss_R_18_FPN_tiny.py")
    log = run(
        "--config-file",
        config,
        *_own_args(own_coco),
        "train.max_iter=2",
        "train.eval_period=0",
        "dataloader.train.total_batch_size=2",
        f"train.output_dir={tmp_path}",
    )
    assert "model.num_classes set to 3 from the classes of mine_train" in log
    assert "copypaste: Task: bbox" in log


def test_a_class_count_that_disagrees_stays_an_error(own_coco, tmp_path):
    config = os.path.join(CONFIGS, "Synthetic", "gfl_R_18_FPN_tiny.yaml")
    log = run(
        "--config-file",
        config,
        *_own_args(own_coco),
        "MODEL.GFL.NUM_CLASSES",
        "5",
        "SOLVER.MAX_ITER",
        "1",
        "OUTPUT_DIR",
        str(tmp_path),
        expect_ok=False,
        returncode=1,
    )
    assert "MODEL.GFL.NUM_CLASSES is 5, but dataset 'mine_train' has 3" in log


def test_unregistered_or_missing_dataset_is_named(tmp_path):
    config = os.path.join(CONFIGS, "Synthetic", "gfl_R_18_FPN_tiny.yaml")
    log = run(
        "--config-file",
        config,
        "--coco-dataset",
        "x",
        str(tmp_path / "nope.json"),
        str(tmp_path),
        "--train-dataset",
        "x",
        expect_ok=False,
        returncode=1,
    )
    assert "--coco-dataset x:" in log and "nope.json" in log and "Traceback" not in log
    log = run(
        "--config-file",
        config,
        "--train-dataset",
        "never_registered",
        expect_ok=False,
        returncode=1,
    )
    assert "dataset 'never_registered' is not registered" in log


def test_voc_folder_registers_with_its_classes(tmp_path):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from d2ext.data.registration import register_datasets

    voc = tmp_path / "MyVOC"
    (voc / "Annotations").mkdir(parents=True)
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    (voc / "JPEGImages").mkdir()
    (voc / "ImageSets" / "Main" / "train.txt").write_text("a\nb\n")
    for name, objects in (("a", ["cat", "dog"]), ("b", ["bird"])):
        xml = "".join(
            f"<object><name>{o}</name><difficult>0</difficult><bndbox><xmin>1</xmin><ymin>2</ymin>"
            f"<xmax>5</xmax><ymax>6</ymax></bndbox></object>"
            for o in objects
        )
        (voc / "Annotations" / f"{name}.xml").write_text(
            f"<annotation><size><width>10</width><height>8</height></size>{xml}</annotation>"
        )
    register_datasets(voc=[("myvoc_train", str(voc), "train")])
    try:
        assert MetadataCatalog.get("myvoc_train").thing_classes == ["bird", "cat", "dog"]
        records = DatasetCatalog.get("myvoc_train")
        assert [[a["category_id"] for a in r["annotations"]] for r in records] == [[1, 2], [0]]
    finally:
        DatasetCatalog.remove("myvoc_train")
        MetadataCatalog.remove("myvoc_train")
