"""Declarative quantization schemes: plain data, no torch, cheap to import.

A :class:`QuantScheme` says what to fake-quantize in a detector: weights (bit width, per-channel or
per-tensor scales, the scale method, per-layer overrides by role or glob pattern) and, optionally,
the inputs of the quantized convs (activation bit width, signedness, per-layer overrides; per-tensor
scales). Activation bit width ``None`` means float activations (W4A16, W8A16). It is frozen,
round-trips through JSON, is saved beside every QAT run and pickled into every checkpoint.
The run-config resolver imports this module to check a scheme before any stage runs; the torch
side (layers, model transformation) lives in :mod:`auto_quantize_model.quant.yolov10`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from auto_quantize_model.utils.io import read_json, write_json_atomic

# Role names a selector may use (resolved on a model by quant.yolov10.ROLES).
ROLE_NAMES = ("first_conv", "head_pred", "dfl")
GRANULARITIES = ("per_channel", "per_tensor")
# How a layer's weight scale is found (quant.yolov10.WeightQuantConv2d):
#   absmax - max|w| / max_code, recomputed from the weights on every forward (follows the weights while training);
#   mse    - the scale minimising the weight MSE (Brevitas' Int8WeightPerChannelFloatMSE grid), searched once when
#            the model is quantized and then fixed (for PTQ and fine-tuning from a trained float model);
#   lsq    - a learned scale (LSQ, Esser et al. 2020) initialised by ``lsq_init``, trained with LSQ's gradient scaling.
SCALINGS = ("absmax", "mse", "lsq")
LSQ_INITS = ("absmax", "mse")
MIN_BIT_WIDTH, MAX_BIT_WIDTH = 2, 8
# Activation keys of a scheme; a scheme without activation quantization leaves them out of its dict, so every
# weight-only scheme file and checkpoint reads and writes exactly as before they existed.
ACTIVATION_KEYS = ("act_bit_width", "act_signed", "act_overrides")
_GLOB_CHARS = frozenset("*?[")


# ----------------------------------------------------------------------------------------------
# Declarative scheme
# ----------------------------------------------------------------------------------------------
def _check_bit_width(bit_width: Any, where: str) -> None:
    """Reject non-integers (``True`` included) and widths outside Brevitas' narrow signed range."""
    if isinstance(bit_width, bool) or not isinstance(bit_width, int):
        raise ValueError(f"{where}: bit width must be an int, got {bit_width!r}")
    if not MIN_BIT_WIDTH <= bit_width <= MAX_BIT_WIDTH:
        raise ValueError(f"{where}: bit width {bit_width} outside [{MIN_BIT_WIDTH}, {MAX_BIT_WIDTH}]")


def _check_selector(selector: str, where: str) -> None:
    """A selector is a role name or a module-name pattern (``model.23.*``); a bare unknown word is a typo'd role."""
    if selector in ROLE_NAMES or "." in selector or _GLOB_CHARS & set(selector):
        return
    raise ValueError(
        f"{where}: {selector!r} is no role {ROLE_NAMES} and no module-name pattern (patterns look like 'model.23.*')"
    )


def check_quant_settings(bit_width: int, granularity: str, scaling: str, where: str = "weight quantizer") -> None:
    """Validate one layer's weight-quantizer settings; ``where`` names the bit-width key in the error."""
    _check_bit_width(bit_width, where)
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity {granularity!r} is not one of {GRANULARITIES}")
    if scaling not in SCALINGS:
        raise ValueError(f"scaling {scaling!r} is not one of {SCALINGS}")


