"""d2ext-visualize-data and d2ext-visualize-json-results on the bundled minival split (40 small
images), run in this process: the files they write, and boxes drawn where the data's boxes lie
(the drawn image differs from the undrawn one along the box's sides, and only above the score
threshold)."""

import json
import os

import cv2
import numpy as np
import pytest
from conftest import CONFIGS
from detectron2.data import DatasetCatalog
from detectron2.data.detection_utils import read_image
from detectron2.structures import BoxMode

from d2ext.tools import visualize_data, visualize_json_results

MINIVAL = "d2ext_shapes_minival"
ATSS_YAML = os.path.join(CONFIGS, "Synthetic", "atss_R_18_FPN_tiny.yaml")
ATSS_LAZY = os.path.join(CONFIGS, "Synthetic", "atss_R_18_FPN_tiny.py")
APLOSS_YAML = os.path.join(CONFIGS, "Synthetic", "aploss_retinanet_R_18_FPN_tiny.yaml")
# Summed over RGB, averaged along a box side: a drawn side is ~100+, JPEG re-encoding ~5.
DRAWN = 40


def read_rgb(path):
    return cv2.imread(str(path))[:, :, ::-1]


def side_contrast(drawn, raw, box_xyxy):
    """The largest mean |drawn - raw| (summed over channels) along one side of the box, within
    1 px of it (a drawn side is a line centred on the box's edge)."""
    h, w = raw.shape[:2]
    diff = np.abs(drawn.astype(np.int32) - raw.astype(np.int32)).sum(-1)
    x0, y0, x1, y1 = (int(round(v)) for v in box_xyxy)
    x0, x1 = np.clip([x0, x1], 0, w - 1)
    y0, y1 = np.clip([y0, y1], 0, h - 1)
    sides = []
    for d in (-1, 0, 1):
        sides += [
            diff[np.clip(y0 + d, 0, h - 1), x0 : x1 + 1].mean(),
            diff[np.clip(y1 + d, 0, h - 1), x0 : x1 + 1].mean(),
            diff[y0 : y1 + 1, np.clip(x0 + d, 0, w - 1)].mean(),
            diff[y0 : y1 + 1, np.clip(x1 + d, 0, w - 1)].mean(),
        ]
    return max(sides)


def assert_boxes_drawn(drawn, raw, boxes_xyxy):
    assert drawn.shape == raw.shape
    contrasts = [side_contrast(drawn, raw, b) for b in boxes_xyxy]
    assert len(contrasts) > 0
    # Nearly every box shows (a small box may hide under a larger one's label).
    assert np.mean(np.array(contrasts) > DRAWN) >= 0.8, contrasts


# -- visualize_data --------------------------------------------------------------------------------
@pytest.mark.parametrize("config", [ATSS_YAML, ATSS_LAZY], ids=["yaml", "lazy"])
def test_annotation_source_draws_the_dataset_boxes(config, tmp_path):
    out = tmp_path / "out"
    written = visualize_data.main(
        [
            "--source",
            "annotation",
            "--config-file",
            config,
            "--output-dir",
            str(out),
            "--num-images",
            "3",
            "--train-dataset",
            MINIVAL,
        ]
    )
    records = DatasetCatalog.get(MINIVAL)[:3]
    assert sorted(os.listdir(out)) == sorted(os.path.basename(r["file_name"]) for r in records)
    assert len(written) == 3
    for record in records:
        boxes = [
            BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)
            for a in record["annotations"]
        ]
        drawn = read_rgb(out / os.path.basename(record["file_name"]))
        assert_boxes_drawn(drawn, read_image(record["file_name"], format="RGB"), boxes)


