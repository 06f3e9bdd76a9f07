"""Publish a run root's report into the repository, and keep an index of every published report.

A run root lives in git-ignored ``tmp/``; this module copies its *light* artifacts (summary,
plots, CSVs, configs, metrics and export metadata) into ``<dest>/<run-id>/`` and lists what it
left behind (weights, ONNX files, images, TensorBoard events, detections, logs) with sizes and
sha256s in ``MANIFEST.json``, so a published report can later be matched to its artifacts.

Every file is classified by its name and suffix while walking the run root, so the copy works on
any run-root layout (the flat one and the per-seed ``seed-<k>/`` one) without naming stages.

Guarantees:

- a run root whose ``summary.json`` does not say ``complete`` is refused unless ``allow_partial``;
- an existing report folder with different content is never overwritten (the error names the files);
- publishing the same run root again is a no-op (MANIFEST.json holds no publish time for that reason);
- a report over the size cap is refused before anything is written, naming the largest files;
- the report folder appears complete or not at all (staged in ``<dest>/.<run-id>.staging-*``, then renamed);
- ``<dest>/README.md`` (the index) is regenerated from the published reports on every publish.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import posixpath
import re
import shutil
import statistics
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from auto_quantize_model.runs.metrics_keys import DETECTIONS_FILE
from auto_quantize_model.runs.run_root import FP16_STAGE, RunRoot, TrainRunPaths
from auto_quantize_model.utils.io import read_json, sha256_file, write_text_atomic

# Relative to the repository root. Reports sit with the model's other documents (ONNX contract, README);
# models/cv-models/yolov10m/README.md says why this and not the plan's models/yolo10/reports/.
DEFAULT_REPORTS_SUBDIR = Path("models") / "cv-models" / "yolov10m" / "reports"
DEFAULT_MAX_BYTES = 5 * 1000 * 1000
MANIFEST_NAME = "MANIFEST.json"
INDEX_NAME = "README.md"
# A report folder mirrors the run root's layout, so RunRoot names its files too.
SUMMARY_MD_NAME = RunRoot(Path("/")).summary_md.name
MANIFEST_SCHEMA_VERSION = 1
FP_REFERENCE_FORMAT = "float32"

LIGHT_SUFFIXES = frozenset({".md", ".png", ".csv", ".yaml", ".json"})
REPORT_PNG_NAMES = frozenset({TrainRunPaths(Path("/")).loss_curves_png.name})
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif"})
# Run-root folders that are not walked at all: thousands of dataset files (symlinks to the source
# images, label text files and caches) or generated demo data; their content is pinned elsewhere
# (dataset/provenance.json, the val_ann_sha256 column, the generator's seed in run_config.yaml).
SKIPPED_DIRS: Mapping[str, str] = {
    "dataset/images": "dataset images (symlinks to the source images; see dataset/provenance.json)",
    "dataset/labels": "Ultralytics label files and caches derived from the annotations",
    "synthetic-coco": "generated demo data (regenerated from the data seed in run_config.yaml)",
}
RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
# [text](target) and ![alt](target "title"); group 1 = "!"-prefix and text, group 2 = target.
MARKDOWN_LINK = re.compile(r"(!?\[[^\]]*\])\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


class PublishError(RuntimeError):
    """A run root that cannot be published as asked; the message names the file and the fix."""


# --------------------------------------------------------------------------------------------
# Result objects
# --------------------------------------------------------------------------------------------
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


@dataclass(frozen=True)
class PublishResult:
    """Where the report went and what happened: ``created`` False means an identical report existed."""

    report_dir: Path
    index: Path
    created: bool
    partial: bool
    report_bytes: int
    copied: int
    left_behind: int


@dataclass
class IndexRow:
    """One published report as the index shows it; built from the report folder's own files."""

    run_id: str
    date: str | None = None
    profile: str | None = None
    model: str | None = None
    variants: list[str] = field(default_factory=list)
    seeds: list[Any] = field(default_factory=list)
    partial: bool = False
    fp_map: str | None = None
    best_quantized: str | None = None
    best_ratio: float | None = None
    onnx_sizes: str | None = None


