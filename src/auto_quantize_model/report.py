"""The summary of a run root: ``summary.md`` (for people), ``summary.csv`` and ``summary.json`` (for tools).

``summary.md`` opens with the headline: per variant and seed, the ONNX-evaluator mAP50-95, mean ± std
over seeds, the ratio of means to the FP baseline, a paired bootstrap 95% CI of the difference
(same val-image resample for both models, from the saved detections), size and latency ratios, and
one verdict line per quantized variant that does not claim more than the interval supports.

Numbers of the shared ONNX evaluator (``metrics.json``) and of Ultralytics' in-training validator
(``results.csv``) are kept in separate tables: different pipelines, not comparable cell by cell.
Everything is read from the run root through :class:`~auto_quantize_model.runs.run_root.RunRoot` and the
producers' key constants (:mod:`metrics_keys`, :mod:`summary_schema`); a half-finished run root gives
a summary that names what is missing, and ``summary.json`` says ``complete: false`` then.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from auto_quantize_model.runs import metrics_keys as mk
from auto_quantize_model.runs import summary_schema as ss
from auto_quantize_model.runs.config import load_run_config
from auto_quantize_model.runs.plan import SUMMARY_STAGE, model_name, plan_stages
from auto_quantize_model.runs.provenance import utc_now
from auto_quantize_model.runs.run_root import RunRoot, SeedRoot, TrainRunPaths, export_metadata_path
from auto_quantize_model.runs.stage_runner import load_run_state
from auto_quantize_model.runs.variants import FP_VARIANT, Variant, VariantError, parse_variants
from auto_quantize_model.ultralytics_ext import loss_curves
from auto_quantize_model.utils.io import atomic_output, read_json, write_json_atomic, write_text_atomic

MAP_COLUMN = "metrics/mAP50-95(B)"
MAP50_COLUMN = "metrics/mAP50(B)"
BOOTSTRAP_RESAMPLES = 1000
ORT_NOTE = (
    "ONNX Runtime dequantizes the 4-bit/8-bit weights and runs each conv in float: the gain of QCDQ/INT4 "
    "is file size and memory bandwidth, not integer math."
)


@dataclass(frozen=True)
class SummaryResult:
    """Where the summary went and what it found missing (``complete`` iff nothing is)."""

    path: Path
    missing: list[str]
    csv_path: Path
    json_path: Path

    @property
    def complete(self) -> bool:
        return not self.missing


@dataclass
class Cell:
    """One evaluated ONNX file: (seed, variant, weight format)."""

    seed: int
    variant: Variant
    weights_format: str
    onnx: Path
    metrics: dict[str, Any] | None = None
    export: dict[str, Any] | None = None

    @property
    def map50_95(self) -> float | None:
        return _number((self.metrics or {}).get(mk.MAP50_95))

    @property
    def onnx_bytes(self) -> int | None:
        return self.onnx.stat().st_size if self.onnx.is_file() else None

    @property
    def latency_p50(self) -> float | None:
        latency = (self.metrics or {}).get(mk.LATENCY_MS) or {}
        return _number((latency.get(mk.LATENCY_PER_IMAGE) or {}).get(mk.LATENCY_STAT_P50))


@dataclass
class Training:
    """One training (or PTQ) folder of one seed and variant."""

    seed: int
    variant: Variant
    paths: TrainRunPaths
    results: list[dict[str, Any]] | None = None
    metadata: dict[str, Any] | None = None

    @property
    def best(self) -> dict[str, Any] | None:
        return best_epoch(self.results)


@dataclass
class RunView:
    """Everything the summary shows, loaded once."""

    run_root: RunRoot
    config: dict[str, Any] | None
    variants: list[Variant]
    seeds: list[int]
    model: str | None
    cells: list[Cell] = field(default_factory=list)
    trainings: list[Training] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def cell(self, seed: int, variant: str, weights_format: str) -> Cell | None:
        return next(
            (c for c in self.cells if (c.seed, c.variant.name, c.weights_format) == (seed, variant, weights_format)),
            None,
        )

    def training(self, seed: int, variant: str) -> Training | None:
        return next((t for t in self.trainings if (t.seed, t.variant.name) == (seed, variant)), None)


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------
def _number(value: Any) -> float | None:
    return (
        float(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        else None
    )


def _load(path: Path, problems: list[str], root: Path) -> Any:
    """YAML/JSON file contents, or ``None`` if absent; an unreadable file is noted, not fatal."""
    if not path.is_file():
        return None
    try:
        if path.suffix == ".json":
            return read_json(path)
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (ValueError, yaml.YAMLError, OSError) as error:
        problems.append(f"unreadable {_rel(path, root)}: {str(error).splitlines()[0]}")
        return None


def read_results_csv(path: Path) -> list[dict[str, Any]]:
    """Rows of an Ultralytics ``results.csv`` (stripped headers, floats; empty cells are ``None``)."""
    frame = loss_curves.read_results_csv(path)
    numeric = frame.select_dtypes("number").columns
    frame[numeric] = frame[numeric].astype(float)  # epochs too: one numeric type for every cell
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def best_epoch(results: Sequence[Mapping[str, Any]] | None) -> dict[str, Any] | None:
    """Epoch with the highest val mAP50-95 in ``results.csv``, with its mAP50 and the last epoch's mAP."""
    rows = [r for r in results or [] if _number(r.get(MAP_COLUMN)) is not None]
    if not rows:
        return None
    best = max(rows, key=lambda r: r[MAP_COLUMN])
    epoch = best.get("epoch")
    return {
        "epochs": len(results),
        "best_epoch": int(epoch) if isinstance(epoch, float) else epoch,
        "map": best[MAP_COLUMN],
        "map50": best.get(MAP50_COLUMN),
        "last_map": rows[-1][MAP_COLUMN],
    }


