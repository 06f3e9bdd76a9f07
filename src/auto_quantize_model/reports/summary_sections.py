"""The markdown sections of ``summary.md``: each ``section_*`` turns a :class:`RunView` into lines."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from auto_quantize_model.reports.summary_view import (
    MAP_COLUMN,
    Cell,
    RunView,
    Training,
    load_file,
    rel_path,
    shown_path,
)
from auto_quantize_model.runs import latency_keys as lk
from auto_quantize_model.runs import metrics_keys as mk
from auto_quantize_model.runs.checkpoint_policy import (
    BEST_ON_SELECTION,
    BEST_ON_VAL,
    CHECKPOINTS_KEY,
    LAST,
    SELECTED_ON_SCORED_NOTE,
)
from auto_quantize_model.runs.plan import SUMMARY_STAGE, latency_stage_name, plan_stages
from auto_quantize_model.runs.provenance import utc_now
from auto_quantize_model.runs.run_root import BEST_PT, LAST_PT, SEED_DIR_PREFIX, SET_ASIDE_DIR
from auto_quantize_model.runs.variants import FP_FT_VARIANT, FP_VARIANT, Baseline, Variant

BOOTSTRAP_RESAMPLES = 1000
ORT_NOTE = (
    "ONNX Runtime dequantizes the 4-bit/8-bit weights and runs each conv in float: the gain of QCDQ/INT4 "
    "is file size and memory bandwidth, not integer math."
)


def _fmt(value: Any, digits: int | None = None) -> str:
    """Markdown cell text; floats get ``digits`` decimals (metric tables) or ``%g`` (settings)."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.{digits}f}" if digits is not None else f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v, digits) for v in value) if value else "[]"
    return str(value).replace("|", "\\|")


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]], digits: int | None = None) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(cell, digits) for cell in row) + " |" for row in rows]
    return lines + [""]


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _mean_std(values: Sequence[float | None]) -> str:
    from auto_quantize_model.evaluation.stats import mean_and_std

    present = [v for v in values if v is not None]
    if not present:
        return "—"
    result = mean_and_std(present)
    spread = f" ± {result.std:.4f}" if result.std is not None else " (1 seed)"
    missing = f" ({len(present)} of {len(values)} seeds)" if len(present) < len(values) else ""
    return f"{result.mean:.4f}{spread}{missing}"


def _mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "—"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


BASELINE_LABELS = {  # what a baseline tool variant ran (runs/variants.BASELINE_TOOLS)
    "ortq": "ONNX Runtime quantize_static on the fp16 float32 ONNX (no training)",
    "nncf": "NNCF post-training quantization of the fp16 float32 ONNX (no training)",
}


def precision_label(training: Training | None, variant: Variant | None = None) -> str:
    """What actually trained, from ``train_metadata.json``: e.g. "FP32 (AMP off: cpu)" or "FP16/AMP (cuda:0)"."""
    if variant is not None and variant.kind in BASELINE_LABELS:
        return BASELINE_LABELS[variant.kind]
    variant = variant if variant is not None else (training.variant if training is not None else None)
    if variant is not None and variant.post_training:
        return f"post-training quantization of the {variant.ptq_source} checkpoint (no training)"
    precision = ((training.metadata if training else None) or {}).get("precision") or {}
    if precision.get("amp") is None:
        return "unknown (no effective AMP recorded)"
    if precision["amp"]:
        return f"FP16/AMP ({precision.get('device')})"
    return f"FP32 (AMP off: {precision.get('device')})"


def section_header(view: RunView, missing: Sequence[str]) -> list[str]:
    root, config = view.run_root.root, view.config or {}
    lines = [
        "# YOLOv10: FP baseline vs quantized variants (shared ONNX COCO evaluator)",
        "",
        f"- Run root: `{root.name}` (the folder holding this file)",
        f"- Profile: `{config.get('profile', 'unknown')}`; model `{config.get('model')}`; seeds {view.seeds}; "
        f"variants {[v.name for v in view.variants]}; resolved config: [run_config.yaml](run_config.yaml)",
        f"- Generated: {utc_now()} by `scripts/cv-models/write_yolov10m_scratch_train_summary.py`",
        "- Machine-readable: [summary.csv](summary.csv) (one row per variant, seed and weight format), "
        "[summary.json](summary.json)",
        "",
    ]
    status = (
        "Complete: every expected artifact is present."
        if not missing
        else f"Incomplete: {len(missing)} item(s) missing (see the end)."
    )
    return lines + [f"**Status:** {status}", ""]


