"""``summary.md`` of a run root: FP16/AMP baseline vs W4A16 QAT.

Everything is read defensively from the run root's artifacts; a half-finished run root gives a
summary that names what is missing instead of failing. Numbers from the Ultralytics validator
(in-training val, ``results.csv``) and from the shared ONNX COCO evaluator (``metrics.json``)
are kept in separate tables, because the two use different pipelines (PyTorch + Ultralytics
metrics vs onnxruntime + pycocotools) and are not comparable cell by cell.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from auto_quantize_model import loss_curves
from auto_quantize_model.export import metadata_path_for
from auto_quantize_model.io_utils import atomic_output, read_json, write_text_atomic
from auto_quantize_model.pipeline import SUMMARY_STAGE, pipeline_stages
from auto_quantize_model.provenance import utc_now
from auto_quantize_model.run_root import FP16_STAGE, RunRoot, TrainRunPaths, qat_stage_name

MAP_COLUMN = "metrics/mAP50-95(B)"
MAP50_COLUMN = "metrics/mAP50(B)"

# (row label, keys tried in metrics.json in order). The first key is the evaluator's name
# (auto_quantize_model.evaluate.COCO_STAT_KEYS); the others are common spellings.
ONNX_METRICS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("mAP50-95", ("mAP50_95", "mAP50-95", "map", "AP")),
    ("mAP50", ("mAP50", "map50", "AP50")),
    ("mAP75", ("mAP75", "map75", "AP75")),
    ("APs (mAP_small)", ("mAP_small", "APs", "map_small")),
    ("APm (mAP_medium)", ("mAP_medium", "APm", "map_medium")),
    ("APl (mAP_large)", ("mAP_large", "APl", "map_large")),
    ("AR100", ("AR100", "AR@100", "ar100", "AR_100")),
)
# Flattened metrics.json keys shown as evaluation settings (whichever exist).
EVAL_SETTING_KEYS = (
    "onnx.path", "onnx.sha256", "annotations.path", "images_dir", "num_images", "num_images_skipped",
    "imgsz", "batch", "output_format", "providers_requested", "images_per_s",
)  # fmt: skip
HYP_KEYS = (
    "model", "data", "epochs", "batch", "imgsz", "optimizer", "lr0", "lrf", "cos_lr", "momentum",
    "weight_decay", "warmup_epochs", "warmup_momentum", "warmup_bias_lr", "seed", "deterministic",
    "amp", "device", "workers", "fraction", "close_mosaic", "mosaic",
)  # fmt: skip


@dataclass(frozen=True)
class SummaryResult:
    """Where the summary went, what it found missing, and the plot it wrote (if any)."""

    path: Path
    missing: list[str]
    plot: Path | None


@dataclass
class TrainSide:
    """One side of the comparison (FP16 baseline or QAT): its artifacts, loaded defensively."""

    label: str
    stage: str
    paths: TrainRunPaths
    args: dict[str, Any] | None = None
    quant: dict[str, Any] | None = None
    results: list[dict[str, Any]] | None = None
    metrics: dict[str, Any] | None = None
    onnx: Path | None = None
    problems: list[str] = field(default_factory=list)  # unreadable files, named in the summary


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------
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


def _rel(path: Path, root: Path) -> str:
    """Path relative to the run root, with forward slashes (markdown links)."""
    return Path(os.path.relpath(path, root)).as_posix()


def detect_qat_stage(run_root: RunRoot, config: Mapping[str, Any] | None) -> str | None:
    """``qat-<scheme>`` from the run config, else from a ``qat-*`` training folder present."""
    if config and config.get("quant_scheme"):
        return qat_stage_name(str(config["quant_scheme"]))
    if not run_root.root.is_dir():
        return None
    # A QAT training folder holds its quant_scheme.json; eval folders (``qat-<scheme>-coco``) and
    # set-aside attempts (``qat-<scheme>.incomplete-*``) are not stages.
    found = sorted(
        p.name for p in run_root.root.glob("qat-*")
        if run_root.train_run(p.name).quant_scheme_json.is_file() and ".incomplete-" not in p.name
    )
    if found:
        return found[0]
    evals = sorted(p.name[: -len("-coco")] for p in run_root.root.glob("qat-*-coco") if p.is_dir())
    return evals[0] if evals else None


def detect_model_name(run_root: RunRoot, config: Mapping[str, Any] | None, sides: Sequence[TrainSide]) -> str | None:
    """Model cfg stem (``yolov10n``): run config, else args.yaml ``model``, else the ONNX listing."""
    if config and config.get("model"):
        return Path(str(config["model"])).stem
    for side in sides:
        if side.args and side.args.get("model"):
            return Path(str(side.args["model"])).stem
    fp16_onnx = sorted(run_root.onnx_dir.glob(f"*-{FP16_STAGE}.onnx")) if run_root.onnx_dir.is_dir() else []
    return fp16_onnx[0].name[: -len(f"-{FP16_STAGE}.onnx")] if fp16_onnx else None


def _side_label(stage: str) -> str:
    return "FP16/AMP baseline" if stage == FP16_STAGE else f"{stage[len('qat-'):].upper()} QAT ({stage})"


def load_side(run_root: RunRoot, stage: str) -> TrainSide:
    """Load one training stage's args, quant scheme, results and ONNX metrics (``onnx`` is set later)."""
    side = TrainSide(_side_label(stage), stage, run_root.train_run(stage))
    root = run_root.root
    side.args = _load(side.paths.args_yaml, side.problems, root)
    side.quant = _load(side.paths.quant_scheme_json, side.problems, root)
    side.metrics = _load(run_root.eval_dir(stage) / "metrics.json", side.problems, root)
    if side.paths.results_csv.is_file():
        try:
            side.results = read_results_csv(side.paths.results_csv)
        except (OSError, ValueError) as error:  # pandas' parser errors are ValueErrors
            side.problems.append(f"unreadable {_rel(side.paths.results_csv, root)}: {error}")
    return side


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


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "—"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def _flatten(data: Any, prefix: str = "", limit: int = 12) -> dict[str, Any]:
    """Nested dicts -> ``{"a.b": value}``; lists or dicts longer than ``limit`` show only their length."""
    if not isinstance(data, Mapping):
        return {prefix or "value": data}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, (Mapping, list)) and len(value) > limit:
            flat[name] = f"[{len(value)} entries]"  # e.g. 80 per-class counts: not for a summary table
        elif isinstance(value, Mapping):
            flat.update(_flatten(value, name, limit))
        else:
            flat[name] = value
    return flat


