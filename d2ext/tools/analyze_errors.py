r"""
A detector's errors by class, from an evaluation's detections (the coco_instances_results.json
that COCOEvaluator writes) and the ground truth of their dataset, as mmdetection's
tools/analysis_tools/confusion_matrix.py: true positives, missed objects and false positives by
kind (localisation, duplicate, class confusion, background) at one score threshold. The rules:
d2ext/evaluation/error_analysis.py.

    d2ext-analyze-errors --input output/atss_R_18_FPN_tiny/inference/coco_instances_results.json \
        --dataset d2ext_shapes_val --output output/errors --conf-threshold 0.3

writes OUTPUT/errors.md (the table, which it also prints) and OUTPUT/confusion_matrix.png.
--coco-dataset / --voc-dataset / --import register your own dataset for --dataset.
"""

import argparse
import logging
import os

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from detectron2.utils.logger import setup_logger

import d2ext  # noqa: F401  (registers d2ext's datasets)
from d2ext.data.registration import add_registration_arguments, check_registered, register_from_args
from d2ext.evaluation.error_analysis import ErrorAnalysis, markdown_table
from d2ext.tools.cli import add_debug_argument, command
from d2ext.tools.visualize_json_results import check_categories, contiguous_id_map, load_predictions

logger = logging.getLogger("d2ext")


def get_parser():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--input", required=True, help="COCO results json (a list of detections)")
    parser.add_argument(
        "--dataset", required=True, help="the registered dataset the results are of"
    )
    parser.add_argument(
        "--output", required=True, help="folder for errors.md and confusion_matrix.png"
    )
    parser.add_argument(
        "--conf-threshold",
        type=float,
        default=0.3,
        help="count detections with at least this score",
    )
    parser.add_argument(
        "--iou-threshold",
        type=float,
        default=0.5,
        help="IoU with a GT for a true positive (and a class confusion)",
    )
    add_registration_arguments(parser)  # --coco-dataset ...: your own --dataset
    add_debug_argument(parser)
    return parser


def analyze(records, predictions, id_map, num_classes, score_thr, iou_thr) -> ErrorAnalysis:
    """Every record's ground truth against its detections (a results json's, by image id)."""
    analysis = ErrorAnalysis(num_classes, score_thr=score_thr, iou_thr=iou_thr)
    for record in records:
        annotations = record.get("annotations", [])
        detections = predictions.get(record["image_id"], [])
        analysis.add(
            BoxMode.convert(
                np.array([p["bbox"] for p in detections], dtype=np.float64).reshape(-1, 4),
                BoxMode.XYWH_ABS,
                BoxMode.XYXY_ABS,
            ),
            [p["score"] for p in detections],
            [id_map[p["category_id"]] for p in detections],
            [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in annotations],
            [a["category_id"] for a in annotations],
            [bool(a.get("iscrowd", 0)) for a in annotations],
        )
    return analysis


def plot_confusion_matrix(confusion, class_names, path):
    """The matrix normalised per GT row (percent), each non-empty cell annotated."""
    import matplotlib

    matplotlib.use("Agg")  # files only: works without a display
    import matplotlib.pyplot as plt

    rows = confusion.sum(1, keepdims=True)
    percent = np.divide(
        confusion * 100.0, rows, out=np.full(confusion.shape, np.nan), where=rows > 0
    )
    labels = [*class_names, "background"]
    size = max(5.5, 0.5 * len(labels) + 2.5)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    image = ax.imshow(percent, cmap="plasma", vmin=0, vmax=100)
    fig.colorbar(image, ax=ax, label="% of the row")
    for (i, j), value in np.ndenumerate(percent):
        if confusion[i, j]:
            ax.text(
                j,
                i,
                f"{value:.0f}%\n({confusion[i, j]})",
                ha="center",
                va="center",
                color="w" if value < 60 else "k",
                fontsize=7,
            )
    ticks = np.arange(len(labels))
    ax.set_xticks(ticks, labels, rotation=45, ha="right")
    ax.set_yticks(ticks, labels)
    ax.set_xlabel("predicted (background: GT missed)")
    ax.set_ylabel("ground truth (background: no GT)")
    ax.set_title("% of each ground-truth row (count)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@command
def main(argv=None):
    parser = get_parser()
    args = parser.parse_args(argv)
    if not 0 < args.iou_threshold <= 1:
        parser.error(f"--iou-threshold {args.iou_threshold} is not in (0, 1]")
    setup_logger(name="d2ext")
    predictions = load_predictions(args.input)
    register_from_args(args)
    check_registered(args.dataset, "--dataset")
    records = DatasetCatalog.get(args.dataset)
    class_names = list(MetadataCatalog.get(args.dataset).thing_classes)  # filled by loading
    id_map = contiguous_id_map(args.dataset)
    check_categories(predictions, id_map, args.input)
    if predictions and not predictions.keys() & {r["image_id"] for r in records}:
        logger.warning(
            f"No image id of {args.input} is in {args.dataset}: results of another dataset?"
        )
    analysis = analyze(
        records, predictions, id_map, len(class_names), args.conf_threshold, args.iou_threshold
    )
    table = markdown_table(analysis, class_names)
    os.makedirs(args.output, exist_ok=True)
    with open(os.path.join(args.output, "errors.md"), "w") as f:
        f.write(
            f"# Errors of {args.input} on {args.dataset}\n\n"
            f"Detections with score >= {args.conf_threshold}; IoU threshold {args.iou_threshold} "
            f"(localisation errors: IoU >= {analysis.loc_iou_thr}). "
            f"{analysis.total()['ignored']} detections in crowd regions ignored. "
            "Rules: d2ext/evaluation/error_analysis.py.\n\n" + table + "\n"
        )
    plot_confusion_matrix(
        analysis.confusion, class_names, os.path.join(args.output, "confusion_matrix.png")
    )
    print(table)
    logger.info(f"errors.md and confusion_matrix.png written to {args.output}")
    return analysis


if __name__ == "__main__":
    main()
