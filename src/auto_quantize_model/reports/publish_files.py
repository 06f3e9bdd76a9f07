"""What a published report holds: the walk that sorts a run root's files into copied and left behind (by name
and suffix, any run-root layout), ``MANIFEST.json``, and the comparison with an existing report folder."""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auto_quantize_model.runs import summary_schema as ss
from auto_quantize_model.runs.metrics_keys import DETECTIONS_FILE
from auto_quantize_model.runs.run_root import LOSS_CURVES_PNG, SET_ASIDE_DIR, RunRoot
from auto_quantize_model.utils.io import sha256_file

MANIFEST_NAME = "MANIFEST.json"
MANIFEST_SCHEMA_VERSION = 1
LIGHT_SUFFIXES = frozenset({".md", ".png", ".csv", ".yaml", ".json"})
REPORT_PNG_NAMES = frozenset({LOSS_CURVES_PNG})
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif"})
# Run-root folders that are not walked at all: thousands of dataset files (symlinks to the source
# images, label text files and caches) or generated demo data; their content is pinned elsewhere
# (dataset/provenance.json, the val_ann_sha256 column, the generator's seed in run_config.yaml).
SKIPPED_DIRS: Mapping[str, str] = {
    "dataset/images": "dataset images (symlinks to the source images; see dataset/provenance.json)",
    "dataset/labels": "Ultralytics label files and caches derived from the annotations",
    "synthetic-coco": "generated demo data (regenerated from the data seed in run_config.yaml)",
    SET_ASIDE_DIR: "work set aside by a redo or a resume (kept in the run root, not part of this result)",
}


class PublishError(RuntimeError):
    """A run root that cannot be published as asked; the message names the file and the fix."""


@dataclass(frozen=True)
class LeftBehind:
    """A run-root file the report does not copy; ``kind`` says why (weights, onnx, image, ...)."""

    path: str  # relative to the run root, POSIX separators
    kind: str


@dataclass(frozen=True)
class PublishPlan:
    """What the walk of a run root found: files to copy, files left behind, folders not walked."""

    run_root: RunRoot
    copied: tuple[str, ...]
    left_behind: tuple[LeftBehind, ...]
    skipped_dirs: tuple[str, ...]


@dataclass(frozen=True)
class RunStatus:
    """Completeness of a run root, as its ``summary.json`` states it."""

    complete: bool
    missing: tuple[str, ...]
    summary: Mapping[str, Any] | None  # the whole summary.json, or None when there is none


def classify(relative: str) -> str | None:
    """``None`` when the file is copied into the report, else the kind of file left behind."""
    name = posixpath.basename(relative)
    suffix = posixpath.splitext(name)[1].lower()
    if relative.split("/", 1)[0] == "logs":
        # Full stage output: a long training's progress lines run to megabytes and would eat the cap.
        return "log"
    if name == DETECTIONS_FILE:
        return "detections"
    if name.startswith("instances_") and suffix == ".json":
        return "annotations"  # COCO ground truth: up to tens of MB, pinned by its sha256 here
    if suffix in (".pt", ".pth"):
        return "weights"
    if suffix == ".onnx" or name.endswith(".onnx.data"):
        return "onnx"
    if "tfevents" in name:
        return "tensorboard"
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix == ".png" and "/" in relative and name not in REPORT_PNG_NAMES:
        # Ultralytics' own per-training plots (confusion matrices, PR curves, results.png, label mosaics) are
        # about 0.9 MB per training: 3 seeds x 8 variants would be 20 MB, four times the cap. The report keeps
        # the plots summary.md shows (run-root PNGs and each training's loss curves).
        return "training plot"
    return None if suffix in LIGHT_SUFFIXES else "other"


def _is_skipped_dir(relative: str) -> bool:
    return any(relative == skipped or relative.endswith("/" + skipped) for skipped in SKIPPED_DIRS)


