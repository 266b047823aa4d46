"""d2ext.evaluation.error_analysis on a hand-built case whose every count is worked out by hand,
and d2ext-analyze-errors (run in this process) on a tiny COCO dataset written in tmp_path."""

import json
import re

import cv2
import numpy as np
import pytest

from d2ext.evaluation.error_analysis import ErrorAnalysis
from d2ext.tools import analyze_errors

# Classes 0 ("a"), 1 ("b"), 2 ("c"); boxes XYXY. Score threshold 0.3, IoU threshold 0.5.
IMAGE_1 = dict(
    gt_boxes=[[0, 0, 10, 10], [20, 0, 30, 10], [0, 20, 10, 30]],  # G1 a, G2 b, G3 c
    gt_classes=[0, 1, 2],
    boxes=[
        [0, 0, 10, 9],  # D2 a .8: IoU .9 with G1, which D1 (higher score) matched: fp_dup
        [0, 0, 10, 10],  # D1 a .9: IoU 1 with G1: tp
        [20, 0, 30, 10],  # D3 c .7: IoU 1 with G2 (b), nothing of c near: fp_cls (row b)
        [40, 40, 50, 50],
    ],  # D4 b .6: overlaps nothing: fp_bg
    scores=[0.8, 0.9, 0.7, 0.6],
    classes=[0, 0, 2, 1],
)
IMAGE_2 = dict(
    gt_boxes=[[0, 0, 10, 10], [30, 30, 40, 40], [50, 0, 100, 50]],  # G4 b, G5 a, G6 c crowd
    gt_classes=[1, 0, 2],
    gt_crowd=[False, False, True],
    boxes=[
        [5, 0, 15, 10],  # D5 b .95: IoU 50/150 = 1/3 with G4: fp_loc (G4 stays missed)
        [60, 10, 70, 20],  # D6 c .5: inside the crowd region G6: ignored
        [30, 30, 40, 40],
    ],  # D7 a .2: below the score threshold (G5 stays missed)
    scores=[0.95, 0.5, 0.2],
    classes=[1, 2, 0],
)
EXPECTED = [  # per class
    dict(tp=1, fp_loc=0, fp_dup=1, fp_cls=0, fp_bg=0, ignored=0, missed=1, num_gt=2),  # G5 missed
    dict(tp=0, fp_loc=1, fp_dup=0, fp_cls=0, fp_bg=1, ignored=0, missed=2, num_gt=2),  # G2, G4
    dict(
        tp=0, fp_loc=0, fp_dup=0, fp_cls=1, fp_bg=0, ignored=1, missed=1, num_gt=1
    ),  # G3; G6 crowd
]
# Rows: GT a, b, c, background; columns: predicted a, b, c, none (missed).
EXPECTED_CONFUSION = [
    [1, 0, 0, 1],  # D1 tp; G5 missed
    [0, 0, 1, 2],  # D3 (c) on G2; G2, G4 missed
    [0, 0, 0, 1],  # G3 missed
    [1, 2, 0, 0],  # D2 dup; D4 bg and D5 loc
]


def test_hand_built_case_counts_each_error_kind():
    analysis = ErrorAnalysis(3, score_thr=0.3, iou_thr=0.5)
    assert analysis.add(**IMAGE_1) == ["fp_dup", "tp", "fp_cls", "fp_bg"]
    assert analysis.add(**IMAGE_2) == ["fp_loc", "ignored", None]
    assert analysis.per_class() == EXPECTED
    assert analysis.total() == {k: sum(c[k] for c in EXPECTED) for k in EXPECTED[0]}
    assert analysis.confusion.tolist() == EXPECTED_CONFUSION


def test_rule_precedence_and_thresholds():
    gt = dict(gt_boxes=[[0, 0, 10, 10], [0, 0, 10, 4]], gt_classes=[0, 1])
    # Class 0 at IoU .4 with G a (localisation) beats its IoU 1 with G b (class confusion).
    assert ErrorAnalysis(2).add([[0, 0, 10, 4]], [0.9], [0], **gt) == ["fp_loc"]
    # IoU .09 with its class' GT is below 0.1: background, not localisation.
    assert ErrorAnalysis(2).add([[0, 0, 10, 0.9]], [0.9], [0], **gt) == ["fp_bg"]
    # A lower --iou-threshold makes the IoU .4 detection a true positive.
    analysis = ErrorAnalysis(2, iou_thr=0.4)
    assert analysis.add([[0, 0, 10, 4]], [0.9], [0], **gt) == ["tp"]
    assert analysis.confusion.tolist() == [[1, 0, 0], [0, 0, 1], [0, 0, 0]]
    # No detections, no GTs: nothing counted, nothing raised.
    assert ErrorAnalysis(2).add([], [], [], [], []) == []