def metric_value(metrics: Mapping[str, Any] | None, keys: Sequence[str]) -> float | None:
    """First of ``keys`` found at the top level of ``metrics`` or under ``metrics``/``coco``."""
    if not metrics:
        return None
    scopes = [metrics] + [metrics[k] for k in ("metrics", "coco") if isinstance(metrics.get(k), Mapping)]
    for scope in scopes:
        for key in keys:
            if isinstance(scope.get(key), (int, float)) and not isinstance(scope.get(key), bool):
                return float(scope[key])
    return None


def _latency(metrics: Mapping[str, Any] | None, stat: str) -> float | None:
    """Per-image latency ``stat`` in ms: ``latency_ms.per_image.<stat>``, else ``latency_ms.<stat>``."""
    flat = _flatten(metrics or {})
    for key in (f"latency_ms.per_image.{stat}", f"latency_ms.{stat}"):
        value = flat.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


# --------------------------------------------------------------------------------------------
# What is missing
# --------------------------------------------------------------------------------------------
def _short(side: TrainSide) -> str:
    return "FP16" if side.stage == FP16_STAGE else f"QAT ({side.stage})"


def missing_training(side: TrainSide, root: Path) -> list[str]:
    """Training artifacts of one side that are absent, phrased for a reader of the summary."""
    paths, who = side.paths, _short(side)
    if not paths.dir.is_dir():
        return [f"{who} training not started: no {_rel(paths.dir, root)}/"]
    missing = []
    if not paths.best.is_file():
        missing.append(f"{who} training not finished: no best.pt ({_rel(paths.best, root)})")
    elif not paths.is_finished():
        missing.append(f"{who} training not finished: {_rel(paths.metadata_json, root)} does not record status finished")
    for path, what in ((paths.args_yaml, "args.yaml"), (paths.results_csv, "results.csv"), (paths.loss_curves_png, "loss curves PNG")):
        if not path.is_file():
            missing.append(f"{who} {what} missing: {_rel(path, root)}")
    if not paths.tensorboard_dir.is_dir():
        missing.append(f"{who} TensorBoard logs missing: {_rel(paths.tensorboard_dir, root)}/")
    return missing


