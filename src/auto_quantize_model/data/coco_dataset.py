"""Turn a COCO-format source (COCO2017 or any look-alike) into an Ultralytics detection dataset.

Images are never copied: ``OUT/images/<split>/`` holds absolute symlinks to the source images
and ``OUT/labels/<split>/<stem>.txt`` the YOLO labels, because Ultralytics finds a label by
replacing ``/images/`` with ``/labels/`` in the image path it globbed (it does not resolve the
link). Besides those the writer owns ``dataset.yaml`` (the data YAML), ``instances_val.json``
(the validation ground truth used), ``provenance.json`` and ``fingerprint.json`` (:mod:`.fingerprint`).

With ``selection_images`` a selection split is carved out of the train images
(:mod:`auto_quantize_model.data.selection_split`).

Class index ``i`` is the ``i``-th category of the annotation file sorted by id, so COCO2017's
91 ids with gaps map to the usual 80 indices; categories without instances keep their index.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import sys
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from auto_quantize_model.data.fingerprint import FINGERPRINT_FILE, write_fingerprint
from auto_quantize_model.data.selection_split import (
    SELECTION_DATASET_YAML,
    SELECTION_SPLIT,
    carve_selection,
    selection_record,
    shared_files,
)
from auto_quantize_model.utils.io import (
    atomic_output,
    read_json,
    sha256_file,
    write_json_atomic,
    write_text_atomic,
)

SPLITS = ("train", "val")
DATASET_YAML = "dataset.yaml"
_OWNED_FILES = (DATASET_YAML, SELECTION_DATASET_YAML, "instances_val.json", "provenance.json", FINGERPRINT_FILE)
_OWNED_DIRS = ("images", "labels")
_STAGING = ".prepare-staging"
_TOOL = "auto_quantize_model.data.coco_dataset.prepare_coco_dataset"
# Suffixes Ultralytics globs as images (ultralytics.data.utils.IMG_FORMATS); others would be silently dropped.
_IMAGE_SUFFIXES = frozenset(
    {"avif", "bmp", "dng", "heic", "heif", "jp2", "jpeg", "jpg", "mpo", "png", "tif", "tiff", "webp", "pfm"}
)
_MAX_LISTED = 5  # how many offending entries an error message names before summarising


class DatasetError(ValueError):
    """The COCO source or the output folder cannot be used; the message names the file and the fix."""


@dataclass(frozen=True)
class SplitCounts:
    """What the writer did with one split."""

    images: int
    images_without_boxes: int
    boxes_written: int
    crowd_boxes_skipped: int
    degenerate_boxes_skipped: int
    duplicate_boxes_skipped: int
    boxes_clipped: int
    per_class: dict[str, int] = field(default_factory=dict)  # class name -> boxes written, in index order


@dataclass(frozen=True)
class PreparedDataset:
    """The written Ultralytics dataset: its files, class names and per-split counts."""

    out_dir: Path
    dataset_yaml: Path
    val_annotations: Path
    provenance: Path
    names: tuple[str, ...]
    category_ids: tuple[int, ...]  # COCO category id of class index i
    counts: dict[str, SplitCounts]


@dataclass(frozen=True)
class _CocoSplit:
    """One validated, indexed COCO annotation file and its image folder."""

    name: str
    ann_path: Path
    images_dir: Path
    raw: dict[str, Any]
    images: dict[int, dict]
    anns_by_image: dict[int, list[dict]]
    categories: tuple[tuple[int, str], ...]  # (id, name) sorted by id


def prepare_coco_dataset(
    source_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    train_images: str = "train2017",
    val_images: str = "val2017",
    train_ann: str = "annotations/instances_train2017.json",
    val_ann: str = "annotations/instances_val2017.json",
    max_train_images: int | None = None,
    max_val_images: int | None = None,
    selection_images: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
) -> PreparedDataset:
    """Write the Ultralytics dataset for the COCO source under ``source_root`` into ``out_dir``.

    The four paths are relative to ``source_root`` (absolute paths also work). ``max_*_images``
    keep a seeded random subset of that many images, sorted by image id; ``selection_images`` then
    moves a seeded random subset of the kept train images into the selection split. Raises
    :class:`DatasetError` for bad input, and for a non-empty ``out_dir`` unless ``overwrite``.
    """
    root = _existing_dir(Path(source_root).expanduser().resolve(), "source root (--source-root)")
    out = Path(out_dir).expanduser().resolve()
    caps = {
        "train": _check_cap(max_train_images, "max_train_images"),
        "val": _check_cap(max_val_images, "max_val_images"),
    }
    _check_cap(selection_images, "selection_images")
    splits = {
        "train": _load_split("train", root / train_ann, root / train_images),
        "val": _load_split("val", root / val_ann, root / val_images),
    }
    _check_same_categories(splits["train"], splits["val"])
    selected = {name: _select_image_ids(splits[name].images, caps[name], seed) for name in SPLITS}
    for name in SPLITS:
        _check_image_files(splits[name], selected[name])
    corrupt = {name: _corrupt_images(splits[name], selected[name]) for name in SPLITS}
    selected = {name: [i for i in selected[name] if i not in corrupt[name]] for name in SPLITS}
    categories = splits["train"].categories
    class_of = {category_id: index for index, (category_id, _) in enumerate(categories)}
    for name in SPLITS:
        _check_split_usable(splits[name], selected[name], len(corrupt[name]), class_of)
    selected["train"], selection = _carve_selection(splits, selected, selection_images, seed)
    _check_out_dir(out, [split.images_dir for split in splits.values()], overwrite)

    names = tuple(name for _, name in categories)
    staging = out / _STAGING
    shutil.rmtree(staging, ignore_errors=True)
    counts = {name: _write_split(splits[name], selected[name], staging, class_of, names) for name in SPLITS}
    if selection:
        counts[SELECTION_SPLIT] = _write_split(splits["train"], selection, staging, class_of, names, SELECTION_SPLIT)
    _swap_in(staging, out)

    val_json = _write_val_ground_truth(splits["val"], selected["val"], out / "instances_val.json")
    provenance = _write_provenance(out, root, splits, caps, seed, counts, categories, corrupt, selection)
    if selection:
        _write_dataset_yaml(out, names, SELECTION_DATASET_YAML, val_split=SELECTION_SPLIT)
    dataset_yaml = _write_dataset_yaml(out, names)  # its presence marks a complete dataset
    write_fingerprint(out)  # last: it covers every file above, so a later change is noticed
    return PreparedDataset(out, dataset_yaml, val_json, provenance, names, tuple(class_of), counts)


# --- loading and validating the source ---------------------------------------------------------


def _existing_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DatasetError(f"{path}: {what} folder not found; pass the folder that holds the COCO images")
    return path


def _check_cap(cap: int | None, name: str) -> int | None:
    if cap is not None and cap < 1:
        raise DatasetError(f"{name}={cap}: a cap must be a positive number of images (or omitted for all)")
    return cap


def _load_split(name: str, ann_path: Path, images_dir: Path) -> _CocoSplit:
    """Read and validate one COCO annotation file; index its annotations by image id in one pass."""
    if not ann_path.is_file():
        raise DatasetError(f"{ann_path}: {name} annotation file not found; pass --{name}-ann relative to --source-root")
    _existing_dir(images_dir, f"{name} image (--{name}-images)")
    try:
        raw = read_json(ann_path)
    except ValueError as error:
        raise DatasetError(str(error)) from error
    if not isinstance(raw, dict) or any(
        not isinstance(raw.get(key), list) for key in ("images", "annotations", "categories")
    ):
        raise DatasetError(
            f"{ann_path}: not a COCO detection file; it needs top-level lists 'images', 'annotations' and 'categories'"
        )
    categories = _index_categories(ann_path, raw["categories"])
    images = _index_images(ann_path, raw["images"])
    if not images:
        raise DatasetError(f"{ann_path}: 'images' is empty; the {name} split needs at least one image")
    anns_by_image = _index_annotations(ann_path, raw["annotations"], images, {cid for cid, _ in categories})
    return _CocoSplit(name, ann_path, images_dir, raw, images, anns_by_image, categories)


def _index_categories(ann_path: Path, records: list) -> tuple[tuple[int, str], ...]:
    seen: dict[int, str] = {}
    for record in records:
        cid, cname = _field(ann_path, record, "id", int, "category"), _field(ann_path, record, "name", str, "category")
        if cid in seen:
            raise DatasetError(f"{ann_path}: duplicate category id {cid}; every category id must be unique")
        seen[cid] = cname
    if not seen:
        raise DatasetError(f"{ann_path}: 'categories' is empty; a detection dataset needs at least one class")
    return tuple(sorted(seen.items()))


def _index_images(ann_path: Path, records: list) -> dict[int, dict]:
    images: dict[int, dict] = {}
    for record in records:
        image_id = _field(ann_path, record, "id", int, "image")
        if image_id in images:
            raise DatasetError(f"{ann_path}: duplicate image id {image_id}; every image id must be unique")
        _field(ann_path, record, "file_name", str, "image")
        for key in ("width", "height"):
            if _field(ann_path, record, key, (int, float), "image") <= 0:
                raise DatasetError(f"{ann_path}: image id {image_id} has {key}={record[key]}; sizes must be positive")
        images[image_id] = record
    return images


def _index_annotations(ann_path: Path, records: list, images: dict, category_ids: set[int]) -> dict[int, list[dict]]:
    by_image: dict[int, list[dict]] = {}
    seen: set[int] = set()
    for record in records:
        ann_id = _field(ann_path, record, "id", int, "annotation")
        if ann_id in seen:
            raise DatasetError(f"{ann_path}: duplicate annotation id {ann_id}; every annotation id must be unique")
        seen.add(ann_id)
        image_id = _field(ann_path, record, "image_id", int, "annotation")
        if image_id not in images:
            raise DatasetError(f"{ann_path}: annotation {ann_id} refers to image id {image_id}, which 'images' lacks")
        if _field(ann_path, record, "category_id", int, "annotation") not in category_ids:
            raise DatasetError(
                f"{ann_path}: annotation {ann_id} has category_id {record['category_id']}, which 'categories' lacks"
            )
        bbox = record.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_finite_number(v) for v in bbox)):
            raise DatasetError(f"{ann_path}: annotation {ann_id} bbox {bbox!r} is not four finite numbers [x, y, w, h]")
        by_image.setdefault(image_id, []).append(record)
    return by_image


def _field(ann_path: Path, record: Any, key: str, kind: type | tuple[type, ...], what: str) -> Any:
    """Return ``record[key]``, raising a DatasetError naming the file when it is missing or mistyped."""
    value = record.get(key) if isinstance(record, dict) else None
    # bool is an int subclass, but a JSON true/false id is a broken file, not id 1/0.
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DatasetError(f"{ann_path}: {what} entry {str(record)[:120]} needs '{key}' of type {_type_name(kind)}")
    return value


def _type_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_same_categories(train: _CocoSplit, val: _CocoSplit) -> None:
    """Class indices come from the category list, so both splits must share it exactly."""
    if train.categories != val.categories:
        only_train = sorted(set(train.categories) - set(val.categories))[:_MAX_LISTED]
        only_val = sorted(set(val.categories) - set(train.categories))[:_MAX_LISTED]
        raise DatasetError(
            f"{train.ann_path} and {val.ann_path} list different categories "
            f"(only in train: {only_train}, only in val: {only_val}); use annotation files from the same dataset"
        )


def _select_image_ids(images: dict[int, dict], cap: int | None, seed: int) -> list[int]:
    """All image ids, or a seeded random ``cap`` of them; sorted by id either way."""
    ids = sorted(images)
    if cap is not None and cap < len(ids):
        ids = sorted(random.Random(seed).sample(ids, cap))
    return ids


def _carve_selection(splits: dict, selected: dict, count: int | None, seed: int) -> tuple[list[int], list[int]]:
    """Carve the selection split out of the kept train images; it must share no image file with val."""
    try:
        train, selection = carve_selection(selected["train"], count, seed)
    except ValueError as error:
        raise DatasetError(str(error)) from None
    files = {
        name: [splits[name].images_dir / splits[name].images[i]["file_name"] for i in ids]
        for name, ids in (("train", selection), ("val", selected["val"]))
    }
    shared = shared_files(files["train"], files["val"])
    if shared:
        raise DatasetError(
            f"{splits['train'].ann_path}: {len(shared)} selection image(s) are also val images, e.g. "
            f"{[str(p) for p in shared[:_MAX_LISTED]]}; the train and val sources must not share images"
        )
    return train, selection


def _check_image_files(split: _CocoSplit, image_ids: Iterable[int]) -> None:
    """Every selected image becomes a sample, so its file must exist, be an image type and map to a unique label."""
    missing, bad_names, labels = [], [], {}
    for image_id in image_ids:
        file_name = split.images[image_id]["file_name"]
        relative = PurePosixPath(file_name)
        if relative.is_absolute() or ".." in relative.parts or relative.suffix[1:].lower() not in _IMAGE_SUFFIXES:
            bad_names.append(file_name)
        elif not (split.images_dir / relative).is_file():
            missing.append(file_name)
        elif (stem := str(relative.with_suffix(""))) in labels:
            bad_names.append(f"{file_name} (same label file as {labels[stem]})")
        else:
            labels[stem] = file_name
    if bad_names:
        raise DatasetError(
            f"{split.ann_path}: {len(bad_names)} image file_name(s) unusable, e.g. {bad_names[:_MAX_LISTED]}; "
            "file names must be relative, unique by stem and end in an image suffix "
            f"({', '.join(sorted(_IMAGE_SUFFIXES))})"
        )
    if missing:
        raise DatasetError(
            f"{split.ann_path}: {len(missing)} image file(s) not found under {split.images_dir}, "
            f"e.g. {missing[:_MAX_LISTED]}; fix --{split.name}-images or the annotation file"
        )


def _corrupt_images(split: _CocoSplit, image_ids: list[int]) -> dict[int, str]:
    """Selected images that do not decode as images: image id -> file name, with a counted warning.

    They are left out of the prepared set (no symlink, no label, not in instances_val.json) instead of
    being skipped silently by training and evaluation later.
    """
    names = {image_id: split.images[image_id]["file_name"] for image_id in image_ids}
    with ThreadPoolExecutor(max_workers=8) as pool:  # file reads dominate; PIL releases the GIL while reading
        problems = dict(zip(names, pool.map(lambda n: _image_problem(split.images_dir / n), names.values())))
    corrupt = {image_id: names[image_id] for image_id, problem in problems.items() if problem}
    if corrupt:
        examples = [f"{names[i]} ({problems[i]})" for i in list(corrupt)[:_MAX_LISTED]]
        print(
            f"warning: {len(corrupt)} corrupt image(s) in {split.images_dir} excluded from the {split.name} split, "
            f"e.g. {examples}; counted in provenance.json",
            file=sys.stderr,
        )
    return corrupt


def _check_split_usable(split: _CocoSplit, usable_ids: list[int], unreadable: int, class_of: dict[int, int]) -> None:
    """A split must keep at least one readable image and one trainable box once unreadable images are left out."""
    fix = f"replace the unreadable files in {split.images_dir}, or pass other --{split.name}-images/--{split.name}-ann"
    if not usable_ids:
        raise DatasetError(
            f"{split.ann_path}: the {split.name} split has no usable image: all {unreadable} selected image file(s) "
            f"are unreadable; {fix}"
        )
    scratch_tally = dict.fromkeys(("crowd", "degenerate", "duplicate", "clipped"), 0)
    if not any(
        label_lines(split.images[i], split.anns_by_image.get(i, ()), class_of, scratch_tally) for i in usable_ids
    ):
        raise DatasetError(
            f"{split.ann_path}: the {split.name} split has no annotation left: none of its {len(usable_ids)} readable "
            f"image(s) has a box to learn or score ({unreadable} unreadable image file(s) left out, crowd and "
            f"zero-area boxes do not count); {fix}"
        )


def _image_problem(path: Path) -> str | None:
    """Why ``path`` is not a usable image (PIL's structural check, JPEG end marker), or ``None``."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.verify()
            if min(image.size) < 2:
                return f"size {image.size}"
        if path.suffix.lower() in (".jpg", ".jpeg"):
            with open(path, "rb") as handle:
                handle.seek(-2, os.SEEK_END)
                if handle.read() != b"\xff\xd9":  # truncated: Ultralytics would re-save it into the source folder
                    return "truncated JPEG (no end marker)"
    except (OSError, SyntaxError, ValueError) as error:  # PIL's errors for unreadable or damaged files
        return f"{type(error).__name__}: {error}"
    except ImportError:  # once Ultralytics is imported, Image.open retries an unidentified file with pi-heif
        return "not an image PIL can identify (nor a HEIF file: Ultralytics' pi-heif plugin is not installed)"
    return None


# --- the output folder ---------------------------------------------------------------------------


def _check_out_dir(out: Path, source_image_dirs: list[Path], overwrite: bool) -> None:
    """Refuse an occupied ``out`` without ``overwrite``, and anything that could delete source images."""
    if out.exists() and not out.is_dir():
        raise DatasetError(f"{out}: output exists and is not a folder; pass another --out-dir")
    for images_dir in source_image_dirs:
        if any(images_dir.resolve().is_relative_to(out / owned) for owned in (*_OWNED_DIRS, _STAGING)):
            raise DatasetError(
                f"{out}: --out-dir would replace the source images in {images_dir}; pass another --out-dir"
            )
    # A staging tree left by an interrupted run is ours and gets replaced, so it does not count.
    if out.is_dir() and any(entry.name != _STAGING for entry in out.iterdir()):
        if not overwrite:
            raise DatasetError(
                f"{out}: output folder is not empty; pass --overwrite (overwrite=True) to replace the dataset "
                "files it owns, or choose an empty --out-dir"
            )
        _check_owned_images(out)
    out.mkdir(parents=True, exist_ok=True)


def _check_owned_images(out: Path) -> None:
    """Overwrite may delete ``out/images`` only if this writer made it: symlinks, or a tree it recorded."""
    images = out / "images"
    if not images.is_dir() or _written_by_us(out / "provenance.json"):
        return
    for folder, _, files in os.walk(images):
        # A regular image file here is somebody's data set, not our symlink: never delete it.
        real = [name for name in files if not os.path.islink(os.path.join(folder, name))]
        if real:
            raise DatasetError(
                f"{out}: {images} holds real files (e.g. {os.path.join(folder, real[0])}), not symlinks written by "
                "this tool; --overwrite will not delete them, choose another --out-dir"
            )


def _written_by_us(provenance: Path) -> bool:
    # Ultralytics replaces a corrupt JPEG's symlink with a repaired copy, so our own tree may hold real files.
    try:
        return provenance.is_file() and read_json(provenance).get("tool") == _TOOL
    except (ValueError, AttributeError):
        return False


def _swap_in(staging: Path, out: Path) -> None:
    """Replace the owned entries of ``out`` by the finished staging tree (dataset.yaml goes first)."""
    for name in _OWNED_FILES:
        (out / name).unlink(missing_ok=True)
    for name in _OWNED_DIRS:
        target = out / name
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.is_dir():
            shutil.rmtree(target)  # rmtree unlinks symlinks, it never follows them into the source
        os.replace(staging / name, target)
    shutil.rmtree(staging)


# --- writing labels --------------------------------------------------------------------------------


def _write_split(
    split: _CocoSplit,
    image_ids: list[int],
    staging: Path,
    class_of: dict[int, int],
    names: tuple[str, ...],
    out_name: str | None = None,
) -> SplitCounts:
    """Symlink every selected image and write its label file into ``out_name`` (default: the split's name)."""
    out_name = out_name or split.name
    images_out, labels_out = staging / "images" / out_name, staging / "labels" / out_name
    tally = dict.fromkeys(("crowd", "degenerate", "duplicate", "clipped"), 0)
    per_class, without_boxes = [0] * len(names), 0
    source_dir = split.images_dir.resolve()
    made_dirs: set[Path] = set()
    for image_id in image_ids:
        image = split.images[image_id]
        relative = PurePosixPath(image["file_name"])
        link, label = images_out / relative, (labels_out / relative).with_suffix(".txt")
        for folder in (link.parent, label.parent):
            if folder not in made_dirs:  # one mkdir per folder, not one per image
                folder.mkdir(parents=True, exist_ok=True)
                made_dirs.add(folder)
        os.symlink(source_dir / relative, link)
        lines = label_lines(image, split.anns_by_image.get(image_id, ()), class_of, tally)
        for line in lines:
            per_class[int(line.split(" ", 1)[0])] += 1
        without_boxes += not lines
        # Plain writes are safe: the staging tree is swapped in only once complete.
        with open(label, "w", encoding="utf-8") as handle:
            handle.write("".join(f"{line}\n" for line in lines))
    return SplitCounts(
        images=len(image_ids),
        images_without_boxes=without_boxes,
        boxes_written=sum(per_class),
        crowd_boxes_skipped=tally["crowd"],
        degenerate_boxes_skipped=tally["degenerate"],
        duplicate_boxes_skipped=tally["duplicate"],
        boxes_clipped=tally["clipped"],
        per_class=dict(zip(names, per_class)),
    )


def label_lines(image: dict, annotations: Iterable[dict], class_of: dict[int, int], tally: dict[str, int]) -> list[str]:
    """YOLO label lines (``class cx cy w h``, normalised, 6 decimals) for one image's COCO annotations.

    Crowd regions and boxes with no area left after clipping to the image are skipped, and a
    line identical to an earlier one is dropped (Ultralytics would drop it too). ``tally``
    counts ``crowd``, ``degenerate``, ``duplicate`` and ``clipped`` boxes.
    """
    width, height = float(image["width"]), float(image["height"])
    lines: list[str] = []
    seen: set[str] = set()
    for ann in annotations:
        if ann.get("iscrowd", 0):
            tally["crowd"] += 1
            continue
        x, y, w, h = ann["bbox"]
        x0, y0 = min(max(x, 0.0), width), min(max(y, 0.0), height)
        x1, y1 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
        nw, nh = round((x1 - x0) / width, 6), round((y1 - y0) / height, 6)
        if nw <= 0 or nh <= 0:  # also catches boxes that round to nothing at 6 decimals
            tally["degenerate"] += 1
            continue
        tally["clipped"] += (x0, y0, x1, y1) != (x, y, x + w, y + h)
        line = (
            f"{class_of[ann['category_id']]} {(x0 + x1) / 2 / width:.6f} {(y0 + y1) / 2 / height:.6f} {nw:.6f} {nh:.6f}"
        )
        if line in seen:
            tally["duplicate"] += 1
            continue
        seen.add(line)
        lines.append(line)
    return lines


# --- the small files ---------------------------------------------------------------------------------


def _write_val_ground_truth(split: _CocoSplit, image_ids: list[int], path: Path) -> Path:
    """Write the COCO ground truth of exactly ``image_ids``: their images and all their annotations, all categories.

    Crowd and degenerate annotations are kept, as COCOeval needs crowd regions to ignore detections.
    """
    chosen = set(image_ids)
    subset = {key: value for key, value in split.raw.items() if key not in ("images", "annotations")}
    subset["images"] = [image for image in split.raw["images"] if image["id"] in chosen]
    subset["annotations"] = [ann for ann in split.raw["annotations"] if ann["image_id"] in chosen]
    with atomic_output(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(subset, handle, separators=(",", ":"))  # compact: COCO val is tens of MB
    return path


def _write_provenance(
    out: Path,
    root: Path,
    splits: dict[str, _CocoSplit],
    caps: dict[str, int | None],
    seed: int,
    counts: dict[str, SplitCounts],
    categories: tuple[tuple[int, str], ...],
    corrupt: dict[str, dict[int, str]],
    selection: list[int],
) -> Path:
    """Record where the dataset came from and what the writer did, for the run's audit trail."""

    def split_record(name: str) -> dict:
        split = splits[name]
        return {
            "images_dir": str(split.images_dir),
            "annotations": str(split.ann_path),
            "annotations_sha256": sha256_file(split.ann_path),
            "images_in_source": len(split.images),
            "max_images": caps[name],
            "corrupt_images_skipped": len(corrupt[name]),
            "corrupt_images": sorted(corrupt[name].values())[:100],
            "counts": asdict(counts[name]),
        }

    record = {
        "tool": _TOOL,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "source_root": str(root),
        "images_copied": False,
        "subset_seed": seed,
        "names": {index: name for index, (_, name) in enumerate(categories)},
        "category_ids": [category_id for category_id, _ in categories],
        "splits": {name: split_record(name) for name in SPLITS},
    }
    if selection:
        record["splits"][SELECTION_SPLIT] = selection_record(selection, seed, asdict(counts[SELECTION_SPLIT]))
    return write_json_atomic(out / "provenance.json", record)


def _write_dataset_yaml(
    out: Path, names: tuple[str, ...], file_name: str = DATASET_YAML, val_split: str = "val"
) -> Path:
    data = {"path": str(out), "train": "images/train", "val": f"images/{val_split}", "names": dict(enumerate(names))}
    text = "# Written by prepare_coco_dataset; see provenance.json for the source.\n"
    return write_text_atomic(out / file_name, text + yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
