"""A run root loaded once for its summary (:class:`RunView`), and what the summary cannot show.

Reads the run config, every training (``results.csv``, ``train_metadata.json``), every ONNX cell the config
expects (``metrics.json``, export metadata) and each seed's ``latency.json`` through
:class:`~auto_quantize_model.runs.run_root.RunRoot`; an unreadable file is noted in ``problems``, never fatal.
A cell's latency comes from its seed's latency stage only (every file timed together), never from its evaluation.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auto_quantize_model.evaluation.runtime import DEFAULT_RUNTIME
from auto_quantize_model.evaluation.stats import read_eval_metrics
from auto_quantize_model.onnx_io.verify import read_export_metadata
from auto_quantize_model.runs import latency_keys as lk
from auto_quantize_model.runs import metrics_keys as mk
from auto_quantize_model.runs import summary_schema as ss
from auto_quantize_model.runs.checkpoint_policy import BEST_ON_VAL, scored_checkpoint, scored_epoch
from auto_quantize_model.runs.config import load_run_config
from auto_quantize_model.runs.plan import SUMMARY_STAGE, latency_stage_name, model_name
from auto_quantize_model.runs.run_root import RunRoot, SeedRoot, TrainRunPaths, artifact_label, export_metadata_path
from auto_quantize_model.runs.variants import Baseline, Variant, VariantError, eval_runtimes, parse_variants
from auto_quantize_model.ultralytics_ext import loss_curves
from auto_quantize_model.utils.io import read_json

MAP_COLUMN = "metrics/mAP50-95(B)"
MAP50_COLUMN = "metrics/mAP50(B)"


@dataclass
class Cell:
    """One evaluated ONNX file: (seed, variant, weight format)."""

    seed: int
    variant: Variant
    weights_format: str
    onnx: Path
    metrics: dict[str, Any] | None = None
    export: dict[str, Any] | None = None
    runtime: str = DEFAULT_RUNTIME
    latency: dict[str, Any] | None = None  # this file's entry in the seed's latency.json

    @property
    def map50_95(self) -> float | None:
        return finite_number((self.metrics or {}).get(mk.MAP50_95))

    @property
    def partial_note(self) -> str:
        """`` (16 of 32 val images)`` when the evaluation skipped unreadable images, else ``""``."""
        metrics = self.metrics or {}
        if not metrics.get(mk.NUM_IMAGES_SKIPPED):
            return ""
        return f" ({metrics.get(mk.NUM_IMAGES)} of {metrics.get(mk.NUM_IMAGES_REQUESTED)} val images)"

    @property
    def onnx_bytes(self) -> int | None:
        return self.onnx.stat().st_size if self.onnx.is_file() else None

    @property
    def latency_p50(self) -> float | None:
        """Median ``session.run`` ms of the latency stage (batch 1: per image)."""
        return finite_number((self.latency or {}).get(lk.MEDIAN_MS))

    @property
    def providers(self) -> list[str] | None:
        """The providers that ran its evaluation (``metrics.json``)."""
        return (self.metrics or {}).get(mk.PROVIDERS)


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
    cells: list[Cell] = field(default_factory=list)  # ONNX Runtime's evaluations: every comparison uses these
    runtime_cells: list[Cell] = field(default_factory=list)  # the same files scored by another runtime (OpenVINO)
    trainings: list[Training] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    latency: dict[int, dict[str, Any]] = field(default_factory=dict)  # seed -> its latency.json

    def cell(self, seed: int, variant: str, weights_format: str) -> Cell | None:
        return next(
            (c for c in self.cells if (c.seed, c.variant.name, c.weights_format) == (seed, variant, weights_format)),
            None,
        )

    def training(self, seed: int, variant: str) -> Training | None:
        return next((t for t in self.trainings if (t.seed, t.variant.name) == (seed, variant)), None)

    @property
    def policy(self) -> str:
        """The run's checkpoint policy; a run root from before the key existed scored best.pt chosen on val."""
        return (self.config or {}).get("checkpoint_policy") or BEST_ON_VAL

    def baseline(self, variant: Variant) -> Baseline | None:
        """The row ``variant`` is compared with (``fp16-ft`` for a quantized fine-tune when it ran, and for PTQ of
        ``fp16-ft``): :meth:`Variant.baseline`, which the headline, its paired bootstrap and summary.csv all use."""
        return variant.baseline(v.name for v in self.variants)

    def scored_epoch(self, seed: int, variant: Variant) -> int | None:
        """Training epoch of the checkpoint that was exported and scored (PTQ: the fp16 / fp16-ft one it quantized)."""
        return scored_epoch(self.run_root.seed(seed), variant, self.policy)