def missing_onnx(side: TrainSide, run_root: RunRoot) -> list[str]:
    """ONNX export and ONNX evaluation of one side, if absent."""
    who, root, missing = _short(side), run_root.root, []
    if side.onnx is None:
        missing.append(f"{who} ONNX export unknown: model name not found (no run config, args.yaml or ONNX file)")
    elif not side.onnx.is_file():
        missing.append(f"{who} ONNX export missing: {_rel(side.onnx, root)}")
    if side.metrics is None:
        missing.append(f"{who} ONNX evaluation missing: {_rel(run_root.eval_dir(side.stage) / 'metrics.json', root)}")
    return missing


def missing_items(run_root: RunRoot, state: Mapping[str, Any] | None, config: Any, sides: Sequence[TrainSide]) -> list[str]:
    """Everything the summary could not show, most upstream first."""
    root = run_root.root
    missing = [] if config else [f"run config missing: {_rel(run_root.run_config, root)}"]
    missing += [] if state else [f"stage record missing: {_rel(run_root.run_json, root)} (stages not run through run_stage.py)"]
    for name, record in (state or {}).get("stages", {}).items():
        if record.get("status") == "failed":
            missing.append(f"stage {name} failed (exit code {record.get('exit_code')}): see {record.get('log')}")
        elif record.get("status") == "running" and name != SUMMARY_STAGE:  # the summary stage is us
            missing.append(f"stage {name} is running or was interrupted: see {record.get('log')}")
    if not run_root.dataset_provenance.is_file():
        missing.append(f"dataset provenance missing: {_rel(run_root.dataset_provenance, root)} (prepare-data not finished?)")
    for side in sides:
        missing += missing_training(side, root)
    for side in sides:
        missing += missing_onnx(side, run_root)
    for side in sides:
        missing += side.problems
    return missing


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------
def section_header(run_root: RunRoot, config: Mapping[str, Any] | None) -> list[str]:
    profile = (config or {}).get("profile", "unknown")
    return [
        "# YOLOv10 from scratch: FP16/AMP baseline vs Brevitas W4A16 QAT",
        "",
        f"- Run root: `{run_root.root}`",
        f"- Profile: `{profile}`; resolved config: [{_rel(run_root.run_config, run_root.root)}]"
        f"({_rel(run_root.run_config, run_root.root)})",
        f"- Generated: {utc_now()} by `scripts/cv-models/write_yolov10m_scratch_train_summary.py`",
        "",
    ]


def section_missing(missing: Sequence[str]) -> list[str]:
    if not missing:
        return ["## Status", "", "Complete: every expected artifact is present.", ""]
    return ["## Status: incomplete", "", "Missing or not finished:", ""] + [f"- {item}" for item in missing] + [""]


def section_stages(state: Mapping[str, Any] | None, expected: Sequence[str]) -> list[str]:
    """Stage table from ``run.json``; expected stages that never ran are listed as ``not run``."""
    lines = ["## Pipeline stages (run.json)", ""]
    stages = dict((state or {}).get("stages", {}))
    if not stages and not expected:
        return lines + ["No run.json: no stage was run through `run_stage.py`.", ""]
    names = list(stages) + [name for name in expected if name not in stages]
    rows = []
    for name in names:
        rec = stages.get(name, {})
        status = rec.get("status", "not run")
        status = "running (writing this summary)" if name == SUMMARY_STAGE and status == "running" else status
        log = f"[{rec['log']}]({rec['log']})" if rec.get("log") else "—"
        rows.append([name, status, rec.get("attempts"), rec.get("started_at"),
                     rec.get("ended_at"), _duration(rec.get("duration_s")), rec.get("exit_code"), log])  # fmt: skip
    total = sum(r.get("duration_s") or 0 for r in stages.values() if isinstance(r.get("duration_s"), (int, float)))
    header = ["stage", "status", "attempts", "started (UTC)", "ended (UTC)", "duration", "exit code", "log"]
    return lines + _table(header, rows) + [f"Total recorded stage time (last attempts): {_duration(total)}", ""]


def section_config(config: Mapping[str, Any] | None) -> list[str]:
    if not config:
        return []
    return ["## Run config", ""] + _table(["key", "value"], config.items())


