"""The bundled synthetic detection dataset, "d2ext shapes".

Generated deterministically (seeded) on first use, in COCO-json format, under
``$DETECTRON2_DATASETS/d2ext_shapes`` (default ``./datasets``), and registered as
``d2ext_shapes_train`` and ``d2ext_shapes_val``. See datasets/README.md.

What makes it a label-assignment benchmark rather than a toy: five classes that differ by shape
only (colours are random), objects from 8 px to most of the image with aspect ratios 1:3 to 3:1,
overlapping and crowded layouts, unlabelled clutter (lines, specks, partial outlines) and noisy,
shaded backgrounds.
"""

import cv2
import numpy as np

from .generated import GeneratedDataset

CLASSES = ["rectangle", "ellipse", "triangle", "cross", "ring"]
SPLITS = {
    # name: (number of images, seed)
    "d2ext_shapes_train": (1000, 1),
    "d2ext_shapes_val": (200, 2),
    # A small split for quick checks and tests.
    "d2ext_shapes_minival": (40, 3),
}
# Bump when the generator changes, so old copies are regenerated rather than silently reused.
VERSION = 1
IMAGE_HEIGHT_RANGE = (256, 320)
IMAGE_WIDTH_RANGE = (288, 384)
MAX_OBJECTS = 14
MIN_SIDE, MAX_SIDE_FRACTION = 8, 0.7
# Objects may overlap and nest, but a later (smaller) one may cover at most this much of the box
# of an earlier one.
MAX_HIDDEN_FRACTION = 0.4


def _render_image(rng: np.random.Generator):
    height = int(rng.integers(*IMAGE_HEIGHT_RANGE, endpoint=True))
    width = int(rng.integers(*IMAGE_WIDTH_RANGE, endpoint=True))
    image = _background(rng, height, width)
    _draw_clutter(rng, image)
    # Largest first, so a smaller object is never hidden by a later, larger one.
    boxes = [
        _sample_box(rng, height, width)
        for _ in range(int(rng.integers(1, MAX_OBJECTS, endpoint=True)))
    ]
    boxes.sort(key=_area, reverse=True)
    objects = []
    for box in boxes:
        if any(
            _intersection(box, other) > MAX_HIDDEN_FRACTION * _area(other) for _, other in objects
        ):
            continue
        category = int(rng.integers(len(CLASSES)))
        _draw_shape(image, category, box, _color(rng), rng)
        objects.append((category, box))
    noise = rng.normal(0, 8, image.shape)
    image = np.clip(image.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    return image, objects, 95  # JPEG quality


def _background(rng, height, width) -> np.ndarray:
    """A random colour gradient: shading the detector must learn to ignore."""
    c0, c1 = rng.uniform(40, 215, size=(2, 3))
    ramp = np.linspace(0, 1, width if rng.random() < 0.5 else height)
    ramp = ramp[None, :, None] if len(ramp) == width else ramp[:, None, None]
    image = c0 + (c1 - c0) * ramp
    return np.ascontiguousarray(np.broadcast_to(image, (height, width, 3))).astype(np.uint8)


def _draw_clutter(rng, image) -> None:
    """Unlabelled distractors: thin lines, specks and open arcs."""
    height, width = image.shape[:2]
    for _ in range(int(rng.integers(0, 12))):
        p = (int(rng.integers(width)), int(rng.integers(height)))
        q = (int(rng.integers(width)), int(rng.integers(height)))
        kind = rng.integers(3)
        if kind == 0:
            cv2.line(image, p, q, _color(rng), 1, cv2.LINE_AA)
        elif kind == 1:
            cv2.circle(image, p, int(rng.integers(1, 3)), _color(rng), -1, cv2.LINE_AA)
        else:
            axes = (int(rng.integers(4, 30)), int(rng.integers(4, 30)))
            start = int(rng.integers(360))
            cv2.ellipse(
                image, p, axes, 0, start, start + int(rng.integers(60, 200)), _color(rng), 1
            )


def _sample_box(rng, height, width):
    # Log-uniform size: as many small objects as large ones.
    max_side = MAX_SIDE_FRACTION * min(height, width)
    side = float(np.exp(rng.uniform(np.log(MIN_SIDE), np.log(max_side))))
    aspect = float(np.exp(rng.uniform(np.log(1 / 3), np.log(3))))  # w / h
    w, h = side * np.sqrt(aspect), side / np.sqrt(aspect)
    w, h = int(round(np.clip(w, MIN_SIDE, width - 2))), int(round(np.clip(h, MIN_SIDE, height - 2)))
    x0 = int(rng.integers(0, width - w))
    y0 = int(rng.integers(0, height - h))
    return (x0, y0, x0 + w, y0 + h)


def _draw_shape(image, category: int, box, color, rng) -> None:
    """Draws CLASSES[category] so that it touches all four sides of box (x0, y0, x1, y1), whose
    x1/y1 are exclusive pixel borders."""
    x0, y0, x1, y1 = box
    xe, ye = x1 - 1, y1 - 1  # last pixel inside
    cx, cy = (x0 + xe) / 2, (y0 + ye) / 2
    name = CLASSES[category]
    if name == "rectangle":
        cv2.rectangle(image, (x0, y0), (xe, ye), color, -1)
    elif name in ("ellipse", "ring"):
        center = (int(round(cx)), int(round(cy)))
        axes = (max((xe - x0) // 2, 1), max((ye - y0) // 2, 1))
        thickness = -1 if name == "ellipse" else max(2, min(axes) // 3)
        # A thick outline grows outwards by half its width: shrink the axes to stay in the box.
        if thickness > 0:
            axes = (max(axes[0] - thickness // 2, 1), max(axes[1] - thickness // 2, 1))
        cv2.ellipse(image, center, axes, 0, 0, 360, color, thickness)
    elif name == "triangle":
        apex_x = int(rng.integers(x0, xe + 1))
        pts = np.array([[apex_x, y0], [x0, ye], [xe, ye]], dtype=np.int32)
        cv2.fillPoly(image, [pts], color)
    elif name == "cross":
        bar_w = max(2, (xe - x0) // 3)
        bar_h = max(2, (ye - y0) // 3)
        mx, my = int(cx), int(cy)
        cv2.rectangle(image, (mx - bar_w // 2, y0), (mx + bar_w // 2, ye), color, -1)
        cv2.rectangle(image, (x0, my - bar_h // 2), (xe, my + bar_h // 2), color, -1)


def _color(rng):
    return tuple(int(c) for c in rng.integers(0, 256, size=3))


def _area(box) -> int:
    return (box[2] - box[0]) * (box[3] - box[1])


def _intersection(a, b) -> int:
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


DATASET = GeneratedDataset(
    folder="d2ext_shapes",
    description="d2ext synthetic shapes",
    classes=CLASSES,
    splits=SPLITS,
    version=VERSION,
    render=_render_image,
)
dataset_root, split_paths, prepare_split = DATASET.root, DATASET.split_paths, DATASET.prepare_split
register_synthetic = DATASET.register