# -- the tool --------------------------------------------------------------------------------------
def write_dataset(tmp_path):
    """Two 20x20 images; categories with the non-contiguous ids 3 ("cat") and 7 ("dog")."""
    (tmp_path / "images").mkdir()
    for name in ("1.png", "2.png"):
        cv2.imwrite(str(tmp_path / "images" / name), np.zeros((20, 20, 3), np.uint8))
    annotations = [  # XYWH
        dict(image_id=1, category_id=3, bbox=[0, 0, 10, 10]),  # found
        dict(image_id=1, category_id=7, bbox=[10, 10, 10, 10]),  # found as a cat: missed
        dict(image_id=2, category_id=7, bbox=[0, 0, 8, 8]),  # missed
    ]
    coco = dict(
        images=[dict(id=i, file_name=f"{i}.png", width=20, height=20) for i in (1, 2)],
        categories=[dict(id=3, name="cat"), dict(id=7, name="dog")],
        annotations=[
            dict(a, id=i + 1, iscrowd=0, area=a["bbox"][2] * a["bbox"][3])
            for i, a in enumerate(annotations)
        ],
    )
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    return [
        "--coco-dataset",
        f"errors_{tmp_path.name}",
        str(tmp_path / "coco.json"),
        str(tmp_path / "images"),
        "--dataset",
        f"errors_{tmp_path.name}",
    ]


def test_tool_writes_table_and_confusion_matrix(tmp_path, capsys):
    results = tmp_path / "coco_instances_results.json"
    results.write_text(
        json.dumps(
            [
                dict(image_id=1, category_id=3, bbox=[0, 0, 10, 10], score=0.9),  # tp cat
                dict(
                    image_id=1, category_id=3, bbox=[10, 10, 10, 10], score=0.8
                ),  # cat on the dog: fp_cls
                dict(image_id=2, category_id=7, bbox=[12, 12, 6, 6], score=0.7),  # fp_bg dog
                dict(
                    image_id=2, category_id=7, bbox=[0, 0, 8, 8], score=0.1
                ),  # below 0.3: not counted
            ]
        )
    )
    out = tmp_path / "out"
    analyze_errors.main(["--input", str(results), "--output", str(out), *write_dataset(tmp_path)])
    table = (out / "errors.md").read_text()
    rows = {m[0]: m[1].split(" | ") for m in re.findall(r"^\| (\S+) \| (.*) \|$", table, re.M)}
    # GT, TP, missed, FP loc, FP dup, FP cls, FP bg, recall, precision
    assert rows["cat"] == ["1", "1", "0", "0", "0", "1", "0", "1.000", "0.500"]
    assert rows["dog"] == ["2", "0", "2", "0", "0", "0", "1", "0.000", "0.000"]
    assert rows["**total**"] == ["3", "1", "2", "0", "0", "1", "1", "0.333", "0.333"]
    assert "| cat | 1 | 1 | 0 |" in capsys.readouterr().out  # printed too
    png = cv2.imread(str(out / "confusion_matrix.png"))
    assert png is not None and png.shape[0] > 100


@pytest.mark.parametrize(
    "content",
    [
        None,  # no file
        "not json {",
        '{"image_id": 1}',
        # category 99: neither cat (3) nor dog (7)
        '[{"image_id": 1, "category_id": 99, "bbox": [1, 2, 3, 4], "score": 0.9}]',
    ],
    ids=["missing", "not-json", "not-a-list", "unknown-category"],
)
def test_bad_results_json_is_one_line_error_naming_the_file(content, tmp_path, capsys):
    results = tmp_path / "results.json"
    if content is not None:
        results.write_text(content)
    with pytest.raises(SystemExit) as e:
        analyze_errors.main(
            ["--input", str(results), "--output", str(tmp_path / "out"), *write_dataset(tmp_path)]
        )
    assert e.value.code == 1
    err = capsys.readouterr().err.strip()
    assert str(results) in err and "Traceback" not in err and "error: " in err.splitlines()[-1], err
    assert not (tmp_path / "out").exists()
