"""Experiment variants: what one row of the comparison is, parsed from its name (torch-free).

A variant name says how a model is obtained; the run config lists them (``variants``):

* ``fp16`` - the float baseline, trained from scratch (FP16/AMP on CUDA, FP32 on CPU);
* ``fp16-ft`` - the same seed's ``fp16`` checkpoint fine-tuned with the fine-tune recipe, not quantized:
  the matched control of ``qat-<scheme>-ft`` (same start, same extra epochs, same recipe);
* ``qat-<scheme>`` - quantization-aware training from scratch with a scheme;
* ``qat-<scheme>-ft`` - QAT initialised from the same seed's ``fp16`` checkpoint (fine-tuning);
* ``ptq-<scheme>`` - post-training quantization of the same seed's ``fp16`` checkpoint (a scheme that
  quantizes activations, e.g. ``w8a8``, calibrates them on train images);
* ``ptq-<scheme>-ft`` - the same PTQ of the same seed's ``fp16-ft`` checkpoint (fine-tuned in float, then
  quantized): the equal-training-budget control of ``qat-<scheme>-ft``, so ``fp16-ft`` must be listed too;
* ``ortq-w8a8`` / ``nncf-w8a8`` - the int8 tools users pick (ONNX Runtime's ``quantize_static``, NNCF's PTQ)
  applied to the same seed's ``fp16`` float32 ONNX, calibrated on the same train images.

Which ``fp16`` checkpoint (``last.pt`` or ``best.pt``) the run's ``checkpoint_policy`` decides
(:mod:`auto_quantize_model.runs.checkpoint_policy`). Each variant is compared with its matched
baseline (:meth:`Variant.baseline`): a quantized fine-tune and PTQ of ``fp16-ft`` with ``fp16-ft``,
everything else with ``fp16``.

``<scheme>`` is a named scheme (``w4a16``, ``w4a16-fl8``, ``w8a8``, ...) or a path to a scheme JSON file;
the folder and row name use the scheme's own ``name`` (``qat-<scheme.name>``). Each variant is
exported in its weight formats and each file is evaluated: the baseline as float32 (the
comparison) and float16 (the fair size baseline), weight-only quantized variants as QCDQ (the spec's
artifact) and native INT4, variants with quantized activations as QDQ (what integer runtimes run).
``qat-<scheme>-ft`` of a scheme with activations starts from the seed's ``ptq-<scheme>`` checkpoint (its
calibrated activation ranges), so that variant must be listed too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from auto_quantize_model.quant.scheme import QuantScheme, resolve_scheme

FP_VARIANT = "fp16"
FP_FT_VARIANT = "fp16-ft"
BASELINE_TOOLS = ("ortq", "nncf")  # the int8 tools users pick, applied to the FP ONNX (onnx_io.baselines)
KINDS = ("fp", "fp-ft", "qat", "qat-ft", "ptq", "ptq-ft", *BASELINE_TOOLS)
FLOAT_KINDS = ("fp", "fp-ft")
FINE_TUNE_KINDS = ("fp-ft", "qat-ft")
# Post-training quantization (ptq.py, no training) -> the float variant whose checkpoint it quantizes.
PTQ_SOURCES = {"ptq": FP_VARIANT, "ptq-ft": FP_FT_VARIANT}
FT_SUFFIX = "-ft"
BASELINE_SCHEME = "w8a8"  # what the baseline tools make: int8 weights and activations
FP_FORMATS = ("float32", "float16")
QUANT_FORMATS = ("qcdq", "int4")
ACTIVATION_FORMATS = ("qdq",)
WEIGHT_FORMATS = FP_FORMATS + QUANT_FORMATS + ACTIVATION_FORMATS
# The format whose evaluation is the variant's headline number (weight-only schemes; activation schemes: qdq).
HEADLINE_FORMAT = {
    "fp": "float32",
    "fp-ft": "float32",
    "qat": "qcdq",
    "qat-ft": "qcdq",
    "ptq": "qcdq",
    "ptq-ft": "qcdq",
}
GRAMMAR = "fp16 | fp16-ft | qat-<scheme> | qat-<scheme>-ft | ptq-<scheme> | ptq-<scheme>-ft | ortq-w8a8 | nncf-w8a8"


class VariantError(ValueError):
    """A variant name is not of the grammar, or names an unknown scheme; the message says which."""


@dataclass(frozen=True)
class Baseline:
    """The row a variant is compared with, and whether it is the matched one (see :meth:`Variant.baseline`)."""

    name: str
    matched: bool


@dataclass(frozen=True)
class Variant:
    """One way of obtaining a model: its kind and, when quantized, its scheme."""

    kind: str
    scheme: QuantScheme | None = None
    scheme_spec: str | None = None  # as given: a scheme name or a JSON path

    @property
    def name(self) -> str:
        """Folder, stage and row name: ``fp16``, ``fp16-ft``, ``qat-w4a16``, ``qat-w4a16-ft``, ``ptq-w4a16``,
        ``ptq-w4a16-ft``."""
        if self.kind in FLOAT_KINDS:
            return FP_FT_VARIANT if self.fine_tunes else FP_VARIANT
        if self.kind in BASELINE_TOOLS:
            return f"{self.kind}-{BASELINE_SCHEME}"
        prefix = "ptq" if self.post_training else "qat"
        return f"{prefix}-{self.scheme.name}" + (FT_SUFFIX if self.kind.endswith(FT_SUFFIX) else "")

    @property
    def quantized(self) -> bool:
        return self.kind not in FLOAT_KINDS

    @property
    def fine_tunes(self) -> bool:
        """Trained from the seed's ``fp16`` checkpoint with the fine-tune recipe (``ft_hyp``, ``ft_epochs``)."""
        return self.kind in FINE_TUNE_KINDS

    @property
    def post_training(self) -> bool:
        """Quantized by ``ptq.py`` from a float checkpoint, no training: ``ptq-<scheme>`` and ``ptq-<scheme>-ft``."""
        return self.kind in PTQ_SOURCES

    @property
    def ptq_source(self) -> str | None:
        """The float variant whose checkpoint (of the same seed) a PTQ variant quantizes: ``fp16`` for
        ``ptq-<scheme>``, ``fp16-ft`` for ``ptq-<scheme>-ft``; ``None`` for every other variant."""
        return PTQ_SOURCES.get(self.kind)

    @property
    def needs_fp_checkpoint(self) -> bool:
        """PTQ and fine-tuning start from the same seed's ``fp16`` checkpoint (PTQ of ``fp16-ft`` through it)."""
        return self.fine_tunes or self.post_training

    @property
    def needs_fp_onnx(self) -> bool:
        """The baseline tools quantize the same seed's ``fp16`` float32 ONNX."""
        return self.kind in BASELINE_TOOLS

    @property
    def trains(self) -> bool:
        return self.kind in ("fp", "fp-ft", "qat", "qat-ft")

    @property
    def quantizes_activations(self) -> bool:
        return self.kind in BASELINE_TOOLS or (self.scheme is not None and self.scheme.quantizes_activations)

    @property
    def integer_weights_and_activations(self) -> bool:
        """8-bit weights and activations everywhere quantized: what an int8 runtime executes as such."""
        if self.kind in BASELINE_TOOLS:
            return True
        return self.scheme is not None and self.scheme.runs_as_int8

    @property
    def weight_formats(self) -> tuple[str, ...]:
        if self.quantizes_activations:
            return ACTIVATION_FORMATS
        return QUANT_FORMATS if self.quantized else FP_FORMATS

    @property
    def headline_format(self) -> str:
        return ACTIVATION_FORMATS[0] if self.quantizes_activations else HEADLINE_FORMAT[self.kind]

    @property
    def calibration_variant(self) -> str | None:
        """The ``ptq-<scheme>`` whose calibrated checkpoint a ``qat-<scheme>-ft`` with activations starts from."""
        return f"ptq-{self.scheme.name}" if self.kind == "qat-ft" and self.quantizes_activations else None

    def baseline(self, names_in_run: Iterable[str]) -> Baseline | None:
        """``fp16-ft`` for a quantized fine-tune and for PTQ of ``fp16-ft``, ``fp16`` for everything else;
        ``None`` for ``fp16`` itself.

        A quantized fine-tune trained more epochs than ``fp16``, in a phase (low lr, mosaic off) ``fp16`` never
        had; only ``fp16-ft`` had the same (``ptq-<scheme>-ft`` quantizes ``fp16-ft`` itself). Without ``fp16-ft``
        in the run it falls back to ``fp16``, unmatched (:func:`parse_variants` refuses a ``ptq-<scheme>-ft``
        without ``fp16-ft``).
        """
        if self.kind == "fp":
            return None
        if self.kind == "qat-ft" or self.ptq_source == FP_FT_VARIANT:
            matched = FP_FT_VARIANT in set(names_in_run)
            return Baseline(FP_FT_VARIANT if matched else FP_VARIANT, matched)
        return Baseline(FP_VARIANT, True)