def test_console_script_exits_0_after_a_run(tmp_path):
    """A console script is sys.exit(main()): the tool's result (here the files it wrote) must
    not reach sys.exit, which would print it and exit with status 1."""
    import subprocess
    import sys

    from conftest import REPO_ROOT

    code = "import sys; from d2ext.tools.visualize_data import main; sys.exit(main())"
    argv = [
        "--source",
        "annotation",
        "--config-file",
        ATSS_YAML,
        "--output-dir",
        str(tmp_path),
        "--num-images",
        "1",
        "--train-dataset",
        MINIVAL,
    ]
    out = subprocess.run(
        [sys.executable, "-c", code, *argv],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert len(os.listdir(tmp_path)) == 1


def run_dataloader_source(monkeypatch, argv):
    """visualize_data.main with --source dataloader; returns the (file name, RGB image, gt
    Instances) the loader gave it, recorded on their way to the drawing."""
    seen = []
    loader_images = visualize_data.loader_images

    def recording(cfg):
        for item in loader_images(cfg):
            seen.append(item)
            yield item

    monkeypatch.setattr(visualize_data, "loader_images", recording)
    visualize_data.main(["--source", "dataloader", *argv])
    return seen


def assert_loader_images_drawn(out, seen, num_images):
    assert sorted(os.listdir(out)) == sorted(name for name, _, _ in seen)
    assert len(seen) == num_images
    for name, raw, instances in seen:
        assert_boxes_drawn(read_rgb(out / name), raw, instances.gt_boxes.tensor.tolist())


def test_dataloader_source_lazy_config_draws_augmented_images(tmp_path, monkeypatch):
    out = tmp_path / "out"
    seen = run_dataloader_source(
        monkeypatch,
        [
            "--config-file",
            ATSS_LAZY,
            "--output-dir",
            str(out),
            "--num-images",
            "3",
            "--train-dataset",
            MINIVAL,
            "dataloader.train.total_batch_size=2",
        ],
    )
    assert_loader_images_drawn(out, seen, 3)
    for _, raw, _ in seen:  # the lazy config's ResizeShortestEdge((256, 288, 320), max_size=480)
        assert min(raw.shape[:2]) in (256, 288, 320) or max(raw.shape[:2]) == 480


def test_dataloader_source_ssd_pipeline(tmp_path, monkeypatch):
    from d2ext.config import load_config

    # The tiny AP-loss config trains with Detectron2's pipeline; its base (the paper's recipe)
    # with the SSD one, which the override selects here (at a small square size, for speed).
    assert load_config(APLOSS_YAML).INPUT.TRAIN_PIPELINE == "detectron2"
    assert (
        load_config(os.path.join(CONFIGS, "Base-APLoss-RetinaNet.yaml")).INPUT.TRAIN_PIPELINE
        == "ssd"
    )
    out = tmp_path / "out"
    seen = run_dataloader_source(
        monkeypatch,
        [
            "--config-file",
            APLOSS_YAML,
            "--output-dir",
            str(out),
            "--num-images",
            "4",
            "--train-dataset",
            MINIVAL,
            "INPUT.TRAIN_PIPELINE",
            "ssd",
            "INPUT.SSD.SIZE",
            "160",
            "SOLVER.IMS_PER_BATCH",
            "2",
        ],
    )
    assert_loader_images_drawn(out, seen, 4)
    assert {raw.shape for _, raw, _ in seen} == {(160, 160, 3)}  # the SSD pipeline's square resize


def test_unregistered_train_dataset_is_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        visualize_data.main(
            [
                "--source",
                "annotation",
                "--config-file",
                ATSS_YAML,
                "--output-dir",
                str(tmp_path),
                "DATASETS.TRAIN",
                "('no_such_dataset',)",
            ]
        )
    assert e.value.code == 1
    err = capsys.readouterr().err.strip()
    assert (
        "no_such_dataset" in err
        and "not registered" in err
        and "Traceback" not in err
        and "error: " in err.splitlines()[-1]
    )


# -- visualize_json_results ------------------------------------------------------------------------
def test_json_results_draw_detections_above_threshold_beside_ground_truth(tmp_path):
    record = DatasetCatalog.get(MINIVAL)[0]
    assert os.path.basename(record["file_name"]) == "000001.jpg"
    shown, hidden = [100.0, 100.0, 80.0, 60.0], [20.0, 20.0, 30.0, 30.0]  # XYWH
    results = tmp_path / "coco_instances_results.json"
    results.write_text(
        json.dumps(
            [
                # category_id: the dataset's own ids (1..5); 5 ("ring") is contiguous class 4.
                {"image_id": record["image_id"], "category_id": 5, "bbox": shown, "score": 0.9},
                {"image_id": record["image_id"], "category_id": 2, "bbox": hidden, "score": 0.3},
            ]
        )
    )
    out = tmp_path / "out"
    visualize_json_results.main(
        ["--input", str(results), "--output", str(out), "--dataset", MINIVAL]
    )
    assert len(os.listdir(out)) == 40  # every image of the dataset, as Detectron2's tool
    raw = read_image(record["file_name"], format="RGB")
    drawn = read_rgb(out / "000001.jpg")
    width = raw.shape[1]
    assert drawn.shape == (raw.shape[0], 2 * width, 3)
    predictions, ground_truth = drawn[:, :width], drawn[:, width:]
    xyxy = lambda b: BoxMode.convert(b, BoxMode.XYWH_ABS, BoxMode.XYXY_ABS)  # noqa: E731
    assert side_contrast(predictions, raw, xyxy(shown)) > DRAWN
    assert (
        side_contrast(predictions, raw, xyxy(hidden)) < DRAWN / 4
    )  # score 0.3 < --conf-threshold 0.5
    gt_boxes = [
        BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in record["annotations"]
    ]
    assert_boxes_drawn(ground_truth, raw, gt_boxes)


def test_json_results_map_dataset_ids_to_contiguous_classes():
    DatasetCatalog.get(MINIVAL)  # fills its metadata
    id_map = visualize_json_results.contiguous_id_map(MINIVAL)
    detections = [
        {"image_id": 1, "category_id": c, "bbox": [0, 0, 5, 5], "score": 0.9} for c in (1, 5)
    ]
    instances = visualize_json_results.create_instances(detections, (20, 20), id_map, 0.5)
    assert instances.pred_classes.tolist() == [0, 4]
    assert instances.pred_boxes.tensor.tolist() == [[0, 0, 5, 5]] * 2


@pytest.mark.parametrize(
    "content",
    [
        None,  # no file
        "not json {",
        '{"image_id": 1}',
        '[{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3], "score": 0.9}]',
        '[{"image_id": 1, "category_id": 99, "bbox": [1, 2, 3, 4], "score": 0.9}]',  # no such category
    ],
    ids=["missing", "not-json", "not-a-list", "bad-bbox", "unknown-category"],
)
def test_json_results_bad_input_is_one_line_error_naming_the_file(content, tmp_path, capsys):
    results = tmp_path / "results.json"
    if content is not None:
        results.write_text(content)
    argv = ["--input", str(results), "--output", str(tmp_path / "out"), "--dataset", MINIVAL]
    with pytest.raises(SystemExit) as e:
        visualize_json_results.main(argv)
    assert e.value.code == 1
    err = capsys.readouterr().err.strip()
    assert str(results) in err and "Traceback" not in err and "error: " in err.splitlines()[-1], err
    assert not (tmp_path / "out").exists() or not os.listdir(
        tmp_path / "out"
    )  # stopped before drawing


def test_json_results_unregistered_dataset_is_one_line_error(tmp_path, capsys):
    results = tmp_path / "results.json"
    results.write_text("[]")
    argv = ["--input", str(results), "--output", str(tmp_path), "--dataset", "no_such_dataset"]
    with pytest.raises(SystemExit) as e:
        visualize_json_results.main(argv)
    assert e.value.code == 1
    err = capsys.readouterr().err.strip()
    assert (
        "no_such_dataset" in err
        and "--coco-dataset" in err
        and "Traceback" not in err
        and "error: " in err.splitlines()[-1]
    )
