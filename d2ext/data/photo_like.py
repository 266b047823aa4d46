"""The bundled photo-like detection dataset, "d2ext photos".

Generated procedurally and deterministically (seeded) on first use, in COCO-json format, under
``$DETECTRON2_DATASETS/d2ext_photos`` (default ``./datasets``), and registered on ``import d2ext``
as ``d2ext_photos_train``, ``d2ext_photos_val`` and ``d2ext_photos_minival``. See
datasets/README.md. Nothing is downloaded.

Where ``d2ext_shapes`` (d2ext.data.synthetic) is a label-assignment benchmark of many flat,
mostly small shapes, this one is closer to a small real-photo dataset, the case where a method
sees few, large, textured objects on busy backgrounds:

- textured, cluttered backgrounds: multi-octave value noise in a random palette, a colour
  gradient, organic patches (thresholded low-frequency noise) and unlabelled strokes and
  textured triangles;
- few LARGE objects: 1-5 per image, sides 20-80 % of the image's shorter side, of three classes
  that differ by outline (``ball``, ``box``, ``star``) filled with a random texture (noise,
  stripes, checks or dots) in random colours, shaded by the image's light direction, with a soft
  edge and a drop shadow;
- objects cut at the image border and partly hidden by others: each box is the tight box of the
  object's visible pixels, and an object is only placed where at least ``MIN_VISIBLE`` of it is
  visible and it hides at most ``MAX_HIDDEN_FRACTION`` of each earlier object;
- lighting and camera changes: an uneven illumination field, global gain, gamma and colour cast,
  occasional defocus blur, sensor noise and JPEG compression at quality 70-95.
"""

import cv2
import numpy as np

from .generated import GeneratedDataset

CLASSES = ["ball", "box", "star"]
SPLITS = {
    # name: (number of images, seed)
    "d2ext_photos_train": (240, 11),
    "d2ext_photos_val": (60, 12),
    # A small split for quick checks and tests.
    "d2ext_photos_minival": (20, 13),
}
# Bump when the generator changes, so old copies are regenerated rather than silently reused.
VERSION = 1
IMAGE_HEIGHT_RANGE = (256, 320)
IMAGE_WIDTH_RANGE = (288, 384)
MAX_OBJECTS = 5
SIDE_FRACTION = (0.2, 0.8)  # object side / the image's shorter side
MIN_VISIBLE = 0.4  # of an object's own area, inside the image and not hidden by later objects
MAX_HIDDEN_FRACTION = 0.5  # of an earlier object's visible area a later one may hide
MIN_BOX_SIDE = 8
PLACEMENT_TRIES = 10


def render_image(rng: np.random.Generator):
    """One image: (BGR uint8 array, [(class index, (x0, y0, x1, y1) exclusive box)], JPEG quality)."""
    height = int(rng.integers(*IMAGE_HEIGHT_RANGE, endpoint=True))
    width = int(rng.integers(*IMAGE_WIDTH_RANGE, endpoint=True))
    light = rng.uniform(0, 2 * np.pi)  # direction the light comes from, shared by the scene
    image = _background(rng, height, width)
    _draw_clutter(rng, image)

    # Placement: each new object must stay MIN_VISIBLE visible (border) and hide at most
    # MAX_HIDDEN_FRACTION of each earlier object's visible part; it is drawn on top.
    placed = []  # (category, full mask, texture, shading) in drawing order
    visible = []  # visible masks of the placed objects
    for _ in range(int(rng.integers(1, MAX_OBJECTS, endpoint=True))):
        category = int(rng.integers(len(CLASSES)))
        for _ in range(PLACEMENT_TRIES):
            mask, area = _object_mask(rng, category, height, width)
            if area == 0 or mask.sum() < MIN_VISIBLE * area:
                continue
            if any((v & mask).sum() > MAX_HIDDEN_FRACTION * v.sum() for v in visible):
                continue
            visible = [v & ~mask for v in visible]
            visible.append(mask)
            placed.append((category, mask))
            break

    objects = []
    for category, mask in placed:
        _draw_object(rng, image, category, mask, light)
    for (category, _), vis in zip(placed, visible):
        ys, xs = np.nonzero(vis)
        if len(xs) == 0:
            continue
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        if min(box[2] - box[0], box[3] - box[1]) >= MIN_BOX_SIDE:
            objects.append((category, box))

    image = _camera(rng, image, light)
    return image, objects, int(rng.integers(70, 95, endpoint=True))


