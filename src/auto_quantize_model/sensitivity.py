"""Which layers can take 4 bits: a per-unit weight-quantization sensitivity sweep and the mixed scheme it suggests.

:func:`run_sweep` loads a trained FP checkpoint and, for every *unit*, quantizes only that unit's convs to
``bits`` (weight-only PTQ with the project's own quantizer, :func:`~auto_quantize_model.quant.yolov10.quantize_model`
on a fresh copy of the FP model, so nothing accumulates across units) and measures val mAP50-95 with Ultralytics'
``DetectionValidator`` as the trainer validates: NMS-free one-to-one head (``nms=False``), square letterboxed batches
(``rect=False``). Two references are measured too: the FP model and every unit at ``bits``.

Units (:func:`enumerate_units`): ``layer`` = each quantizable conv (every ``nn.Conv2d`` but the DFL conv);
``block`` = each module of the model's top-level list except the head, plus each head branch *per pyramid level*
(``cv2.0``, ``one2one_cv3.2``, ...). Per level rather than per branch because the levels see different feature
maps and differ in size by 4x per step, so a sensitive level should not drag its cheap siblings to 8 bits.
Every quantizable conv is in exactly one unit; the DFL conv (fixed decoding weights) in none. Note that the
one-to-many branches (``cv2``/``cv3``) only train the backbone: the NMS-free validator never reads them, so their
drop is 0 by construction.

Outputs in ``out``: ``sensitivity.csv`` (``unit, kind, params, bits, mAP50_95, drop``; drop = FP - this; the two
references first, ``kind = reference``), ``sensitivity.png`` and ``mixed_precision_scheme.json``, a
:class:`~auto_quantize_model.quant.scheme.QuantScheme` file (``--quant-scheme``, ``qat-<file>``, ``ptq-<file>``
take it) that keeps the most sensitive units at 8 bits while at least ``low_bit_param_fraction`` of the quantized
weights stay at ``bits`` (:func:`mixed_precision_scheme`). ``sensitivity_settings.json`` beside them makes a
rerun resume: units already measured with the same settings (and checkpoint sha256) are skipped; other settings
are refused, naming what differs.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auto_quantize_model.quant.scheme import MAX_BIT_WIDTH, MIN_BIT_WIDTH, SCALINGS, QuantScheme
from auto_quantize_model.quant.sensitivity import (
    ALL_REFERENCE,
    CSV_DECIMALS,
    FP_REFERENCE,
    GRANULARITIES,
    HIGH_BITS,
    REFERENCE_KIND,
    MixedPrecisionPlan,
    SweepInputError,
    SweepRow,
    SweepUnit,
    all_units_scheme,
    check_or_save_settings,
    enumerate_units,
    mixed_precision_scheme,
    quantized_copy,
    read_rows,
    unit_scheme,
    write_rows,
)
from auto_quantize_model.reports.plots import plot_sensitivity
from auto_quantize_model.ultralytics_ext.validation import TrainerLikeValidator, select_val_images, write_val_subset
from auto_quantize_model.utils.io import read_json, sha256_file, write_json_atomic

SENSITIVITY_CSV = "sensitivity.csv"
SENSITIVITY_PNG = "sensitivity.png"
MIXED_SCHEME_JSON = "mixed_precision_scheme.json"
SETTINGS_JSON = "sensitivity_settings.json"
TIMING_JSON = "sensitivity_timing.json"
VAL_SUBSET_DIR = "val_subset"
# 0.01 mAP points: smaller drops are measurement noise on any val set this sweep is run on in practice.
DEFAULT_MIN_DROP = 1e-4
MIXED_PLAN_JSON = "mixed_precision_plan.json"


@dataclass(frozen=True)
class SweepRequest:
    """One sensitivity sweep."""

    weights: Path
    data: Path
    out: Path
    bits: int = 4
    scaling: str = "absmax"
    granularity: str = "block"
    max_val_images: int | None = None
    imgsz: int | None = None  # default: the checkpoint's training imgsz
    device: str = "cpu"
    batch: int = 16
    low_bit_param_fraction: float = 0.9  # --w4-param-fraction
    min_drop: float = DEFAULT_MIN_DROP  # the mixed scheme keeps only units with a larger drop at 8 bits


@dataclass(frozen=True)
class SweepResult:
    """What :func:`run_sweep` wrote and measured."""

    out: Path
    csv_path: Path
    png_path: Path
    scheme_path: Path
    rows: tuple[SweepRow, ...]
    plan: MixedPrecisionPlan
    measured_now: int
    skipped: int
    seconds_per_measurement: float | None  # mean over this invocation's measurements


# ----------------------------------------------------------------------------------------------
# The sweep
# ----------------------------------------------------------------------------------------------
def _check_request(request: SweepRequest) -> None:
    """Everything checkable before loading a model."""
    if not request.weights.is_file():
        raise SweepInputError(
            f"{request.weights}: checkpoint not found; pass --weights with the FP run's weights/best.pt"
        )
    if not request.data.is_file():
        raise SweepInputError(f"{request.data}: dataset YAML not found; pass --data with the run root's dataset.yaml")
    if not MIN_BIT_WIDTH <= request.bits < HIGH_BITS:
        raise SweepInputError(
            f"--bits {request.bits}: must be in [{MIN_BIT_WIDTH}, {HIGH_BITS - 1}] "
            f"(the mixed scheme keeps sensitive units at {HIGH_BITS})"
        )
    assert HIGH_BITS <= MAX_BIT_WIDTH
    if request.scaling not in SCALINGS or request.scaling == "lsq":
        raise SweepInputError(f"--scaling {request.scaling!r}: PTQ needs a scale that is not learned: absmax or mse")
    if request.granularity not in GRANULARITIES:
        raise SweepInputError(f"--granularity {request.granularity!r} is not one of {GRANULARITIES}")
    if request.max_val_images is not None and request.max_val_images < 1:
        raise SweepInputError(f"--max-val-images must be >= 1, got {request.max_val_images}")
    if request.batch < 1:
        raise SweepInputError(f"--batch must be >= 1, got {request.batch}")
    if not 0.0 < request.low_bit_param_fraction <= 1.0:
        raise SweepInputError(f"--w4-param-fraction must be in (0, 1], got {request.low_bit_param_fraction}")


def load_fp_model(weights: Path) -> tuple[Any, dict[str, Any]]:
    """The float model of an Ultralytics checkpoint, float32, eval mode; a quantized checkpoint is refused."""
    from auto_quantize_model.onnx_io.model_prep import load_detection_checkpoint
    from auto_quantize_model.onnx_io.settings import ExportInputError
    from auto_quantize_model.quant.yolov10 import is_quantized

    try:
        model, ckpt = load_detection_checkpoint(weights)
    except ExportInputError as error:  # the exporter's loader: one loader for the project, the sweep's error type
        raise SweepInputError(str(error)) from error
    if is_quantized(model):
        raise SweepInputError(f"{weights}: is already quantized; the sweep needs the FP run's best.pt")
    return model.float().eval(), ckpt


@dataclass(frozen=True)
class Measurement:
    """One row to measure: a reference or a unit, and the scheme it is measured with (None: the FP model)."""

    unit: str
    kind: str
    params: int
    bits: int | None
    scheme: QuantScheme | None


def measurement_plan(units: Sequence[SweepUnit], bits: int, scaling: str) -> list[Measurement]:
    """FP first (every drop needs it), then all units at ``bits``, then each unit alone, in module order."""
    total = sum(unit.params for unit in units)
    plan = [
        Measurement(FP_REFERENCE, REFERENCE_KIND, total, None, None),
        Measurement(ALL_REFERENCE, REFERENCE_KIND, total, bits, all_units_scheme(bits, scaling)),
    ]
    return plan + [Measurement(u.name, u.kind, u.params, bits, unit_scheme(u, bits, scaling)) for u in units]


def sweep_settings(request: SweepRequest, imgsz: int, val_sha: str, val_count: int) -> dict[str, Any]:
    """What ``sensitivity_settings.json`` records (:data:`COMPARED_SETTINGS` must match on a rerun)."""
    return {
        "weights": str(request.weights.resolve()),
        "weights_sha256": sha256_file(request.weights),
        "data": str(request.data.resolve()),
        "val_images": val_count,
        "val_images_sha256": val_sha,
        "bits": request.bits,
        "scaling": request.scaling,
        "granularity": request.granularity,
        "max_val_images": request.max_val_images,
        "imgsz": imgsz,
        "batch": request.batch,
        "device": request.device,
        "validator": "ultralytics DetectionValidator, nms=False, rect=False (square letterbox), fused model",
    }


def run_sweep(request: SweepRequest, log: Callable[[str], None] = print) -> SweepResult:
    """Measure every unit not yet in ``sensitivity.csv``, then write the csv, the plot and the mixed scheme."""
    _check_request(request)
    out = request.out
    model, ckpt = load_fp_model(request.weights)
    imgsz = int(request.imgsz or (ckpt.get("train_args") or {}).get("imgsz") or 640)
    units = enumerate_units(model, request.granularity)
    subset = select_val_images(request.data, request.max_val_images)
    settings = sweep_settings(request, imgsz, subset.sha256, len(subset.images))
    check_or_save_settings(out / SETTINGS_JSON, settings, out / SENSITIVITY_CSV)  # before anything is written
    data_yaml = write_val_subset(subset, out / VAL_SUBSET_DIR)
    plan = measurement_plan(units, request.bits, request.scaling)
    rows = {row.unit: row for row in read_rows(out / SENSITIVITY_CSV)}
    pending = [item for item in plan if item.unit not in rows]
    log(
        f"sensitivity sweep: {len(units)} {request.granularity} units + 2 references "
        f"on {len(subset.images)} val images at "
        f"imgsz {imgsz}; {len(plan) - len(pending)} already measured in {out / SENSITIVITY_CSV}, "
        f"{len(pending)} to measure"
    )
    validator = TrainerLikeValidator(data_yaml, imgsz, request.batch, request.device, out / ".val")
    seconds = _measure(model, pending, plan, rows, validator, out, log)
    ordered = tuple(rows[item.unit] for item in plan)
    drops = {unit.name: rows[unit.name].drop for unit in units}
    mixed = mixed_precision_scheme(
        units, drops, request.bits, request.scaling, request.low_bit_param_fraction, request.min_drop
    )
    scheme_path = mixed.scheme.save(out / MIXED_SCHEME_JSON)
    write_json_atomic(out / MIXED_PLAN_JSON, _plan_record(mixed, request))
    png_path = plot_sensitivity(out / SENSITIVITY_PNG, ordered, set(mixed.high_bit_units), request.bits)
    mean = sum(seconds) / len(seconds) if seconds else None
    return SweepResult(
        out, out / SENSITIVITY_CSV, png_path, scheme_path, ordered, mixed, len(pending), len(plan) - len(pending), mean
    )


def _measure(
    model: Any,
    pending: Sequence[Measurement],
    plan: Sequence[Measurement],
    rows: dict[str, SweepRow],
    validator: TrainerLikeValidator,
    out: Path,
    log: Callable[[str], None],
) -> list[float]:
    """Measure ``pending`` in order; after each, rewrite the csv and timing files (a kill loses one unit at most)."""
    timing_path = out / TIMING_JSON
    timing: dict[str, float] = read_json(timing_path) if timing_path.is_file() else {}
    started, seconds = time.perf_counter(), []
    for done, item in enumerate(pending, start=1):
        tick = time.perf_counter()
        candidate = copy.deepcopy(model) if item.scheme is None else quantized_copy(model, item.scheme)
        # Rounded as in the csv, so a resumed sweep plans from exactly the numbers a fresh one would.
        value = round(validator.map50_95(candidate), CSV_DECIMALS)
        seconds.append(time.perf_counter() - tick)
        fp_value = value if item.unit == FP_REFERENCE else rows[FP_REFERENCE].mAP50_95
        rows[item.unit] = SweepRow(
            item.unit, item.kind, item.params, item.bits, value, round(fp_value - value, CSV_DECIMALS)
        )
        timing[item.unit] = round(seconds[-1], 3)
        write_rows(out / SENSITIVITY_CSV, [rows[p.unit] for p in plan if p.unit in rows])
        write_json_atomic(timing_path, timing)
        eta = (time.perf_counter() - started) / done * (len(pending) - done)
        log(
            f"[{done}/{len(pending)}] {item.unit:<28} mAP50-95 {value:.4f}  drop {rows[item.unit].drop:+.4f}  "
            f"({seconds[-1]:.1f} s, ETA {_duration(eta)})"
        )
    return seconds


def _duration(seconds: float) -> str:
    minutes, secs = divmod(math.ceil(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _plan_record(plan: MixedPrecisionPlan, request: SweepRequest) -> dict[str, Any]:
    """Why the mixed scheme is what it is (the scheme file itself holds only QuantScheme keys)."""
    return {
        "scheme": MIXED_SCHEME_JSON,
        "requested_low_bit_param_fraction": request.low_bit_param_fraction,
        "low_bit_param_fraction": round(plan.low_bit_param_fraction, 6),
        "low_bits": request.bits,
        "high_bits": HIGH_BITS,
        "min_drop": request.min_drop,
        "high_bit_units": list(plan.high_bit_units),
        "rule": "greedy by drop: a unit with drop > min_drop goes to high_bits if the share of quantized weights "
        "at low_bits stays >= the requested fraction",
    }
