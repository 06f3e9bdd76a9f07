"""The fingerprint of a prepared dataset: what prepare-data wrote, so a later change to it is noticed.

``fingerprint.json`` (written by :func:`~auto_quantize_model.data.coco_dataset.prepare_coco_dataset`)
holds, per split folder under ``images/`` (train, val, and selection when checkpoints are chosen on
one), the count and a digest of every prepared image's name, size and mtime (of the file its symlink
points to), and the sha256 of the small files: every label file, the data YAMLs and
``instances_val.json``. Images get no content hash: the runner re-checks the fingerprint before every
stage that reads the dataset, and reading COCO train2017 (18 GB) each time is not cheap; a stat of
each file is, and a deleted, replaced or re-linked image changes its size or mtime.

:func:`fingerprint_problem` recomputes it and says in one line what changed (e.g. ``val images: 16 of
32 missing or unreadable``), or returns ``None``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from auto_quantize_model.data.selection_split import SELECTION_DATASET_YAML
from auto_quantize_model.utils.io import entries_digest, read_json, sha256_file, tree_entries, write_json_atomic

FINGERPRINT_FILE = "fingerprint.json"
FINGERPRINT_SCHEMA_VERSION = 1
_CONTENT_FILES = ("dataset.yaml", SELECTION_DATASET_YAML, "instances_val.json")
_MAX_NAMED = 3


def dataset_fingerprint(dataset_dir: Path) -> dict[str, Any]:
    """The fingerprint of ``dataset_dir`` as it is now (see the module docstring)."""
    dataset_dir = Path(dataset_dir)
    images, labels = {}, {}
    for split in _splits(dataset_dir):
        entries = tree_entries(dataset_dir / "images" / split)
        unreadable = [name for name, size, _ in entries if size < 0]
        images[split] = {"count": len(entries), "unreadable": len(unreadable), "digest": entries_digest(entries)}
        labels[split] = _labels_digest(dataset_dir / "labels" / split)
    files = {name: _sha256_or_none(dataset_dir / name) for name in _CONTENT_FILES}
    return {"schema_version": FINGERPRINT_SCHEMA_VERSION, "images": images, "labels": labels, "files": files}


def _splits(dataset_dir: Path, *recorded: dict[str, Any]) -> list[str]:
    """The split folders under ``images/`` now, and those a recorded fingerprint lists."""
    images = dataset_dir / "images"
    splits = {path.name for path in images.iterdir() if path.is_dir()} if images.is_dir() else set()
    for record in recorded:
        splits |= set(record.get("images") or {})
    return sorted(splits)


def _sha256_or_none(path: Path) -> str | None:
    return sha256_file(path) if path.is_file() else None


def _labels_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for name, size, _ in tree_entries(folder):
        content = sha256_file(folder / name) if size >= 0 else "unreadable"
        digest.update(f"{name}\t{content}\n".encode())
    return digest.hexdigest()


def write_fingerprint(dataset_dir: Path) -> Path:
    """Record the fingerprint of ``dataset_dir`` in its ``fingerprint.json``."""
    return write_json_atomic(Path(dataset_dir) / FINGERPRINT_FILE, dataset_fingerprint(dataset_dir))


def fingerprint_problem(dataset_dir: Path) -> str | None:
    """What changed in ``dataset_dir`` since its fingerprint was recorded (one line), or ``None``."""
    dataset_dir = Path(dataset_dir)
    path = dataset_dir / FINGERPRINT_FILE
    if not path.is_file():
        return f"{path} missing (the dataset was not prepared by this version); prepare-data writes it"
    try:
        recorded = read_json(path)
    except ValueError:
        return f"{path} is not valid JSON"
    now = dataset_fingerprint(dataset_dir)
    splits = _splits(dataset_dir, recorded)
    changes = [_describe(dataset_dir, split, recorded, now) for split in splits]
    then_labels, then_files = recorded.get("labels") or {}, recorded.get("files") or {}
    changes += [f"labels/{split} changed" for split in splits if then_labels.get(split) != now["labels"].get(split)]
    changes += [f"{name} changed" for name in _CONTENT_FILES if then_files.get(name) != now["files"][name]]
    changes = [change for change in changes if change]
    return f"dataset {dataset_dir} changed since prepare-data: {'; '.join(changes)}" if changes else None


def _describe(dataset_dir: Path, split: str, recorded: dict[str, Any], now: dict[str, Any]) -> str | None:
    """How one split's images differ: missing or unreadable files named, else a count or a stat change."""
    then = (recorded.get("images") or {}).get(split) or {}
    current = now["images"].get(split) or {"count": 0, "digest": None}
    if then.get("digest") == current["digest"]:
        return None
    expected = int(then.get("count", 0))
    gone = sorted(name for name, size, _ in tree_entries(dataset_dir / "images" / split) if size < 0)
    lost = expected - current["count"] + len(gone)
    if lost > 0:
        named = f" (e.g. {', '.join(gone[:_MAX_NAMED])})" if gone else ""
        return f"{split} images: {lost} of {expected} missing or unreadable{named}"
    if current["count"] != expected:
        return f"{split} images: {current['count']} now, {expected} prepared"
    return f"{split} images: a file's size or modification time changed (replaced or edited)"