def eval_runtimes(
    variant: Variant, weights_format: str, configured: list[str] | tuple[str, ...], variants: list[Variant]
) -> tuple[str, ...]:
    """The runtimes that score one file: ONNX Runtime always; OpenVINO, when ``configured`` (profile key
    ``eval_runtimes``) has it, for every file whose weights and activations are all int8 and, when ``variants`` hold
    such a file, for the FP32 file it is compared with."""
    int8_run = any(v.integer_weights_and_activations for v in variants)
    fp32 = variant.kind == "fp" and weights_format == "float32"
    on_openvino = variant.integer_weights_and_activations or (fp32 and int8_run)
    return ("onnxruntime", "openvino") if on_openvino and "openvino" in configured else ("onnxruntime",)


def parse_variant(text: str) -> Variant:
    """``"qat-w4a16-ft"`` -> ``Variant("qat-ft", <w4a16>)``, ``"ptq-w8a8-ft"`` -> ``Variant("ptq-ft", <w8a8>)``;
    errors name the grammar and known schemes."""
    text = str(text).strip()
    if text == FP_VARIANT:
        return Variant("fp")
    if text == FP_FT_VARIANT:
        return Variant("fp-ft")
    prefix, sep, rest = text.partition("-")
    if prefix in BASELINE_TOOLS:
        if rest != BASELINE_SCHEME:
            baseline = f"{prefix}-{BASELINE_SCHEME}"
            raise VariantError(f"variant {text!r}: the {prefix} baseline is {baseline} (grammar: {GRAMMAR})")
        return Variant(prefix)
    if not sep or prefix not in ("qat", "ptq") or not rest:
        raise VariantError(f"variant {text!r} is not one of {GRAMMAR}")
    kind = prefix
    if rest.endswith(FT_SUFFIX) and not _is_scheme(rest):
        kind, rest = f"{prefix}{FT_SUFFIX}", rest[: -len(FT_SUFFIX)]
    try:
        scheme = resolve_scheme(rest)
    except ValueError as error:
        raise VariantError(f"variant {text!r}: {error} (grammar: {GRAMMAR})") from None
    return Variant(kind, scheme, rest)