def fractal_noise(rng, height, width, octaves=5, base_cells=3, persistence=0.55) -> np.ndarray:
    """Multi-octave value noise in [0, 1], (height, width) float32: random grids of 2^k finer
    cells, bicubically upsampled and summed with weights persistence^k."""
    out = np.zeros((height, width), np.float32)
    total = 0.0
    for k in range(octaves):
        cells = base_cells * 2**k
        gh = max(2, int(round(cells * height / max(height, width))) + 1)
        gw = max(2, int(round(cells * width / max(height, width))) + 1)
        grid = rng.random((gh, gw)).astype(np.float32)
        weight = persistence**k
        out += weight * cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
        total += weight
    out /= total
    lo, hi = out.min(), out.max()
    return (out - lo) / max(hi - lo, 1e-6)


def _palette(rng, n=3) -> np.ndarray:
    return rng.uniform(20, 235, size=(n, 3)).astype(np.float32)


def _colorize(noise: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """Maps noise in [0, 1] through a piecewise-linear palette of len(colors) colours."""
    x = noise * (len(colors) - 1)
    i = np.clip(x.astype(np.int32), 0, len(colors) - 2)
    t = (x - i)[..., None]
    return colors[i] * (1 - t) + colors[i + 1] * t


def _background(rng, height, width) -> np.ndarray:
    """Textured noise in a random palette over a colour gradient, with organic patches."""
    image = _colorize(
        fractal_noise(rng, height, width, base_cells=int(rng.integers(2, 6))), _palette(rng)
    )
    # A gradient (sky to ground, a lit wall): blended in.
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = np.cos(angle) * xx / width + np.sin(angle) * yy / height
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    c0, c1 = _palette(rng, 2)
    alpha = rng.uniform(0.2, 0.6)
    image = (1 - alpha) * image + alpha * (c0 + (c1 - c0) * ramp[..., None])
    # Organic patches: where a second low-frequency noise exceeds a threshold, another texture.
    for _ in range(int(rng.integers(0, 3))):
        region = fractal_noise(rng, height, width, octaves=3, base_cells=2) > rng.uniform(
            0.55, 0.75
        )
        region = cv2.GaussianBlur(region.astype(np.float32), (0, 0), 1.5)[..., None]
        texture = _texture(rng, height, width)
        image = image * (1 - region) + texture * region
    return np.clip(image, 0, 255).astype(np.uint8)


def _texture(rng, height, width) -> np.ndarray:
    """A (height, width, 3) float32 texture: noise, stripes, checks or dots in random colours."""
    kind = int(rng.integers(4))
    colors = _palette(rng, 2 + int(rng.integers(2)))
    if kind == 0:
        return _colorize(
            fractal_noise(rng, height, width, base_cells=int(rng.integers(2, 8))), colors
        )
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    u = np.cos(angle) * xx + np.sin(angle) * yy
    v = -np.sin(angle) * xx + np.cos(angle) * yy
    period = rng.uniform(5, 24)
    if kind == 1:  # stripes
        t = 0.5 + 0.5 * np.sin(2 * np.pi * u / period)
    elif kind == 2:  # checks
        t = ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
        t = cv2.GaussianBlur(t, (0, 0), 0.8)
    else:  # dots
        du = (u % period) - period / 2
        dv = (v % period) - period / 2
        t = (du**2 + dv**2 < (period * rng.uniform(0.2, 0.4)) ** 2).astype(np.float32)
        t = cv2.GaussianBlur(t, (0, 0), 0.8)
    # Some grain on top, as on any real surface.
    t = 0.8 * t + 0.2 * fractal_noise(rng, height, width, octaves=3, base_cells=8)
    return _colorize(t, colors)


def _draw_clutter(rng, image) -> None:
    """Unlabelled distractors: strokes (branches, cables) and textured triangles."""
    height, width = image.shape[:2]
    for _ in range(int(rng.integers(2, 8))):
        if rng.random() < 0.5:
            pts = np.cumsum(rng.normal(0, 0.15 * min(height, width), size=(4, 2)), axis=0)
            pts += [rng.uniform(0, width), rng.uniform(0, height)]
            color = tuple(float(c) for c in _palette(rng, 1)[0])
            cv2.polylines(
                image, [pts.astype(np.int32)], False, color, int(rng.integers(1, 6)), cv2.LINE_AA
            )
        else:
            side = rng.uniform(0.05, 0.3) * min(height, width)
            center = np.array([rng.uniform(0, width), rng.uniform(0, height)])
            pts = center + rng.uniform(-side, side, size=(3, 2))  # slivers: unlike a box
            mask = np.zeros((height, width), np.uint8)
            cv2.fillPoly(mask, [cv2.convexHull(pts.astype(np.int32))], 1)
            m = mask.astype(bool)
            if m.any():
                image[m] = np.clip(_texture(rng, height, width)[m], 0, 255).astype(np.uint8)


def _object_mask(rng, category: int, height: int, width: int):
    """(mask inside the image, the object's whole area in pixels) of a random object whose
    centre is anywhere in the image: objects near the border are cut."""
    side = float(np.exp(rng.uniform(*np.log(SIDE_FRACTION)))) * min(height, width)
    aspect = float(np.exp(rng.uniform(np.log(0.6), np.log(1 / 0.6))))  # w / h of the outline
    w, h = side * np.sqrt(aspect), side / np.sqrt(aspect)
    cx, cy = rng.uniform(0, width), rng.uniform(0, height)
    angle = rng.uniform(-30, 30)
    name = CLASSES[category]
    # Drawn on a canvas padded by the object's size, so that its area outside the image counts.
    pad = int(np.ceil(max(w, h))) + 2
    canvas = np.zeros((height + 2 * pad, width + 2 * pad), np.uint8)
    center = (cx + pad, cy + pad)
    if name == "ball":
        cv2.ellipse(canvas, (_pt(center), (w, h), angle), 1, -1)
    elif name == "box":
        pts = cv2.boxPoints((center, (w, h), angle))
        cv2.fillPoly(canvas, [pts.astype(np.int32)], 1)
    else:  # star: 5-7 points, inner radius 40-60 % of the outer
        n = int(rng.integers(5, 8))
        inner = rng.uniform(0.4, 0.6)
        phase = np.deg2rad(angle)
        t = phase + np.arange(2 * n) * np.pi / n
        r = np.where(np.arange(2 * n) % 2 == 0, 1.0, inner)
        pts = np.stack([center[0] + r * np.cos(t) * w / 2, center[1] + r * np.sin(t) * h / 2], 1)
        cv2.fillPoly(canvas, [np.round(pts).astype(np.int32)], 1)
    area = int(canvas.sum())
    return canvas[pad : pad + height, pad : pad + width].astype(bool), area


def _pt(p):
    return (float(p[0]), float(p[1]))


def _draw_object(rng, image, category: int, mask: np.ndarray, light: float) -> None:
    """A textured, shaded object with a soft edge and a drop shadow, in place."""
    height, width = image.shape[:2]
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return
    direction = np.array([np.cos(light), np.sin(light)])
    # Drop shadow: the mask moved away from the light, blurred, darkening what is below.
    offset = -direction * rng.uniform(3, 10)
    shift = np.float32([[1, 0, offset[0]], [0, 1, offset[1]]])
    shadow = cv2.warpAffine(mask.astype(np.float32), shift, (width, height))
    shadow = cv2.GaussianBlur(shadow, (0, 0), 4)[..., None] * rng.uniform(0.3, 0.6)
    out = image.astype(np.float32) * (1 - shadow)

    texture = _texture(rng, height, width)
    # Shading: lit side brighter. A ball gets a spherical highlight, the others a linear ramp.
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    u = (xx - (x0 + x1) / 2) / max(x1 - x0, 1) * 2
    v = (yy - (y0 + y1) / 2) / max(y1 - y0, 1) * 2
    if CLASSES[category] == "ball":
        hx, hy = 0.4 * direction
        d2 = (u - hx) ** 2 + (v - hy) ** 2
        shade = 0.45 + 0.85 * np.exp(-d2 / 0.6)
    else:
        shade = 0.85 + 0.25 * (u * direction[0] + v * direction[1])
    texture = texture * shade[..., None]
    alpha = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 0.7)[..., None]
    out = out * (1 - alpha) + texture * alpha
    image[:] = np.clip(out, 0, 255).astype(np.uint8)


def _camera(rng, image: np.ndarray, light: float) -> np.ndarray:
    """Uneven illumination, exposure, gamma, colour cast, defocus, sensor noise."""
    height, width = image.shape[:2]
    x = image.astype(np.float32) / 255.0
    field = 0.7 + 0.6 * fractal_noise(rng, height, width, octaves=2, base_cells=2)
    x = x * field[..., None] * rng.uniform(0.6, 1.3)
    x = np.clip(x, 0, 1) ** rng.uniform(0.7, 1.4)
    x = x * rng.uniform(0.85, 1.15, size=3)
    if rng.random() < 0.3:
        x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.5, 1.2))
    x = x * 255.0 + rng.normal(0, rng.uniform(2, 8), x.shape)
    return np.clip(x, 0, 255).astype(np.uint8)


DATASET = GeneratedDataset(
    folder="d2ext_photos",
    description="d2ext photo-like objects",
    classes=CLASSES,
    splits=SPLITS,
    version=VERSION,
    render=render_image,
)
dataset_root, split_paths, prepare_split = DATASET.root, DATASET.split_paths, DATASET.prepare_split
register_photo_like = DATASET.register
