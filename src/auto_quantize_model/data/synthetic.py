"""Deterministic synthetic detection data laid out exactly like COCO2017.

The demo profile cannot download COCO, so it trains on coloured shapes instead. The set is
built to make mAP informative rather than trivially 1.0: five shape classes whose colours
overlap, objects from a few pixels to most of the image, partial occlusion and truncation at
the border, cluttered noisy backgrounds, background-only images, non-square and smaller
images, and a few single-channel (grayscale) JPEGs where colour gives no hint at all.

Everything is derived from ``seed`` with NumPy's PCG64 generator, one stream per image, and
written without timestamps, so the same arguments give byte-identical files.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from auto_quantize_model.utils.io import write_json_atomic

# Non-contiguous ids like COCO's 1..90-with-gaps, so consumers must map ids to class indices.
CATEGORIES: tuple[dict, ...] = (
    {"id": 1, "name": "circle", "supercategory": "shape"},
    {"id": 3, "name": "rectangle", "supercategory": "shape"},
    {"id": 7, "name": "triangle", "supercategory": "shape"},
    {"id": 10, "name": "ring", "supercategory": "shape"},
    {"id": 15, "name": "cross", "supercategory": "shape"},
)
# Base colours deliberately share channels (circle/ring, rectangle/cross) so shape matters.
_BASE_COLOURS = {1: (220, 60, 50), 3: (50, 90, 210), 7: (60, 190, 70), 10: (200, 90, 60), 15: (70, 70, 200)}
_ASPECTS = (1.0, 1.0, 4 / 3, 3 / 2, 16 / 9)  # longer/shorter side; square is the most common
_MAX_OBJECTS = 6
_MIN_VISIBLE_FRACTION = 0.5  # an object hidden more than this would be an unlearnable label
_MIN_OBJECT_PIXELS = 12
_PLACEMENT_TRIES = 20
_JPEG_QUALITY = 90
_SPLITS = (("train2017", 0), ("val2017", 1))
_STAGING = ".synthetic-staging"


@dataclass(frozen=True)
class SyntheticCocoResult:
    """Where the synthetic set was written and how big it is."""

    root: Path
    train_images: Path
    val_images: Path
    train_annotations: Path
    val_annotations: Path
    num_train: int
    num_val: int
    num_train_boxes: int
    num_val_boxes: int
    category_names: tuple[str, ...]


@dataclass(frozen=True)
class _Object:
    category_id: int
    mask: np.ndarray  # bool (H, W), the pixels the shape covers before later objects occlude it


def generate_synthetic_coco(
    out_dir: str | os.PathLike,
    num_train: int = 128,
    num_val: int = 32,
    imgsz: int = 160,
    seed: int = 0,
    *,
    overwrite: bool = False,
) -> SyntheticCocoResult:
    """Write a synthetic COCO2017-style set under ``out_dir`` and return its paths and counts.

    Layout: ``train2017/*.jpg``, ``val2017/*.jpg`` and ``annotations/instances_{train,val}2017.json``.
    ``imgsz`` is the longest image side. A non-empty ``out_dir`` is refused unless ``overwrite``,
    which replaces only those three entries.
    """
    _check_arguments(num_train, num_val, imgsz)
    root = Path(out_dir).expanduser().resolve()
    _prepare_out_dir(root, overwrite)
    staging = root / _STAGING
    shutil.rmtree(staging, ignore_errors=True)
    next_ids = {"image": 1, "annotation": 1}
    box_counts = []
    for (folder, split_code), count in zip(_SPLITS, (num_train, num_val)):
        coco = _generate_split(staging / folder, count, imgsz, seed, split_code, next_ids)
        year_split = folder.removesuffix("2017")
        write_json_atomic(staging / "annotations" / f"instances_{year_split}2017.json", coco)
        box_counts.append(len(coco["annotations"]))
    _move_into_place(staging, root)
    return SyntheticCocoResult(
        root=root,
        train_images=root / "train2017",
        val_images=root / "val2017",
        train_annotations=root / "annotations" / "instances_train2017.json",
        val_annotations=root / "annotations" / "instances_val2017.json",
        num_train=num_train,
        num_val=num_val,
        num_train_boxes=box_counts[0],
        num_val_boxes=box_counts[1],
        category_names=tuple(category["name"] for category in CATEGORIES),
    )


def _check_arguments(num_train: int, num_val: int, imgsz: int) -> None:
    if num_train < 1 or num_val < 1:
        raise ValueError(f"need at least one train and one val image, got train={num_train} val={num_val}")
    # Below ~32 px the smallest objects vanish and Ultralytics rejects images under 10 px.
    if imgsz < 32:
        raise ValueError(f"imgsz={imgsz} is too small; use 32 or more (the demo default is 160)")


def _prepare_out_dir(root: Path, overwrite: bool) -> None:
    if root.exists() and not root.is_dir():
        raise ValueError(f"{root} exists and is not a folder; pass another output folder")
    # A staging folder left by an interrupted run is ours and gets replaced, so it does not count.
    if root.is_dir() and any(entry.name != _STAGING for entry in root.iterdir()) and not overwrite:
        raise ValueError(f"{root} is not empty; pass overwrite=True (--overwrite) to replace the synthetic set")
    root.mkdir(parents=True, exist_ok=True)


def _move_into_place(staging: Path, root: Path) -> None:
    """Swap the finished set in, so an interrupted run never leaves a half-written set behind."""
    for folder, _ in _SPLITS:
        if (root / folder).is_dir():
            shutil.rmtree(root / folder)
        os.replace(staging / folder, root / folder)
    # The annotations folder may hold the user's other files: replace only our two JSONs.
    (root / "annotations").mkdir(exist_ok=True)
    for file in sorted((staging / "annotations").iterdir()):
        os.replace(file, root / "annotations" / file.name)
    shutil.rmtree(staging)


def _generate_split(folder: Path, count: int, imgsz: int, seed: int, split_code: int, next_ids: dict) -> dict:
    """Render ``count`` images into ``folder`` and return the split's COCO dictionary."""
    folder.mkdir(parents=True, exist_ok=True)
    picker = np.random.default_rng([seed, split_code, 1_000_003])
    # At least one background-only and one grayscale image per split, whatever its size.
    empty = set(picker.choice(count, size=max(1, count // 10), replace=False).tolist())
    gray = set(picker.choice(count, size=max(1, count // 40), replace=False).tolist())
    images, annotations = [], []
    for index in range(count):
        rng = np.random.default_rng([seed, split_code, index])
        image_id = next_ids["image"]
        next_ids["image"] += 1
        file_name = f"{image_id:012d}.jpg"
        pixels, objects = _render_image(rng, imgsz, 0 if index in empty else int(rng.integers(1, _MAX_OBJECTS + 1)))
        _save_jpeg(pixels, folder / file_name, grayscale=index in gray)
        height, width = pixels.shape[:2]
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        for category_id, bbox, area in objects:
            annotations.append(_annotation(next_ids["annotation"], image_id, category_id, bbox, area))
            next_ids["annotation"] += 1
    return {
        "info": {"description": "auto_quantize_model synthetic shapes (COCO2017 layout)", "version": "1.0"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [dict(category) for category in CATEGORIES],
    }


def _annotation(ann_id: int, image_id: int, category_id: int, bbox: list[float], area: int) -> dict:
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": bbox,
        "area": float(area),
        "iscrowd": 0,
    }


def _image_size(rng: np.random.Generator, imgsz: int) -> tuple[int, int]:
    """Pick (width, height): longest side ``imgsz`` or 80 % of it, several aspect ratios, either orientation."""
    longer = imgsz if rng.random() < 0.75 else max(32, round(imgsz * 0.8))
    shorter = max(16, round(longer / _ASPECTS[int(rng.integers(len(_ASPECTS)))]))
    return (longer, shorter) if rng.random() < 0.5 else (shorter, longer)


def _render_image(rng: np.random.Generator, imgsz: int, num_objects: int) -> tuple[np.ndarray, list]:
    """Return RGB pixels and ``(category_id, bbox_xywh, visible_area)`` for each visible object."""
    width, height = _image_size(rng, imgsz)
    canvas = _background(rng, width, height)
    placed: list[_Object] = []
    visible: list[np.ndarray] = []  # what is left of each placed object after later ones cover it
    for _ in range(num_objects):
        candidate = _place_object(rng, width, height, placed, visible)
        if candidate is None:
            continue
        canvas[candidate.mask] = _object_colour(rng, candidate.category_id)
        visible = [mask & ~candidate.mask for mask in visible] + [candidate.mask]
        placed.append(candidate)
    noise = rng.normal(0.0, rng.uniform(3.0, 12.0), size=canvas.shape)
    pixels = np.clip(canvas + noise, 0, 255).astype(np.uint8)
    return pixels, [_modal_box(item.category_id, mask) for item, mask in zip(placed, visible)]


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A random two-colour gradient with clutter lines: texture the detector must learn to ignore."""
    start, end = rng.uniform(40, 215, size=(2, 3))
    ramp = np.linspace(0.0, 1.0, width if rng.random() < 0.5 else height)
    ramp = ramp[None, :, None] if ramp.size == width else ramp[:, None, None]
    canvas = np.broadcast_to(start + (end - start) * ramp, (height, width, 3)).astype(np.float32)
    clutter = Image.fromarray(canvas.astype(np.uint8))
    draw = ImageDraw.Draw(clutter)
    for _ in range(int(rng.integers(2, 9))):
        points = [tuple(p) for p in rng.uniform(0, (width, height), size=(2, 2)).tolist()]
        shade = tuple(int(v) for v in rng.uniform(60, 200, size=3))
        draw.line(points, fill=shade, width=int(rng.integers(1, 4)))
    return np.asarray(clutter, dtype=np.float32).copy()


def _object_colour(rng: np.random.Generator, category_id: int) -> np.ndarray:
    base = np.asarray(_BASE_COLOURS[category_id], dtype=np.float32)
    return np.clip(base + rng.uniform(-35, 35, size=3), 0, 255)


def _place_object(
    rng: np.random.Generator, width: int, height: int, placed: list[_Object], visible: list[np.ndarray]
) -> _Object | None:
    """Try random shapes until one leaves every earlier object at least half visible."""
    shorter = min(width, height)
    low, high = math.log(max(6.0, 0.05 * shorter)), math.log(0.6 * shorter)
    for _ in range(_PLACEMENT_TRIES):
        category_id = CATEGORIES[int(rng.integers(len(CATEGORIES)))]["id"]
        size = math.exp(rng.uniform(low, high))  # log-uniform: as many small objects as large ones
        centre = rng.uniform(size * 0.25, (width - size * 0.25, height - size * 0.25))
        mask = _shape_mask(rng, category_id, width, height, centre, size)
        if np.count_nonzero(mask) >= _MIN_OBJECT_PIXELS and _occlusion_ok(mask, placed, visible):
            return _Object(category_id, mask)
    return None


def _occlusion_ok(mask: np.ndarray, placed: list[_Object], visible: list[np.ndarray]) -> bool:
    """Overlap is welcome, but no earlier object may end up with less than half of itself visible."""
    for item, seen in zip(placed, visible):
        if np.count_nonzero(seen & ~mask) < _MIN_VISIBLE_FRACTION * np.count_nonzero(item.mask):
            return False
    return True


def _shape_mask(rng, category_id: int, width: int, height: int, centre, size: float) -> np.ndarray:
    """Rasterise one shape of the given class, rotated at random, into a boolean mask."""
    image = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(image)
    cx, cy = (float(v) for v in centre)
    radius = size / 2
    angle = rng.uniform(0, 2 * math.pi)
    if category_id == 1:  # circle
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=255)
    elif category_id == 10:  # ring: an annulus, hollow so it differs from the circle by shape alone
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=255)
        inner = radius * rng.uniform(0.45, 0.65)
        draw.ellipse((cx - inner, cy - inner, cx + inner, cy + inner), fill=0)
    else:
        draw.polygon(_polygon(rng, category_id, cx, cy, radius, angle), fill=255)
    return np.asarray(image) > 0


def _polygon(rng, category_id: int, cx: float, cy: float, radius: float, angle: float) -> list[tuple[float, float]]:
    if category_id == 3:  # rectangle with a random aspect ratio
        aspect = rng.uniform(0.45, 1.0)
        corners = [(-1, -aspect), (1, -aspect), (1, aspect), (-1, aspect)]
    elif category_id == 7:  # triangle
        corners = [(math.cos(a), math.sin(a)) for a in (0, 2 * math.pi / 3, 4 * math.pi / 3)]
    else:  # cross: a plus sign with arms a third of its span wide
        t = rng.uniform(0.25, 0.4)
        corners = [
            (-t, -1),
            (t, -1),
            (t, -t),
            (1, -t),
            (1, t),
            (t, t),
            (t, 1),
            (-t, 1),
            (-t, t),
            (-1, t),
            (-1, -t),
            (-t, -t),
        ]
    cos, sin = math.cos(angle), math.sin(angle)
    return [(cx + radius * (x * cos - y * sin), cy + radius * (x * sin + y * cos)) for x, y in corners]


def _modal_box(category_id: int, visible: np.ndarray) -> tuple[int, list[float], int]:
    """COCO boxes are modal: the tight box and pixel area of what is still visible after occlusion."""
    rows, cols = np.nonzero(visible)
    x0, y0 = int(cols.min()), int(rows.min())
    bbox = [float(x0), float(y0), float(cols.max() - x0 + 1), float(rows.max() - y0 + 1)]
    return category_id, bbox, int(rows.size)


def _save_jpeg(pixels: np.ndarray, path: Path, *, grayscale: bool) -> None:
    image = Image.fromarray(pixels)
    if grayscale:
        image = image.convert("L")  # a single-channel JPEG, as a few COCO images are
    image.save(path, "JPEG", quality=_JPEG_QUALITY)