@dataclass(frozen=True)
class QuantScheme:
    """What to fake-quantize in a detector, as plain data that round-trips through JSON.

    Every ``nn.Conv2d`` gets ``weight_bit_width`` bits, then ``layer_overrides`` are applied in
    order (later wins; ``None`` keeps the layer float), then everything in ``keep_float`` is float.
    ``scaling`` picks how scales are found (:data:`SCALINGS`); ``lsq_init`` how learned (``lsq``) scales start.
    A selector is a role name from :data:`ROLES` (``first_conv``, ``head_pred``, ``dfl``) or an
    ``fnmatch`` pattern over module names such as ``"model.23.cv3.*"``.
    ``source`` is the JSON file a scheme was loaded from (not serialized, not compared): errors found only
    when the scheme meets a model (an override matching no conv) name that file.

    Activations (:mod:`auto_quantize_model.quant.activations` places the quantizers): ``act_bit_width`` is the
    bit width of the input of every weight-quantized conv (``None``: float activations), then ``act_overrides``
    apply in order (selectors as above, ``None`` leaves that conv's input float). ``act_signed``: signed symmetric
    codes (zero point 0, what TensorRT requires), else unsigned. Scales are per tensor.
    """

    name: str
    weight_bit_width: int = 4
    granularity: str = "per_channel"
    scaling: str = "absmax"
    layer_overrides: tuple[tuple[str, int | None], ...] = ()
    keep_float: tuple[str, ...] = ("dfl",)
    lsq_init: str = "mse"
    act_bit_width: int | None = None
    act_signed: bool = True
    act_overrides: tuple[tuple[str, int | None], ...] = ()
    source: str | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        _check_list_shapes(self.layer_overrides, self.keep_float)
        _check_override_list(self.act_overrides, "act_overrides")
        # JSON hands back lists; normalise to tuples so schemes stay hashable and compare equal.
        object.__setattr__(self, "layer_overrides", tuple(tuple(item) for item in self.layer_overrides))
        object.__setattr__(self, "keep_float", tuple(self.keep_float))
        object.__setattr__(self, "act_overrides", tuple(tuple(item) for item in self.act_overrides))
        self._validate()
        self._validate_activations()

    @property
    def quantizes_activations(self) -> bool:
        """True when some conv input is quantized (``act_bit_width`` set, or an override gives some layer bits)."""
        return self.act_bit_width is not None or any(bits is not None for _, bits in self.act_overrides)

    @property
    def runs_as_int8(self) -> bool:
        """Activations quantized and every quantized weight and activation 8-bit: what int8 kernels execute as such
        (a W4A8 model holds 4-bit weights that no OpenVINO/TensorRT int8 conv takes)."""
        weights = [self.weight_bit_width, *(bits for _, bits in self.layer_overrides)]
        activations = [self.act_bit_width, *(bits for _, bits in self.act_overrides)]
        return self.quantizes_activations and all(bits in (8, None) for bits in weights + activations)

    def _validate(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name: the scheme name must be a non-empty string, got {self.name!r}")
        check_quant_settings(self.weight_bit_width, self.granularity, self.scaling, where="weight_bit_width")
        if self.lsq_init not in LSQ_INITS:
            raise ValueError(f"lsq_init {self.lsq_init!r} is not one of {LSQ_INITS}")
        for index, item in enumerate(self.layer_overrides):
            if len(item) != 2 or not isinstance(item[0], str) or not item[0]:
                raise ValueError(
                    f"layer_overrides[{index}]: a layer override must be (selector, bit_width or None), e.g. "
                    f'["model.23.*", 8], got {list(item)!r}'
                )
            if item[1] is not None:
                _check_bit_width(item[1], f"layer_overrides[{index}] ({item[0]!r})")
        if not all(isinstance(selector, str) and selector for selector in self.keep_float):
            raise ValueError(f"keep_float must hold selector strings, got {self.keep_float!r}")
        if "dfl" not in self.keep_float:
            # The DFL conv holds the fixed integers 0..15 that decode box distributions; it is not learned.
            raise ValueError("keep_float must include 'dfl': the DFL decoding conv stays float")

    def _validate_activations(self) -> None:
        if self.act_bit_width is not None:
            _check_bit_width(self.act_bit_width, "act_bit_width")
        if not isinstance(self.act_signed, bool):
            raise ValueError(f"act_signed: expected true or false, got {self.act_signed!r}")
        for index, (selector, bit_width) in enumerate(self.act_overrides):
            where = f"act_overrides[{index}]"
            _check_selector(selector, where)
            if bit_width is not None:
                _check_bit_width(bit_width, f"{where} ({selector!r})")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; :meth:`from_dict` inverts it."""
        return {
            "name": self.name,
            "weight_bit_width": self.weight_bit_width,
            "granularity": self.granularity,
            "scaling": self.scaling,
            "layer_overrides": [list(item) for item in self.layer_overrides],
            "keep_float": list(self.keep_float),
            "lsq_init": self.lsq_init,
            **(self._activation_dict() if self.quantizes_activations or self.act_overrides else {}),
        }

    def _activation_dict(self) -> dict[str, Any]:
        return {
            "act_bit_width": self.act_bit_width,
            "act_signed": self.act_signed,
            "act_overrides": [list(item) for item in self.act_overrides],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuantScheme:
        """Build a scheme from :meth:`to_dict` output; unknown or missing-name keys are errors."""
        if not isinstance(data, dict):
            raise ValueError(f"a scheme must be a JSON object with the keys of QuantScheme, got {type(data).__name__}")
        known = {f.name for f in fields(cls)} - {"source"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown QuantScheme keys {unknown}; known keys: {sorted(known)}")
        if "name" not in data:
            raise ValueError("QuantScheme dict lacks 'name'")
        return cls(**data)

    def save(self, path: str | Path) -> Path:
        """Write the scheme as JSON atomically (no truncated file on a crash)."""
        return write_json_atomic(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> QuantScheme:
        """Read a scheme written by :meth:`save` (or by hand); every error names the file and the key."""
        path = Path(path)
        try:
            scheme = cls.from_dict(read_json(path))
        except (ValueError, TypeError) as error:
            raise ValueError(f"quant scheme file {path}: {error}") from None
        object.__setattr__(scheme, "source", str(path))
        return scheme


def _check_override_list(overrides: Any, key: str) -> None:
    """Name the key when an override list is not a list of (selector, bit_width or None) pairs."""
    if isinstance(overrides, (str, bytes)) or not isinstance(overrides, (list, tuple)):
        raise ValueError(f"{key} must be a list of [selector, bit_width or None] pairs, got {overrides!r}")
    for index, item in enumerate(overrides):
        if isinstance(item, (str, bytes)) or not isinstance(item, (list, tuple)):
            raise ValueError(
                f"{key}[{index}]: a layer override must be (selector, bit_width or None), e.g. "
                f'["model.23.*", 8], got {item!r}'
            )
        if key != "layer_overrides" and (len(item) != 2 or not isinstance(item[0], str) or not item[0]):
            example = '["head_pred", 8]'
            raise ValueError(f"{key}[{index}]: expected [selector, bit_width or None], e.g. {example}, got {item!r}")


def _check_list_shapes(layer_overrides: Any, keep_float: Any) -> None:
    """Name the key when a list-valued key is not a list of the right items (before tuples are made of them)."""
    _check_override_list(layer_overrides, "layer_overrides")
    if isinstance(keep_float, (str, bytes)) or not isinstance(keep_float, (list, tuple)):
        raise ValueError(f'keep_float must be a list of selectors such as ["dfl"], got {keep_float!r}')


_FIRST_AND_HEAD = ("first_conv", "head_pred")
_FL8 = tuple((role, 8) for role in _FIRST_AND_HEAD)
_NAMED_SCHEMES: dict[str, QuantScheme] = {
    # Every conv but DFL at 4 bits.
    "w4a16": QuantScheme("w4a16"),
    # The stem conv (sees raw pixels) and the head's final prediction convs at 8 bits.
    "w4a16-fl8": QuantScheme("w4a16-fl8", layer_overrides=_FL8),
    # The same layers left float.
    "w4a16-flfp": QuantScheme("w4a16-flfp", layer_overrides=tuple((role, None) for role in _FIRST_AND_HEAD)),
    # Every conv but DFL at 8 bits: the sanity check of the PTQ path.
    "w8a16": QuantScheme("w8a16", weight_bit_width=8),
    # MSE-searched fixed scales; learned (LSQ) scales initialised from the MSE search.
    "w4a16-mse": QuantScheme("w4a16-mse", scaling="mse"),
    "w4a16-lsq": QuantScheme("w4a16-lsq", scaling="lsq"),
    "w4a16-fl8-mse": QuantScheme("w4a16-fl8-mse", scaling="mse", layer_overrides=_FL8),
    "w4a16-fl8-lsq": QuantScheme("w4a16-fl8-lsq", scaling="lsq", layer_overrides=_FL8),
    # Weights and the input of every quantized conv at 8 bits: what integer runtimes (OpenVINO, TensorRT) execute.
    "w8a8": QuantScheme("w8a8", weight_bit_width=8, act_bit_width=8),
    # 4-bit weights, 8-bit conv inputs (QDQ with INT4 weights; no integer-runtime speed claim).
    "w4a8": QuantScheme("w4a8", act_bit_width=8),
}
SCHEME_NAMES = tuple(_NAMED_SCHEMES)


def named_scheme(name: str) -> QuantScheme:
    """Return one of the project's schemes by name (see ``SCHEME_NAMES``)."""
    try:
        return _NAMED_SCHEMES[name]
    except KeyError:
        raise ValueError(f"unknown scheme {name!r}; known: {SCHEME_NAMES}") from None


def resolve_scheme(spec: str | os.PathLike) -> QuantScheme:
    """A scheme by name (``w4a16``) or from a JSON file written by :meth:`QuantScheme.save`.

    Errors name the value, the known names and, for a file, the file.
    """
    text = str(spec)
    if text.endswith(".json") or os.sep in text:
        path = Path(text)
        if not path.is_file():
            raise ValueError(f"quant scheme file {path} not found; pass a scheme name {SCHEME_NAMES} or a JSON path")
        return QuantScheme.load(path)  # its errors name the file and the key
    return named_scheme(text)