def finite_number(value: Any) -> float | None:
    return (
        float(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        else None
    )


def load_file(path: Path, problems: list[str], root: Path, read: Callable[[], Any] | None = None) -> Any:
    """``read()`` (the file kind's own reader; default: the JSON at ``path``, ``None`` if absent); an unreadable
    file is noted in ``problems``, not fatal."""
    try:
        return read() if read else (read_json(path) if path.is_file() else None)
    except (ValueError, OSError) as error:
        problems.append(f"unreadable {rel_path(path, root)}: {str(error).splitlines()[0]}")
        return None


def read_results_csv(path: Path) -> list[dict[str, Any]]:
    """Rows of an Ultralytics ``results.csv`` (stripped headers, floats; empty cells are ``None``)."""
    frame = loss_curves.read_results_csv(path)
    numeric = frame.select_dtypes("number").columns
    frame[numeric] = frame[numeric].astype(float)  # epochs too: one numeric type for every cell
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def best_epoch(results: Sequence[Mapping[str, Any]] | None) -> dict[str, Any] | None:
    """Epoch with the highest val mAP50-95 in ``results.csv``, with its mAP50 and the last epoch's mAP."""
    rows = [r for r in results or [] if finite_number(r.get(MAP_COLUMN)) is not None]
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


def shown_path(path: str | Path, root: Path) -> str:
    """``path`` relative to the run root when it lies inside it (no machine's absolute run-root path in a
    report), else as given."""
    inside = Path(path) == root or root in Path(path).parents
    return rel_path(Path(path), root) if inside else str(path)


def rel_path(path: Path, root: Path) -> str:
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
        latency = load_file(seed_root.latency_json, problems, run_root.root, seed_root.read_latency)
        if latency is not None:
            view.latency[seed] = latency
        for variant in variants:
            if not variant.needs_fp_onnx:  # the ortq/nncf baselines have no checkpoint of their own
                view.trainings.append(_load_training(seed_root, variant, problems, run_root.root))
            for weights_format in variant.weight_formats:
                cell = _load_cell(seed_root, variant, weights_format, model, problems, run_root.root)
                cell.latency = ((latency or {}).get(lk.FILES) or {}).get(artifact_label(variant.name, weights_format))
                view.cells.append(cell)
                configured = (config or {}).get("eval_runtimes") or ()
                for runtime in eval_runtimes(variant, weights_format, configured, variants)[1:]:
                    cell = _load_cell(seed_root, variant, weights_format, model, problems, run_root.root, runtime)
                    view.runtime_cells.append(cell)
    return view


def _expected(
    run_root: RunRoot, config: Mapping[str, Any] | None, problems: list[str]
) -> tuple[list[Variant], list[int]]:
    if not config:
        problems.append(f"run config missing: {rel_path(run_root.run_config, run_root.root)}")
        return [Variant("fp")], run_root.seeds_present() or [0]
    try:
        return parse_variants(list(config["variants"])), list(config["seeds"])
    except (KeyError, VariantError) as error:
        problems.append(
            f"run config {rel_path(run_root.run_config, run_root.root)} has no valid variants/seeds: {error}"
        )
        return [Variant("fp")], run_root.seeds_present() or [0]


def _load_training(seed_root: SeedRoot, variant: Variant, problems: list[str], root: Path) -> Training:
    paths = seed_root.train_run(variant.name)
    training = Training(seed_root.seed, variant, paths)
    training.metadata = load_file(paths.metadata_json, problems, root, paths.read_metadata)
    if paths.results_csv.is_file():
        try:
            training.results = read_results_csv(paths.results_csv)
        except (OSError, ValueError) as error:  # pandas' parser errors are ValueErrors
            problems.append(f"unreadable {rel_path(paths.results_csv, root)}: {error}")
    return training


def _load_cell(
    seed_root: SeedRoot,
    variant: Variant,
    fmt: str,
    model: str | None,
    problems: list[str],
    root: Path,
    runtime: str = DEFAULT_RUNTIME,
) -> Cell:
    onnx = seed_root.onnx_model(model or "model", variant.name, fmt)
    cell = Cell(seed_root.seed, variant, fmt, onnx, runtime=runtime)
    metrics = seed_root.eval_metrics(variant.name, fmt, runtime)
    cell.metrics = load_file(metrics, problems, root, lambda: read_eval_metrics(metrics))
    cell.export = load_file(export_metadata_path(onnx), problems, root, lambda: read_export_metadata(onnx))
    return cell


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
        missing.append(f"dataset provenance missing: {rel_path(view.run_root.dataset_provenance, root)}")
    for training in view.trainings:
        checkpoint = scored_checkpoint(training.paths, view.policy)
        if not checkpoint.is_file():
            missing.append(f"seed {training.seed} {training.variant.name}: no {rel_path(checkpoint, root)}")
    for cell in view.cells:
        if not cell.onnx.is_file():
            missing.append(
                f"seed {cell.seed} {cell.variant.name} {cell.weights_format}: no ONNX {rel_path(cell.onnx, root)}"
            )
        if cell.metrics is None:
            missing.append(f"seed {cell.seed} {cell.variant.name} {cell.weights_format}: not evaluated")
    for cell in view.runtime_cells:
        if cell.metrics is None:
            what = f"seed {cell.seed} {cell.variant.name} {cell.weights_format}"
            missing.append(f"{what}: not evaluated by {cell.runtime}")
    return missing + _missing_latency(view)


def _missing_latency(view: RunView) -> list[str]:
    """A seed without ``latency.json``, or a file its latency stage did not time."""
    root, missing = view.run_root.root, []
    for seed in view.seeds:
        if seed not in view.latency:
            path = rel_path(view.run_root.seed(seed).latency_json, root)
            missing.append(f"seed {seed}: no {path} (stage {latency_stage_name(seed)})")
            continue
        missing += [
            f"seed {seed} {cell.variant.name} {cell.weights_format}: not timed in its latency.json"
            for cell in view.cells
            if cell.seed == seed and cell.latency is None
        ]
    return missing


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
                ss.MAP50: finite_number((cell.metrics or {}).get(mk.MAP50)),
                ss.VAL_MAP50_95_BEST: (best or {}).get("map"),
                ss.ONNX: rel_path(cell.onnx, view.run_root.root),
                ss.ONNX_BYTES: cell.onnx_bytes,
                ss.LATENCY_MS_P50: cell.latency_p50,
                ss.VAL_ANN_SHA256: annotations.get(mk.SHA256),
                ss.BASELINE: baseline.name if (baseline := view.baseline(cell.variant)) else None,
                ss.CHECKPOINT_POLICY: view.policy,
                ss.CHECKPOINT_EPOCH: view.scored_epoch(cell.seed, cell.variant),
            }
        )
    return rows
