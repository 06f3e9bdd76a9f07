"""The sensitivity sweep's model side: units of convs quantized together, the schemes that quantize one unit or
all of them (weights, or the convs' inputs), the mixed-precision schemes a sweep suggests, and the
``sensitivity.csv`` rows and settings file.

Units, the two sweeps and the mixed schemes are described in :mod:`auto_quantize_model.sensitivity`, the stage that
runs the sweep.
"""

from __future__ import annotations

import copy
import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auto_quantize_model.quant.scheme import QuantScheme
from auto_quantize_model.utils.io import read_json, write_json_atomic, write_text_atomic

GRANULARITIES = ("layer", "block")
REFERENCE_KIND = "reference"
FP_REFERENCE = "fp"  # the unquantized model
ALL_REFERENCE = "all"  # every unit at --bits
HIGH_BITS = 8  # what the mixed scheme keeps sensitive units at
SWEEPS = ("weights", "activations")  # what a sweep quantizes in the unit under test
WEIGHTS_SWEEP, ACTIVATIONS_SWEEP = SWEEPS
BASE_REFERENCE = "base"  # activations sweep: every conv's weights at ACT_SWEEP_WEIGHT_BITS, inputs float
# The activation placement quantizes only the inputs of weight-quantized convs (an integer conv needs both operands
# in integer), so an activations sweep cannot keep the unit's weights float: they sit at 8 bits, near-lossless
# (every conv's in the ``all`` and ``base`` references and the mixed scheme).
ACT_SWEEP_WEIGHT_BITS = 8


class SweepInputError(ValueError):
    """Bad sweep input or a rerun that does not match the earlier one; the message names the file/flag and the fix."""


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
    bits: int | None  # the swept quantity's bit width; None where it is float (the FP and base references)
    mAP50_95: float
    drop: float
    swept: str = WEIGHTS_SWEEP  # SWEEPS: what ``bits`` is the bit width of


@dataclass(frozen=True)
class MixedPrecisionPlan:
    """The mixed scheme and what it keeps at 8 bits."""

    scheme: QuantScheme
    high_bit_units: tuple[str, ...]
    low_bit_param_fraction: float  # share of the cost (weight / conv input elements) at the low bit width


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


def activation_unit_scheme(unit: SweepUnit, act_bits: int, scaling: str) -> QuantScheme:
    """Only ``unit``'s convs quantized: their inputs at ``act_bits``, their weights at 8 bits; the rest float.

    The weights cannot stay float: the placement quantizes only the inputs of weight-quantized convs. It quantizes
    each tensor once, on its producer, at the width of its widest reader: a tensor the unit's convs share with
    other convs (a Concat / Add / Upsample group, a C2f join) reaches those readers quantized too.
    """
    return QuantScheme(
        f"sens-act-{unit.name}",
        weight_bit_width=ACT_SWEEP_WEIGHT_BITS,
        scaling=scaling,
        layer_overrides=(("*", None), (unit.selector, ACT_SWEEP_WEIGHT_BITS)),
        act_overrides=((unit.selector, act_bits),),
    )


def activation_all_scheme(act_bits: int, scaling: str) -> QuantScheme:
    """Every conv's weights at 8 bits and every conv input at ``act_bits`` (``w8a8`` at 8)."""
    return QuantScheme(
        f"w{ACT_SWEEP_WEIGHT_BITS}a{act_bits}-all",
        weight_bit_width=ACT_SWEEP_WEIGHT_BITS,
        scaling=scaling,
        act_bit_width=act_bits,
    )


def activation_base_scheme(scaling: str) -> QuantScheme:
    """Every conv's weights at 8 bits, inputs float: what the 8-bit weights cost, all convs at once."""
    return QuantScheme(f"w{ACT_SWEEP_WEIGHT_BITS}a16-base", weight_bit_width=ACT_SWEEP_WEIGHT_BITS, scaling=scaling)


def quantized_copy(model: Any, scheme: QuantScheme) -> Any:
    """A quantized deep copy of ``model`` (which stays float: each unit starts from the FP weights)."""
    return quantized_copy_with_report(model, scheme)[0]


def quantized_copy_with_report(model: Any, scheme: QuantScheme) -> tuple[Any, Any]:
    """:func:`quantized_copy` and its ``QuantizationReport`` (where activation quantizers were placed)."""
    from auto_quantize_model.quant.yolov10 import quantize_model

    clone = copy.deepcopy(model)
    report = quantize_model(clone, scheme)
    return clone.eval(), report


def placement_record(unit: SweepUnit, report: Any) -> dict[str, Any]:
    """Which quantizers a unit's activation scheme placed and which convs read them, the unit's and others'."""
    activations = report.activations
    names = {quantizer["name"] for quantizer in activations.quantizers}
    readers = [conv for conv, source in activations.conv_inputs if source in names]
    return {
        "quantizers": sorted(names),
        "unit_convs_quantized": sum(conv in unit.convs for conv in readers),
        "unit_convs": len(unit.convs),
        "other_convs_reading_them": [conv for conv in readers if conv not in unit.convs],
    }


def conv_input_elements(model: Any, imgsz: int) -> dict[str, int]:
    """Elements of each quantizable conv's input for one ``imgsz`` square image: what its activation bits scale."""
    import torch

    clone = copy.deepcopy(model).eval()  # the head caches anchors per input shape: leave the sweep's model alone
    sizes: dict[str, int] = {}
    hooks = [
        clone.get_submodule(name).register_forward_pre_hook(
            lambda module, args, name=name: sizes.__setitem__(name, args[0][0].numel())
        )
        for name in quantizable_convs(model)
    ]
    try:
        with torch.no_grad():
            clone(torch.zeros(1, 3, imgsz, imgsz, device=next(clone.parameters()).device))
    finally:
        for hook in hooks:
            hook.remove()
    return sizes


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
    sizes = {unit.name: unit.params for unit in units}
    high, fraction = _promote(units, drops, sizes, low_bit_param_fraction, min_drop)
    name = f"w{bits}a16-mixed{round(low_bit_param_fraction * 100)}" + ("" if scaling == "absmax" else f"-{scaling}")
    scheme = QuantScheme(
        name, weight_bit_width=bits, scaling=scaling, layer_overrides=tuple((unit.selector, HIGH_BITS) for unit in high)
    )
    return MixedPrecisionPlan(scheme, tuple(unit.name for unit in high), fraction)


