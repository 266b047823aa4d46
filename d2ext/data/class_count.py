"""The model's class count against each dataset's classes, checked when the loaders are built.

With NUM_CLASSES one smaller than the dataset's classes, the last class is trained silently as
background (labels == K are background for every loss); smaller still, training fails at the
first batch with a too-large label, with a message that names neither the key nor the dataset.
"""

from typing import Iterable, Union

from detectron2.data import MetadataCatalog

from d2ext.errors import DataError


def check_num_classes(dataset_names: Union[str, Iterable[str]], num_classes: int, key: str):
    """
    Raises DataError (a ValueError) naming `key` when a dataset's metadata has a thing_classes list whose
    length differs from `num_classes`. Datasets without thing_classes are not checked.

    Call after the loader is built: register_coco_instances fills thing_classes when the json is
    loaded.
    """
    if isinstance(dataset_names, str):
        dataset_names = [dataset_names]
    for name in dataset_names:
        classes = MetadataCatalog.get(name).get("thing_classes", None)
        if classes is not None and len(classes) != num_classes:
            raise DataError(
                f"{key} is {num_classes}, but dataset {name!r} has {len(classes)} classes "
                f"(thing_classes: {list(classes)[:10]}{' ...' if len(classes) > 10 else ''}); "
                f"set {key} {len(classes)} (d2ext.config.set_num_classes sets it for any method)."
            )
