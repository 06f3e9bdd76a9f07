"""The experiment pipeline: a resolved run config -> an ordered list of tracked stages -> run them.

:func:`plan_stages` turns the config into :class:`StageSpec` s, each one CLI call with the files it
must produce and the stages it depends on:

    [check-env] [make-synthetic-data] prepare-data
    for each seed k, for each variant V (fp16 first):
        s<k>-train-V  (or s<k>-quantize-V for ptq-*)    -> R/seed-k/V/weights/best.pt
        s<k>-export-V-F, s<k>-eval-V-F  for each weight format F of V
    summary [publish]

:func:`run_pipeline` runs them in order through :func:`~auto_quantize_model.stages.run_stage`
(``run.json`` tracking, one log per stage). A rerun skips stages that are done and whose recorded
outputs are still there with the same sha256; a stage whose outputs went missing or changed is
redone together with every stage downstream of it, and ``redo`` asks for that on purpose. Work
that is redone is set aside (renamed ``*.stale-<time>``), never deleted.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auto_quantize_model.io_utils import sha256_file
from auto_quantize_model.provenance import utc_now
from auto_quantize_model.run_root import RunRoot, SeedRoot
from auto_quantize_model.stages import StageResult, load_run_state, run_stage, update_stage_record
from auto_quantize_model.ultralytics_ext.env import project_root
from auto_quantize_model.variants import Variant, parse_variants

SCRIPTS_DIR = project_root() / "scripts" / "cv-models"
CHECK_ENV_SCRIPT = project_root() / "scripts" / "check_env.py"
SUMMARY_STAGE = "summary"
PUBLISH_STAGE = "publish"
CHECK_ENV_STAGE = "check-env"
PREPARE_STAGE = "prepare-data"
SYNTHETIC_STAGE = "make-synthetic-data"


class PipelineError(RuntimeError):
    """A stage failed or a request names no stage of this run; the message says which and what to do."""


@dataclass(frozen=True)
class StageSpec:
    """One tracked stage: the CLI call, the files it must produce, what it needs, what a redo sets aside."""

    name: str
    argv: tuple[str, ...]
    outputs: tuple[Path, ...]
    needs: tuple[str, ...] = ()
    workdir: Path | None = None  # set aside (renamed) before the stage is redone


def model_name(config: Mapping[str, Any]) -> str:
    """The model name used in ONNX file names: the model cfg stem (``yolov10n.yaml`` -> ``yolov10n``)."""
    return Path(str(config["model"])).stem


def needs_gpu(config: Mapping[str, Any]) -> bool:
    """A profile that trains on a CUDA device or evaluates with a GPU provider gets the preflight."""
    return config["device"] not in ("cpu", "mps") or any(
        "CUDA" in p or "Tensorrt" in p for p in config["eval_providers"]
    )


def train_stage_name(seed: int, variant: Variant) -> str:
    action = "quantize" if variant.kind == "ptq" else "train"
    return f"s{seed}-{action}-{variant.name}"


def export_stage_name(seed: int, variant: Variant, weights_format: str) -> str:
    return f"s{seed}-export-{variant.name}-{weights_format}"


def eval_stage_name(seed: int, variant: Variant, weights_format: str) -> str:
    return f"s{seed}-eval-{variant.name}-{weights_format}"


# --------------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Context:
    run_root: RunRoot
    config: Mapping[str, Any]
    python: str
    tools: Path


def plan_stages(
    run_root: RunRoot,
    config: Mapping[str, Any],
    *,
    publish: bool = False,
    python: str | None = None,
    tools: Path = SCRIPTS_DIR,
) -> list[StageSpec]:
    """Every stage of the run, in order (``python`` runs the CLIs; default: this interpreter)."""
    ctx = _Context(run_root, config, python or sys.executable, Path(tools))
    stages = _setup_stages(ctx)
    variants = parse_variants(list(config["variants"]))
    for seed in config["seeds"]:
        for variant in variants:
            stages += _variant_stages(ctx, seed, variant)
    evals = tuple(s.name for s in stages if "-eval-" in s.name)
    summary = _cli(ctx, "write_yolov10m_scratch_train_summary.py", {"--run-root": run_root.root})
    stages.append(StageSpec(SUMMARY_STAGE, summary, (run_root.summary_md, run_root.summary_csv), evals))
    if publish:
        argv = _cli(ctx, "publish_run_report.py", {"--run-root": run_root.root})
        stages.append(StageSpec(PUBLISH_STAGE, argv, (), (SUMMARY_STAGE,)))
    return stages


def _cli(
    ctx: _Context, script: str, flags: Mapping[str, Any], *extra: str, command: str | None = None
) -> tuple[str, ...]:
    """``python tools/script [command] --flag value ... extra...``; a flag whose value is ``None`` is left out."""
    argv = [ctx.python, str(ctx.tools / script), *([command] if command else [])]
    for flag, value in flags.items():
        if value is not None:
            argv += [flag, str(value)]
    return (*argv, *extra)


def _setup_stages(ctx: _Context) -> list[StageSpec]:
    config, root = ctx.config, ctx.run_root
    stages = []
    if needs_gpu(config):
        argv = (
            ctx.python,
            str(CHECK_ENV_SCRIPT),
            "--device",
            str(config["device"]),
            "--providers",
            *config["eval_providers"],
        )
        stages.append(StageSpec(CHECK_ENV_STAGE, argv, ()))
    source_root, prepare_needs = str(config["source_root"] or ""), ()
    if config["data_source"] == "synthetic":
        out = root.synthetic_source_dir
        flags = {
            "--out": out,
            "--train": config["synthetic_train"],
            "--val": config["synthetic_val"],
            "--imgsz": config["synthetic_imgsz"],
            "--seed": config["data_seed"],
        }
        argv = _cli(ctx, "make_synthetic_coco.py", flags, "--overwrite")
        stages.append(StageSpec(SYNTHETIC_STAGE, argv, (out,), (), out))
        source_root, prepare_needs = str(out), (SYNTHETIC_STAGE,)
    # --overwrite: a data stage only runs while it is not done, so its folder holds a failed attempt of this run.
    flags = {
        "--source-root": source_root,
        "--out-dir": root.dataset_dir,
        "--max-train-images": config["max_train_images"],
        "--max-val-images": config["max_val_images"],
        "--seed": config["data_seed"],
    }
    argv = _cli(ctx, "prepare_coco_dataset.py", flags, "--overwrite")
    outputs = (root.dataset_yaml, root.val_annotations)
    stages.append(StageSpec(PREPARE_STAGE, argv, outputs, prepare_needs, root.dataset_dir))
    return stages


def _variant_stages(ctx: _Context, seed: int, variant: Variant) -> list[StageSpec]:
    seed_root = ctx.run_root.seed(seed)
    make = _quantize_stage(ctx, seed_root, variant) if variant.kind == "ptq" else _train_stage(ctx, seed_root, variant)
    stages = [make]
    for weights_format in variant.weight_formats:
        export = _export_stage(ctx, seed_root, variant, weights_format, make.name)
        stages += [export, _eval_stage(ctx, seed_root, variant, weights_format, export)]
    return stages


def _fp_best(seed_root: SeedRoot) -> Path:
    return seed_root.train_run("fp16").best


def _train_stage(ctx: _Context, seed_root: SeedRoot, variant: Variant) -> StageSpec:
    config, paths = ctx.config, seed_root.train_run(variant.name)
    fine_tune = variant.kind == "qat-ft"
    flags = {
        "--run-root": ctx.run_root.root,
        "--data": ctx.run_root.dataset_yaml,
        "--model": config["model"],
        "--epochs": config["ft_epochs"] if fine_tune else config["epochs"],
        "--imgsz": config["imgsz"],
        "--batch": config["batch"],
        "--device": config["device"],
        "--hyp": config["ft_hyp"] if fine_tune else config["hyp"],
        "--seed": seed_root.seed,
        "--workers": config["workers"],
        "--fraction": config["fraction"],
    }
    command = "qat-w4a16" if variant.quantized else "fp16"
    argv = list(_cli(ctx, "train_yolov10m_scratch_fp16_vs_w4a16_qat_brevitas.py", flags, "--resume", command=command))
    for pair in config["train_overrides"]:
        argv += ["--train-arg", pair]
    needs = [PREPARE_STAGE]
    if variant.quantized:
        argv += ["--quant-scheme", variant.scheme_spec]
    if fine_tune:
        argv += ["--init-from", str(_fp_best(seed_root))]
        needs.append(train_stage_name(seed_root.seed, Variant("fp")))
    return StageSpec(train_stage_name(seed_root.seed, variant), tuple(argv), (paths.best,), tuple(needs), paths.dir)


def _quantize_stage(ctx: _Context, seed_root: SeedRoot, variant: Variant) -> StageSpec:
    config, paths = ctx.config, seed_root.train_run(variant.name)
    flags = {
        "--weights": _fp_best(seed_root),
        "--quant-scheme": variant.scheme_spec,
        "--out": paths.best,
        "--data": ctx.run_root.dataset_yaml,
        "--bn-recalib-batches": config["ptq_bn_recalib_batches"],
        "--imgsz": config["imgsz"],
        "--batch": config["batch"],
        "--device": config["device"],
    }
    argv = _cli(ctx, "ptq.py", flags)
    needs = (PREPARE_STAGE, train_stage_name(seed_root.seed, Variant("fp")))
    return StageSpec(train_stage_name(seed_root.seed, variant), argv, (paths.best,), needs, paths.dir)


def _export_stage(ctx: _Context, seed_root: SeedRoot, variant: Variant, weights_format: str, needs: str) -> StageSpec:
    config = ctx.config
    out = seed_root.onnx_model(model_name(config), variant.name, weights_format)
    flags = {
        "--weights": seed_root.train_run(variant.name).best,
        "--out": out,
        "--imgsz": config["imgsz"],
        "--format": config["export_format"],
        "--opset": config["export_opset"],
    }
    extra = ["--validate"]
    if config["export_dynamic_batch"]:
        extra.append("--dynamic-batch")
    if weights_format == "float16":
        extra.append("--half")
    if weights_format == "int4":
        extra += ["--weights-format", "int4"]
    argv = _cli(ctx, "export_onnx.py", flags, *extra)
    return StageSpec(export_stage_name(seed_root.seed, variant, weights_format), argv, (out,), (needs,), out)


def _eval_stage(
    ctx: _Context, seed_root: SeedRoot, variant: Variant, weights_format: str, export: StageSpec
) -> StageSpec:
    config, root = ctx.config, ctx.run_root
    out_dir = seed_root.eval_dir(variant.name, weights_format)
    flags = {
        "--onnx": export.outputs[0],
        "--ann-file": root.val_annotations,
        "--images-dir": root.val_images_dir,
        "--out-dir": out_dir,
        "--imgsz": config["imgsz"],
        "--batch": config["eval_batch"],
        "--max-images": config["eval_max_images"],
    }
    extra = ["--fold-weights"] if config["eval_fold_weights"] else []
    argv = _cli(ctx, "eval_yolov10m_onnx_coco.py", flags, *extra, "--providers", *config["eval_providers"])
    outputs = (seed_root.eval_metrics(variant.name, weights_format),)
    name = eval_stage_name(seed_root.seed, variant, weights_format)
    return StageSpec(name, argv, outputs, (export.name, PREPARE_STAGE), out_dir)


# --------------------------------------------------------------------------------------------
# Running the plan
# --------------------------------------------------------------------------------------------
@dataclass
class PipelineOutcome:
    """What one call of :func:`run_pipeline` did."""

    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    redone: list[str] = field(default_factory=list)  # done stages rerun (missing/changed outputs, or asked)
    stopped_after: str | None = None


def stages_to_redo(run_root: RunRoot, stages: Sequence[StageSpec], redo: Sequence[str] = ()) -> dict[str, str]:
    """``{stage: reason}`` for done stages to rerun: asked for, outputs missing or changed, or downstream of one."""
    names = [stage.name for stage in stages]
    unknown = [name for name in redo if name not in names]
    if unknown:
        raise PipelineError(f"--redo {', '.join(unknown)}: not a stage of this run; its stages are: {' '.join(names)}")
    records = load_run_state(run_root)["stages"]
    reasons = {name: "asked with --redo" for name in redo}
    for stage in stages:
        record = records.get(stage.name) or {}
        if stage.name in reasons or record.get("status") != "done":
            continue
        problem = _output_problem(stage, record)
        if problem:
            reasons[stage.name] = problem
        elif any(need in reasons for need in stage.needs):
            reasons[stage.name] = f"downstream of {next(need for need in stage.needs if need in reasons)}"
    return reasons


def _output_problem(stage: StageSpec, record: Mapping[str, Any]) -> str | None:
    recorded = record.get("outputs_sha256") or {}
    for path in stage.outputs:
        if not path.exists():
            return f"output missing: {path}"
        want = recorded.get(str(path))
        if want and path.is_file() and sha256_file(path) != want:
            return f"output changed since the stage finished: {path}"
    return None


def run_pipeline(
    run_root: RunRoot,
    stages: Sequence[StageSpec],
    *,
    redo: Sequence[str] = (),
    stop_after: str | None = None,
    say: Callable[[str], None] = print,
) -> PipelineOutcome:
    """Run ``stages`` in order; raise :class:`PipelineError` naming the stage and its log when one fails."""
    if stop_after is not None and stop_after not in [stage.name for stage in stages]:
        raise PipelineError(f"--stop-after {stop_after}: not a stage of this run ({' '.join(s.name for s in stages)})")
    to_redo = stages_to_redo(run_root, stages, redo)
    outcome = PipelineOutcome()
    for stage in stages:
        upstream = next((need for need in stage.needs if need in outcome.ran), None)
        if stage.name not in to_redo and upstream and _is_done(run_root, stage.name):
            to_redo[stage.name] = f"its input stage {upstream} ran again"  # e.g. the summary after an added seed
        if stage.name in to_redo:
            say(f"redo: stage {stage.name} ({to_redo[stage.name]})")
            _set_aside(run_root, stage, say)
            outcome.redone.append(stage.name)
        result = run_stage(run_root, stage.name, list(stage.argv), outputs=list(stage.outputs))
        if not result.ok:
            raise PipelineError(_failure_message(run_root, stage, result))
        if result.status == "skipped":
            outcome.skipped.append(stage.name)
        else:
            outcome.ran.append(stage.name)
            _record_output_hashes(run_root, stage)
        if stage.name == stop_after:
            outcome.stopped_after = stage.name
            say(f"stopping after stage {stage.name} as asked (--stop-after); rerun without it to continue")
            break
    return outcome


def _is_done(run_root: RunRoot, stage: str) -> bool:
    return (load_run_state(run_root)["stages"].get(stage) or {}).get("status") == "done"


def _set_aside(run_root: RunRoot, stage: StageSpec, say: Callable[[str], None]) -> None:
    """Rename the stage's work (folder or file + its metadata) out of the way and forget its done record."""
    stamp = utc_now().replace(":", "").replace("+00:00", "Z").replace("+0000", "Z")
    targets = [stage.workdir] if stage.workdir is not None else []
    if stage.workdir is not None and stage.workdir.suffix == ".onnx":
        targets.append(stage.workdir.with_suffix(".json"))
    for target in targets:
        if target.exists():
            moved = target.with_name(f"{target.name}.stale-{stamp}")
            target.rename(moved)
            say(f"  set aside {target} -> {moved.name}")
    update_stage_record(run_root, stage.name, status="failed", error=f"set aside for a redo at {stamp}")


def _record_output_hashes(run_root: RunRoot, stage: StageSpec) -> None:
    """Remember each output file's sha256, so a later rerun notices a deleted or replaced artifact."""
    hashes = {str(path): sha256_file(path) for path in stage.outputs if path.is_file()}
    if hashes:
        update_stage_record(run_root, stage.name, outputs_sha256=hashes)


def _failure_message(run_root: RunRoot, stage: StageSpec, result: StageResult) -> str:
    detail = f" ({result.message})" if result.message else ""
    return (
        f"pipeline stopped: stage {stage.name} failed with exit code {result.exit_code}{detail}. "
        f"Log: {run_root.stage_log(stage.name)}\n"
        "Fix the cause and rerun the same command: finished stages are kept and the run continues at this stage."
    )
