"""The markdown sections of ``summary.md``: each ``section_*`` turns a :class:`RunView` into lines."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from auto_quantize_model.reports.summary_view import Cell, RunView, Training, load_file, rel_path
from auto_quantize_model.runs import metrics_keys as mk
from auto_quantize_model.runs.plan import SUMMARY_STAGE, plan_stages
from auto_quantize_model.runs.provenance import utc_now
from auto_quantize_model.runs.variants import FP_VARIANT, Variant

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


def precision_label(training: Training | None) -> str:
    """What actually trained, from ``train_metadata.json``: e.g. "FP32 (AMP off: cpu)" or "FP16/AMP (cuda:0)"."""
    if training is not None and training.variant.kind == "ptq":
        return "post-training quantization of the fp16 model (no training)"
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
        f"- Run root: `{root}`",
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


def _fp_cells(view: RunView) -> dict[int, Cell]:
    return {c.seed: c for c in view.cells if c.variant.name == FP_VARIANT and c.weights_format == "float32"}


def _bootstrap(view: RunView, variant: Variant) -> Any:
    """Paired bootstrap of the variant's headline format against FP float32 over every seed with both."""
    from auto_quantize_model.evaluation.stats import paired_bootstrap_map

    fp_cells, pairs, image_ids = _fp_cells(view), [], None
    for seed in view.seeds:
        fp, quant = fp_cells.get(seed), view.cell(seed, variant.name, variant.headline_format)
        if not (fp and quant and fp.metrics and quant.metrics):
            continue
        ids = fp.metrics.get(mk.IMAGE_IDS)
        if ids is None or ids != quant.metrics.get(mk.IMAGE_IDS):
            continue
        seed_root = view.run_root.seed(seed)
        pairs.append(
            (
                seed_root.eval_detections(FP_VARIANT, "float32"),
                seed_root.eval_detections(variant.name, variant.headline_format),
            )
        )
        image_ids = ids
    if not pairs:
        return None
    return paired_bootstrap_map(
        view.run_root.val_annotations, image_ids, pairs, n_resamples=BOOTSTRAP_RESAMPLES, seed=0
    )


def section_headline(view: RunView) -> tuple[list[str], dict[str, Any]]:
    """The comparison table and verdicts; returns the lines and the bootstrap result per variant."""
    from auto_quantize_model.evaluation.stats import format_ci, verdict

    fp_cells = _fp_cells(view)
    fp_map = _mean(c.map50_95 for c in fp_cells.values())
    fp_bytes = _mean(c.onnx_bytes for c in fp_cells.values())
    fp_latency = _mean(c.latency_p50 for c in fp_cells.values())
    header = [
        "variant (ONNX scored)",
        *[f"seed {s}" for s in view.seeds],
        "mean ± std",
        "ratio of means to FP",
        "diff 95% CI (paired bootstrap)",
        "ratio 95% CI",
        "ONNX size ratio",
        "latency p50 ratio",
    ]
    rows, results, verdicts = [], {}, []
    for variant in view.variants:
        cells = [view.cell(s, variant.name, variant.headline_format) for s in view.seeds]
        maps = [c.map50_95 if c else None for c in cells]
        result = _bootstrap(view, variant) if variant.quantized else None
        results[variant.name] = result
        mean = _mean(maps)
        rows.append(
            [
                f"{variant.name} ({variant.headline_format})",
                *[_fmt(m, 4) + (c.partial_note if c else "") for m, c in zip(maps, cells, strict=True)],
                _mean_std(maps),
                _fmt(_ratio(mean, fp_map), 3) if variant.quantized else "1 (baseline)",
                format_ci(result.diff_ci) if result else "—",
                format_ci(result.ratio_ci, 3) if result else "—",
                _fmt(_ratio(_mean(c.onnx_bytes for c in cells if c), fp_bytes), 3),
                _fmt(_ratio(_mean(c.latency_p50 for c in cells if c), fp_latency), 2),
            ]
        )
        if result:
            verdicts.append(f"- **{variant.name}:** {verdict(result, quant_label=variant.name, fp_label='FP')}")
    lines = ["## Headline: ONNX-evaluator mAP50-95 per seed", ""]
    lines += [
        "Every model is scored by the same ONNX evaluator (onnxruntime + COCOeval) on the same val images. "
        "Ratios are against the FP baseline's float32 ONNX; CIs resample val images with the same "
        f"resample for both models ({BOOTSTRAP_RESAMPLES} resamples, from the saved detections); they do not "
        "include the spread between training seeds, which the ± std shows.",
        "",
    ]
    lines += (
        _table(header, rows)
        + (verdicts or ["- No quantized variant has been evaluated against the baseline yet."])
        + [""]
    )
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
        rows.append([variant.name, precision_label(training), formats])
    lines = ["## What ran", ""]
    lines += [
        "The folder and stage names follow the spec (`fp16`, `qat-w4a16`); this table says what really ran "
        f"(seed {view.seeds[0]}; from `train_metadata.json` and the export metadata).",
        "",
    ]
    return lines + _table(["variant", "training precision", "ONNX weights"], rows)


