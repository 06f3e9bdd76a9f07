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
import csv
import io
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auto_quantize_model.quant.scheme import MAX_BIT_WIDTH, MIN_BIT_WIDTH, SCALINGS, QuantScheme
from auto_quantize_model.utils.io import (
    atomic_output,
    read_json,
    sha256_file,
    write_json_atomic,
    write_text_atomic,
)

GRANULARITIES = ("layer", "block")
SENSITIVITY_CSV = "sensitivity.csv"
SENSITIVITY_PNG = "sensitivity.png"
MIXED_SCHEME_JSON = "mixed_precision_scheme.json"
SETTINGS_JSON = "sensitivity_settings.json"
TIMING_JSON = "sensitivity_timing.json"
VAL_SUBSET_DIR = "val_subset"
CSV_COLUMNS = ("unit", "kind", "params", "bits", "mAP50_95", "drop")
CSV_DECIMALS = 6
REFERENCE_KIND = "reference"
FP_REFERENCE = "fp"  # the unquantized model
ALL_REFERENCE = "all"  # every unit at --bits
HIGH_BITS = 8  # what the mixed scheme keeps sensitive units at
# 0.01 mAP points: smaller drops are measurement noise on any val set this sweep is run on in practice.
DEFAULT_MIN_DROP = 1e-4
MIXED_PLAN_JSON = "mixed_precision_plan.json"
# Settings a measurement depends on; a rerun with any of them different is refused. Batch and device are recorded
# but not compared: with square letterboxed batches neither changes the inputs.
COMPARED_SETTINGS = ("weights_sha256", "val_images_sha256", "bits", "scaling", "granularity", "max_val_images", "imgsz")
IMAGE_SUFFIXES = {"bmp", "dng", "jpeg", "jpg", "mpo", "png", "tif", "tiff", "webp", "pfm", "heic"}


class SweepInputError(ValueError):
    """Bad sweep input or a rerun that does not match the earlier one; the message names the file/flag and the fix."""


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
class SweepUnit:
    """A set of convs quantized together: one conv (``layer``) or a block / head branch level (``block``)."""

    name: str  # module name: "model.4", "model.23.one2one_cv3.1" or a conv's own name
    kind: str  # the top-level module's class ("C2f"), "<head class>.<branch>" in the head
    convs: tuple[str, ...]
    params: int  # weight elements of its convs (what quantization shrinks; biases stay float)

    @property
    def selector(self) -> str:
        """A scheme selector matching exactly this unit's convs."""
        return self.name if self.convs == (self.name,) else f"{self.name}.*"


@dataclass(frozen=True)
class SweepRow:
    """One line of ``sensitivity.csv``."""

    unit: str
    kind: str
    params: int
    bits: int | None  # None: the FP reference
    mAP50_95: float
    drop: float


@dataclass(frozen=True)
class MixedPrecisionPlan:
    """The mixed scheme and what it keeps at 8 bits."""

    scheme: QuantScheme
    high_bit_units: tuple[str, ...]
    low_bit_param_fraction: float  # share of the quantized weight elements at the low bit width


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
# Units
# ----------------------------------------------------------------------------------------------
def quantizable_convs(model: Any) -> dict[str, int]:
    """``{conv name: weight elements}`` of every conv a scheme may quantize (all ``nn.Conv2d`` but DFL's)."""
    from auto_quantize_model.quant.yolov10 import layer_bit_widths

    bits = layer_bit_widths(model, QuantScheme("all-convs"))
    return {name: model.get_submodule(name).weight.numel() for name, width in bits.items() if width is not None}


def enumerate_units(model: Any, granularity: str) -> list[SweepUnit]:
    """The sweep's units of ``model`` in module order; every quantizable conv in exactly one, DFL in none."""
    if granularity not in GRANULARITIES:
        raise SweepInputError(f"granularity {granularity!r} is not one of {GRANULARITIES}")
    convs = quantizable_convs(model)
    head_index = len(model.model) - 1
    groups: dict[str, list[str]] = {}
    kinds: dict[str, str] = {}
    for name in convs:
        index, _, rest = name.removeprefix("model.").partition(".")
        top = model.model[int(index)]
        kind = type(top).__name__
        if int(index) == head_index:
            kind = f"{kind}.{rest.split('.')[0]}"
        unit = name if granularity == "layer" else _block_name(int(index), rest, head_index)
        groups.setdefault(unit, []).append(name)
        kinds[unit] = kind
    return [SweepUnit(unit, kinds[unit], tuple(names), sum(convs[n] for n in names)) for unit, names in groups.items()]


