"""The stage plan of a run: a resolved run config -> an ordered list of :class:`StageSpec`.

:func:`plan_stages` turns the config into stages, each one CLI call with the files it must produce
and the stages it depends on (their ``needs`` form a DAG):

    [check-env] [make-synthetic-data] prepare-data
    for each seed k, for each variant V (fp16 first):
        s<k>-train-V  (or s<k>-quantize-V for ptq-*: of fp16's checkpoint, ptq-*-ft: of fp16-ft's)
                                                    -> R/seed-k/V/weights/<last|best>.pt
        s<k>-export-V-F, s<k>-eval-V-F  for each weight format F of V
        (ortq-w8a8 / nncf-w8a8: s<k>-export-V-qdq from the fp16 float32 ONNX -> R/seed-k/onnx/<model>-V-qdq.onnx)
        s<k>-eval-V-F-openvino  when eval_runtimes has openvino: fp16's float32 file and every int8 QDQ file
    s<k>-latency  (every ONNX file of seed k, timed together)  -> R/seed-k/latency.json
    summary [publish]

The run's ``checkpoint_policy`` (:mod:`auto_quantize_model.runs.checkpoint_policy`) decides which checkpoint
every export reads, which ``fp16`` checkpoint PTQ quantizes (``ptq-*-ft``: which ``fp16-ft`` one) and fine-tunes
start from, and whether the trainings validate on the selection split (``best-on-selection``:
``dataset-selection.yaml``).

The runner (:mod:`auto_quantize_model.pipeline`) executes the plan; the summary reads it to know
what a complete run root holds.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auto_quantize_model.runs.checkpoint_policy import (
    BEST_ON_SELECTION,
    fp_checkpoint,
    ptq_input_checkpoint,
    scored_checkpoint,
)
from auto_quantize_model.runs.config import resolve_project_path
from auto_quantize_model.runs.run_root import RunRoot, SeedRoot, artifact_label
from auto_quantize_model.runs.variants import FP_VARIANT, Variant, eval_runtimes, parse_variant, parse_variants
from auto_quantize_model.utils.ultralytics_env import project_root

SCRIPTS_DIR = project_root() / "scripts" / "cv-models"
CHECK_ENV_SCRIPT = project_root() / "scripts" / "check_env.py"
SUMMARY_STAGE = "summary"
PUBLISH_STAGE = "publish"
CHECK_ENV_STAGE = "check-env"
PREPARE_STAGE = "prepare-data"
SYNTHETIC_STAGE = "make-synthetic-data"


@dataclass(frozen=True)
class StageSpec:
    """One tracked stage: the CLI call, the files it must produce, what it is built from, what a redo sets aside.

    Its inputs are the outputs of its ``needs`` and its ``input_files`` (recipe, scheme file); their sha256
    go into the stage's ``run.json`` record when it starts (:func:`~auto_quantize_model.runs.provenance.stage_inputs`).
    """

    name: str
    argv: tuple[str, ...]
    outputs: tuple[Path, ...]
    needs: tuple[str, ...] = ()
    workdir: Path | None = None  # set aside (renamed) before the stage is redone
    input_files: tuple[tuple[str, Path], ...] = ()  # (label, path): the training recipe, a scheme file
    fingerprint: Path | None = None  # a dataset fingerprint among the outputs: re-checked against the files
    # A training's last.pt: while it is there, a lost output (best.pt) is rebuilt by rerunning in place (--resume).
    resume_from: Path | None = None
    kind: str = ""  # "train" / "quantize" run on the profile's device; the executor sizes their resources


DEVICE_STAGE_KINDS = ("train", "quantize")


def uses_device(stage: StageSpec) -> bool:
    """A training or PTQ stage: it runs on the profile's ``device`` (one GPU under Ray when that is CUDA)."""
    return stage.kind in DEVICE_STAGE_KINDS


def model_name(config: Mapping[str, Any]) -> str:
    """The model name used in ONNX file names: the model cfg stem (``yolov10n.yaml`` -> ``yolov10n``)."""
    return Path(str(config["model"])).stem


def needs_gpu(config: Mapping[str, Any]) -> bool:
    """A profile that trains on a CUDA device or evaluates with a GPU provider gets the preflight."""
    return config["device"] not in ("cpu", "mps") or any(
        "CUDA" in p or "Tensorrt" in p for p in config["eval_providers"]
    )


def train_stage_name(seed: int, variant: Variant) -> str:
    action = "quantize" if variant.post_training else "train"
    return f"s{seed}-{action}-{variant.name}"


def export_stage_name(seed: int, variant: Variant, weights_format: str) -> str:
    return f"s{seed}-export-{variant.name}-{weights_format}"


def eval_stage_name(seed: int, variant: Variant, weights_format: str, runtime: str = "onnxruntime") -> str:
    return f"s{seed}-eval-{variant.name}-{weights_format}" + ("" if runtime == "onnxruntime" else f"-{runtime}")


