"""Which layers can take 4 bits (or 4-bit inputs): a per-unit quantization sensitivity sweep and the mixed scheme
it suggests.

:func:`run_sweep` loads a trained FP checkpoint and, for every *unit*, quantizes only that unit on a fresh copy of
the FP model (the project's own quantizer, :func:`~auto_quantize_model.quant.yolov10.quantize_model`; nothing
accumulates across units) and measures val mAP50-95 with Ultralytics' ``DetectionValidator`` as the trainer
validates: NMS-free one-to-one head (``nms=False``), square letterboxed batches (``rect=False``).
``sweep`` says what is quantized in the unit under test:

* ``weights`` (the default): the unit's conv weights at ``bits`` (weight-only PTQ, default 4), every other conv
  float. References: the FP model and every unit at ``bits`` (``fp``, ``all``).
* ``activations``: the unit's conv *inputs* at ``act_bits`` (default 8), every other conv float. The project's
  activation placement (:mod:`auto_quantize_model.quant.activations`) quantizes only the inputs of
  weight-quantized convs (an integer conv needs both operands in integer), so the unit's weights cannot stay
  float: they sit at 8 bits (per-channel, ``scaling``; near-lossless), and ``bits`` is refused. Each unit's copy
  is calibrated anew (Brevitas calibration as in PTQ, no bias correction, no BN re-estimation) on
  ``calib_images`` *train* images (a seeded subset, letterboxed without augmentation; never val), listed in
  ``calibration_images.txt``. References: ``fp``, ``base`` (every conv's weights at 8 bits, inputs float: what
  the 8-bit weights cost with all convs at once, more than any one unit's share) and ``all`` (every conv at
  8-bit weights and ``act_bits`` inputs; ``w8a8`` at 8).
  What a unit cannot express exactly: the placement quantizes each tensor once, on its producer, at the widest
  bit width its readers ask for. A tensor the unit's convs share with other convs (tensors joined by a Concat /
  Add / Upsample, a C2f or SPPF join, the feature map all four head branches of a level read) therefore reaches
  those other readers quantized too; the image (read by the stem) is quantized with its fixed step.
  ``activation_placement.json`` lists per unit the quantizers placed and the convs outside the unit that read
  them; ``layer`` units inside a C2f share its join, so ``block`` units are the closer fit.

Units (:func:`enumerate_units`): ``layer`` = each quantizable conv (every ``nn.Conv2d`` but the DFL conv);
``block`` = each module of the model's top-level list except the head, plus each head branch *per pyramid level*
(``cv2.0``, ``one2one_cv3.2``, ...). Per level rather than per branch because the levels see different feature
maps and differ in size by 4x per step, so a sensitive level should not drag its cheap siblings to 8 bits.
Every quantizable conv is in exactly one unit; the DFL conv (fixed decoding weights) in none. Note that the
one-to-many branches (``cv2``/``cv3``) only train the backbone: the NMS-free validator never reads them, so their
drop is 0 by construction.

Outputs in ``out`` (names: :class:`SweepFiles`): ``sensitivity.csv`` (``unit, kind, params, bits, mAP50_95, drop,
swept``; ``params`` = the unit's weight elements, ``bits`` = the swept quantity's bit width, empty where it is
float; drop = FP - this; the references first, ``kind = reference``), ``sensitivity.png`` and a mixed
:class:`~auto_quantize_model.quant.scheme.QuantScheme` file (``--quant-scheme``, ``qat-<file>``, ``ptq-<file>`` take
it). Weights sweep: ``mixed_precision_scheme.json`` keeps the most sensitive units at 8 bits while at least
``low_bit_param_fraction`` of the quantized weights stay at ``bits`` (:func:`mixed_precision_scheme`).
Activations sweep: ``mixed_activation_scheme.json`` (every conv's weights at 8 bits) keeps the most sensitive
units' inputs at 8 bits (float when ``act_bits`` is 8, the only wider choice) while at least
``low_bit_param_fraction`` of the conv input elements (one image at ``imgsz``) stay at ``act_bits``
(:func:`mixed_activation_scheme`). Each has a
``*_plan.json`` saying why. ``sensitivity_settings.json`` beside them makes a rerun resume: units already measured
with the same settings (and checkpoint sha256) are skipped; other settings are refused, naming what differs. A
settings file from before the activations sweep (no ``sweep`` key) resumes as the weights sweep it was.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auto_quantize_model.quant.scheme import MAX_BIT_WIDTH, MIN_BIT_WIDTH, SCALINGS, QuantScheme
from auto_quantize_model.quant.sensitivity import (
    ACT_SWEEP_WEIGHT_BITS,
    ACTIVATIONS_SWEEP,
    ALL_REFERENCE,
    BASE_REFERENCE,
    CSV_DECIMALS,
    FP_REFERENCE,
    GRANULARITIES,
    HIGH_BITS,
    REFERENCE_KIND,
    SWEEPS,
    WEIGHTS_SWEEP,
    MixedPrecisionPlan,
    SweepInputError,
    SweepRow,
    SweepUnit,
    activation_all_scheme,
    activation_base_scheme,
    activation_high_bits,
    activation_unit_scheme,
    all_units_scheme,
    check_or_save_settings,
    conv_input_elements,
    enumerate_units,
    mixed_activation_scheme,
    mixed_precision_scheme,
    placement_record,
    quantized_copy_with_report,
    read_rows,
    unit_scheme,
    write_rows,
)
from auto_quantize_model.reports.plots import plot_sensitivity
from auto_quantize_model.ultralytics_ext.calibration import CALIBRATION_SPLIT, CalibrationSet
from auto_quantize_model.ultralytics_ext.validation import (
    TrainerLikeValidator,
    ValSubset,
    select_val_images,
    write_val_subset,
)
from auto_quantize_model.utils.io import read_json, sha256_file, write_json_atomic, write_text_atomic

VAL_SUBSET_DIR = "val_subset"
# 0.01 mAP points: smaller drops are measurement noise on any val set this sweep is run on in practice.
DEFAULT_MIN_DROP = 1e-4
DEFAULT_BITS = 4  # weights sweep: the unit under test's weight bit width
DEFAULT_ACT_BITS = 8  # activations sweep: the unit under test's input bit width (what int8 runtimes execute)
DEFAULT_CALIB_IMAGES = 64  # activations sweep: train images per calibration (the demo profile's ptq_calib_images)


@dataclass(frozen=True)
class SweepFiles:
    """The file names a sweep writes in ``out``: the one place they are spelled (readers use these)."""

    csv: str = "sensitivity.csv"
    png: str = "sensitivity.png"
    settings: str = "sensitivity_settings.json"
    timing: str = "sensitivity_timing.json"
    scheme: str = "mixed_precision_scheme.json"
    plan: str = "mixed_precision_plan.json"
    calibration: str | None = None  # activations sweep: the calibration images, one path a line
    placement: str | None = None  # activations sweep: per unit, the quantizers placed and who reads them


WEIGHT_FILES = SweepFiles()
ACTIVATION_FILES = SweepFiles(
    scheme="mixed_activation_scheme.json",
    plan="mixed_activation_plan.json",
    calibration="calibration_images.txt",
    placement="activation_placement.json",
)
SWEEP_FILES = {WEIGHTS_SWEEP: WEIGHT_FILES, ACTIVATIONS_SWEEP: ACTIVATION_FILES}
# The weights sweep's names, as before the activations sweep.
SENSITIVITY_CSV, SENSITIVITY_PNG = WEIGHT_FILES.csv, WEIGHT_FILES.png
SETTINGS_JSON, TIMING_JSON = WEIGHT_FILES.settings, WEIGHT_FILES.timing
MIXED_SCHEME_JSON, MIXED_PLAN_JSON = WEIGHT_FILES.scheme, WEIGHT_FILES.plan


@dataclass(frozen=True)
class SweepRequest:
    """One sensitivity sweep. ``bits`` / ``act_bits`` / ``calib_images`` left None take their sweep's default;
    each belongs to one sweep and is refused by the other."""

    weights: Path
    data: Path
    out: Path
    bits: int | None = None  # weights sweep (default DEFAULT_BITS)
    scaling: str = "absmax"
    granularity: str = "block"
    max_val_images: int | None = None
    imgsz: int | None = None  # default: the checkpoint's training imgsz
    device: str = "cpu"
    batch: int = 16
    low_bit_param_fraction: float = 0.9  # --w4-param-fraction / --low-bit-fraction
    min_drop: float = DEFAULT_MIN_DROP  # the mixed scheme keeps only units with a larger drop at 8 bits
    sweep: str = WEIGHTS_SWEEP
    act_bits: int | None = None  # activations sweep (default DEFAULT_ACT_BITS)
    calib_images: int | None = None  # activations sweep (default DEFAULT_CALIB_IMAGES)

    @property
    def activations(self) -> bool:
        return self.sweep == ACTIVATIONS_SWEEP

    @property
    def weight_bits(self) -> int:
        """The weight bit width of the unit under test (activations sweep: fixed, and of the mixed scheme's convs)."""
        if self.activations:
            return ACT_SWEEP_WEIGHT_BITS
        return DEFAULT_BITS if self.bits is None else self.bits

    @property
    def swept_bits(self) -> int:
        """The bit width under test: ``bits`` or ``act_bits``."""
        if not self.activations:
            return self.weight_bits
        return DEFAULT_ACT_BITS if self.act_bits is None else self.act_bits

    @property
    def calibration_images(self) -> int | None:
        if not self.activations:
            return None
        return DEFAULT_CALIB_IMAGES if self.calib_images is None else self.calib_images

    @property
    def files(self) -> SweepFiles:
        return SWEEP_FILES[self.sweep]


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
# Checks before any model is loaded
# ----------------------------------------------------------------------------------------------
def _check_request(request: SweepRequest) -> None:
    """Everything checkable before loading a model."""
    if not request.weights.is_file():
        raise SweepInputError(
            f"{request.weights}: checkpoint not found; pass --weights with the FP run's weights/best.pt"
        )
    if not request.data.is_file():
        raise SweepInputError(f"{request.data}: dataset YAML not found; pass --data with the run root's dataset.yaml")
    if request.sweep not in SWEEPS:
        raise SweepInputError(f"--sweep {request.sweep!r} is not one of {SWEEPS}")
    if request.activations:
        _check_activation_flags(request)
    else:
        _check_weight_flags(request)
    if request.scaling not in SCALINGS or request.scaling == "lsq":
        raise SweepInputError(f"--scaling {request.scaling!r}: PTQ needs a scale that is not learned: absmax or mse")
    if request.granularity not in GRANULARITIES:
        raise SweepInputError(f"--granularity {request.granularity!r} is not one of {GRANULARITIES}")
    if request.max_val_images is not None and request.max_val_images < 1:
        raise SweepInputError(f"--max-val-images must be >= 1, got {request.max_val_images}")
    if request.batch < 1:
        raise SweepInputError(f"--batch must be >= 1, got {request.batch}")
    if not 0.0 < request.low_bit_param_fraction <= 1.0:
        raise SweepInputError(
            f"--w4-param-fraction (--low-bit-fraction) must be in (0, 1], got {request.low_bit_param_fraction}"
        )


def _check_weight_flags(request: SweepRequest) -> None:
    """The activations sweep's flags mean nothing to a weights sweep: refused rather than silently ignored."""
    for flag, value in (("--act-bits", request.act_bits), ("--calib-images", request.calib_images)):
        if value is not None:
            raise SweepInputError(
                f"{flag} belongs to the activations sweep; pass --sweep activations, or drop {flag} for a weights sweep"
            )
    bits = request.weight_bits
    if not MIN_BIT_WIDTH <= bits < HIGH_BITS:
        raise SweepInputError(
            f"--bits {bits}: must be in [{MIN_BIT_WIDTH}, {HIGH_BITS - 1}] "
            f"(the mixed scheme keeps sensitive units at {HIGH_BITS})"
        )
    assert HIGH_BITS <= MAX_BIT_WIDTH


def _check_activation_flags(request: SweepRequest) -> None:
    if request.bits is not None:
        raise SweepInputError(
            f"--bits {request.bits}: an activations sweep puts the unit's weights at {ACT_SWEEP_WEIGHT_BITS} bits "
            "(activation quantizers sit only on weight-quantized convs); drop --bits, or pass --sweep weights"
        )
    if not MIN_BIT_WIDTH <= request.swept_bits <= MAX_BIT_WIDTH:
        raise SweepInputError(f"--act-bits {request.swept_bits}: must be in [{MIN_BIT_WIDTH}, {MAX_BIT_WIDTH}]")
    if request.calibration_images < 1:
        raise SweepInputError(
            f"--calib-images {request.calibration_images}: an activations sweep calibrates every unit on >= 1 "
            f"train image; pass e.g. --calib-images {DEFAULT_CALIB_IMAGES}"
        )


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


# ----------------------------------------------------------------------------------------------
# What is measured
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Measurement:
    """One row to measure: a reference or a unit, and the scheme it is measured with (None: the FP model)."""

    unit: str
    kind: str
    params: int
    bits: int | None
    scheme: QuantScheme | None
    unit_spec: SweepUnit | None = None  # the unit itself (None for a reference)


def measurement_plan(units: Sequence[SweepUnit], bits: int, scaling: str) -> list[Measurement]:
    """Weights sweep: FP first (every drop needs it), then all units at ``bits``, then each unit alone."""
    total = sum(unit.params for unit in units)
    plan = [
        Measurement(FP_REFERENCE, REFERENCE_KIND, total, None, None),
        Measurement(ALL_REFERENCE, REFERENCE_KIND, total, bits, all_units_scheme(bits, scaling)),
    ]
    return plan + [Measurement(u.name, u.kind, u.params, bits, unit_scheme(u, bits, scaling), u) for u in units]


def activation_measurement_plan(units: Sequence[SweepUnit], act_bits: int, scaling: str) -> list[Measurement]:
    """Activations sweep: FP, every conv's 8-bit weights alone, every conv at W8 A``act_bits``, then each unit."""
    total = sum(unit.params for unit in units)
    plan = [
        Measurement(FP_REFERENCE, REFERENCE_KIND, total, None, None),
        Measurement(BASE_REFERENCE, REFERENCE_KIND, total, None, activation_base_scheme(scaling)),
        Measurement(ALL_REFERENCE, REFERENCE_KIND, total, act_bits, activation_all_scheme(act_bits, scaling)),
    ]
    return plan + [
        Measurement(u.name, u.kind, u.params, act_bits, activation_unit_scheme(u, act_bits, scaling), u) for u in units
    ]


def sweep_settings(
    request: SweepRequest, imgsz: int, subset: ValSubset, calibration: CalibrationSet | None
) -> dict[str, Any]:
    """What ``sensitivity_settings.json`` records (:data:`COMPARED_SETTINGS` must match on a rerun)."""
    return {
        "weights": str(request.weights.resolve()),
        "weights_sha256": sha256_file(request.weights),
        "data": str(request.data.resolve()),
        "val_images": len(subset.images),
        "val_images_sha256": subset.sha256,
        "sweep": request.sweep,
        "bits": request.weight_bits,
        "act_bits": request.swept_bits if request.activations else None,
        "calib_images": request.calibration_images,
        "calib_images_sha256": calibration.sha256() if calibration else None,
        "calib_split": CALIBRATION_SPLIT if calibration else None,
        "scaling": request.scaling,
        "granularity": request.granularity,
        "max_val_images": request.max_val_images,
        "imgsz": imgsz,
        "batch": request.batch,
        "device": request.device,
        "validator": "ultralytics DetectionValidator, nms=False, rect=False (square letterbox), fused model",
    }


def _calibration_set(request: SweepRequest, imgsz: int) -> CalibrationSet | None:
    """The activations sweep's train images (one set for every unit); None for a weights sweep."""
    from auto_quantize_model.ultralytics_ext.calibration import calibration_set

    if not request.activations:
        return None
    try:
        return calibration_set(request.data, imgsz, request.batch, request.calibration_images, request.device)
    except ValueError as error:  # more images asked for than the train split has
        raise SweepInputError(f"--calib-images: {error}") from error


# ----------------------------------------------------------------------------------------------
# The sweep
# ----------------------------------------------------------------------------------------------
def run_sweep(request: SweepRequest, log: Callable[[str], None] = print) -> SweepResult:
    """Measure every unit not yet in ``sensitivity.csv``, then write the csv, the plot and the mixed scheme."""
    _check_request(request)
    out, files = request.out, request.files
    model, ckpt = load_fp_model(request.weights)
    imgsz = int(request.imgsz or (ckpt.get("train_args") or {}).get("imgsz") or 640)
    units = enumerate_units(model, request.granularity)
    subset = select_val_images(request.data, request.max_val_images)
    calibration = _calibration_set(request, imgsz)
    settings = sweep_settings(request, imgsz, subset, calibration)
    check_or_save_settings(out / files.settings, settings, out / files.csv)  # before anything is written
    data_yaml = write_val_subset(subset, out / VAL_SUBSET_DIR)
    if calibration is not None:
        write_text_atomic(out / files.calibration, "".join(f"{file}\n" for file in calibration.files))
    if request.activations:
        plan = activation_measurement_plan(units, request.swept_bits, request.scaling)
    else:
        plan = measurement_plan(units, request.weight_bits, request.scaling)
    rows = {row.unit: row for row in read_rows(out / files.csv)}
    pending = [item for item in plan if item.unit not in rows]
    log(
        f"sensitivity sweep ({request.sweep} at {request.swept_bits} bits): {len(units)} {request.granularity} "
        f"units + {len(plan) - len(units)} references on {len(subset.images)} val images at imgsz {imgsz}; "
        f"{len(plan) - len(pending)} already measured in {out / files.csv}, {len(pending)} to measure"
    )
    validator = TrainerLikeValidator(data_yaml, imgsz, request.batch, request.device, out / ".val")
    measurer = _Measurer(model, plan, rows, validator, out, files, request.sweep, calibration, log)
    seconds = measurer.measure(pending)
    ordered = tuple(rows[item.unit] for item in plan)
    drops = {unit.name: rows[unit.name].drop for unit in units}
    sizes = _unit_input_elements(model, units, imgsz) if request.activations else {}
    mixed = _mixed_plan(request, units, drops, sizes)
    scheme_path = mixed.scheme.save(out / files.scheme)
    write_json_atomic(out / files.plan, _plan_record(mixed, request, sizes))
    png_path = plot_sensitivity(
        out / files.png, ordered, set(mixed.high_bit_units), request.swept_bits, request.sweep, sizes or None
    )
    mean = sum(seconds) / len(seconds) if seconds else None
    return SweepResult(
        out, out / files.csv, png_path, scheme_path, ordered, mixed, len(pending), len(plan) - len(pending), mean
    )


def _unit_input_elements(model: Any, units: Sequence[SweepUnit], imgsz: int) -> dict[str, int]:
    """Per unit, the elements its convs read for one image: the activations sweep's cost of a unit's bits."""
    elements = conv_input_elements(model, imgsz)
    return {unit.name: sum(elements[conv] for conv in unit.convs) for unit in units}


def _mixed_plan(
    request: SweepRequest, units: Sequence[SweepUnit], drops: dict[str, float], sizes: dict[str, int]
) -> MixedPrecisionPlan:
    fraction, scaling = request.low_bit_param_fraction, request.scaling
    if request.activations:
        return mixed_activation_scheme(units, drops, sizes, request.swept_bits, scaling, fraction, request.min_drop)
    return mixed_precision_scheme(units, drops, request.weight_bits, scaling, fraction, request.min_drop)


@dataclass
class _Measurer:
    """Measures pending rows in order; after each, rewrites the csv and side files (a kill loses one unit at most)."""

    model: Any
    plan: Sequence[Measurement]
    rows: dict[str, SweepRow]
    validator: TrainerLikeValidator
    out: Path
    files: SweepFiles
    swept: str
    calibration: CalibrationSet | None
    log: Callable[[str], None]
    seconds: list[float] = field(default_factory=list)

    def measure(self, pending: Sequence[Measurement]) -> list[float]:
        timing = self._side_file(self.files.timing)
        placement = self._side_file(self.files.placement)
        started = time.perf_counter()
        for done, item in enumerate(pending, start=1):
            tick = time.perf_counter()
            candidate, where = self._candidate(item)
            # Rounded as in the csv, so a resumed sweep plans from exactly the numbers a fresh one would.
            value = round(self.validator.map50_95(candidate), CSV_DECIMALS)
            self.seconds.append(time.perf_counter() - tick)
            self._record(item, value)
            timing[item.unit] = round(self.seconds[-1], 3)
            if where is not None:
                placement[item.unit] = where
            self._write(timing, placement)
            eta = (time.perf_counter() - started) / done * (len(pending) - done)
            self.log(
                f"[{done}/{len(pending)}] {item.unit:<28} mAP50-95 {value:.4f}  drop {self.rows[item.unit].drop:+.4f}  "
                f"({self.seconds[-1]:.1f} s, ETA {_duration(eta)})"
            )
        return self.seconds

    def _candidate(self, item: Measurement) -> tuple[Any, dict[str, Any] | None]:
        """A fresh copy quantized as ``item`` says, its activations calibrated anew (nothing carried over)."""
        from auto_quantize_model.quant.calibration import calibrate_activations

        if item.scheme is None:
            return copy.deepcopy(self.model), None
        candidate, report = quantized_copy_with_report(self.model, item.scheme)
        if not item.scheme.quantizes_activations:
            return candidate, None
        calibrate_activations(candidate.to(self.calibration.batches[0].device), self.calibration.batches)
        return candidate, placement_record(item.unit_spec, report) if item.unit_spec else None

    def _record(self, item: Measurement, value: float) -> None:
        fp_value = value if item.unit == FP_REFERENCE else self.rows[FP_REFERENCE].mAP50_95
        drop = round(fp_value - value, CSV_DECIMALS)
        self.rows[item.unit] = SweepRow(item.unit, item.kind, item.params, item.bits, value, drop, self.swept)

    def _side_file(self, name: str | None) -> dict[str, Any]:
        path = self.out / name if name else None
        return read_json(path) if path is not None and path.is_file() else {}

    def _write(self, timing: dict[str, Any], placement: dict[str, Any]) -> None:
        write_rows(self.out / self.files.csv, [self.rows[p.unit] for p in self.plan if p.unit in self.rows])
        write_json_atomic(self.out / self.files.timing, timing)
        if self.files.placement:
            write_json_atomic(self.out / self.files.placement, placement)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(math.ceil(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _plan_record(plan: MixedPrecisionPlan, request: SweepRequest, sizes: dict[str, int]) -> dict[str, Any]:
    """Why the mixed scheme is what it is (the scheme file itself holds only QuantScheme keys)."""
    record = {
        "scheme": request.files.scheme,
        "sweep": request.sweep,
        "requested_low_bit_param_fraction": request.low_bit_param_fraction,
        "low_bit_param_fraction": round(plan.low_bit_param_fraction, 6),
        "low_bits": request.swept_bits,
        "high_bits": HIGH_BITS,
        "min_drop": request.min_drop,
        "high_bit_units": list(plan.high_bit_units),
        "rule": "greedy by drop: a unit with drop > min_drop goes to high_bits if the share of quantized weights "
        "at low_bits stays >= the requested fraction",
    }
    if request.activations:
        record.update(
            high_bits=activation_high_bits(request.swept_bits),  # None: float (the sweep was at 8 bits)
            weight_bits=ACT_SWEEP_WEIGHT_BITS,
            rule="greedy by drop: a unit with drop > min_drop keeps its conv inputs at high_bits (null: float) if "
            "the share of conv input elements (one image at imgsz) at low_bits stays >= the requested fraction",
            input_elements=sizes,
        )
    return record