def section_dataset(run_root: RunRoot, problems: list[str]) -> list[str]:
    """Source, paths and per-split counts from ``dataset/provenance.json``, whatever keys it has."""
    lines = ["## Dataset", ""]
    provenance = _load(run_root.dataset_provenance, problems, run_root.root)
    if not isinstance(provenance, Mapping):
        return lines + [f"No dataset provenance ({_rel(run_root.dataset_provenance, run_root.root)} missing).", ""]
    about = {k: v for k, v in provenance.items() if k != "splits"}
    lines += [f"From `{_rel(run_root.dataset_provenance, run_root.root)}`:", ""]
    lines += [f"- {key}: `{_fmt(value)}`" for key, value in _flatten(about).items()] + [""]
    splits = provenance.get("splits")
    if not isinstance(splits, Mapping) or not splits:
        return lines + ["No per-split paths or counts recorded (`splits` absent).", ""]
    flat = {name: _flatten(info) for name, info in splits.items()}
    keys = list(dict.fromkeys(k for info in flat.values() for k in info))
    lines += ["Splits (train: training; val: Ultralytics in-training val and the ONNX evaluation):", ""]
    lines += _table(["field", *flat], [[key] + [info.get(key) for info in flat.values()] for key in keys])
    lines += [f"Dataset YAML: `{_rel(run_root.dataset_yaml, run_root.root)}`; "
              f"val annotations: `{_rel(run_root.val_annotations, run_root.root)}`", ""]  # fmt: skip
    return lines


def _lr_schedule(args: Mapping[str, Any] | None) -> str | None:
    if not args or args.get("lr0") is None or args.get("lrf") is None:
        return None
    kind = "cosine" if args.get("cos_lr") else "linear"
    final = float(args["lr0"]) * float(args["lrf"])
    return f"{kind} lr0 {args['lr0']} -> {final:g} (lr0*lrf) over {args.get('epochs')} epochs, warmup {args.get('warmup_epochs')} epochs"


def section_hyperparameters(sides: Sequence[TrainSide]) -> list[str]:
    """Training args per side (Ultralytics ``args.yaml``) plus the quant scheme."""
    lines = ["## Training hyperparameters (Ultralytics args.yaml)", ""]
    if not any(side.args for side in sides):
        return lines + ["No args.yaml found for any training stage.", ""]
    rows = [[key] + [(side.args or {}).get(key) for side in sides] for key in HYP_KEYS]
    rows.append(["lr schedule"] + [_lr_schedule(side.args) for side in sides])
    rows.append(["quant scheme"] + [_scheme_name(side) for side in sides])
    lines += _table(["parameter", *[side.label for side in sides]], rows)
    configs = [f"[{_rel(side.paths.config_yaml, side.paths.dir.parent)}]({_rel(side.paths.config_yaml, side.paths.dir.parent)})"
               for side in sides if side.paths.config_yaml.is_file()]  # fmt: skip
    if configs:
        lines += [f"Full resolved training configs: {', '.join(configs)}.", ""]
    for side in sides:
        if side.quant:
            details = ", ".join(f"{k}={_fmt(v)}" for k, v in _flatten(side.quant).items())
            lines += [f"Quant scheme of {side.stage} (`{_rel(side.paths.quant_scheme_json, side.paths.dir.parent)}`): {details}", ""]
    return lines


def _scheme_name(side: TrainSide) -> str:
    if side.stage == FP16_STAGE:
        return "none (FP16/AMP)"
    if isinstance(side.quant, Mapping):
        return str(side.quant.get("name") or side.quant.get("scheme") or side.stage[len("qat-") :])
    return f"{side.stage[len('qat-'):]} (no quant_scheme.json)"


def best_epoch(results: Sequence[Mapping[str, Any]] | None) -> dict[str, Any] | None:
    """Epoch with the highest val mAP50-95 in ``results.csv``, with its mAP50 and the last epoch's mAP."""
    rows = [r for r in results or [] if isinstance(r.get(MAP_COLUMN), float) and math.isfinite(r[MAP_COLUMN])]
    if not rows:
        return None
    best = max(rows, key=lambda r: r[MAP_COLUMN])
    return {"epochs": len(results), "best_epoch": best.get("epoch"), "map": best[MAP_COLUMN],
            "map50": best.get(MAP50_COLUMN), "last_map": rows[-1][MAP_COLUMN]}  # fmt: skip


