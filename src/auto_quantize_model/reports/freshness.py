"""What a run root shows that no longer matches what it was built from, or was scored on part of the val set.

The summary refuses to call a root complete while any of these holds:

* a done stage in ``run.json`` whose outputs changed, or whose recorded inputs differ from what its
  needs hold now (:func:`~auto_quantize_model.runs.provenance.stale_stages`);
* an artifact's own metadata names an input that has other bytes now: an export's ``source.sha256``
  against the checkpoint it names, an evaluation's ONNX and annotation sha256, a
  fine-tune's starting checkpoint against the seed's ``fp16`` one (a root built by hand is checked too);
* an evaluation that skipped unreadable val images (``--allow-missing-images``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from auto_quantize_model.evaluation.runtime import DEFAULT_RUNTIME
from auto_quantize_model.reports.summary_view import Cell, RunView
from auto_quantize_model.runs import metrics_keys as mk
from auto_quantize_model.runs.checkpoint_policy import fp_checkpoint, scored_checkpoint
from auto_quantize_model.runs.plan import PUBLISH_STAGE, SUMMARY_STAGE, plan_stages
from auto_quantize_model.runs.provenance import stale_stages
from auto_quantize_model.runs.run_root import TrainRunPaths
from auto_quantize_model.runs.variants import FP_VARIANT
from auto_quantize_model.utils.io import sha256_file


def stale_items(view: RunView, state: Mapping[str, Any]) -> list[str]:
    """One line per stale stage, stale artifact and partially scored evaluation; empty when none."""
    sha = _Sha256Cache()
    items = []
    if view.config:
        stages = plan_stages(view.run_root, view.config)
        items += stale_stages(stages, state.get("stages", {}), skip=(SUMMARY_STAGE, PUBLISH_STAGE))
    for training in view.trainings:
        if training.variant.kind == "qat-ft":
            recorded = (training.metadata or {}).get("init_from_sha256")
            seed_root, calibrated = view.run_root.seed(training.seed), training.variant.calibration_variant
            # a fine-tune with quantized activations starts from its ptq-<scheme> calibration, others from fp16
            start = (
                scored_checkpoint(seed_root.train_run(calibrated), view.policy)
                if calibrated
                else fp_checkpoint(seed_root, view.policy)
            )
            items += _differs(recorded, start, sha, f"seed {training.seed} {training.variant.name}: fine-tuned from")
    for cell in [*view.cells, *view.runtime_cells]:  # OpenVINO's scores of a file go stale with the file too
        items += _stale_cell(view, cell, sha)
    return items


def _stale_cell(view: RunView, cell: Cell, sha: Callable[[Path], str | None]) -> list[str]:
    """The export against its checkpoint, the evaluation against its ONNX and annotations, skipped images."""
    what = f"seed {cell.seed} {cell.variant.name} {cell.weights_format}"
    what += f" ({cell.runtime})" if cell.runtime != DEFAULT_RUNTIME else ""
    source = (cell.export or {}).get("source") or {}
    checkpoint = _exported_checkpoint(view.run_root.seed(cell.seed).train_run(cell.variant.name), source, view.policy)
    if cell.variant.needs_fp_onnx:  # ortq/nncf: made from the fp16 float32 ONNX, not from a checkpoint
        fp32 = view.cell(cell.seed, FP_VARIANT, "float32")
        checkpoint = fp32.onnx if fp32 else Path(source.get("fp_onnx", ""))
    metrics = cell.metrics or {}
    items = _differs(source.get("sha256"), checkpoint, sha, f"{what}: exported from")
    items += _differs((metrics.get(mk.ONNX) or {}).get(mk.SHA256), cell.onnx, sha, f"{what}: evaluated")
    annotations = (metrics.get(mk.ANNOTATIONS) or {}).get(mk.SHA256)
    items += _differs(annotations, view.run_root.val_annotations, sha, f"{what}: scored on")
    if metrics.get(mk.NUM_IMAGES_SKIPPED):
        items.append(
            f"{what}: scored on {metrics.get(mk.NUM_IMAGES)} of {metrics.get(mk.NUM_IMAGES_REQUESTED)} val images "
            "(unreadable images skipped with --allow-missing-images)"
        )
    return items


def _exported_checkpoint(paths: TrainRunPaths, source: Mapping[str, Any], policy: str) -> Path:
    """The training's checkpoint an export names (``last.pt``/``best.pt``; a moved run root keeps the name),
    else the one the run's policy scores."""
    named = source.get("checkpoint")
    return paths.weights_dir / Path(named).name if named else scored_checkpoint(paths, policy)


def _differs(recorded: str | None, path: Path, sha: Callable[[Path], str | None], what: str) -> list[str]:
    """``[line]`` when a sha256 was recorded and ``path`` now holds other bytes (or is gone)."""
    if recorded is None:
        return []
    now = sha(path)
    if now == recorded:
        return []
    state = "gone" if now is None else "changed since"
    return [f"{what} {path.name}, whose bytes are {state} ({recorded[:12]} then, {(now or '-')[:12]} now)"]


class _Sha256Cache:
    """sha256 of a file, read once per summary (a checkpoint is the input of several artifacts)."""

    def __init__(self) -> None:
        self.known: dict[Path, str | None] = {}

    def __call__(self, path: Path) -> str | None:
        if path not in self.known:
            self.known[path] = sha256_file(path) if path.is_file() else None
        return self.known[path]