def _float32_cells(view: RunView, variant: str) -> dict[int, Cell]:
    """The float32 cells of a baseline variant (``fp16`` or ``fp16-ft``), by seed."""
    return {c.seed: c for c in view.cells if c.variant.name == variant and c.weights_format == "float32"}


def _bootstrap(view: RunView, variant: Variant, baseline: str) -> Any:
    """Paired bootstrap of the variant's headline format against its baseline's float32 over every seed with both."""
    from auto_quantize_model.evaluation.stats import paired_bootstrap_map

    base_cells, pairs, image_ids = _float32_cells(view, baseline), [], None
    for seed in view.seeds:
        base, cell = base_cells.get(seed), view.cell(seed, variant.name, variant.headline_format)
        if not (base and cell and base.metrics and cell.metrics):
            continue
        ids = base.metrics.get(mk.IMAGE_IDS)
        if ids is None or ids != cell.metrics.get(mk.IMAGE_IDS):
            continue
        seed_root = view.run_root.seed(seed)
        pairs.append(
            (
                seed_root.eval_detections(baseline, "float32"),
                seed_root.eval_detections(variant.name, variant.headline_format),
            )
        )
        image_ids = ids
    if not pairs:
        return None
    return paired_bootstrap_map(
        view.run_root.val_annotations, image_ids, pairs, n_resamples=BOOTSTRAP_RESAMPLES, seed=0
    )


def policy_line(view: RunView) -> str:
    """What checkpoint every headline number comes from (the run's ``checkpoint_policy``)."""
    config = view.config or {}
    if view.policy == LAST:
        return (
            f"**Checkpoint policy: {LAST}.** Every number is from `{LAST_PT}` (the final epoch of each training; "
            f"PTQ quantizes the fp16 (or fp16-ft) `{LAST_PT}`, fine-tunes start from fp16's): no checkpoint was "
            "selected."
        )
    if view.policy == BEST_ON_SELECTION:
        return (
            f"**Checkpoint policy: {BEST_ON_SELECTION}.** Every number is from `{BEST_PT}`, the epoch of highest "
            f"in-training mAP50-95 on a selection split of {config.get('selection_images')} images carved out of "
            "the train images (ids in `dataset/provenance.json`); the scored val images chose nothing."
        )
    return (
        f"**Checkpoint policy: {BEST_ON_VAL}, {SELECTED_ON_SCORED_NOTE}.** Every number is from `{BEST_PT}`, the "
        "epoch of highest in-training mAP50-95 on the same val images that score it: the maximum over noisy "
        "epochs favours the noisiest training curve, so gaps of a point or two are not to be ranked."
    )


def _seed_cell(view: RunView, seed: int, variant: Variant, cell: Cell | None) -> str:
    """``0.3088 (epoch 30)``: the score and the epoch its checkpoint came from (flagged when chosen on val)."""
    if cell is None or cell.map50_95 is None:
        return "—"
    epoch = view.scored_epoch(seed, variant)
    notes = [f"epoch {epoch}" if epoch is not None else "epoch unknown"]
    if view.policy == BEST_ON_VAL:
        notes.append(SELECTED_ON_SCORED_NOTE)
    if cell.partial_note:
        notes.append(cell.partial_note.strip(" ()"))
    return f"{cell.map50_95:.4f} ({'; '.join(notes)})"


def _baseline_label(baseline: Baseline | None) -> str:
    if baseline is None:
        return "— (the baseline)"
    return baseline.name if baseline.matched else f"{baseline.name} (not matched: no {FP_FT_VARIANT} in this run)"


def unmatched_warnings(view: RunView) -> list[str]:
    """One warning line per fine-tune compared with ``fp16`` because ``fp16-ft`` did not run."""
    ft_epochs = (view.config or {}).get("ft_epochs")
    return [
        f"- **Warning: {variant.name} is not compared with its matched baseline.** {FP_FT_VARIANT} is not in this "
        f"run, so it is compared with {FP_VARIANT}, which never had its {ft_epochs} extra fine-tune epochs "
        f"(low lr, mosaic off): its ratio mixes that training with quantization. Add {FP_FT_VARIANT} to the variants."
        for variant in view.variants
        if (baseline := view.baseline(variant)) is not None and not baseline.matched
    ]