def _rel(path: Path, root: Path) -> str:
    """Path relative to the run root, with forward slashes (markdown links)."""
    return Path(os.path.relpath(path, root)).as_posix()


def load_view(run_root: RunRoot) -> RunView:
    """Read the run config, every training and every evaluation the config expects."""
    problems: list[str] = []
    config = None
    try:
        config = load_run_config(run_root)
    except ValueError as error:
        problems.append(str(error))
    variants, seeds = _expected(run_root, config, problems)
    model = model_name(config) if config else None
    view = RunView(run_root, config, variants, seeds, model, problems=problems)
    for seed in seeds:
        seed_root = run_root.seed(seed)
        for variant in variants:
            view.trainings.append(_load_training(seed_root, variant, problems, run_root.root))
            for weights_format in variant.weight_formats:
                view.cells.append(_load_cell(seed_root, variant, weights_format, model, problems, run_root.root))
    return view


def _expected(
    run_root: RunRoot, config: Mapping[str, Any] | None, problems: list[str]
) -> tuple[list[Variant], list[int]]:
    if not config:
        problems.append(f"run config missing: {_rel(run_root.run_config, run_root.root)}")
        return [Variant("fp")], run_root.seeds_present() or [0]
    try:
        return parse_variants(list(config["variants"])), list(config["seeds"])
    except (KeyError, VariantError) as error:
        problems.append(f"run config {_rel(run_root.run_config, run_root.root)} has no valid variants/seeds: {error}")
        return [Variant("fp")], run_root.seeds_present() or [0]


def _load_training(seed_root: SeedRoot, variant: Variant, problems: list[str], root: Path) -> Training:
    paths = seed_root.train_run(variant.name)
    training = Training(seed_root.seed, variant, paths)
    training.metadata = _load(paths.metadata_json, problems, root)
    if paths.results_csv.is_file():
        try:
            training.results = read_results_csv(paths.results_csv)
        except (OSError, ValueError) as error:  # pandas' parser errors are ValueErrors
            problems.append(f"unreadable {_rel(paths.results_csv, root)}: {error}")
    return training


def _load_cell(
    seed_root: SeedRoot, variant: Variant, fmt: str, model: str | None, problems: list[str], root: Path
) -> Cell:
    onnx = seed_root.onnx_model(model or "model", variant.name, fmt)
    cell = Cell(seed_root.seed, variant, fmt, onnx)
    cell.metrics = _load(seed_root.eval_metrics(variant.name, fmt), problems, root)
    cell.export = _load(export_metadata_path(onnx), problems, root)
    return cell


# --------------------------------------------------------------------------------------------
# What is missing
# --------------------------------------------------------------------------------------------
def missing_items(view: RunView, state: Mapping[str, Any]) -> list[str]:
    """Everything the summary could not show, most upstream first; empty means complete."""
    root = view.run_root.root
    missing = list(view.problems)
    for name, record in state.get("stages", {}).items():
        if record.get("status") == "failed":
            missing.append(f"stage {name} failed (exit code {record.get('exit_code')}): see {record.get('log')}")
        elif record.get("status") == "running" and name != SUMMARY_STAGE:  # the summary stage is us
            missing.append(f"stage {name} is running or was interrupted: see {record.get('log')}")
    if not view.run_root.dataset_provenance.is_file():
        missing.append(f"dataset provenance missing: {_rel(view.run_root.dataset_provenance, root)}")
    for training in view.trainings:
        if not training.paths.best.is_file():
            missing.append(f"seed {training.seed} {training.variant.name}: no {_rel(training.paths.best, root)}")
    for cell in view.cells:
        if not cell.onnx.is_file():
            missing.append(
                f"seed {cell.seed} {cell.variant.name} {cell.weights_format}: no ONNX {_rel(cell.onnx, root)}"
            )
        if cell.metrics is None:
            missing.append(f"seed {cell.seed} {cell.variant.name} {cell.weights_format}: not evaluated")
    return missing


