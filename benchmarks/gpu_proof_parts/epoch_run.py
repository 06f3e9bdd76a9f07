"""Part ``epoch``: one epoch of FP and W4A16 QAT through the runner's own stages, both exported and checked.

The run config is the ``dry-run`` profile (the COCO pipeline's plumbing check: 1 epoch, the scratch recipe) on
generated data instead of COCO, resolved and saved by the config module, and planned by ``runs.plan.plan_stages``:
the very CLI commands the runner would run. The proof runs the required stages first (GPU preflight, data, both
trainings, FP float32 / QAT QCDQ / QAT INT4 exports), each through ``runs.stage_runner.run_stage`` (``run.json``,
one log per stage) under coreutils ``timeout`` set to what is left of the part's budget; then compares each
exported file on ONNX Runtime CPU with its checkpoint's model on the device (:mod:`.export_check`); then, with
``extra_stages``, the rest of the plan (FP16 export, ONNX COCO evaluation, summary) while the budget lasts. A stage
whose input stage did not finish is skipped, not run.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from auto_quantize_model.runs.checkpoint_policy import scored_checkpoint
from auto_quantize_model.runs.config import resolve_run_config, save_or_check_run_config
from auto_quantize_model.runs.plan import (
    CHECK_ENV_STAGE,
    PREPARE_STAGE,
    SYNTHETIC_STAGE,
    StageSpec,
    export_stage_name,
    model_name,
    plan_stages,
    train_stage_name,
)
from auto_quantize_model.runs.run_root import RunRoot
from auto_quantize_model.runs.stage_runner import run_stage
from auto_quantize_model.runs.variants import parse_variants
from auto_quantize_model.utils.io import read_json
from gpu_proof_parts import export_check
from gpu_proof_parts.budget import Part
from gpu_proof_parts.settings import ProofSettings

PROFILE = "dry-run"
VARIANTS = ("fp16", "qat-w4a16")
EXPORTS = (("fp16", "float32"), ("qat-w4a16", "qcdq"), ("qat-w4a16", "int4"))
SEED = 0
MIN_STAGE_S = 5.0  # do not start a stage with less budget left than this
TIMED_OUT = (124, 137)  # coreutils timeout: 124 after TERM, 137 after the KILL that follows --kill-after
LOG_TAIL_LINES = 15


def run(settings: ProofSettings, part: Part) -> None:
    run_root = RunRoot(settings.out / "epoch")
    config = proof_run_config(settings)
    save_or_check_run_config(run_root, config)
    stages = plan_stages(run_root, config)
    required = required_stage_names()
    part.data["run_root"] = str(run_root.root)
    part.data["profile"] = f"{PROFILE} on generated data: {_config_line(config)}"
    records = part.data.setdefault("stages", [])
    unfinished: set[str] = set()
    for spec in (s for s in stages if s.name in required):
        records.append(run_stage_within_budget(run_root, spec, part, unfinished))
    part.data["trainings"] = {variant: _training_facts(run_root, variant) for variant in VARIANTS}
    part.data["onnx_vs_device"] = _check_exports(settings, run_root, config, part, unfinished)
    extras = [s for s in stages if s.name not in required]
    if not settings.extra_stages:
        part.data["extra_stages"] = f"not run (--no-extra-stages): {' '.join(s.name for s in extras)}"
        return
    for spec in extras:
        records.append(run_stage_within_budget(run_root, spec, part, unfinished, required=False))


def proof_run_config(settings: ProofSettings) -> dict[str, Any]:
    """The dry-run profile, on generated data of the proof's size, CPU ONNX Runtime (all the test machine has)."""
    overrides = {
        "model": settings.model,
        "epochs": 1,
        "imgsz": settings.imgsz,
        "batch": settings.batch,
        "device": settings.device,
        "workers": 8 if settings.cuda else 0,
        "variants": list(VARIANTS),
        "data_source": "synthetic",
        "synthetic_train": settings.train_images,
        "synthetic_val": settings.val_images,
        "synthetic_imgsz": settings.imgsz,
        "eval_providers": ["CPUExecutionProvider"],
        "eval_max_images": settings.val_images,
        # --tiny: no plots (matplotlib costs more than the tiny epoch); the GPU run keeps the recipe's plots.
        "train_overrides": ["plots=False"] if settings.tiny else [],
    }
    return resolve_run_config(PROFILE, overrides)


def required_stage_names() -> set[str]:
    """Preflight, data, both trainings and the three exports the issue asks for."""
    variants = dict(zip(VARIANTS, parse_variants(list(VARIANTS))))
    names = {CHECK_ENV_STAGE, SYNTHETIC_STAGE, PREPARE_STAGE}
    names |= {train_stage_name(SEED, variant) for variant in variants.values()}
    names |= {export_stage_name(SEED, variants[name], weights_format) for name, weights_format in EXPORTS}
    return names


