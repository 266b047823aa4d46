"""A user's own datasets from the command line, without code: every d2ext tool that takes a config
accepts

    --coco-dataset NAME JSON IMAGE_ROOT   (Detectron2's register_coco_instances; repeatable)
    --voc-dataset NAME DIR SPLIT          (Detectron2's register_pascal_voc; repeatable)
    --import MODULE                       (a module of yours that registers datasets; repeatable)
    --train-dataset NAME                  (DATASETS.TRAIN / dataloader.train.dataset.names; repeatable)
    --test-dataset NAME                   (DATASETS.TEST / dataloader.test.dataset.names; repeatable)

and, when datasets are given this way and the command line does not set the class count itself,
sets the configured method's class-count key (d2ext.config.method_keys) to the number of classes
of the training sets (without --train-dataset: of the test sets), and logs it.
"""

import argparse
import glob
import importlib
import logging
import os
import xml.etree.ElementTree as ET
from typing import List, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog

from d2ext.config import get_num_classes, num_classes_key, set_num_classes
from d2ext.errors import DataError

logger = logging.getLogger(__name__)


def add_registration_arguments(parser: argparse.ArgumentParser):
    """--coco-dataset, --voc-dataset, --import: datasets to register (see register_from_args)."""
    group = parser.add_argument_group("datasets (your own, without code)")
    group.add_argument(
        "--coco-dataset",
        nargs=3,
        action="append",
        default=[],
        metavar=("NAME", "JSON", "IMAGE_ROOT"),
        help="register a COCO-format dataset (register_coco_instances); repeatable",
    )
    group.add_argument(
        "--voc-dataset",
        nargs=3,
        action="append",
        default=[],
        metavar=("NAME", "DIR", "SPLIT"),
        help="register a Pascal VOC-style folder (DIR/Annotations, DIR/JPEGImages, "
        "DIR/ImageSets/Main/SPLIT.txt; register_pascal_voc); repeatable",
    )
    group.add_argument(
        "--import",
        dest="modules",
        action="append",
        default=[],
        metavar="MODULE",
        help="import a module that registers datasets; repeatable",
    )
    return group


def add_dataset_arguments(parser: argparse.ArgumentParser, train: bool = True):
    """The registration arguments, plus --train-dataset (when ``train``) and --test-dataset, which
    set the config's datasets (apply_dataset_arguments)."""
    group = add_registration_arguments(parser)
    if train:
        # One name per flag (repeatable): a list-taking flag would swallow the config overrides after it.
        group.add_argument(
            "--train-dataset",
            action="append",
            metavar="NAME",
            help="a training dataset (repeatable; the class count follows their classes)",
        )
    group.add_argument(
        "--test-dataset", action="append", metavar="NAME", help="a test dataset (repeatable)"
    )
    return parser


def voc_class_names(dirname: str) -> List[str]:
    """The object names of a VOC-style folder's annotations, sorted (for Pascal VOC itself, its
    20 classes in Detectron2's order)."""
    names = set()
    for path in glob.glob(os.path.join(dirname, "Annotations", "*.xml")):
        try:
            names.update(o.findtext("name") for o in ET.parse(path).getroot().iter("object"))
        except ET.ParseError as e:
            raise DataError(f"{path} is not a valid VOC annotation: {e}") from None
    names.discard(None)
    if not names:
        raise DataError(
            f"--voc-dataset {dirname}: no objects in {os.path.join(dirname, 'Annotations', '*.xml')}"
        )
    return sorted(names)