def section_headline(view: RunView) -> tuple[list[str], dict[str, Any]]:
    """The comparison table and verdicts; returns the lines and the bootstrap result per variant."""
    from auto_quantize_model.evaluation.stats import format_ci, verdict

    timed = bool(view.latency)  # no latency stage has run: no latency column at all
    header = [
        "variant (ONNX scored)",
        "baseline",
        *[f"seed {s}" for s in view.seeds],
        "mean ± std",
        "ratio of means to baseline",
        "diff 95% CI (paired bootstrap)",
        "ratio 95% CI",
        "ONNX size ratio",
        *(["latency median ratio"] if timed else []),
    ]
    rows, results, verdicts = [], {}, []
    flag = f" ({SELECTED_ON_SCORED_NOTE})" if view.policy == BEST_ON_VAL else ""
    for variant in view.variants:
        baseline = view.baseline(variant)
        cells = [view.cell(s, variant.name, variant.headline_format) for s in view.seeds]
        base = list(_float32_cells(view, baseline.name).values()) if baseline else []
        result = _bootstrap(view, variant, baseline.name) if baseline else None
        results[variant.name] = result
        mean = _mean(c.map50_95 for c in cells if c)
        rows.append(
            [
                f"{variant.name} ({variant.headline_format})",
                _baseline_label(baseline),
                *[_seed_cell(view, s, variant, c) for s, c in zip(view.seeds, cells)],
                _mean_std([c.map50_95 if c else None for c in cells]),
                _fmt(_ratio(mean, _mean(c.map50_95 for c in base)), 3) if baseline else "1 (baseline)",
                format_ci(result.diff_ci) if result else "—",
                format_ci(result.ratio_ci, 3) if result else "—",
                _fmt(_ratio(_mean(c.onnx_bytes for c in cells if c), _mean(c.onnx_bytes for c in base)), 3),
                *(
                    [_fmt(_ratio(_mean(c.latency_p50 for c in cells if c), _mean(c.latency_p50 for c in base)), 2)]
                    if timed
                    else []
                ),
            ]
        )
        if result:
            sentence = verdict(result, quant_label=variant.name, fp_label=baseline.name)
            verdicts.append(f"- **{variant.name} vs {baseline.name}:** {sentence}{flag}")
    lines = ["## Headline: ONNX-evaluator mAP50-95 per seed", "", policy_line(view), ""]
    lines += [
        "Every model is scored by the same ONNX evaluator (onnxruntime + COCOeval) on the same val images. "
        f"Each row is compared with its matched baseline's float32 ONNX: a quantized fine-tune with {FP_FT_VARIANT} "
        f"(the same extra epochs with the same recipe, not quantized), PTQ of {FP_FT_VARIANT} (ptq-<scheme>-ft) with "
        f"the {FP_FT_VARIANT} it quantized, everything else with {FP_VARIANT}. CIs "
        "resample val images with the same resample for both models "
        f"({BOOTSTRAP_RESAMPLES} resamples, from the saved detections); they do not include the spread between "
        "training seeds, which the ± std shows. Each seed's number names the training epoch of the scored "
        "checkpoint (PTQ: the fp16 or fp16-ft checkpoint it quantized). "
        + (
            "The latency ratio compares medians of each seed's latency stage (every file timed together; "
            "spread and load in the ONNX artifacts section)."
            if timed
            else "No latency column: no seed's latency stage has run."
        ),
        "",
    ]
    lines += _table(header, rows) + unmatched_warnings(view)
    lines += (verdicts or ["- No variant has been evaluated against its baseline yet."]) + [""]
    return lines, results


def section_precision(view: RunView) -> list[str]:
    """What actually ran, per variant: training precision and how each ONNX stores its weights."""
    rows = []
    for variant in view.variants:
        seed = view.seeds[0]
        training = view.training(seed, variant.name)
        formats = "; ".join(
            f"{fmt}: {_weights_description(view.cell(seed, variant.name, fmt))}" for fmt in variant.weight_formats
        )
        recipe = "—" if variant.kind in BASELINE_LABELS else recipe_label(training)
        rows.append([variant.name, precision_label(training, variant), recipe, formats])
    lines = ["## What ran", ""]
    lines += [
        "The folder and stage names follow the spec (`fp16`, `qat-w4a16`); this table says what really ran "
        f"(seed {view.seeds[0]}; from `train_metadata.json` and the export metadata).",
        "",
    ]
    return lines + _table(["variant", "training precision", "recipe as run", "ONNX weights"], rows)