def run_stage_within_budget(
    run_root: RunRoot, spec: StageSpec, part: Part, unfinished: set[str], required: bool = True
) -> dict:
    """Run one stage within the budget; a stage whose inputs did not finish, or that does not fit, is skipped."""
    record: dict[str, Any] = {"stage": spec.name, "required": required}
    blocked = next((need for need in spec.needs if need in unfinished), None)
    if blocked or not part.allows(MIN_STAGE_S):
        why = f"needs {blocked}, which did not finish" if blocked else f"budget {part.budget_s:.0f} s reached"
        part.skip(f"stage {spec.name}", why)
        unfinished.add(spec.name)
        return {**record, "status": "not run", "why": why}
    with open(os.devnull, "wb") as quiet:  # the full output is in the stage log
        result = run_stage(
            run_root, spec.name, [*_timeout_prefix(part.left()), *spec.argv], outputs=spec.outputs, stream=quiet
        )
    record.update(status=result.status, seconds=result.duration_s, exit_code=result.exit_code)
    record["log"] = str(result.log.relative_to(run_root.root.parent))
    print(f"[epoch] {spec.name}: {result.status} ({result.duration_s or 0:.0f} s)", flush=True)
    if not result.ok:
        unfinished.add(spec.name)
        record["log_tail"] = _tail(result.log)
        if result.exit_code in TIMED_OUT:
            record["status"] = "stopped"
            part.skip(f"stage {spec.name}", f"stopped at the budget ({part.budget_s:.0f} s)")
        elif required:
            part.check(f"stage {spec.name}", False, f"exit code {result.exit_code}; log {record['log']}")
    elif required:
        part.check(f"stage {spec.name}", True, f"done in {result.duration_s:.0f} s")
    return record


def _timeout_prefix(seconds_left: float) -> list[str]:
    """``timeout`` kills the stage and its children (its own process group) when the budget runs out."""
    if shutil.which("timeout") is None:
        return []  # the budget is then only checked between stages
    return ["timeout", "--kill-after=15", f"{max(int(seconds_left), 1)}s"]


def _tail(log: Path) -> str:
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines() if log.is_file() else []
    return "\n".join(lines[-LOG_TAIL_LINES:])


def _training_facts(run_root: RunRoot, variant: str) -> dict[str, Any] | None:
    """What really trained, from ``train_metadata.json``: precision, epochs, fitness, non-finite losses."""
    path = run_root.seed(SEED).train_run(variant).metadata_json
    if not path.is_file():
        return None
    meta = read_json(path)
    keys = ("status", "epochs_completed", "best_fitness", "nonfinite_losses", "precision")
    facts = {key: meta.get(key) for key in keys}
    facts["mAP50-95(B)"] = (meta.get("final_metrics") or {}).get("metrics/mAP50-95(B)")
    return facts


def _check_exports(
    settings: ProofSettings, run_root: RunRoot, config: dict, part: Part, unfinished: set[str]
) -> list[dict[str, Any]]:
    """Each required export on ONNX Runtime CPU against its checkpoint's model on the proof's device."""
    seed_root, variants = run_root.seed(SEED), dict(zip(VARIANTS, parse_variants(list(VARIANTS))))
    results = []
    for name, weights_format in EXPORTS:
        stage = export_stage_name(SEED, variants[name], weights_format)
        if stage in unfinished or not part.allows(MIN_STAGE_S):
            part.skip(f"device check of {name} {weights_format}", "its export did not finish or no budget left")
            continue
        onnx = seed_root.onnx_model(model_name(config), name, weights_format)
        weights = scored_checkpoint(seed_root.train_run(name), config["checkpoint_policy"])  # what the stage exported
        result = export_check.compare_on_device(onnx, weights, run_root.val_images_dir, settings.torch_device)
        results.append(result)
        part.check(
            f"{onnx.name} vs {settings.torch_device} PyTorch",
            result["passed"],
            f"{result['images']} images: boxes {result['max_abs_diff_boxes']:.3g} (limit {result['box_limit']:.3g}), "
            f"scores {result['max_abs_diff_scores']:.3g} (limit {result['score_limit']:.3g})",
        )
    return results


def _config_line(config: dict[str, Any]) -> str:
    keys = ("model", "epochs", "imgsz", "batch", "device", "workers", "synthetic_train", "synthetic_val", "hyp")
    return ", ".join(f"{key} {config[key]}" for key in keys)