def section_training(run_root: RunRoot, sides: Sequence[TrainSide], plot: Path | None) -> list[str]:
    """Ultralytics-validator numbers, TensorBoard pointers, loss curves and the mAP plot."""
    root = run_root.root
    lines = ["## Training curves and in-training validation (Ultralytics validator)", ""]
    lines += ["Numbers in this section come from Ultralytics' own validator during training "
              "(PyTorch model, `results.csv`), not from the ONNX evaluator.", ""]  # fmt: skip
    rows = []
    for side in sides:
        info = best_epoch(side.results) or {}
        epoch = info.get("best_epoch")
        rows.append([side.label, info.get("epochs"), int(epoch) if isinstance(epoch, float) else epoch,
                     info.get("map"), info.get("map50"), info.get("last_map")])  # fmt: skip
    header = ["run", "epochs in results.csv", "best epoch (by val mAP50-95)", "val mAP50-95 (best)", "val mAP50 (same epoch)", "val mAP50-95 (last epoch)"]
    lines += _table(header, rows, digits=4)
    if plot is not None:
        lines += [f"![val mAP50-95 per epoch]({_rel(plot, root)})", ""]
    lines += ["TensorBoard logs:", ""]
    lines += [f"- {side.label}: `{_rel(side.paths.tensorboard_dir, root)}/`"
              + ("" if side.paths.tensorboard_dir.is_dir() else " (missing)") for side in sides]  # fmt: skip
    lines += ["", f"View both: `tensorboard --logdir {root}`", ""]
    for side in sides:
        png = side.paths.loss_curves_png
        lines += [f"### Loss curves: {side.label}", ""]
        lines += [f"![{side.label} loss curves]({_rel(png, root)})" if png.is_file() else f"Missing: `{_rel(png, root)}`", ""]
    return lines


def section_onnx_eval(sides: Sequence[TrainSide]) -> list[str]:
    """COCO metrics of both ONNX models from the shared evaluator, with delta and ratio."""
    lines = ["## ONNX COCO evaluation (shared ONNX evaluator)", ""]
    lines += ["Numbers in this section come from `scripts/cv-models/eval_yolov10m_onnx_coco.py` "
              "(onnxruntime + pycocotools on the exported models), not from the Ultralytics validator.", ""]  # fmt: skip
    if len(sides) < 2 or not all(side.metrics for side in sides):
        lines += ["Incomplete: metrics.json is missing for at least one model (see Status).", ""]
    base, qat = sides[0], sides[-1]
    rows = []
    for label, keys in ONNX_METRICS:
        a, b = metric_value(base.metrics, keys), metric_value(qat.metrics, keys)
        both = a is not None and b is not None and len(sides) > 1
        delta = b - a if both else None
        ratio = b / a if both and a > 0 and b >= 0 else None
        rows.append([label, a, b if len(sides) > 1 else None, delta, ratio])
    lines += _table(["metric", base.label, qat.label if len(sides) > 1 else "QAT", "delta (QAT - FP16)", "ratio (QAT / FP16)"], rows, digits=4)
    lines += ["Empty or -1: the val set has no ground truth in that range (COCOeval); no ratio is computed then.", ""]
    return lines + _eval_settings(sides)


def _eval_settings(sides: Sequence[TrainSide]) -> list[str]:
    flat = [_flatten(side.metrics or {}) for side in sides]
    rows = [[key] + [_short_sha(key, f.get(key)) for f in flat] for key in EVAL_SETTING_KEYS]
    rows = [row for row in rows if any(cell is not None for cell in row[1:])]
    if not rows:
        return []
    return ["Evaluation settings (from metrics.json):", ""] + _table(["setting", *[s.label for s in sides]], rows)


def _short_sha(key: str, value: Any) -> Any:
    return value[:12] if key.endswith("sha256") and isinstance(value, str) else value


def _two_decimals(value: float | None) -> str | None:
    return None if value is None else f"{value:.2f}"


