"""Experiment variants: what one row of the comparison is, parsed from its name (torch-free).

A variant name says how a model is obtained; the run config lists them (``variants``):

* ``fp16`` - the float baseline, trained from scratch (FP16/AMP on CUDA, FP32 on CPU);
* ``fp16-ft`` - the same seed's ``fp16`` checkpoint fine-tuned with the fine-tune recipe, not quantized:
  the matched control of ``qat-<scheme>-ft`` (same start, same extra epochs, same recipe);
* ``qat-<scheme>`` - quantization-aware training from scratch with a scheme;
* ``qat-<scheme>-ft`` - QAT initialised from the same seed's ``fp16`` checkpoint (fine-tuning);
* ``ptq-<scheme>`` - weight-only post-training quantization of the same seed's ``fp16`` checkpoint.

Which ``fp16`` checkpoint (``last.pt`` or ``best.pt``) the run's ``checkpoint_policy`` decides
(:mod:`auto_quantize_model.runs.checkpoint_policy`). Each variant is compared with its matched
baseline (:meth:`Variant.baseline`): a fine-tune with ``fp16-ft``, everything else with ``fp16``.

``<scheme>`` is a named scheme (``w4a16``, ``w4a16-fl8``, ...) or a path to a scheme JSON file;
the folder and row name use the scheme's own ``name`` (``qat-<scheme.name>``). Each variant is
exported in two weight formats and each file is evaluated: the baseline as float32 (the
comparison) and float16 (the fair size baseline), quantized variants as QCDQ (the spec's
artifact) and native INT4.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from auto_quantize_model.quant.scheme import QuantScheme, resolve_scheme

FP_VARIANT = "fp16"
FP_FT_VARIANT = "fp16-ft"
KINDS = ("fp", "fp-ft", "qat", "qat-ft", "ptq")
FLOAT_KINDS = ("fp", "fp-ft")
FINE_TUNE_KINDS = ("fp-ft", "qat-ft")
FT_SUFFIX = "-ft"
FP_FORMATS = ("float32", "float16")
QUANT_FORMATS = ("qcdq", "int4")
WEIGHT_FORMATS = FP_FORMATS + QUANT_FORMATS
# The format whose evaluation is the variant's headline number.
HEADLINE_FORMAT = {"fp": "float32", "fp-ft": "float32", "qat": "qcdq", "qat-ft": "qcdq", "ptq": "qcdq"}
GRAMMAR = "fp16 | fp16-ft | qat-<scheme> | qat-<scheme>-ft | ptq-<scheme>"


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
        """Folder, stage and row name: ``fp16``, ``fp16-ft``, ``qat-w4a16``, ``qat-w4a16-ft``, ``ptq-w4a16``."""
        if self.kind in FLOAT_KINDS:
            return FP_FT_VARIANT if self.fine_tunes else FP_VARIANT
        prefix = "ptq" if self.kind == "ptq" else "qat"
        return f"{prefix}-{self.scheme.name}" + (FT_SUFFIX if self.kind == "qat-ft" else "")

    @property
    def quantized(self) -> bool:
        return self.kind not in FLOAT_KINDS

    @property
    def fine_tunes(self) -> bool:
        """Trained from the seed's ``fp16`` checkpoint with the fine-tune recipe (``ft_hyp``, ``ft_epochs``)."""
        return self.kind in FINE_TUNE_KINDS

    @property
    def needs_fp_checkpoint(self) -> bool:
        """PTQ and fine-tuning start from the same seed's ``fp16`` checkpoint."""
        return self.fine_tunes or self.kind == "ptq"

    @property
    def trains(self) -> bool:
        return self.kind != "ptq"

    @property
    def weight_formats(self) -> tuple[str, ...]:
        return QUANT_FORMATS if self.quantized else FP_FORMATS

    @property
    def headline_format(self) -> str:
        return HEADLINE_FORMAT[self.kind]

    def baseline(self, names_in_run: Iterable[str]) -> Baseline | None:
        """``fp16-ft`` for a quantized fine-tune, ``fp16`` for everything else; ``None`` for ``fp16`` itself.

        A quantized fine-tune trained more epochs than ``fp16``, in a phase (low lr, mosaic off) ``fp16`` never
        had; only ``fp16-ft`` had the same. Without ``fp16-ft`` in the run it falls back to ``fp16``, unmatched.
        """
        if self.kind == "fp":
            return None
        if self.kind == "qat-ft":
            matched = FP_FT_VARIANT in set(names_in_run)
            return Baseline(FP_FT_VARIANT if matched else FP_VARIANT, matched)
        return Baseline(FP_VARIANT, True)


def parse_variant(text: str) -> Variant:
    """``"qat-w4a16-ft"`` -> ``Variant("qat-ft", <w4a16>)``; errors name the grammar and known schemes."""
    text = str(text).strip()
    if text == FP_VARIANT:
        return Variant("fp")
    if text == FP_FT_VARIANT:
        return Variant("fp-ft")
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
            f"variants {needing} start from the same seed's {FP_VARIANT} checkpoint, but {FP_VARIANT} is not among "
            f"the variants {names}; add {FP_VARIANT}"
        )
    # The baseline trains first (PTQ and fine-tuning need its checkpoint), then its fine-tuned control.
    return sorted(variants, key=lambda variant: (variant.kind != "fp", variant.kind != "fp-ft"))
