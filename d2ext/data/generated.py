"""What the bundled generated datasets (``d2ext_shapes``, ``d2ext_photos``) share: seeded
generation on first use into COCO-json splits under ``$DETECTRON2_DATASETS/<folder>`` (default
``./datasets``), a version that regenerates stale copies, and registration with Detectron2's
catalogs. Each dataset module supplies only its ``render(rng)``."""

import json
import logging
import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence, Tuple

import cv2
import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

logger = logging.getLogger(__name__)

Box = Tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)
# One image: (BGR uint8 array, [(class index, box)], JPEG quality).
Render = Callable[[np.random.Generator], Tuple[np.ndarray, List[Tuple[int, Box]], int]]


@dataclass(frozen=True)
class GeneratedDataset:
    """A generated COCO-json dataset: split ``<folder>_<split>`` lives in
    ``<root>/<folder>/<split>/{annotations.json,images/}``."""

    folder: str  # also the prefix of the split names
    description: str
    classes: Sequence[str]
    splits: Dict[str, Tuple[int, int]]  # name: (number of images, seed)
    version: int  # bump when the generator changes, so old copies are regenerated
    render: Render

    def root(self, root=None) -> str:
        return os.path.join(root or os.getenv("DETECTRON2_DATASETS", "datasets"), self.folder)

    def split_paths(self, name: str, root=None) -> Tuple[str, str]:
        """(json file, image folder) of a split."""
        split_root = os.path.join(self.root(root), name[len(self.folder) + 1 :])
        return os.path.join(split_root, "annotations.json"), os.path.join(split_root, "images")

    def prepare_split(self, name: str, root=None, force: bool = False) -> str:
        """Writes split ``name`` unless an up-to-date copy exists. Returns its json path."""
        json_file, image_dir = self.split_paths(name, root)
        if not force and self._is_current(json_file):
            return json_file
        num_images, seed = self.splits[name]
        logger.info(
            f"Generating {num_images} images of {name} into {os.path.dirname(json_file)} ..."
        )
        os.makedirs(image_dir, exist_ok=True)
        rng = np.random.default_rng(seed)
        images, annotations = [], []
        for image_id in range(1, num_images + 1):
            image, objects, quality = self.render(rng)
            file_name = f"{image_id:06d}.jpg"
            cv2.imwrite(
                os.path.join(image_dir, file_name), image, [cv2.IMWRITE_JPEG_QUALITY, quality]
            )
            images.append(
                {
                    "id": image_id,
                    "file_name": file_name,
                    "height": image.shape[0],
                    "width": image.shape[1],
                }
            )
            for category, box in objects:
                annotations.append(_annotation(len(annotations) + 1, image_id, category, box))
        coco = {
            "info": {"description": f"{self.description}, {name}", "version": self.version},
            "images": images,
            "annotations": annotations,
            "categories": [{"id": i + 1, "name": c} for i, c in enumerate(self.classes)],
        }
        tmp = json_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(coco, f)
        os.replace(
            tmp, json_file
        )  # the json appears last: its presence means the split is complete
        return json_file

    def register(self, root=None) -> None:
        """Registers the splits; images are generated when a split is first loaded."""
        for name in self.splits:
            if name in DatasetCatalog.list():
                continue
            json_file, image_root = self.split_paths(name, root)
            DatasetCatalog.register(name, lambda name=name: self._load(name, root))
            # COCOEvaluator opens json_file; Detectron2 builds the test loader (which generates
            # the split) before the evaluator.
            MetadataCatalog.get(name).set(
                json_file=json_file,
                image_root=image_root,
                evaluator_type="coco",
                thing_classes=list(self.classes),
            )

    def _is_current(self, json_file: str) -> bool:
        if not os.path.isfile(json_file):
            return False
        with open(json_file) as f:
            return json.load(f).get("info", {}).get("version") == self.version

    def _load(self, name: str, root=None) -> List[Dict]:
        json_file = self.prepare_split(name, root)
        return load_coco_json(json_file, self.split_paths(name, root)[1], name)


def _annotation(annotation_id: int, image_id: int, category: int, box: Box) -> Dict:
    x0, y0, x1, y1 = box
    w, h = float(x1 - x0), float(y1 - y0)
    return {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": category + 1,
        "bbox": [float(x0), float(y0), w, h],
        "area": w * h,
        "iscrowd": 0,
    }