def _block_name(index: int, rest: str, head_index: int) -> str:
    """``model.<i>`` for a backbone/neck module; ``model.<head>.<branch>.<level>`` inside the head."""
    if index != head_index:
        return f"model.{index}"
    return f"model.{index}." + ".".join(rest.split(".")[:2])


def unit_scheme(unit: SweepUnit, bits: int, scaling: str) -> QuantScheme:
    """Only ``unit`` at ``bits``: everything float, then the unit's convs (later overrides win)."""
    return QuantScheme(
        f"sens-{unit.name}",
        weight_bit_width=bits,
        scaling=scaling,
        layer_overrides=(("*", None), (unit.selector, bits)),
    )


def all_units_scheme(bits: int, scaling: str) -> QuantScheme:
    """Every quantizable conv at ``bits``."""
    return QuantScheme(f"w{bits}a16-all", weight_bit_width=bits, scaling=scaling)


def quantized_copy(model: Any, scheme: QuantScheme) -> Any:
    """A quantized deep copy of ``model`` (which stays float: each unit starts from the FP weights)."""
    from auto_quantize_model.quant.yolov10 import quantize_model

    clone = copy.deepcopy(model)
    quantize_model(clone, scheme)
    return clone.eval()


# ----------------------------------------------------------------------------------------------
# Mixed-precision scheme
# ----------------------------------------------------------------------------------------------
def mixed_precision_scheme(
    units: Sequence[SweepUnit],
    drops: dict[str, float],
    bits: int,
    scaling: str,
    low_bit_param_fraction: float,
    min_drop: float = 0.0,
) -> MixedPrecisionPlan:
    """Keep the most sensitive units at 8 bits while >= ``low_bit_param_fraction`` of the weights stay at ``bits``.

    Greedy by drop (largest first; ties: fewer parameters first): a unit goes to 8 bits if it still fits in the
    8-bit budget ``(1 - fraction) * total``; one that does not fit is passed over for smaller, less sensitive
    ones. Units whose drop is <= ``min_drop`` stay at ``bits``: a drop at the level of measurement noise (a
    reordered low-score detection) is no reason to spend 8-bit budget.
    """
    if not 0.0 < low_bit_param_fraction <= 1.0:
        raise SweepInputError(f"--w4-param-fraction must be in (0, 1], got {low_bit_param_fraction}")
    total = sum(unit.params for unit in units)
    budget = (1.0 - low_bit_param_fraction) * total
    sensitive = (unit for unit in units if drops.get(unit.name, 0.0) > max(min_drop, 0.0))
    ranked = sorted(sensitive, key=lambda unit: (-drops[unit.name], unit.params))
    high: list[SweepUnit] = []
    used = 0
    for unit in ranked:
        if used + unit.params <= budget:
            high.append(unit)
            used += unit.params
    order = {unit.name: i for i, unit in enumerate(units)}
    high.sort(key=lambda unit: order[unit.name])  # module order reads better in the file
    name = f"w{bits}a16-mixed{round(low_bit_param_fraction * 100)}" + ("" if scaling == "absmax" else f"-{scaling}")
    scheme = QuantScheme(
        name, weight_bit_width=bits, scaling=scaling, layer_overrides=tuple((unit.selector, HIGH_BITS) for unit in high)
    )
    fraction = 1.0 - used / total if total else 1.0
    return MixedPrecisionPlan(scheme, tuple(unit.name for unit in high), fraction)


def low_bit_param_share(model: Any, scheme: QuantScheme, bits: int) -> float:
    """Share of the quantized weight elements ``scheme`` puts at ``bits`` on ``model`` (resolved on the model)."""
    from auto_quantize_model.quant.yolov10 import layer_bit_widths

    widths = layer_bit_widths(model, scheme)
    sizes = {name: model.get_submodule(name).weight.numel() for name, width in widths.items() if width is not None}
    low = sum(size for name, size in sizes.items() if widths[name] == bits)
    return low / sum(sizes.values())


def parameter_weighted_bits(model: Any, scheme: QuantScheme) -> float:
    """Mean weight bit width over the quantized convs, weighted by their weight elements."""
    from auto_quantize_model.quant.yolov10 import layer_bit_widths

    widths = {name: width for name, width in layer_bit_widths(model, scheme).items() if width is not None}
    sizes = {name: model.get_submodule(name).weight.numel() for name in widths}
    return sum(widths[name] * size for name, size in sizes.items()) / sum(sizes.values())