# --------------------------------------------------------------------------------------------
# Walking and classifying the run root
# --------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------
# Completeness
# --------------------------------------------------------------------------------------------
def read_run_status(run_root: RunRoot) -> RunStatus:
    """Read ``summary.json``; a missing or unreadable one counts as incomplete and says so."""
    path = run_root.summary_json
    if not path.is_file():
        summary_cli = "scripts/cv-models/write_yolov10m_scratch_train_summary.py"
        fix = f"run the summary stage ({summary_cli} --run-root {run_root.root})"
        return RunStatus(False, (f"{path.name} missing: {fix}",), None)
    summary = read_json(path)
    if not isinstance(summary, Mapping) or not isinstance(summary.get("complete"), bool):
        return RunStatus(False, (f"{path}: no boolean 'complete' key; rerun the summary stage",), None)
    return RunStatus(summary["complete"], tuple(str(item) for item in summary.get("missing") or ()), summary)


def check_publishable(run_root: RunRoot, status: RunStatus, allow_partial: bool) -> None:
    """Refuse a run root without summary.md, or an incomplete one unless ``allow_partial``."""
    if not run_root.root.is_dir():
        raise PublishError(f"run root {run_root.root} does not exist")
    if not run_root.summary_md.is_file():
        raise PublishError(
            f"{run_root.summary_md} missing: run the summary stage first "
            f"(scripts/cv-models/write_yolov10m_scratch_train_summary.py --run-root {run_root.root})"
        )
    if status.complete or allow_partial:
        return
    shown = "; ".join(status.missing[:5]) + (f"; and {len(status.missing) - 5} more" if len(status.missing) > 5 else "")
    raise PublishError(
        f"{run_root.summary_json}: run root is not complete ({shown or 'no items listed'}); "
        "finish the run, or pass --allow-partial to publish it marked partial"
    )


# --------------------------------------------------------------------------------------------
# summary.md link rewriting
# --------------------------------------------------------------------------------------------
def _run_root_relative(target: str, run_root: RunRoot) -> str | None:
    """The run-root-relative POSIX path a link target points at, or None when it leaves the run root."""
    path = Path(target) if os.path.isabs(target) else run_root.root / target
    try:
        relative = Path(os.path.normpath(path)).relative_to(run_root.root).as_posix()
    except ValueError:
        return None
    return "" if relative == "." else relative


def rewrite_summary_links(text: str, plan: PublishPlan) -> str:
    """Make every link of ``summary.md`` resolve inside the report folder.

    Links to copied files (or folders holding copied files) become report-relative; links to files
    left behind, or outside the run root, become code text with a pointer to MANIFEST.json, so no
    published link dangles. Web links and in-page anchors stay as they are.
    """
    copied = set(plan.copied)
    copied_dirs = {posixpath.dirname(path) for path in copied}
    copied_dirs |= {parent for path in copied_dirs for parent in _parents(path)}

    def replace(match: re.Match[str]) -> str:
        label, target = match.group(1), match.group(2)
        if URL_SCHEME.match(target) or target.startswith("#"):
            return match.group(0)
        path_part, _, anchor = target.partition("#")
        relative = _run_root_relative(path_part, plan.run_root)
        if relative is not None and (relative in copied or relative.rstrip("/") in copied_dirs):
            return f"{label}({relative or '.'}{'#' + anchor if anchor else ''})"
        where = "left in the run root, see MANIFEST.json" if relative is not None else "outside the run root"
        text_label = label.lstrip("!")[1:-1]
        shown = relative if relative is not None else path_part
        return f"{text_label} (`{shown}`, {where})" if text_label and text_label != shown else f"`{shown}` ({where})"

    return MARKDOWN_LINK.sub(replace, text)


def _parents(relative: str) -> Iterable[str]:
    while relative:
        relative = posixpath.dirname(relative)
        yield relative


