r"""
Draws a config's training data with its ground-truth boxes into image files, as Detectron2's
tools/visualize_data.py, for yaml and lazy (.py) configs:

  --source annotation   the training datasets' records as annotated (DatasetCatalog), named after
                        their image files
  --source dataloader   the images d2ext's training loader yields, after the config's augmentations
                        (INPUT.TRAIN_PIPELINE: resize and flip, or the SSD pipeline; a lazy config's
                        dataloader.train), with the boxes they carry then; named <index>_<image id>.jpg

    d2ext-visualize-data --source dataloader --config-file configs/Synthetic/atss_R_18_FPN_tiny.yaml \
        --output-dir output/data --num-images 20

--train-dataset NAME (with --coco-dataset / --voc-dataset / --import) draws another dataset.
"""

import argparse
import itertools
import logging
import os

import cv2
import numpy as np
from detectron2.config import CfgNode, instantiate
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.detection_utils import convert_image_to_rgb, read_image
from detectron2.utils.logger import setup_logger
from detectron2.utils.visualizer import Visualizer

import d2ext  # noqa: F401  (registers d2ext's models and datasets)
from d2ext.data.registration import add_dataset_arguments
from d2ext.engine import Trainer
from d2ext.errors import DataError
from d2ext.tools.cli import add_config_arguments, command, config_from_args

logger = logging.getLogger("d2ext")


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def get_parser():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--source",
        choices=["annotation", "dataloader"],
        required=True,
        help="the datasets as annotated, or the training loader's output (augmented)",
    )
    add_config_arguments(parser)
    parser.add_argument("--output-dir", default="./", help="folder for the image files")
    parser.add_argument(
        "--num-images",
        type=positive_int,
        default=20,
        help="how many images to draw (the training loader never ends)",
    )
    add_dataset_arguments(parser, train=True)  # --train-dataset: the data drawn
    parser.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        help="config overrides (KEY VALUE ... for yaml, key=value for .py)",
    )
    return parser


def train_dataset_names(cfg):
    """The training datasets, each checked to be registered (else a DataError naming it)."""
    if isinstance(cfg, CfgNode):
        names = list(cfg.DATASETS.TRAIN)
    else:
        names = cfg.dataloader.train.dataset.names
        names = [names] if isinstance(names, str) else list(names)
    for name in names:
        if name not in DatasetCatalog.list():
            raise DataError(
                f"training dataset {name!r} is not registered: register it with --coco-dataset NAME JSON "
                "IMAGE_ROOT, --voc-dataset NAME DIR SPLIT or --import MODULE"
            )
    return names


def drawn_annotations(names):
    """(file name, drawing) of each record of the training datasets, as annotated."""
    for dataset_name in names:
        records = DatasetCatalog.get(dataset_name)
        metadata = MetadataCatalog.get(
            dataset_name
        )  # after loading: that fills a COCO json's class names
        for record in records:
            image_rgb = read_image(record["file_name"], format="RGB")
            drawing = Visualizer(image_rgb, metadata).draw_dataset_dict(record).get_image()
            yield os.path.basename(record["file_name"]), drawing


def build_train_loader(cfg):
    """d2ext's training loader of the config: the Trainer's (INPUT.TRAIN_PIPELINE's mapper) for
    yaml, dataloader.train for lazy configs. Without worker processes, as Detectron2's tool: the
    caller stops after a few images."""
    if isinstance(cfg, CfgNode):
        cfg.DATALOADER.NUM_WORKERS = 0
        return Trainer.build_train_loader(cfg)
    if "num_workers" in cfg.dataloader.train:
        cfg.dataloader.train.num_workers = 0
    return instantiate(cfg.dataloader.train)


def input_format(cfg):
    if isinstance(cfg, CfgNode):
        return cfg.INPUT.FORMAT
    return cfg.dataloader.train.mapper.get("image_format", "BGR")


def loader_images(cfg):
    """(file name, RGB image, gt Instances) of each image the training loader yields. The file
    name counts the images: the sampler repeats the dataset, so an image id may come again."""
    fmt = input_format(cfg)
    batches = build_train_loader(cfg)
    index = itertools.count()
    for batch in batches:
        for per_image in batch:
            # CHW in the model's input format. The SSD pipeline's photometric distortion leaves
            # floats beyond [0, 255], which an image file cannot show: clipped.
            image = per_image["image"].permute(1, 2, 0).numpy().clip(0, 255).astype(np.uint8)
            name = f"{next(index):05d}_{per_image.get('image_id', 'image')}.jpg"
            yield name, convert_image_to_rgb(image, fmt), per_image["instances"]


def draw_instances(image_rgb, instances, metadata):
    """The gt boxes (and masks, if any) of a loader image, labelled with their class names."""
    classes = metadata.get("thing_classes", None)
    labels = [classes[i] for i in instances.gt_classes.tolist()] if classes else None
    visualizer = Visualizer(image_rgb, metadata)
    masks = instances.gt_masks if instances.has("gt_masks") else None
    return visualizer.overlay_instances(
        boxes=instances.gt_boxes, labels=labels, masks=masks
    ).get_image()


def drawn_loader_images(cfg, dataset_name):
    """(file name, drawing) of each image the training loader yields, with its gt boxes."""
    for file_name, image_rgb, instances in loader_images(cfg):
        # Looked up once the loader has loaded the datasets, which fills a COCO json's class names.
        metadata = MetadataCatalog.get(dataset_name)
        yield file_name, draw_instances(image_rgb, instances, metadata)


@command
def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logger(name="d2ext")
    cfg = config_from_args(args)
    names = train_dataset_names(cfg)
    if args.source == "annotation":
        drawings = drawn_annotations(names)
    else:
        drawings = drawn_loader_images(cfg, names[0])
    os.makedirs(args.output_dir, exist_ok=True)
    written = []
    for file_name, drawing in itertools.islice(drawings, args.num_images):
        written.append(os.path.join(args.output_dir, file_name))
        cv2.imwrite(written[-1], drawing[:, :, ::-1])
    logger.info(f"{len(written)} images ({args.source}) written to {args.output_dir}")
    return written


if __name__ == "__main__":
    main()