def _is_scheme(spec: str) -> bool:
    """True when ``spec`` itself names a scheme (so a scheme whose name ends in ``-ft`` stays whole)."""
    try:
        resolve_scheme(spec)
    except ValueError:
        return False
    return True


def parse_variants(texts: list[str]) -> list[Variant]:
    """Parse a variant list; refuse duplicates, PTQ/fine-tune variants without the ``fp16`` baseline and
    ``ptq-<scheme>-ft`` without the ``fp16-ft`` it quantizes."""
    variants = [parse_variant(text) for text in texts]
    names = [variant.name for variant in variants]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise VariantError(f"variants {texts}: {duplicates} listed more than once")
    for variant in variants:  # PTQ of fp16-ft needs it listed (fp16 itself: the check below, for all that need it)
        if variant.ptq_source not in (None, FP_VARIANT, *names):
            raise VariantError(
                f"variant {variant.name} quantizes the same seed's {variant.ptq_source} checkpoint, but "
                f"{variant.ptq_source} is not among the variants {names}; add {variant.ptq_source}"
            )
    needing = [variant.name for variant in variants if variant.needs_fp_checkpoint or variant.needs_fp_onnx]
    if needing and FP_VARIANT not in names:
        raise VariantError(
            f"variants {needing} start from the same seed's {FP_VARIANT} checkpoint, but {FP_VARIANT} is not among "
            f"the variants {names}; add {FP_VARIANT}"
        )
    for variant in variants:
        if variant.calibration_variant and variant.calibration_variant not in names:
            raise VariantError(
                f"variant {variant.name} starts from the calibrated {variant.calibration_variant} checkpoint; "
                f"add {variant.calibration_variant} to the variants"
            )
    # The baseline trains first (PTQ and fine-tuning need its checkpoint), then its fine-tuned control, then the
    # activation calibrations (fine-tuning with activations starts from them); otherwise the listed order.
    return sorted(variants, key=lambda v: (v.kind != "fp", v.kind != "fp-ft", not _calibrates(v)))


def _calibrates(variant: Variant) -> bool:
    return variant.kind == "ptq" and variant.quantizes_activations