def render_summary(plan: PublishPlan, run_id: str, partial: bool) -> str:
    """The report's summary.md: the run root's, links rewritten, with a note on where it came from."""
    text = rewrite_summary_links(plan.run_root.summary_md.read_text(encoding="utf-8"), plan)
    note = (
        f"> Published report `{run_id}`{' (**partial**: the run root was not complete)' if partial else ''}. "
        f"Weights, ONNX files, logs and other large files stay in the run root; [MANIFEST.json](MANIFEST.json) "
        "lists them with sizes and sha256s."
    )
    lines = text.splitlines()
    at = 1 if lines and lines[0].startswith("# ") else 0
    return "\n".join(lines[:at] + ["", note] + lines[at:]).rstrip() + "\n"


# --------------------------------------------------------------------------------------------
# Size cap, manifest, comparison
# --------------------------------------------------------------------------------------------
def check_size_cap(sizes: Mapping[str, int], max_bytes: int, run_root: RunRoot) -> int:
    """Total bytes of the report; raises naming the largest files when it is over ``max_bytes``."""
    total = sum(sizes.values())
    if total <= max_bytes:
        return total
    largest = sorted(sizes.items(), key=lambda item: (-item[1], item[0]))[:5]
    shown = ", ".join(f"{path} ({size / 1e6:.2f} MB)" for path, size in largest)
    raise PublishError(
        f"report of {run_root.root} would be {total / 1e6:.2f} MB, over the cap of {max_bytes / 1e6:.2f} MB; "
        f"largest files: {shown}. Raise the cap with --max-mb if these belong in the repository"
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
        "summary_generated_at": summary.get("generated_at"),
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


def _manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
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


def _conflict(report_dir: Path, differ: Sequence[str]) -> PublishError:
    shown = ", ".join(differ[:10]) + (f" and {len(differ) - 10} more" if len(differ) > 10 else "")
    return PublishError(
        f"{report_dir} exists with different content ({shown}); refusing to overwrite it. "
        "Publish under another name (--name), or delete that folder if it is stale"
    )


# --------------------------------------------------------------------------------------------
# Publishing
# --------------------------------------------------------------------------------------------
def default_run_id(run_root: RunRoot) -> str:
    """The run root's folder name (``demo-<timestamp>``, ``coco-300e``, ...)."""
    return run_root.root.name


def check_run_id(run_id: str) -> None:
    if not RUN_ID_PATTERN.fullmatch(run_id) or run_id == INDEX_NAME:
        raise PublishError(
            f"report name {run_id!r} is not a plain folder name (letters, digits, '.', '_', '+', '-'); "
            "pass another --name"
        )


def publish_run_report(
    run_root: RunRoot | Path,
    dest: Path,
    run_id: str | None = None,
    *,
    allow_partial: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> PublishResult:
    """Copy the light artifacts of ``run_root`` into ``dest/<run_id>/`` and regenerate ``dest/README.md``.

    Cheap checks (completeness, size cap, conflicting light files) run before the left-behind files are
    hashed; nothing is written until every check has passed.
    """
    run_root = run_root if isinstance(run_root, RunRoot) else RunRoot(Path(run_root))
    run_id = run_id or default_run_id(run_root)
    check_run_id(run_id)
    status = read_run_status(run_root)
    check_publishable(run_root, status, allow_partial)
    dest = Path(dest).expanduser().resolve()
    if dest == run_root.root or run_root.root in dest.parents:
        raise PublishError(f"destination {dest} lies inside the run root {run_root.root}; pick a --dest outside it")
    plan = plan_publish(run_root)

    report_files: dict[str, bytes | Path] = {rel: run_root.root / rel for rel in plan.copied}
    report_files[SUMMARY_MD_NAME] = render_summary(plan, run_id, partial=not status.complete).encode("utf-8")
    sizes = {rel: len(src) if isinstance(src, bytes) else src.stat().st_size for rel, src in report_files.items()}
    check_size_cap(sizes, max_bytes, run_root)
    report_dir = dest / run_id
    if report_dir.exists():
        # MANIFEST.json is compared once the left-behind files are hashed; the light files decide early.
        differ = [name for name in differing_files(report_dir, report_files) if name != MANIFEST_NAME]
        if differ:
            raise _conflict(report_dir, differ)

    manifest = _manifest_bytes(build_manifest(plan, run_id, status, report_files))
    report_files[MANIFEST_NAME] = manifest
    total = check_size_cap({**sizes, MANIFEST_NAME: len(manifest)}, max_bytes, run_root)
    created = not report_dir.exists()
    if not created:
        differ = differing_files(report_dir, report_files)
        if differ:
            raise _conflict(report_dir, differ)
    else:
        _write_staged(report_dir, report_files)
    index = write_index(dest)
    return PublishResult(
        report_dir, index, created, not status.complete, total, len(plan.copied), len(plan.left_behind)
    )


def _write_staged(report_dir: Path, files: Mapping[str, bytes | Path]) -> None:
    """Write every file into a staging folder beside ``report_dir``, then rename it into place."""
    report_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{report_dir.name}.staging-", dir=report_dir.parent))
    try:
        for relative, source in files.items():
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(source, bytes):
                target.write_bytes(source)
            else:
                shutil.copyfile(source, target)
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp creates 0700; a report folder is shared like any other
        try:
            os.rename(staging, report_dir)
        except OSError as error:  # another publish created it meanwhile
            raise PublishError(f"{report_dir} appeared while publishing ({error}); run the publish again") from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --------------------------------------------------------------------------------------------
# The index (<dest>/README.md)
# --------------------------------------------------------------------------------------------
def _read_yaml(path: Path) -> Mapping[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, Mapping) else {}


def _read_json_mapping(path: Path) -> Mapping[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = read_json(path)
    except ValueError:
        return {}
    return data if isinstance(data, Mapping) else {}


def _number(text: Any) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class VariantStats:
    """Mean (and spread) of one (variant, weights_format) over the seeds in summary.csv."""

    label: str
    variant: str
    weights_format: str
    maps: tuple[float, ...]
    onnx_bytes: tuple[float, ...]

    @property
    def mean_map(self) -> float | None:
        return statistics.fmean(self.maps) if self.maps else None

    def map_text(self) -> str | None:
        if not self.maps:
            return None
        spread = f" ± {statistics.stdev(self.maps):.4f}" if len(self.maps) > 1 else ""
        return f"{self.mean_map:.4f}{spread}"


def variant_stats(rows: Sequence[Mapping[str, str]]) -> list[VariantStats]:
    """Group summary.csv rows by (variant, weights_format) in file order; label by variant alone when unique."""
    groups: dict[tuple[str, str], list[Mapping[str, str]]] = {}
    for row in rows:
        groups.setdefault((row.get("variant") or "?", row.get("weights_format") or ""), []).append(row)
    formats_per_variant: dict[str, int] = {}
    for variant, _ in groups:
        formats_per_variant[variant] = formats_per_variant.get(variant, 0) + 1
    stats = []
    for (variant, weights_format), members in groups.items():
        label = variant if formats_per_variant[variant] == 1 or not weights_format else f"{variant} ({weights_format})"
        maps = tuple(v for v in (_number(m.get("mAP50_95")) for m in members) if v is not None)
        sizes = tuple(v for v in (_number(m.get("onnx_bytes")) for m in members) if v is not None)
        stats.append(VariantStats(label, variant, weights_format, maps, sizes))
    return stats


def _read_summary_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def index_row(report_dir: Path) -> IndexRow:
    """What the index shows for one report, read only from the report folder's copied files."""
    manifest = _read_json_mapping(report_dir / MANIFEST_NAME)
    summary = _read_json_mapping(report_dir / RunRoot(report_dir).summary_json.name)
    config = _read_yaml(report_dir / RunRoot(report_dir).run_config.name)
    row = IndexRow(report_dir.name, partial=bool(manifest.get("partial")))
    row.date = summary.get("generated_at") or manifest.get("summary_generated_at")
    row.profile = summary.get("profile") or config.get("profile")
    row.model = summary.get("model") or config.get("model")
    row.variants = list(summary.get("variants") or config.get("variants") or [])
    seeds = summary.get("seeds") or config.get("seeds") or ([config["seed"]] if "seed" in config else [])
    row.seeds = list(seeds)
    stats = variant_stats(_read_summary_csv(report_dir / RunRoot(report_dir).summary_csv.name))
    _fill_metrics(row, stats)
    return row


def _fill_metrics(row: IndexRow, stats: Sequence[VariantStats]) -> None:
    fp_groups = [s for s in stats if s.variant == FP16_STAGE and s.maps]
    # The FP reference is the float32 export when the run evaluated several FP formats (float32, float16).
    fp = next((s for s in fp_groups if s.weights_format == FP_REFERENCE_FORMAT), fp_groups[0] if fp_groups else None)
    quantized = [s for s in stats if s.variant != FP16_STAGE and s.maps]
    row.fp_map = fp.map_text() if fp else None
    if quantized:
        best = max(quantized, key=lambda s: s.mean_map or 0.0)
        row.best_quantized = f"{best.label} {best.map_text()}"
        row.best_ratio = best.mean_map / fp.mean_map if fp and fp.mean_map else None
    sizes = [f"{s.label} {statistics.fmean(s.onnx_bytes) / 1e6:.2f} MB" for s in stats if s.onnx_bytes]
    row.onnx_sizes = "; ".join(sizes) or None


def _cell(value: Any) -> str:
    if value is None or value == []:
        return "—"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value).replace("|", "\\|")


def _date_text(iso: str | None) -> str | None:
    return iso[:16].replace("T", " ") + (" UTC" if iso.endswith(("Z", "+00:00")) else "") if iso else None


INDEX_HEADER = """# Published run reports

One folder per published run root, written by `scripts/cv-models/publish_run_report.py`
(`pixi run publish-report --run-root R`). This index is regenerated on every publish from the
reports' own `summary.json`, `summary.csv` and `run_config.yaml`; do not edit it by hand.
Each folder holds the run's `summary.md`, plots, CSVs, configs, metrics and export metadata;
weights, ONNX files, logs, images and TensorBoard events stay in the run root and are listed,
with sizes and sha256s, in the folder's `MANIFEST.json`.

Columns: mAP50-95 is the shared ONNX evaluator's (`summary.csv` `mAP50_95`), as mean ± sample
standard deviation over the seeds when there are several; "best quantized" is the quantized
variant with the highest mean and "ratio" its mean over the FP16 mean; ONNX sizes are means
over seeds. Newest first (by the summary's generation time).
"""
INDEX_COLUMNS = (
    "run",
    "date",
    "profile",
    "model",
    "variants",
    "seeds",
    "FP16 mAP50-95",
    "best quantized (mAP50-95)",
    "ratio to FP16",
    "ONNX sizes",
)


def render_index(rows: Sequence[IndexRow]) -> str:
    ordered = sorted(rows, key=lambda r: (r.date or "", r.run_id), reverse=True)
    lines = [INDEX_HEADER, "| " + " | ".join(INDEX_COLUMNS) + " |", "|" + "---|" * len(INDEX_COLUMNS)]
    for row in ordered:
        link = f"[{row.run_id}]({row.run_id}/{SUMMARY_MD_NAME})" + (" (partial)" if row.partial else "")
        cells = [
            link,
            _date_text(row.date),
            row.profile,
            row.model,
            row.variants,
            row.seeds,
            row.fp_map,
            row.best_quantized,
            row.best_ratio,
            row.onnx_sizes,
        ]
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    if not ordered:
        lines.append("| " + " | ".join(["(none yet)"] + ["—"] * (len(INDEX_COLUMNS) - 1)) + " |")
    return "\n".join(lines) + "\n"


def published_reports(dest: Path) -> list[Path]:
    """Report folders under ``dest``: visible folders holding a MANIFEST.json (staging folders are hidden)."""
    if not dest.is_dir():
        return []
    return sorted(
        p for p in dest.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST_NAME).is_file()
    )


def write_index(dest: Path) -> Path:
    """Regenerate ``dest/README.md``; left untouched when its content would not change."""
    index = Path(dest) / INDEX_NAME
    text = render_index([index_row(report) for report in published_reports(Path(dest))])
    if not index.is_file() or index.read_text(encoding="utf-8") != text:
        write_text_atomic(index, text)
    return index
