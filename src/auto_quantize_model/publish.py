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

import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from auto_quantize_model.reports.publish_files import (
    MANIFEST_NAME,
    PublishError,
    RunStatus,
    build_manifest,
    differing_files,
    manifest_bytes,
    plan_publish,
)
from auto_quantize_model.reports.publish_index import INDEX_NAME, write_index
from auto_quantize_model.reports.publish_links import render_summary
from auto_quantize_model.reports.publish_paths import PathRewrite, stage_checkouts
from auto_quantize_model.reports.summary_json import read_summary_json
from auto_quantize_model.runs import summary_schema as ss
from auto_quantize_model.runs.run_root import SUMMARY_MD, RunRoot
from auto_quantize_model.runs.stage_runner import load_run_state

# Relative to the repository root. Reports sit with the model's other documents (ONNX contract, README);
# models/cv-models/yolov10m/README.md says why this and not the plan's models/yolo10/reports/.
DEFAULT_REPORTS_SUBDIR = Path("models") / "cv-models" / "yolov10m" / "reports"
DEFAULT_MAX_BYTES = 5 * 1000 * 1000

RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


# --------------------------------------------------------------------------------------------
# Result objects
# --------------------------------------------------------------------------------------------


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
    summary = read_summary_json(path)
    if summary is None or not isinstance(summary.get(ss.COMPLETE), bool):
        return RunStatus(False, (f"{path}: no boolean {ss.COMPLETE!r} key; rerun the summary stage",), None)
    return RunStatus(summary[ss.COMPLETE], tuple(str(item) for item in summary.get(ss.MISSING) or ()), summary)


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
# Size cap and conflicts
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
    repository: Path | None = None,
) -> PublishResult:
    """Copy the light artifacts of ``run_root`` into ``dest/<run_id>/`` and regenerate ``dest/README.md``.

    Absolute paths in the copied text files become portable (:mod:`~auto_quantize_model.reports.publish_paths`):
    the run root relative to ``repository`` when it lies inside it, else by ``run_id``.

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

    rewrite = PathRewrite.for_report(run_root, run_id, repository, stage_checkouts(load_run_state(run_root)))
    report_files: dict[str, bytes | Path] = {rel: run_root.root / rel for rel in plan.copied}
    report_files[SUMMARY_MD] = render_summary(plan, run_id, partial=not status.complete).encode("utf-8")
    report_files = rewrite.files(report_files)
    sizes = {rel: len(src) if isinstance(src, bytes) else src.stat().st_size for rel, src in report_files.items()}
    check_size_cap(sizes, max_bytes, run_root)
    report_dir = dest / run_id
    if report_dir.exists():
        # MANIFEST.json is compared once the left-behind files are hashed; the light files decide early.
        differ = [name for name in differing_files(report_dir, report_files) if name != MANIFEST_NAME]
        if differ:
            raise _conflict(report_dir, differ)

    manifest = rewrite.apply_bytes(manifest_bytes(build_manifest(plan, run_id, status, report_files)))
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
