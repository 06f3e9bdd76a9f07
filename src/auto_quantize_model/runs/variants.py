"""Experiment variants: what one row of the comparison is, parsed from its name (torch-free).

A variant name says how a model is obtained; the run config lists them (``variants``):

* ``fp16`` - the float baseline, trained from scratch (FP16/AMP on CUDA, FP32 on CPU);
* ``qat-<scheme>`` - quantization-aware training from scratch with a scheme;
* ``qat-<scheme>-ft`` - QAT initialised from the same seed's ``fp16`` ``best.pt`` (fine-tuning);
* ``ptq-<scheme>`` - weight-only post-training quantization of the same seed's ``fp16`` ``best.pt``.

``<scheme>`` is a named scheme (``w4a16``, ``w4a16-fl8``, ...) or a path to a scheme JSON file;
the folder and row name use the scheme's own ``name`` (``qat-<scheme.name>``). Each variant is
exported in two weight formats and each file is evaluated: the baseline as float32 (the
comparison) and float16 (the fair size baseline), quantized variants as QCDQ (the spec's
artifact) and native INT4.
"""

from __future__ import annotations

from dataclasses import dataclass

from auto_quantize_model.quant.scheme import QuantScheme, resolve_scheme

FP_VARIANT = "fp16"
KINDS = ("fp", "qat", "qat-ft", "ptq")
FT_SUFFIX = "-ft"
FP_FORMATS = ("float32", "float16")
QUANT_FORMATS = ("qcdq", "int4")
WEIGHT_FORMATS = FP_FORMATS + QUANT_FORMATS
# The format whose evaluation is the variant's headline number.
HEADLINE_FORMAT = {"fp": "float32", "qat": "qcdq", "qat-ft": "qcdq", "ptq": "qcdq"}
GRAMMAR = "fp16 | qat-<scheme> | qat-<scheme>-ft | ptq-<scheme>"


class VariantError(ValueError):
    """A variant name is not of the grammar, or names an unknown scheme; the message says which."""


@dataclass(frozen=True)
class Variant:
    """One way of obtaining a model: its kind and, when quantized, its scheme."""

    kind: str
    scheme: QuantScheme | None = None
    scheme_spec: str | None = None  # as given: a scheme name or a JSON path

    @property
    def name(self) -> str:
        """Folder, stage and row name: ``fp16``, ``qat-w4a16``, ``qat-w4a16-ft``, ``ptq-w4a16``."""
        if self.kind == "fp":
            return FP_VARIANT
        prefix = "ptq" if self.kind == "ptq" else "qat"
        return f"{prefix}-{self.scheme.name}" + (FT_SUFFIX if self.kind == "qat-ft" else "")

    @property
    def quantized(self) -> bool:
        return self.kind != "fp"

    @property
    def needs_fp_checkpoint(self) -> bool:
        """PTQ and fine-tuning start from the same seed's ``fp16`` ``best.pt``."""
        return self.kind in ("qat-ft", "ptq")

    @property
    def trains(self) -> bool:
        return self.kind != "ptq"

    @property
    def weight_formats(self) -> tuple[str, ...]:
        return QUANT_FORMATS if self.quantized else FP_FORMATS

    @property
    def headline_format(self) -> str:
        return HEADLINE_FORMAT[self.kind]


def parse_variant(text: str) -> Variant:
    """``"qat-w4a16-ft"`` -> ``Variant("qat-ft", <w4a16>)``; errors name the grammar and known schemes."""
    text = str(text).strip()
    if text == FP_VARIANT:
        return Variant("fp")
    prefix, sep, rest = text.partition("-")
    if not sep or prefix not in ("qat", "ptq") or not rest:
        raise VariantError(f"variant {text!r} is not one of {GRAMMAR}")
    kind = prefix
    if prefix == "qat" and rest.endswith(FT_SUFFIX) and not _is_scheme(rest):
        kind, rest = "qat-ft", rest[: -len(FT_SUFFIX)]
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
    """Parse a variant list; refuse duplicates and PTQ/fine-tune variants without the ``fp16`` baseline."""
    variants = [parse_variant(text) for text in texts]
    names = [variant.name for variant in variants]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise VariantError(f"variants {texts}: {duplicates} listed more than once")
    needing = [variant.name for variant in variants if variant.needs_fp_checkpoint]
    if needing and FP_VARIANT not in names:
        raise VariantError(
            f"variants {needing} start from the same seed's {FP_VARIANT} best.pt, but {FP_VARIANT} is not among "
            f"the variants {names}; add {FP_VARIANT}"
        )
    # The baseline trains first: PTQ and fine-tuning need its checkpoint.
    return sorted(variants, key=lambda variant: variant.kind != "fp")