# --------------------------------------------------------------------------------------------
# Formatting helpers
# --------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------
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
                *[_fmt(m, 4) for m in maps],
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
                f"`{_rel(cell.onnx, view.run_root.root)}`",
                _fmt(size / 1e6, 2) if size else "—",
                _fmt(_ratio(size, base32), 3),
                _fmt(_ratio(size, base16), 3),
                _fmt(cell.map50_95, 4),
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
        lines += [f"![val mAP50-95 per epoch]({_rel(plot, root)})", ""]
    lines += [
        f"TensorBoard: `tensorboard --logdir {root}` (every seed and variant; `seed-<k>/<variant>/tensorboard/`).",
        "",
    ]
    for training in view.trainings:
        png = training.paths.loss_curves_png
        if png.is_file():
            lines += [
                f"- seed {training.seed} {training.variant.name}: [loss curves]({_rel(png, root)}), "
                f"[training config]({_rel(training.paths.config_yaml, root)})"
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
    provenance = _load(root.dataset_provenance, view.problems, root.root)
    if not isinstance(provenance, Mapping):
        return []
    splits = provenance.get("splits") or {}
    rows = [[name, (info or {}).get("images"), (info or {}).get("annotations")] for name, info in splits.items()]
    lines = [
        "## Dataset",
        "",
        f"Source `{provenance.get('source_root', provenance.get('source'))}`; "
        f"details in `{_rel(root.dataset_provenance, root.root)}`.",
        "",
    ]
    return lines + _table(["split", "images", "annotations"], rows)


def section_missing(missing: Sequence[str]) -> list[str]:
    if not missing:
        return []
    return ["## Missing or not finished", ""] + [f"- {item}" for item in missing] + [""]


# --------------------------------------------------------------------------------------------
# Plot, CSV, JSON and the entry point
# --------------------------------------------------------------------------------------------
def write_map_comparison_plot(view: RunView, out_png: Path) -> Path | None:
    """Val mAP50-95 per epoch of every training (one colour per variant, one line style per seed)."""
    curves = []
    for training in view.trainings:
        points = [(r.get("epoch"), r.get(MAP_COLUMN)) for r in training.results or []]
        points = [(x, y) for x, y in points if _number(x) is not None and _number(y) is not None]
        if points:
            curves.append((training, points))
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {v.name: f"C{i}" for i, v in enumerate(view.variants)}
    styles = ["-", "--", ":", "-."]
    fig, axis = plt.subplots(figsize=(7, 4), constrained_layout=True)
    for training, points in curves:
        style = styles[view.seeds.index(training.seed) % len(styles)] if training.seed in view.seeds else "-"
        axis.plot(
            [x for x, _ in points],
            [y for _, y in points],
            style,
            color=colours.get(training.variant.name),
            label=f"{training.variant.name} s{training.seed}",
        )
    axis.set(xlabel="epoch", ylabel="val mAP50-95 (Ultralytics validator)", title="In-training val mAP50-95")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    with atomic_output(out_png) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return Path(out_png)


def summary_rows(view: RunView) -> list[dict[str, Any]]:
    """One ``summary.csv`` row per (variant, seed, weights_format), columns from :mod:`summary_schema`."""
    sha = None
    rows = []
    for cell in view.cells:
        training = view.training(cell.seed, cell.variant.name)
        best = training.best if training else None
        annotations = (cell.metrics or {}).get(mk.ANNOTATIONS) or {}
        sha = annotations.get(mk.SHA256) or sha
        rows.append(
            {
                ss.VARIANT: cell.variant.name,
                ss.SEED: cell.seed,
                ss.WEIGHTS_FORMAT: cell.weights_format,
                ss.MAP50_95: cell.map50_95,
                ss.MAP50: _number((cell.metrics or {}).get(mk.MAP50)),
                ss.VAL_MAP50_95_BEST: (best or {}).get("map"),
                ss.ONNX: _rel(cell.onnx, view.run_root.root),
                ss.ONNX_BYTES: cell.onnx_bytes,
                ss.LATENCY_MS_P50: cell.latency_p50,
                ss.VAL_ANN_SHA256: annotations.get(mk.SHA256),
            }
        )
    return rows


def _csv_text(rows: Sequence[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=ss.SUMMARY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({key: ("" if value is None else value) for key, value in row.items()} for row in rows)
    return buffer.getvalue()


def write_summary(run_root: RunRoot) -> SummaryResult:
    """Write ``summary.md``, ``summary.csv``, ``summary.json`` and the mAP plot (each atomically)."""
    view = load_view(run_root)
    state = load_run_state(run_root)
    plot = write_map_comparison_plot(view, run_root.map_comparison_png)
    headline, _ = section_headline(view)
    sections = (
        section_precision(view)
        + section_onnx(view)
        + section_validator(view)
        + section_detail(view)
        + section_training(view, plot)
        + section_dataset(view)
        + section_stages(view, state)
    )
    missing = missing_items(view, state)
    text = "\n".join(section_header(view, missing) + headline + sections + section_missing(missing)).rstrip() + "\n"
    write_text_atomic(run_root.summary_csv, _csv_text(summary_rows(view)))
    config = view.config or {}
    write_json_atomic(
        run_root.summary_json,
        {
            "complete": not missing,
            "missing": missing,
            "generated_at": utc_now(),
            "profile": config.get("profile"),
            "model": config.get("model"),
            "variants": [v.name for v in view.variants],
            "seeds": view.seeds,
        },
    )
    write_text_atomic(run_root.summary_md, text)  # last: its presence means the other two are current
    return SummaryResult(run_root.summary_md, missing, run_root.summary_csv, run_root.summary_json)