# ----------------------------------------------------------------------------------------------
# Validation set and validator
# ----------------------------------------------------------------------------------------------
def val_image_files(data: Path) -> tuple[dict[str, Any], list[str]]:
    """The dataset spec (Ultralytics' ``check_det_dataset``) and its val images, sorted as Ultralytics sorts them."""
    import glob
    import os

    from ultralytics.data.utils import check_det_dataset

    spec = check_det_dataset(str(data))
    files: list[str] = []
    for entry in spec["val"] if isinstance(spec["val"], list) else [spec["val"]]:
        path = Path(entry)
        if path.is_dir():
            files += glob.glob(str(Path(glob.escape(str(path))) / "**" / "*.*"), recursive=True)
        elif path.is_file():
            lines = path.read_text(encoding="utf-8-sig").strip().splitlines()
            files += [
                line.replace("./", str(path.parent) + os.sep, 1) if line.startswith("./") else line for line in lines
            ]
        else:
            raise SweepInputError(f"{data}: val entry {entry} does not exist")
    images = sorted(f for f in files if f.rpartition(".")[-1].lower() in IMAGE_SUFFIXES)
    if not images:
        raise SweepInputError(f"{data}: no val images found under {spec['val']}")
    return spec, images


@dataclass(frozen=True)
class ValSubset:
    """The val images a sweep measures on: the first N (sorted as Ultralytics sorts them) of the dataset's val split."""

    spec: dict[str, Any]  # the dataset YAML as Ultralytics' check_det_dataset resolves it
    images: tuple[str, ...]
    sha256: str  # over the images' names and label files: what the measurement depends on


def select_val_images(data: Path, max_images: int | None) -> ValSubset:
    """The first ``max_images`` val images of ``data`` (all when None) and their sha256; writes nothing."""
    import hashlib

    from ultralytics.data.utils import img2label_paths

    spec, images = val_image_files(data)
    chosen = tuple(images[:max_images] if max_images else images)
    digest = hashlib.sha256()
    for image, label in zip(chosen, img2label_paths(list(chosen))):
        digest.update(Path(image).name.encode() + b"\0")
        digest.update(Path(label).read_bytes() if Path(label).is_file() else b"<no label>")
    return ValSubset(spec, chosen, digest.hexdigest())


def write_val_subset(subset: ValSubset, folder: Path) -> Path:
    """A dataset YAML whose val split is a list file of ``subset``'s images; the train entry is the original's."""
    import yaml

    listing = write_text_atomic(folder / "val_images.txt", "".join(f"{image}\n" for image in subset.images))
    spec = subset.spec
    train = spec["train"] if isinstance(spec["train"], (str, list)) else str(spec["train"])
    content = {
        "path": str(folder.resolve()),
        "train": train,
        "val": str(listing.resolve()),
        "nc": spec["nc"],
        "names": dict(spec["names"]),
    }
    return write_text_atomic(folder / "dataset.yaml", yaml.safe_dump(content, sort_keys=False))


class TrainerLikeValidator:
    """Ultralytics' ``DetectionValidator`` with the trainer's val settings; the dataloader is built once."""

    def __init__(self, data_yaml: Path, imgsz: int, batch: int, device: str, save_dir: Path) -> None:
        self.args = {
            "data": str(data_yaml),
            "imgsz": imgsz,
            "batch": batch,
            "device": device,
            "mode": "val",
            "task": "detect",
            "nms": False,
            "rect": False,
            "plots": False,
            "save_json": False,
            "verbose": False,
        }
        self.save_dir = save_dir
        self.dataloader = None

    def map50_95(self, model: Any) -> float:
        """val mAP50-95 of ``model`` (the validator fuses it in place: pass a copy you do not need back)."""
        from ultralytics.models.yolo.detect import DetectionValidator

        with _quiet_ultralytics():
            validator = DetectionValidator(dataloader=self.dataloader, save_dir=self.save_dir, args=dict(self.args))
            validator(model=model)
        self.dataloader = validator.dataloader
        return float(validator.metrics.box.map)


class _quiet_ultralytics:
    """Raise Ultralytics' logger to WARNING for one validation (its per-run tables would bury the progress lines)."""

    def __enter__(self) -> None:
        import logging

        from ultralytics.utils import LOGGER

        self._logger, self._level = LOGGER, LOGGER.level
        LOGGER.setLevel(logging.WARNING)

    def __exit__(self, *exc: object) -> None:
        self._logger.setLevel(self._level)