def section_onnx_models(run_root: RunRoot, sides: Sequence[TrainSide]) -> list[str]:
    """ONNX file sizes and evaluator latency per model."""
    rows, sizes = [], []
    for side in sides:
        exists = side.onnx is not None and side.onnx.is_file()
        sizes.append(side.onnx.stat().st_size / 1e6 if exists else None)
        name = f"`{_rel(side.onnx, run_root.root)}`" + ("" if exists else " (missing)") if side.onnx else None
        latency = [_two_decimals(_latency(side.metrics, stat)) for stat in ("mean", "p95")]
        weights = _onnx_weights(side.onnx) if exists else None
        rows.append([side.label, name, weights, _two_decimals(sizes[-1]), *latency, (side.metrics or {}).get("providers")])
    header = ["model", "ONNX file", "weights", "size (MB)", "latency mean (ms/image)", "latency p95 (ms/image)",
              "providers"]
    lines = ["## ONNX models: size and latency (ONNX evaluator)", ""] + _table(header, rows)
    if len(sizes) == 2 and all(sizes):
        lines += [f"Baseline / QAT ONNX size ratio: {sizes[0] / sizes[1]:.2f}x (MB = 10^6 bytes).", ""]
    return lines


def _onnx_weights(onnx_path: Path) -> str | None:
    """How the weights are stored, from the export metadata JSON beside the ONNX file."""
    metadata_path = metadata_path_for(onnx_path)
    if not metadata_path.is_file():
        return None
    metadata = read_json(metadata_path)
    if metadata.get("kind") != "qat-qcdq":
        return f"{metadata.get('onnx', {}).get('precision', '?')}"
    by_bits = metadata.get("graph", {}).get("weight_qdq_by_bit_width", {})
    layers = ", ".join(f"{count} convs int{bits}" for bits, count in sorted(by_bits.items()))
    return f"QCDQ ({layers}; int8 containers), float activations"


# --------------------------------------------------------------------------------------------
# Plot and entry point
# --------------------------------------------------------------------------------------------
def write_map_comparison_plot(sides: Sequence[TrainSide], out_png: Path) -> Path | None:
    """Val mAP50-95 per epoch of every side with a ``results.csv``; ``None`` when there is nothing to plot."""
    curves = []
    for side in sides:
        points = [(r.get("epoch"), r.get(MAP_COLUMN)) for r in side.results or []]
        points = [(x, y) for x, y in points if isinstance(x, float) and isinstance(y, float)]
        if points:
            curves.append((side.label, points))
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(7, 4), constrained_layout=True)
    for label, points in curves:
        axis.plot([x for x, _ in points], [y for _, y in points], "-o", markersize=3, label=label)
    axis.set(xlabel="epoch", ylabel="val mAP50-95 (Ultralytics validator)", title="In-training val mAP50-95")
    axis.grid(alpha=0.3)
    axis.legend()
    with atomic_output(out_png) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return Path(out_png)


def build_summary(run_root: RunRoot) -> tuple[str, list[str], Path | None]:
    """Render ``summary.md`` text; returns (text, missing items, plot path or None). Writes the plot."""
    problems: list[str] = []
    config = _load(run_root.run_config, problems, run_root.root)
    config = config if isinstance(config, Mapping) else None
    state = _load(run_root.run_json, problems, run_root.root)
    state = state if isinstance(state, Mapping) and isinstance(state.get("stages"), Mapping) else None
    qat_stage = detect_qat_stage(run_root, config)
    stages = [FP16_STAGE] + ([qat_stage] if qat_stage else [])
    sides = [load_side(run_root, stage) for stage in stages]
    model = detect_model_name(run_root, config, sides)
    for side in sides:
        side.onnx = run_root.onnx_model(model, side.stage) if model else None
    missing = missing_items(run_root, state, config, sides) + problems
    if qat_stage is None:
        missing.insert(0, "QAT stage unknown: no run config and no qat-* folder (QAT never started?)")
    plot = write_map_comparison_plot(sides, run_root.map_comparison_png)
    try:
        expected = pipeline_stages(config) if config else []
    except (KeyError, TypeError):
        expected = []
    dataset = section_dataset(run_root, missing)
    body = (section_header(run_root, config) + section_missing(missing) + section_stages(state, expected)
            + dataset + section_hyperparameters(sides) + section_training(run_root, sides, plot)
            + section_onnx_eval(sides) + section_onnx_models(run_root, sides) + section_config(config))  # fmt: skip
    return "\n".join(body).rstrip() + "\n", missing, plot


def write_summary(run_root: RunRoot) -> SummaryResult:
    """Write ``RunRoot.summary_md`` (atomically) and the mAP comparison plot; return what was missing."""
    text, missing, plot = build_summary(run_root)
    write_text_atomic(run_root.summary_md, text)
    return SummaryResult(run_root.summary_md, missing, plot)