def latency_stage_name(seed: int) -> str:
    return f"s{seed}-latency"


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
    models = []  # the training / quantization stage of each (seed, variant)
    for seed in config["seeds"]:
        for variant in variants:
            own = _variant_stages(ctx, seed, variant)
            models.append(own[0].name)
            stages += own
        stages.append(_latency_stage(ctx, run_root.seed(seed), variants))
    # The summary reads every evaluation, every seed's latency and every model's records (what ran).
    measured = (s.name for s in stages if "-eval-" in s.name or s.name.endswith("-latency"))
    read = (*models, *measured)
    summary = _cli(ctx, "write_yolov10m_scratch_train_summary.py", {"--run-root": run_root.root})
    stages.append(StageSpec(SUMMARY_STAGE, summary, (run_root.summary_md, run_root.summary_csv), read))
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
        "--selection-images": config["selection_images"],
        "--seed": config["data_seed"],
    }
    argv = _cli(ctx, "prepare_coco_dataset.py", flags, "--overwrite")
    outputs = (root.dataset_yaml, root.val_annotations)
    if config["selection_images"] is not None:
        outputs += (root.selection_dataset_yaml,)
    outputs += (root.dataset_fingerprint,)  # last: written last, covering the files above
    fingerprint = root.dataset_fingerprint
    stages.append(StageSpec(PREPARE_STAGE, argv, outputs, prepare_needs, root.dataset_dir, fingerprint=fingerprint))
    return stages


def _variant_stages(ctx: _Context, seed: int, variant: Variant) -> list[StageSpec]:
    seed_root = ctx.run_root.seed(seed)
    if variant.needs_fp_onnx:  # the baseline tools make the ONNX file itself
        export = _baseline_stage(ctx, seed_root, variant)
        return [export, *_eval_stages(ctx, seed_root, variant, "qdq", export)]
    make = _quantize_stage(ctx, seed_root, variant) if variant.post_training else _train_stage(ctx, seed_root, variant)
    stages = [make]
    for weights_format in variant.weight_formats:
        export = _export_stage(ctx, seed_root, variant, weights_format, make.name)
        stages += [export, *_eval_stages(ctx, seed_root, variant, weights_format, export)]
    return stages


def _eval_stages(
    ctx: _Context, seed_root: SeedRoot, variant: Variant, weights_format: str, export: StageSpec
) -> list[StageSpec]:
    """One evaluation per runtime that scores the file (:func:`~auto_quantize_model.runs.variants.eval_runtimes`)."""
    variants = parse_variants(list(ctx.config["variants"]))
    runtimes = eval_runtimes(variant, weights_format, ctx.config["eval_runtimes"], variants)
    return [_eval_stage(ctx, seed_root, variant, weights_format, export, runtime) for runtime in runtimes]


def _baseline_stage(ctx: _Context, seed_root: SeedRoot, variant: Variant) -> StageSpec:
    config, model = ctx.config, model_name(ctx.config)
    out = seed_root.onnx_model(model, variant.name, "qdq")
    fp_export = export_stage_name(seed_root.seed, Variant("fp"), "float32")
    flags = {
        "--tool": variant.kind,
        "--fp-onnx": seed_root.onnx_model(model, FP_VARIANT, "float32"),
        "--out": out,
        "--data": ctx.run_root.dataset_yaml,
        "--calib-images": config["ptq_calib_images"],
        "--imgsz": config["imgsz"],
    }
    argv = _cli(ctx, "quantize_onnx_baseline.py", flags, "--overwrite")  # only runs while not done: a failed try
    name = export_stage_name(seed_root.seed, variant, "qdq")
    return StageSpec(name, argv, (out,), (PREPARE_STAGE, fp_export), out)


def _train_data(ctx: _Context) -> Path:
    """The data YAML of every training: its ``val:`` split is where best.pt is chosen."""
    if ctx.config["checkpoint_policy"] == BEST_ON_SELECTION:
        return ctx.run_root.selection_dataset_yaml
    return ctx.run_root.dataset_yaml