def register_datasets(
    coco: Sequence[Sequence[str]] = (),
    voc: Sequence[Sequence[str]] = (),
    modules: Sequence[str] = (),
):
    """Imports ``modules``, then registers each COCO (name, json, image root) and VOC (name, dir,
    split) dataset not registered yet. Subprocesses of a tool call it with the same arguments."""
    from detectron2.data.datasets import register_coco_instances, register_pascal_voc

    for module in modules:
        importlib.import_module(module)
    registered = set(DatasetCatalog.list())
    for name, json_file, image_root in coco:
        if name not in registered:
            for path in (json_file, image_root):
                if not os.path.exists(path):
                    raise DataError(f"--coco-dataset {name}: {path!r} does not exist")
            register_coco_instances(
                name, {}, os.path.abspath(json_file), os.path.abspath(image_root)
            )
    for name, dirname, split in voc:
        if name not in registered:
            if not os.path.isfile(os.path.join(dirname, "ImageSets", "Main", split + ".txt")):
                raise DataError(
                    f"--voc-dataset {name}: {dirname}/ImageSets/Main/{split}.txt does not exist"
                )
            year = 2007 if "2007" in os.path.basename(os.path.abspath(dirname)) else 2012
            register_pascal_voc(
                name, os.path.abspath(dirname), split, year, class_names=voc_class_names(dirname)
            )


def register_from_args(args) -> dict:
    """register_datasets with a tool's parsed arguments; returns them as keyword arguments (json)
    for subprocesses."""
    datasets = {
        "coco": list(getattr(args, "coco_dataset", [])),
        "voc": list(getattr(args, "voc_dataset", [])),
        "modules": list(getattr(args, "modules", [])),
    }
    register_datasets(**datasets)
    return datasets


def check_registered(name: str, what: str = "dataset"):
    """A DataError naming ``name`` (``what``: how the user gave it, e.g. "--dataset") unless it is
    a registered dataset."""
    if name not in DatasetCatalog.list():
        raise DataError(
            f"{what} {name!r} is not registered: register it with --coco-dataset NAME JSON IMAGE_ROOT, "
            "--voc-dataset NAME DIR SPLIT or --import MODULE"
        )


def thing_classes(name: str) -> List[str]:
    """A registered dataset's thing_classes; loading a register_coco_instances dataset is what
    fills them."""
    check_registered(name)
    if MetadataCatalog.get(name).get("thing_classes", None) is None:
        DatasetCatalog.get(name)
    classes = MetadataCatalog.get(name).get("thing_classes", None)
    if not classes:
        raise DataError(f"dataset {name!r} has no thing_classes in its metadata")
    return list(classes)


def _set(cfg, yaml_key: str, lazy_key: str, names: List[str]):
    if hasattr(cfg, "MODEL"):  # yaml
        cfg.merge_from_list([yaml_key, tuple(names)])
        return
    parent_key, leaf = lazy_key.rsplit(".", 1)
    parent = cfg
    for part in parent_key.split("."):
        parent = parent[part]
    parent[leaf] = names if len(names) > 1 else names[0]


def _opts_set(opts: Sequence[str], key: str) -> bool:
    """Whether command-line overrides set ``key`` (yaml "KEY VALUE" pairs or lazy "key=value")."""
    return any(o == key or o.startswith(key + "=") for o in opts)


def apply_dataset_arguments(cfg, args):
    """--train-dataset / --test-dataset into the config (not frozen), and the class count from
    their classes (the training sets', or without them the test sets') unless the command line's
    overrides set the class count themselves."""
    train = getattr(args, "train_dataset", None)
    test = getattr(args, "test_dataset", None)
    if test:
        _set(cfg, "DATASETS.TEST", "dataloader.test.dataset.names", test)
    if train:
        _set(cfg, "DATASETS.TRAIN", "dataloader.train.dataset.names", train)
    source = train or test
    if not source:
        return cfg
    key = num_classes_key(cfg)
    if _opts_set(getattr(args, "opts", []), key):
        return cfg  # the user's value; the loaders check it against the data
    counts = {name: len(thing_classes(name)) for name in source}
    if len(set(counts.values())) > 1:
        raise DataError(f"the datasets have different class counts {counts}; set {key}")
    set_num_classes(cfg, next(iter(counts.values())))
    logger.info(f"{key} set to {get_num_classes(cfg)} from the classes of {', '.join(source)}")
    return cfg


__all__ = [
    "add_dataset_arguments",
    "add_registration_arguments",
    "apply_dataset_arguments",
    "register_datasets",
    "register_from_args",
    "check_registered",
    "thing_classes",
    "voc_class_names",
]