# ----------------------------------------------------------------------------------------------
# Files: csv, settings, resume
# ----------------------------------------------------------------------------------------------
def read_rows(path: Path) -> list[SweepRow]:
    """Rows of an existing ``sensitivity.csv`` (none when it does not exist)."""
    if not path.is_file():
        return []
    rows = []
    with open(path, newline="", encoding="utf-8") as handle:
        for record in csv.DictReader(handle):
            bits = int(record["bits"]) if record["bits"] else None
            rows.append(
                SweepRow(
                    record["unit"],
                    record["kind"],
                    int(record["params"]),
                    bits,
                    float(record["mAP50_95"]),
                    float(record["drop"]),
                )
            )
    return rows


def write_rows(path: Path, rows: Sequence[SweepRow]) -> Path:
    """Write ``sensitivity.csv`` atomically (references first, then units in measurement order)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        bits = "" if row.bits is None else row.bits
        writer.writerow(
            [row.unit, row.kind, row.params, bits, f"{row.mAP50_95:.{CSV_DECIMALS}f}", f"{row.drop:.{CSV_DECIMALS}f}"]
        )
    return write_text_atomic(path, buffer.getvalue())


def check_or_save_settings(path: Path, settings: dict[str, Any], csv_path: Path) -> None:
    """First run: save ``settings``. Rerun: refuse when a compared setting differs, naming each difference."""
    if not path.is_file():
        if csv_path.is_file():
            raise SweepInputError(
                f"{csv_path} exists without {path.name}; its settings are unknown: delete it or choose another --out"
            )
        write_json_atomic(path, settings)
        return
    saved = read_json(path)
    differences = [
        f"{key}: {saved.get(key)!r} then, {settings[key]!r} now"
        for key in COMPARED_SETTINGS
        if saved.get(key) != settings[key]
    ]
    if differences:
        raise SweepInputError(
            f"{path}: this sweep was measured with other settings ({'; '.join(differences)}); rerun with the "
            "earlier settings to resume, or choose another --out"
        )


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


# ----------------------------------------------------------------------------------------------
# Plot
# ----------------------------------------------------------------------------------------------
def plot_sensitivity(path: Path, rows: Sequence[SweepRow], high_bit_units: set[str], bits: int) -> Path:
    """Sorted drop bars (8-bit units of the mixed scheme highlighted), reference lines, parameter share per unit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    refs = {row.unit: row for row in rows if row.kind == REFERENCE_KIND}
    units = sorted((row for row in rows if row.kind != REFERENCE_KIND), key=lambda row: -row.drop)
    total = sum(row.params for row in units) or 1
    x = range(len(units))
    width = max(8.0, 0.28 * len(units))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(width, 7.5), sharex=True, height_ratios=(3, 1))
    colors = ["tab:red" if row.unit in high_bit_units else "tab:blue" for row in units]
    top.bar(x, [row.drop for row in units], color=colors)
    top.axhline(0.0, color="black", linewidth=0.8, label=f"FP (mAP50-95 {refs[FP_REFERENCE].mAP50_95:.4f})")
    if ALL_REFERENCE in refs:
        all_row = refs[ALL_REFERENCE]
        top.axhline(
            all_row.drop,
            color="tab:orange",
            linestyle="--",
            label=f"all units at {bits} bits (mAP50-95 {all_row.mAP50_95:.4f}, drop {all_row.drop:+.4f})",
        )
    handles, _ = top.get_legend_handles_labels()
    handles += [
        Patch(color="tab:red", label=f"unit kept at {HIGH_BITS} bits by the mixed scheme"),
        Patch(color="tab:blue", label=f"unit at {bits} bits in the mixed scheme"),
    ]
    top.set_ylabel(f"mAP50-95 drop (FP - unit alone at {bits} bits)")
    top.set_title(f"Weight-quantization sensitivity: one unit at {bits} bits, the rest float")
    low, high = top.get_ylim()
    top.set_ylim(low, high + 0.35 * (high - low))  # headroom: the legend must not hide the reference line
    top.legend(handles=handles, loc="upper right", fontsize=8)
    bottom.bar(x, [100.0 * row.params / total for row in units], color="tab:gray")
    bottom.set_ylabel("params %")
    bottom.set_xticks(list(x), [row.unit.removeprefix("model.") for row in units], rotation=90, fontsize=7)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return path


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