def plan_publish(run_root: RunRoot) -> PublishPlan:
    """Walk ``run_root`` (symlinks not followed) and sort every file into copied or left behind."""
    copied: list[str] = []
    left: list[LeftBehind] = []
    skipped: list[str] = []
    for current, dirnames, filenames in os.walk(run_root.root):
        base = Path(current).relative_to(run_root.root).as_posix()
        base = "" if base == "." else base + "/"
        for dirname in sorted(dirnames):
            relative = base + dirname
            if dirname.startswith(".") or _is_skipped_dir(relative):
                skipped += [] if dirname.startswith(".") else [relative]
                dirnames.remove(dirname)
            elif os.path.islink(os.path.join(current, dirname)):
                left.append(LeftBehind(relative, "symlink"))
                dirnames.remove(dirname)
        for filename in sorted(filenames):
            if filename.startswith("."):
                continue  # in-flight temporary files of atomic writes
            relative = base + filename
            kind = "symlink" if os.path.islink(os.path.join(current, filename)) else classify(relative)
            if kind is None:
                copied.append(relative)
            else:
                left.append(LeftBehind(relative, kind))
    if MANIFEST_NAME in copied:
        raise PublishError(f"{run_root.root / MANIFEST_NAME}: a run root may not hold {MANIFEST_NAME}; rename it")
    return PublishPlan(
        run_root, tuple(sorted(copied)), tuple(sorted(left, key=lambda x: x.path)), tuple(sorted(skipped))
    )


def _file_entry(path: Path, relative: str) -> dict[str, Any]:
    return {"path": relative, "size_bytes": path.stat().st_size, "sha256": sha256_file(path)}


def _left_behind_entry(run_root: RunRoot, item: LeftBehind) -> dict[str, Any]:
    path = run_root.root / item.path
    if item.kind == "symlink":
        return {"path": item.path, "kind": item.kind, "symlink_to": os.readlink(path)}
    return {**_file_entry(path, item.path), "kind": item.kind}


def _count_files(folder: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(folder))


def build_manifest(plan: PublishPlan, run_id: str, status: RunStatus, report_files: Mapping[str, bytes | Path]) -> dict:
    """MANIFEST.json content. Deterministic for a given run root, so an identical republish compares equal."""
    run_root = plan.run_root
    published = []
    for relative, source in sorted(report_files.items()):
        data = source if isinstance(source, bytes) else None
        published.append(
            _file_entry(source, relative)
            if data is None
            else {"path": relative, "size_bytes": len(data), "sha256": _sha256_bytes(data)}
        )
    summary = status.summary or {}
    return {
        "schema_version": MANIFEST_SCHEMA_VERSION,
        "run_id": run_id,
        "source_run_root": str(run_root.root),
        "partial": not status.complete,
        "missing": list(status.missing),
        "summary_generated_at": summary.get(ss.GENERATED_AT),
        "published_files": published,
        "left_behind": [_left_behind_entry(run_root, item) for item in plan.left_behind],
        "skipped_dirs": [
            {"path": path, "reason": _skip_reason(path), "files": _count_files(run_root.root / path)}
            for path in plan.skipped_dirs
        ],
    }


def _skip_reason(relative: str) -> str:
    return next(
        reason for skipped, reason in SKIPPED_DIRS.items() if relative == skipped or relative.endswith("/" + skipped)
    )


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    """``MANIFEST.json`` as written: indented JSON in key order, one trailing newline."""
    return (json.dumps(manifest, indent=2, sort_keys=False) + "\n").encode("utf-8")


def differing_files(report_dir: Path, wanted: Mapping[str, bytes | Path]) -> list[str]:
    """Files whose content differs between an existing report folder and the report about to be written."""
    existing = {p.relative_to(report_dir).as_posix() for p in report_dir.rglob("*") if p.is_file()}
    differ = sorted((existing - set(wanted)) | (set(wanted) - existing))
    for relative in sorted(existing & set(wanted)):
        source = wanted[relative]
        data = source if isinstance(source, bytes) else source.read_bytes()
        if (report_dir / relative).read_bytes() != data:
            differ.append(relative)
    return sorted(differ)