def recipe_label(training: Training | None) -> str:
    """The recipe arguments the trainer ran with, e.g. "SGD lr0 0.001 lrf 0.1, warm-up 0 epochs, mosaic 0"."""
    recipe = ((training.metadata if training else None) or {}).get("recipe")
    if not recipe:
        return "—" if training is not None and training.variant.post_training else "not recorded"
    warmup = f"warm-up {_fmt(recipe.get('warmup_epochs'))} epochs"
    if recipe.get("warmup_iterations") is not None:
        warmup += f" ({recipe['warmup_iterations']} iterations)"
    return (
        f"{recipe.get('optimizer')} lr0 {_fmt(recipe.get('lr0'))} lrf {_fmt(recipe.get('lrf'))}, {warmup}, "
        f"mosaic {_fmt(recipe.get('mosaic'))}, nbs {_fmt(recipe.get('nbs'))}"
    )


def _weights_description(cell: Cell | None) -> str:
    """How the file stores its weights, from its export metadata (e.g. "float16 weights, float32 input/output")."""
    export = (cell.export if cell else None) or {}
    described = (export.get("onnx") or {}).get("precision") or export.get("weights_format")
    tool_settings = (export.get("quantization") or {}).get("settings")  # a baseline tool's file (onnx_ptq.py)
    if not described and tool_settings:
        described = "QDQ by the tool: " + ", ".join(f"{key} {value}" for key, value in tool_settings.items())
    return str(described) if described else "not exported"


def section_onnx(view: RunView) -> list[str]:
    """Every exported file: size, ratios to float32 and float16, mAP, the provider that scored it and, from the
    seed's latency stage, its latency with spread and the load it was measured under."""
    seed = view.seeds[0]
    fp32 = view.cell(seed, FP_VARIANT, "float32")
    fp16 = view.cell(seed, FP_VARIANT, "float16")
    base32, base16 = (fp32.onnx_bytes if fp32 else None), (fp16.onnx_bytes if fp16 else None)
    latency = view.latency.get(seed)
    rows = []
    cells = sorted(
        (c for c in [*view.cells, *view.runtime_cells] if c.seed == seed),
        key=lambda c: (view.variants.index(c.variant), c.variant.weight_formats.index(c.weights_format)),
    )
    for cell in cells:
        size = cell.onnx_bytes
        session = (cell.metrics or {}).get(mk.SESSION) or {}
        rows.append(
            [
                cell.variant.name,
                cell.weights_format,
                cell.runtime,
                f"`{rel_path(cell.onnx, view.run_root.root)}`",
                _fmt(size / 1e6, 2) if size else "—",
                _fmt(_ratio(size, base32), 3),
                _fmt(_ratio(size, base16), 3),
                _fmt(cell.map50_95, 4) + cell.partial_note,
                _fmt(cell.providers),
                *(_latency_cells(cell) if latency and cell.runtime == "onnxruntime" else []),
                *(["—"] * 4 if latency and cell.runtime != "onnxruntime" else []),
                session.get("fold_weights"),
            ]
        )
    latency_header = ["latency median ms", "IQR ms", "min-max ms", "latency provider"] if latency else []
    header = ["variant", "weights", "runtime", "ONNX file", "MB", "x float32", "x float16", "mAP50-95", "eval provider"]
    lines = [f"## ONNX artifacts (seed {seed})", ""] + _table([*header, *latency_header, "folded DQ"], rows)
    lines += [
        f'{ORT_NOTE} "eval provider": what ran the evaluation (`metrics.json` providers). '
        '"folded DQ" true means constant DequantizeLinear was folded at session load '
        "(`session.disable_quant_qdq=1`), what a deployment would do. INT4 and QCDQ hold the same codes, so "
        "their mAP must be equal. Runtime `openvino`: the same file scored by OpenVINO's CPU plugin, which runs a "
        "QDQ file's convolutions in int8 (the export metadata's `openvino.int8_mac_share` says how much); the latency "
        "stage times every file on ONNX Runtime only (`benchmarks/bench_int8_latency.py` times OpenVINO).",
        "",
        _latency_note(view, seed, latency),
        "",
    ]
    return lines


def _latency_cells(cell: Cell) -> list[str]:
    entry = cell.latency or {}
    if not entry:
        return ["not timed", "—", "—", "—"]
    return [
        _fmt(entry.get(lk.MEDIAN_MS), 2),
        f"{_fmt(entry.get(lk.P25_MS), 2)}-{_fmt(entry.get(lk.P75_MS), 2)}",
        f"{_fmt(entry.get(lk.MIN_MS), 2)}-{_fmt(entry.get(lk.MAX_MS), 2)}",
        _fmt(entry.get(lk.PROVIDERS)),
    ]