def activation_high_bits(act_bits: int) -> int | None:
    """What the mixed activation scheme keeps sensitive units' inputs at: 8 bits, or float when the sweep was at 8."""
    return HIGH_BITS if act_bits < HIGH_BITS else None


def mixed_activation_scheme(
    units: Sequence[SweepUnit],
    drops: dict[str, float],
    input_elements: dict[str, int],
    act_bits: int,
    scaling: str,
    low_bit_fraction: float,
    min_drop: float = 0.0,
) -> MixedPrecisionPlan:
    """:func:`mixed_precision_scheme` for an activations sweep: weights at 8 bits, conv inputs at ``act_bits``
    but the most sensitive units' at :func:`activation_high_bits`, while >= ``low_bit_fraction`` of the conv input
    elements (``input_elements``: per unit, at the sweep's imgsz) stay at ``act_bits``. A tensor shared by a kept
    unit and others is quantized at the wider width for all its readers (the placement's one quantizer per tensor).
    """
    high, fraction = _promote(units, drops, input_elements, low_bit_fraction, min_drop)
    kept = activation_high_bits(act_bits)
    name = f"w{ACT_SWEEP_WEIGHT_BITS}a{act_bits}-mixed{round(low_bit_fraction * 100)}"
    scheme = QuantScheme(
        name + ("" if scaling == "absmax" else f"-{scaling}"),
        weight_bit_width=ACT_SWEEP_WEIGHT_BITS,
        scaling=scaling,
        act_bit_width=act_bits,
        act_overrides=tuple((unit.selector, kept) for unit in high),
    )
    return MixedPrecisionPlan(scheme, tuple(unit.name for unit in high), fraction)


def _promote(
    units: Sequence[SweepUnit], drops: dict[str, float], sizes: dict[str, int], fraction: float, min_drop: float
) -> tuple[list[SweepUnit], float]:
    """The greedy of the mixed schemes: units kept high (module order) and the share of ``sizes`` left low."""
    if not 0.0 < fraction <= 1.0:
        raise SweepInputError(f"--w4-param-fraction (--low-bit-fraction) must be in (0, 1], got {fraction}")
    total = sum(sizes[unit.name] for unit in units)
    budget = (1.0 - fraction) * total
    sensitive = (unit for unit in units if drops.get(unit.name, 0.0) > max(min_drop, 0.0))
    ranked = sorted(sensitive, key=lambda unit: (-drops[unit.name], sizes[unit.name]))
    high: list[SweepUnit] = []
    used = 0
    for unit in ranked:
        if used + sizes[unit.name] <= budget:
            high.append(unit)
            used += sizes[unit.name]
    order = {unit.name: i for i, unit in enumerate(units)}
    high.sort(key=lambda unit: order[unit.name])  # module order reads better in the file
    return high, (1.0 - used / total if total else 1.0)


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


# ``swept`` came with the activations sweep: a csv without it (written before) holds a weights sweep.
CSV_COLUMNS = ("unit", "kind", "params", "bits", "mAP50_95", "drop", "swept")
CSV_DECIMALS = 6
# Settings a measurement depends on; a rerun with any of them different is refused. Batch and device are recorded
# but not compared: with square letterboxed batches neither changes the inputs.
COMPARED_SETTINGS = (
    "weights_sha256",
    "val_images_sha256",
    "sweep",
    "bits",
    "act_bits",
    "calib_images",
    "calib_images_sha256",
    "scaling",
    "granularity",
    "max_val_images",
    "imgsz",
)
# What a settings file written before the activations sweep existed means by the keys it lacks: a weights sweep.
LEGACY_SETTINGS = {"sweep": WEIGHTS_SWEEP, "act_bits": None, "calib_images": None, "calib_images_sha256": None}


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
                    record.get("swept") or WEIGHTS_SWEEP,
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
        value, drop = f"{row.mAP50_95:.{CSV_DECIMALS}f}", f"{row.drop:.{CSV_DECIMALS}f}"
        writer.writerow([row.unit, row.kind, row.params, bits, value, drop, row.swept])
    return write_text_atomic(path, buffer.getvalue())


def check_or_save_settings(path: Path, settings: dict[str, Any], csv_path: Path) -> None:
    """First run: save ``settings``. Rerun: refuse when a compared setting differs, naming each difference.

    A key the saved file lacks reads as :data:`LEGACY_SETTINGS` says (an older weights sweep resumes as one).
    """
    if not path.is_file():
        if csv_path.is_file():
            raise SweepInputError(
                f"{csv_path} exists without {path.name}; its settings are unknown: delete it or choose another --out"
            )
        write_json_atomic(path, settings)
        return
    saved = read_json(path)
    differences = [
        f"{key}: {saved.get(key, LEGACY_SETTINGS.get(key))!r} then, {settings[key]!r} now"
        for key in COMPARED_SETTINGS
        if saved.get(key, LEGACY_SETTINGS.get(key)) != settings[key]
    ]
    if differences:
        raise SweepInputError(
            f"{path}: this sweep was measured with other settings ({'; '.join(differences)}); rerun with the "
            "earlier settings to resume, or choose another --out"
        )
