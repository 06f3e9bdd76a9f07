"""What in a run root no longer matches what it was built from (the summary's "Complete" refusal).

Two sources, so a root built by the runner and one built stage by stage by hand are both checked:

* ``run.json``: a done stage whose outputs changed, or whose recorded inputs differ from what its
  needs hold now (:func:`~auto_quantize_model.runs.provenance.output_problem`, ``input_change``);
* the artifacts' own metadata: an export's ``source.sha256`` against the checkpoint it names, an
  evaluation's ONNX and annotation sha256 against those files, a PTQ model's or a fine-tune's
  starting checkpoint against the seed's ``fp16`` ``best.pt``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from auto_quantize_model.runs import metrics_keys as K
from auto_quantize_model.runs.plan import PUBLISH_STAGE, SUMMARY_STAGE, StageSpec, model_name, plan_stages
from auto_quantize_model.runs.provenance import input_change, output_problem
from auto_quantize_model.runs.run_root import RunRoot, export_metadata_path
from auto_quantize_model.runs.stage_runner import load_run_state
from auto_quantize_model.runs.variants import FP_VARIANT, Variant, parse_variants
from auto_quantize_model.utils.io import read_json, sha256_file

REPORT_STAGES = (SUMMARY_STAGE, PUBLISH_STAGE)  # they read the root; their own records are not checked


def stale_items(run_root: RunRoot, config: Mapping[str, Any]) -> list[str]:
    """One line per artifact or stage record of the resolved ``config``'s plan that no longer matches its inputs."""
    variants, model = parse_variants(list(config["variants"])), model_name(config)
    stale = _stale_metadata(run_root, model, variants, config["seeds"])
    return _stale_records(run_root, plan_stages(run_root, config)) + stale


def _stale_records(run_root: RunRoot, stages: Sequence[StageSpec]) -> list[str]:
    records = load_run_state(run_root)["stages"]
    items = []
    for stage in stages:
        record = records.get(stage.name) or {}
        if stage.name in REPORT_STAGES or record.get("status") != "done":
            continue
        reason = output_problem(stage, record) or input_change(stage, record, records)
        if reason:
            items.append(f"stage {stage.name} is stale: {reason}; rerun the runner to redo it")
    return items


def _stale_metadata(run_root: RunRoot, model: str, variants: Sequence[Variant], seeds: Sequence[int]) -> list[str]:
    sha = _Sha256Cache()
    items = []
    for seed in seeds:
        seed_root = run_root.seed(seed)
        fp_best = seed_root.train_run(FP_VARIANT).best
        for variant in variants:
            paths = seed_root.train_run(variant.name)
            if variant.kind == "ptq":
                recorded = _get(paths.best.with_suffix(".json"), "source", "sha256")
                items += _differs(recorded, fp_best, sha, f"seed {seed} {variant.name}: quantized from")
            if variant.kind == "qat-ft":
                recorded = _get(paths.metadata_json, "init_from_sha256")
                items += _differs(recorded, fp_best, sha, f"seed {seed} {variant.name}: fine-tuned from")
            for weights_format in variant.weight_formats:
                onnx = seed_root.onnx_model(model, variant.name, weights_format)
                items += _stale_format(run_root, seed, variant, weights_format, onnx, sha)
    return items


def _stale_format(
    run_root: RunRoot, seed: int, variant: Variant, weights_format: str, onnx: Path, sha: Callable
) -> list[str]:
    """The export against its checkpoint, the evaluation against its ONNX and annotations."""
    seed_root = run_root.seed(seed)
    what = f"seed {seed} {variant.name} {weights_format}"
    recorded = _get(export_metadata_path(onnx), "source", "sha256")
    items = _differs(recorded, seed_root.train_run(variant.name).best, sha, f"{what}: exported from")
    metrics = seed_root.eval_metrics(variant.name, weights_format)
    items += _differs(_get(metrics, K.ONNX, K.SHA256), onnx, sha, f"{what}: evaluated")
    items += _differs(_get(metrics, K.ANNOTATIONS, K.SHA256), run_root.val_annotations, sha, f"{what}: scored on")
    return items


def _differs(recorded: str | None, path: Path, sha: Callable[[Path], str | None], what: str) -> list[str]:
    """``[line]`` when a recorded sha256 exists and ``path`` now holds other bytes (or is gone)."""
    if recorded is None:
        return []
    now = sha(path)
    if now == recorded:
        return []
    state = "gone" if now is None else "changed since"
    return [f"{what} {path.name} whose bytes are {state} ({recorded[:12]} then, {(now or '-')[:12]} now)"]


def _get(path: Path, *keys: str) -> Any:
    """A nested value of a JSON file, ``None`` when the file, a key or valid JSON is missing."""
    if not path.is_file():
        return None
    try:
        value: Any = read_json(path)
    except ValueError:
        return None
    for key in keys:
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


class _Sha256Cache:
    """sha256 of a file, computed once per summary (checkpoints are read for several artifacts)."""

    def __init__(self) -> None:
        self.known: dict[Path, str | None] = {}

    def __call__(self, path: Path) -> str | None:
        if path not in self.known:
            self.known[path] = sha256_file(path) if path.is_file() else None
        return self.known[path]