def _latency_note(view: RunView, seed: int, latency: Mapping[str, Any] | None) -> str:
    """How the latency columns were measured, or why there are none."""
    path = rel_path(view.run_root.seed(seed).latency_json, view.run_root.root)
    if not latency:
        return (
            f"No latency columns: `{path}` is missing (stage {latency_stage_name(seed)}). An evaluation's own timing "
            "is taken while other work shares the machine, one file after another, and is not shown."
        )
    load = latency.get(lk.LOAD_AVG_1MIN) or {}
    return (
        f"Latency: `session.run` of one batch from `{path}`: every file of seed {seed} timed in one process, "
        f"{latency.get(lk.ROUNDS)} interleaved rounds (the starting file rotating) after {latency.get(lk.WARMUP_RUNS)} "
        f"warm-up runs each, {latency.get(lk.THREADS)} intra-op thread(s) each, folded DQ "
        f"{_fmt(latency.get(lk.FOLD_WEIGHTS))}, on {latency.get(lk.CPUS)} CPUs; 1-minute load average "
        f"{_fmt(load.get(lk.LOAD_MIN), 2)}-{_fmt(load.get(lk.LOAD_MAX), 2)} (median "
        f"{_fmt(load.get(lk.LOAD_MEDIAN), 2)}) during the rounds. Compare files by their medians; files "
        "whose IQRs overlap are not told apart."
    )


def _validated_on(training: Training) -> str:
    """The split the training validated on (where best.pt was chosen): ``val`` unless recorded otherwise."""
    checkpoints = ((training.metadata or {}).get(CHECKPOINTS_KEY) or {}).get("best") or {}
    return checkpoints.get("chosen_on") or "val"


def _map_at(training: Training, epoch: int | None) -> float | None:
    row = next((r for r in training.results or [] if r.get("epoch") == epoch), None) if epoch else None
    return (row or {}).get(MAP_COLUMN)


def section_validator(view: RunView) -> list[str]:
    """Ultralytics' in-training validation, per seed and variant, kept apart from the ONNX numbers."""
    rows = []
    for training in view.trainings:
        if training.variant.post_training:
            continue  # no training: its checkpoint and epoch are those of the fp16 (fp16-ft) it quantized (headline)
        info, split = training.best or {}, _validated_on(training)
        cell = view.cell(training.seed, training.variant.name, training.variant.headline_format)
        onnx_map = cell.map50_95 if cell else None
        epoch = view.scored_epoch(training.seed, training.variant)
        same_images = _map_at(training, epoch) if split == "val" else None
        rows.append(
            [
                training.variant.name,
                training.seed,
                info.get("epochs"),
                split,
                info.get("best_epoch"),
                info.get("map"),
                info.get("last_map"),
                epoch,
                onnx_map,
                _ratio(onnx_map, same_images),
            ]
        )
    lines = ["## In-training validation (Ultralytics validator)", ""]
    lines += [
        "From `results.csv` of each training (PyTorch model, Ultralytics metrics), not from the ONNX evaluator, "
        "on the split the training validated on (`selection`: carved out of train, so not comparable with the ONNX "
        "column). Validation during training uses square letterboxed batches (`rect=False`), the inputs the "
        "fixed-size ONNX model sees; on `val` the remaining difference between the ONNX mAP and the in-training mAP "
        "of the same epoch is AP integration (Ultralytics' own AP vs COCOeval), the fp16-saved checkpoint and "
        "export error.",
        "",
    ]
    header = [
        "variant",
        "seed",
        "epochs",
        "validated on",
        "best epoch",
        "mAP50-95 (best)",
        "mAP50-95 (last)",
        "scored epoch",
        "ONNX mAP50-95",
        "ONNX / in-training (same epoch, val)",
    ]
    return lines + _table(header, rows, digits=4)