def _train_stage(ctx: _Context, seed_root: SeedRoot, variant: Variant) -> StageSpec:
    config, paths = ctx.config, seed_root.train_run(variant.name)
    fine_tune = variant.fine_tunes
    policy = config["checkpoint_policy"]
    flags = {
        "--run-root": ctx.run_root.root,
        "--data": _train_data(ctx),
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
    # A fine-tune follows its own recipe: the profile-wide overrides (e.g. a warm-up) are for scratch trainings.
    for pair in config["ft_train_overrides" if fine_tune else "train_overrides"]:
        argv += ["--train-arg", pair]
    needs = [PREPARE_STAGE]
    if variant.quantized:
        argv += ["--quant-scheme", variant.scheme_spec]
    if fine_tune and variant.calibration_variant:  # starts from the calibrated activation ranges of ptq-<scheme>
        calibrated = seed_root.train_run(variant.calibration_variant)
        argv += ["--init-from", str(scored_checkpoint(calibrated, policy))]
        needs.append(f"s{seed_root.seed}-quantize-{variant.calibration_variant}")
    elif fine_tune:
        argv += ["--init-from", str(fp_checkpoint(seed_root, policy))]
        needs.append(train_stage_name(seed_root.seed, Variant("fp")))
    files = (("recipe", resolve_project_path(flags["--hyp"]).resolve()), *_scheme_file(variant))
    name, outputs = train_stage_name(seed_root.seed, variant), (scored_checkpoint(paths, policy),)
    return StageSpec(name, tuple(argv), outputs, tuple(needs), paths.dir, files, resume_from=paths.last, kind="train")


def _quantize_stage(ctx: _Context, seed_root: SeedRoot, variant: Variant) -> StageSpec:
    """PTQ (``ptq.py``) of the seed's checkpoint of ``variant.ptq_source`` (``fp16`` or ``fp16-ft``), once trained."""
    config, paths = ctx.config, seed_root.train_run(variant.name)
    out = scored_checkpoint(paths, config["checkpoint_policy"])  # named as the float checkpoint it quantizes
    flags = {
        "--weights": ptq_input_checkpoint(seed_root, variant, config["checkpoint_policy"]),
        "--quant-scheme": variant.scheme_spec,
        "--out": out,
        "--data": ctx.run_root.dataset_yaml,
        "--bn-recalib-batches": config["ptq_bn_recalib_batches"],
        "--calib-images": config["ptq_calib_images"] if variant.quantizes_activations else None,
        "--imgsz": config["imgsz"],
        "--batch": config["batch"],
        "--device": config["device"],
    }
    extra = ["--bias-correction"] if variant.quantizes_activations and config["ptq_bias_correction"] else []
    argv = _cli(ctx, "ptq.py", flags, *extra)
    needs = (PREPARE_STAGE, train_stage_name(seed_root.seed, parse_variant(variant.ptq_source)))
    name = train_stage_name(seed_root.seed, variant)
    return StageSpec(name, argv, (out,), needs, paths.dir, _scheme_file(variant), kind="quantize")


def _scheme_file(variant: Variant) -> tuple[tuple[str, Path], ...]:
    """The scheme JSON a quantized variant names (``qat-DIR/mixed_precision_scheme.json``), if it names a file."""
    spec = variant.scheme_spec or ""
    return (("scheme file", Path(spec).resolve()),) if spec.endswith(".json") or os.sep in spec else ()


def _export_stage(ctx: _Context, seed_root: SeedRoot, variant: Variant, weights_format: str, needs: str) -> StageSpec:
    config = ctx.config
    out = seed_root.onnx_model(model_name(config), variant.name, weights_format)
    flags = {
        "--weights": scored_checkpoint(seed_root.train_run(variant.name), config["checkpoint_policy"]),
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
    if weights_format in ("int4", "qdq"):
        extra += ["--weights-format", weights_format]
    argv = _cli(ctx, "export_onnx.py", flags, *extra)
    return StageSpec(export_stage_name(seed_root.seed, variant, weights_format), argv, (out,), (needs,), out)


def _eval_stage(
    ctx: _Context,
    seed_root: SeedRoot,
    variant: Variant,
    weights_format: str,
    export: StageSpec,
    runtime: str = "onnxruntime",
) -> StageSpec:
    config, root = ctx.config, ctx.run_root
    out_dir = seed_root.eval_dir(variant.name, weights_format, runtime)
    flags = {
        "--onnx": export.outputs[0],
        "--ann-file": root.val_annotations,
        "--images-dir": root.val_images_dir,
        "--out-dir": out_dir,
        "--imgsz": config["imgsz"],
        "--batch": config["eval_batch"],
        "--max-images": config["eval_max_images"],
    }
    extra = ["--fold-weights"] if config["eval_fold_weights"] and runtime == "onnxruntime" else []
    extra += ["--runtime", runtime] if runtime != "onnxruntime" else []
    argv = _cli(ctx, "eval_yolov10m_onnx_coco.py", flags, *extra, "--providers", *config["eval_providers"])
    outputs = (seed_root.eval_metrics(variant.name, weights_format, runtime),)
    name = eval_stage_name(seed_root.seed, variant, weights_format, runtime)
    return StageSpec(name, argv, outputs, (export.name, PREPARE_STAGE), out_dir)


def _latency_stage(ctx: _Context, seed_root: SeedRoot, variants: list[Variant]) -> StageSpec:
    """Every ONNX file of the seed timed in one process; planned after the seed's evaluations, so it runs alone."""
    config, seed = ctx.config, seed_root.seed
    flags = {
        "--out": seed_root.latency_json,
        "--rounds": config["latency_rounds"],
        "--threads": config["latency_threads"],
        "--imgsz": config["imgsz"],
    }
    files, needs = [], []
    for variant in variants:
        for weights_format in variant.weight_formats:
            onnx = seed_root.onnx_model(model_name(config), variant.name, weights_format)
            files.append(f"--onnx={artifact_label(variant.name, weights_format)}={onnx}")
            needs.append(export_stage_name(seed, variant, weights_format))
    extra = ["--fold-weights"] if config["eval_fold_weights"] else []
    argv = _cli(ctx, "time_onnx_latency.py", flags, *files, *extra, "--providers", *config["eval_providers"])
    return StageSpec(latency_stage_name(seed), argv, (seed_root.latency_json,), tuple(needs), seed_root.latency_json)