def _weights_description(cell: Cell | None) -> str:
    """How the file stores its weights, from its export metadata (e.g. "float16 weights, float32 input/output")."""
    export = (cell.export if cell else None) or {}
    described = (export.get("onnx") or {}).get("precision") or export.get("weights_format")
    return str(described) if described else "not exported"


def section_onnx(view: RunView) -> list[str]:
    """Every exported file: size, ratios to float32 and float16, mAP, latency."""
    seed = view.seeds[0]
    fp32 = view.cell(seed, FP_VARIANT, "float32")
    fp16 = view.cell(seed, FP_VARIANT, "float16")
    base32, base16 = (fp32.onnx_bytes if fp32 else None), (fp16.onnx_bytes if fp16 else None)
    rows = []
    for cell in (c for c in view.cells if c.seed == seed):
        size = cell.onnx_bytes
        session = (cell.metrics or {}).get(mk.SESSION) or {}
        rows.append(
            [
                cell.variant.name,
                cell.weights_format,
                f"`{rel_path(cell.onnx, view.run_root.root)}`",
                _fmt(size / 1e6, 2) if size else "—",
                _fmt(_ratio(size, base32), 3),
                _fmt(_ratio(size, base16), 3),
                _fmt(cell.map50_95, 4) + cell.partial_note,
                _fmt(cell.latency_p50, 2),
                session.get("fold_weights"),
            ]
        )
    header = [
        "variant",
        "weights",
        "ONNX file",
        "MB",
        "x float32",
        "x float16",
        "mAP50-95",
        "latency p50 (ms/img)",
        "folded DQ",
    ]
    lines = [f"## ONNX artifacts (seed {seed})", ""] + _table(header, rows)
    lines += [
        f"{ORT_NOTE} Latency: the evaluator's per-image `session.run` median on the providers it records; "
        '"folded DQ" true means constant DequantizeLinear was folded at session load '
        "(`session.disable_quant_qdq=1`), what a deployment would do. INT4 and QCDQ hold the same codes, so "
        "their mAP must be equal.",
        "",
    ]
    return lines


def section_validator(view: RunView) -> list[str]:
    """Ultralytics' in-training validation, per seed and variant, kept apart from the ONNX numbers."""
    rows = []
    for training in view.trainings:
        info = training.best or {}
        cell = view.cell(training.seed, training.variant.name, training.variant.headline_format)
        onnx_map = cell.map50_95 if cell else None
        rows.append(
            [
                training.variant.name,
                training.seed,
                info.get("epochs"),
                info.get("best_epoch"),
                info.get("map"),
                info.get("last_map"),
                onnx_map,
                _ratio(onnx_map, info.get("map")),
            ]
        )
    lines = ["## In-training validation (Ultralytics validator)", ""]
    lines += [
        "From `results.csv` of each training (PyTorch model, Ultralytics metrics), not from the ONNX evaluator. "
        "Validation during training uses square letterboxed batches (`rect=False`), the inputs the fixed-size "
        "ONNX model sees; the remaining difference to the ONNX column is AP integration (Ultralytics' own AP vs "
        "COCOeval), the fp16-saved checkpoint and export error.",
        "",
    ]
    header = [
        "variant",
        "seed",
        "epochs",
        "best epoch",
        "val mAP50-95 (best)",
        "val mAP50-95 (last)",
        "ONNX mAP50-95",
        "ONNX / val",
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
        f"TensorBoard: `tensorboard --logdir {root}` (every seed and variant; `seed-<k>/<variant>/tensorboard/`).",
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
    splits = provenance.get("splits") or {}
    rows = [[name, (info or {}).get("images"), (info or {}).get("annotations")] for name, info in splits.items()]
    lines = [
        "## Dataset",
        "",
        f"Source `{provenance.get('source_root', provenance.get('source'))}`; "
        f"details in `{rel_path(root.dataset_provenance, root.root)}`.",
        "",
    ]
    return lines + _table(["split", "images", "annotations"], rows)


def section_missing(missing: Sequence[str]) -> list[str]:
    if not missing:
        return []
    return ["## Missing or not finished", ""] + [f"- {item}" for item in missing] + [""]