def section_detail(view: RunView) -> list[str]:
    """Per-class AP and the production operating point (P/R/F1 at conf_prod) of each headline ONNX."""
    seed = view.seeds[0]
    cells = [view.cell(seed, v.name, v.headline_format) for v in view.variants]
    cells = [c for c in cells if c and c.metrics]
    if not cells:
        return []
    classes = list(dict.fromkeys(name for c in cells for name in (c.metrics.get(mk.PER_CLASS) or {})))
    rows = [
        [name] + [((c.metrics.get(mk.PER_CLASS) or {}).get(name) or {}).get("AP50_95") for c in cells]
        for name in classes
    ]
    lines = [f"## Per-class AP50-95 and operating point (ONNX evaluator, seed {seed})", ""]
    lines += _table(["class", *[c.variant.name for c in cells]], rows, digits=4)
    point_rows = []
    for c in cells:
        point = c.metrics.get(mk.AT_CONF_PROD) or {}
        point_rows.append(
            [c.variant.name, point.get("conf"), point.get("precision"), point.get("recall"), point.get("f1")]
        )
    lines += ["At the production confidence threshold (`--conf-prod`):", ""]
    return lines + _table(["variant", "conf", "precision", "recall", "F1"], point_rows, digits=3)


def section_training(view: RunView, plot: Path | None) -> list[str]:
    root = view.run_root.root
    lines = ["## Training curves", ""]
    if plot is not None:
        lines += [f"![val mAP50-95 per epoch]({rel_path(plot, root)})", ""]
    lines += [
        f"TensorBoard, started in the run root: `tensorboard {tensorboard_logdir(view.seeds)}`. Training curves are in "
        "`seed-<k>/<variant>/tensorboard/` (the final validation of best.pt under `final_val/`), each ONNX file's "
        "mAP, size and latency in `seed-<k>/eval/<variant>-<format>/tensorboard/` (HPARAMS tab); work set aside by "
        f"a redo or a resume stays out of it in `{SET_ASIDE_DIR}/`.",
        "",
    ]
    for training in view.trainings:
        png = training.paths.loss_curves_png
        if png.is_file():
            lines += [
                f"- seed {training.seed} {training.variant.name}: [loss curves]({rel_path(png, root)}), "
                f"[training config]({rel_path(training.paths.config_yaml, root)})"
            ]
    return lines + [""]


def section_stages(view: RunView, state: Mapping[str, Any]) -> list[str]:
    """Stage table from ``run.json``; expected stages that never ran are listed as ``not run``."""
    stages = dict(state.get("stages", {}))
    try:
        expected = [s.name for s in plan_stages(view.run_root, view.config)] if view.config else []
    except (KeyError, ValueError):
        expected = []
    names = list(dict.fromkeys([*expected, *stages]))
    rows = []
    for name in names:
        rec = stages.get(name, {})
        status = rec.get("status", "not run")
        status = "running (writing this summary)" if name == SUMMARY_STAGE and status == "running" else status
        rows.append(
            [
                name,
                status,
                rec.get("attempts"),
                _duration(rec.get("duration_s")),
                rec.get("exit_code"),
                f"[log]({rec['log']})" if rec.get("log") else "—",
            ]
        )
    total = sum(r.get("duration_s") or 0 for r in stages.values() if isinstance(r.get("duration_s"), (int, float)))
    lines = ["## Pipeline stages (run.json)", ""]
    lines += _table(["stage", "status", "attempts", "duration", "exit code", "log"], rows)
    return lines + [f"Total recorded stage time (last attempts): {_duration(total)}", ""]


def section_dataset(view: RunView) -> list[str]:
    root = view.run_root
    provenance = load_file(root.dataset_provenance, view.problems, root.root)
    if not isinstance(provenance, Mapping):
        return []
    rows = []
    for name, info in (provenance.get("splits") or {}).items():
        counts = (info or {}).get("counts") or {}
        annotations = (info or {}).get("annotations")
        rows.append([name, counts.get("images"), counts.get("boxes_written"), annotations and Path(annotations).name])
    source = provenance.get("source_root", provenance.get("source"))
    lines = [
        "## Dataset",
        "",
        f"Source `{shown_path(source, root.root) if source else None}`; "
        f"details in `{rel_path(root.dataset_provenance, root.root)}`.",
        "",
    ]
    return lines + _table(["split", "images", "boxes", "annotations"], rows)


def tensorboard_logdir(seeds: Sequence[int]) -> str:
    """The ``--logdir`` (one seed) or ``--logdir_spec`` (several) of a run root's seed folders, relative to it."""
    folders = [f"{SEED_DIR_PREFIX}{seed}" for seed in seeds]
    if len(folders) == 1:
        return f"--logdir {folders[0]}"
    return "--logdir_spec " + ",".join(f"{folder}:{folder}" for folder in folders)


def section_missing(missing: Sequence[str]) -> list[str]:
    if not missing:
        return []
    return ["## Missing or not finished", ""] + [f"- {item}" for item in missing] + [""]
