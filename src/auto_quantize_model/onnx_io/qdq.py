"""QDQ ONNX for integer runtimes: Brevitas' QCDQ export of an activation-quantized model, made plain QDQ.

Brevitas (0.13.4) writes every weight as ``int8 initializer -> Clip(-m, m) -> DequantizeLinear``, even at 8 bits
where the codes already lie in ``[-127, 127]``. OpenVINO's low-precision transformations do not see through that
Clip: every convolution of a W8A8 QCDQ file was measured running in bf16/f32. :func:`integer_runtime_qdq`
folds each weight Clip into its constant codes (a Clip of a constant is a constant: where every code already lies
inside the range it is the identity; a checkpoint saved in fp16 can hold a few codes one step outside, which
the Clip clamps and the fold clamps the same way), keeping the opset and the activations' ``QuantizeLinear ->
DequantizeLinear`` pairs, so the file has the ``DQ(x), DQ(w) -> Conv`` pattern integer runtimes execute; the codes
every DequantizeLinear sees are checked equal and ONNX Runtime must give identical outputs. Weights of at most 4
bits (W4A8) are stored as packed INT4 at opset 21, by the same checked rewrite as the W4A16 INT4 files
(:mod:`~auto_quantize_model.onnx_io.int4`); no runtime here runs INT4 x INT8 convolutions as such, so a W4A8 file
gains size, not speed.

:func:`integer_runtime_qdq` does that and also stores every signed activation pair (int8, zero point 0, what the
Brevitas model and TensorRT use) as uint8 with zero point 128: the same integers shifted, so the same numbers
(ONNX Runtime's outputs are checked identical). OpenVINO 2026.4's CPU plugin runs the signed form of this graph
wrongly (measured on the demo's ptq-w8a8: scores off by up to 0.42 against ONNX Runtime, mAP50-95 0.252 vs 0.328;
the first wrong layer reads a Split of a signed Q/DQ) and the uint8 form right (0.03, within rounding flips).

:func:`openvino_int8_report` compiles a file with OpenVINO's CPU plugin and reads, from the runtime model, the
precision each executed convolution runs in, weighted by its multiply-accumulates.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

INTEGER_PRECISIONS = ("u8", "i8")  # OpenVINO runtimePrecision of a convolution that runs on integer kernels
MIN_INT8_MAC_SHARE = 0.95  # the target: OpenVINO runs at least this share of the conv MACs in int8


class QDQConversionError(ValueError):
    """The QCDQ file cannot be made plain QDQ; the message names the file and the fix."""


@dataclass(frozen=True)
class QDQConversionResult:
    """What :func:`integer_runtime_qdq_file` did."""

    source: str
    opset: int
    clips_removed: int
    activations_to_uint8: int  # signed activation Q/DQ nodes stored as uint8 with zero point 128 (same numbers)
    codes_clamped: int  # codes that lay outside their Clip range, now stored clamped (what the Clip computed)
    chains_left_as_qcdq: int  # codes or Clip shared with other nodes: left untouched
    activation_quantizers: int  # QuantizeLinear nodes (the quantized activations)
    int4_weights: int = 0  # weights of at most 4 bits stored as packed INT4 (W4A8; the file is then opset 21)
    max_abs_output_diff: float | None = None  # ONNX Runtime CPU, QCDQ vs QDQ
    onnxruntime_version: str | None = None


def integer_runtime_qdq(proto: Any, source: str = "model") -> tuple[Any, QDQConversionResult]:
    """A copy of ``proto`` with every weight Clip folded into its codes (the codes each DQ sees are checked equal),
    4-bit weight codes packed as INT4 (opset 21; W4A8) and the signed activation Q/DQ pairs stored as uint8 with
    zero point 128."""
    import onnx

    from auto_quantize_model.onnx_io.int4 import (
        _check_same_codes,
        _drop_unused_initializers,
        _initializers,
        default_opset,
        find_qcdq_weight_chains,
    )

    chains = find_qcdq_weight_chains(proto)
    if not chains:
        raise QDQConversionError(f"{source}: no 'int8 initializer -> Clip -> DequantizeLinear' weight chains")
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    clamped = _clamp_codes_to_clips(model)
    model, int4_weights = _pack_int4_weights(model, source)
    removed = _drop_weight_clips(model)
    graph, inits = model.graph, _initializers(model.graph)
    shifted, old_zero_points = _activations_to_uint8(graph, inits)
    _drop_unused_initializers(graph, {name for chain in removed for name in chain.clip.input[1:]} | old_zero_points)
    _check_same_codes(proto, model, source)
    onnx.checker.check_model(model, full_check=True)
    quantizers = sum(node.op_type == "QuantizeLinear" for node in graph.node)
    kept = len(find_qcdq_weight_chains(model))
    result = QDQConversionResult(
        source, default_opset(model), len(chains) - kept, shifted, clamped, kept, quantizers, int4_weights
    )
    return model, result


def _single_use_chains(model: Any) -> list[Any]:
    """The weight chains whose codes and Clip output nothing else reads (folding them changes no other node)."""
    from auto_quantize_model.onnx_io.int4 import _consumers, find_qcdq_weight_chains

    uses = _consumers(model.graph)
    return [
        chain
        for chain in find_qcdq_weight_chains(model)
        if uses[chain.clip.output[0]] == 1 and uses[chain.codes_name] == 1
    ]


def _clamp_codes_to_clips(model: Any) -> int:
    """Store each single-use chain's codes clamped to its Clip range (what the Clip computes); returns how many
    codes changed. A checkpoint saved in fp16 can hold a few codes one step outside the range."""
    import onnx

    from auto_quantize_model.onnx_io.int4 import _initializers

    inits, clamped = _initializers(model.graph), 0
    for chain in _single_use_chains(model):
        codes = onnx.numpy_helper.to_array(inits[chain.codes_name])
        folded = np.clip(codes, chain.low, chain.high).astype(codes.dtype)
        clamped += int((folded != codes).sum())
        inits[chain.codes_name].CopyFrom(onnx.numpy_helper.from_array(folded, chain.codes_name))
    return clamped


def _pack_int4_weights(model: Any, source: str) -> tuple[Any, int]:
    """Weights of at most 4 bits (W4A8) go to packed INT4 initializers at opset 21 via the checked W4A16 rewrite
    (:func:`~auto_quantize_model.onnx_io.int4.convert_qcdq_to_int4`, which also drops their Clips); a file without
    such weights keeps its opset and is returned as is. Returns the model and how many weights are INT4."""
    from auto_quantize_model.onnx_io.int4 import (
        INT4_OPSET,
        Int4ConversionError,
        convert_qcdq_to_int4,
        default_opset,
        find_qcdq_weight_chains,
    )

    if not any(chain.fits_int4 for chain in find_qcdq_weight_chains(model)):
        return model, 0
    try:
        packed, result = convert_qcdq_to_int4(model, opset=max(INT4_OPSET, default_opset(model)), source=source)
    except Int4ConversionError as error:
        raise QDQConversionError(f"{error} (packing the 4-bit weights of a QDQ export)") from error
    return packed, result.int4_weights


def _drop_weight_clips(model: Any) -> list[Any]:
    """Point each single-use chain's DequantizeLinear at its (already clamped) codes and remove the Clip."""
    removed = _single_use_chains(model)
    for chain in removed:
        chain.dequantize.input[0] = chain.codes_name
        model.graph.node.remove(chain.clip)
    return removed


def _activations_to_uint8(graph: Any, inits: dict[str, Any]) -> tuple[int, set[str]]:
    """Point every activation QuantizeLinear, and the DequantizeLinear it feeds, with an int8 zero point at a uint8
    copy shifted by 128; returns how many nodes changed and the names they no longer read.

    Activations narrower than 8 bits are exported ``Q -> Clip(min, max) -> DQ`` (the Clip keeps the codes in range):
    the DequantizeLinear behind such a Clip is shifted too, and so are the Clip's bounds.
    """
    import onnx

    quantizers = [node for node in graph.node if node.op_type == "QuantizeLinear"]
    outputs = {node.output[0] for node in quantizers}
    clips = [node for node in graph.node if node.op_type == "Clip" and node.input[0] in outputs]
    read = outputs | {clip.output[0] for clip in clips}
    pairs = quantizers + [n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in read]
    made: dict[str, str] = {}
    for node in pairs:
        name = node.input[2] if len(node.input) > 2 else ""
        zero_point = onnx.numpy_helper.to_array(inits[name]) if name in inits else None
        if zero_point is None or zero_point.dtype != np.int8:
            continue  # already unsigned (the image) or not a constant initializer: left as exported
        _add_shifted_copy(graph, name, zero_point, made)
        node.input[2] = made[name]
    now_uint8 = {node.output[0] for node in quantizers if len(node.input) > 2 and node.input[2] in made.values()}
    shifted_clips = [clip for clip in clips if clip.input[0] in now_uint8]
    for clip in shifted_clips:
        for index in (1, 2):
            bound = clip.input[index] if len(clip.input) > index else ""
            if bound not in inits:
                raise QDQConversionError(f"Clip {clip.name!r} of an activation has no constant bound; re-export")
            _add_shifted_copy(graph, bound, onnx.numpy_helper.to_array(inits[bound]), made)
            clip.input[index] = made[bound]
    _forget_value_types(graph, now_uint8 | {clip.output[0] for clip in shifted_clips})
    return sum(node.input[2] in made.values() for node in pairs if len(node.input) > 2), set(made)


def _add_shifted_copy(graph: Any, name: str, values: np.ndarray, made: dict[str, str]) -> None:
    """Add ``name + "_uint8"``: the int8 ``values`` + 128 as uint8 (the same numbers once the zero point is too)."""
    import onnx

    if name not in made:
        made[name] = f"{name}_uint8"
        shifted = (values.astype(np.int16) + 128).astype(np.uint8)
        graph.initializer.append(onnx.numpy_helper.from_array(shifted, made[name]))


def _forget_value_types(graph: Any, names: set[str]) -> None:
    """Drop the recorded types of values that are now uint8 (the opset upgrade of a W4A8 file records them as int8;
    shape inference re-derives them)."""
    for info in [info for info in graph.value_info if info.name in names]:
        graph.value_info.remove(info)


def integer_runtime_qdq_file(
    src: str | os.PathLike, dst: str | os.PathLike, check_inputs: np.ndarray
) -> QDQConversionResult:
    """:func:`integer_runtime_qdq` from file to file (atomic); ONNX Runtime must give identical outputs."""
    from dataclasses import replace

    import onnx
    import onnxruntime as ort

    from auto_quantize_model.onnx_io.int4 import max_output_difference
    from auto_quantize_model.utils.io import atomic_output

    src, dst = Path(src), Path(dst)
    model, result = integer_runtime_qdq(onnx.load(str(src)), str(src))
    with atomic_output(dst) as tmp:
        onnx.save(model, str(tmp))
        diff = max_output_difference(src, tmp, check_inputs)
        if diff != 0.0:
            raise QDQConversionError(
                f"{dst}: ONNX Runtime outputs differ from the QCDQ file by {diff:.3g} after the QDQ rewrite; "
                "nothing was written, this is a bug"
            )
    return replace(result, max_abs_output_diff=diff, onnxruntime_version=ort.__version__)


# ----------------------------------------------------------------------------------------------
# OpenVINO: which convolutions run in integer
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OpenVINOPrecisionReport:
    """Executed convolutions of OpenVINO's CPU runtime model, by ``runtimePrecision``, with their MACs."""

    openvino_version: str
    device: str
    inference_precision_hint: str
    convolutions: dict[str, int]  # precision -> executed convolutions
    macs: dict[str, int]  # precision -> multiply-accumulates per image
    int8_mac_share: float
    float_convolutions: list[str] = field(default_factory=list)  # friendly names of those not in u8/i8

    @property
    def meets_target(self) -> bool:
        return self.int8_mac_share >= MIN_INT8_MAC_SHARE

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {**asdict(self), "target_int8_mac_share": MIN_INT8_MAC_SHARE, "meets_target": self.meets_target}


def _macs(op: Any) -> int:
    """Multiply-accumulates of one runtime Convolution: output elements x (input channels per group x kernel)."""
    output = op.get_output_partial_shape(0).to_shape()
    weights = op.input_value(1).get_partial_shape().to_shape()  # [O, I, kh, kw] or grouped [G, O, I, kh, kw]
    return int(np.prod(list(output))) * int(np.prod(list(weights)[-3:]))


def _type_name(element_type: Any) -> str:
    return element_type.to_string() if hasattr(element_type, "to_string") else str(element_type)


def openvino_int8_report(path: str | os.PathLike, device: str = "CPU") -> OpenVINOPrecisionReport:
    """Compile ``path`` (static input shape) with OpenVINO and read each executed convolution's precision."""
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(str(path), device)
    convolutions: dict[str, int] = {}
    macs: dict[str, int] = {}
    float_convs = []
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        if info["layerType"].astype(str) != "Convolution":
            continue
        precision = info["runtimePrecision"].astype(str)
        convolutions[precision] = convolutions.get(precision, 0) + 1
        macs[precision] = macs.get(precision, 0) + _macs(op)
        if precision not in INTEGER_PRECISIONS:
            float_convs.append(op.get_friendly_name())
    total = sum(macs.values())
    integer = sum(macs.get(p, 0) for p in INTEGER_PRECISIONS)
    return OpenVINOPrecisionReport(
        ov.__version__,
        device,
        _type_name(compiled.get_property("INFERENCE_PRECISION_HINT")),
        dict(sorted(convolutions.items())),
        dict(sorted(macs.items())),
        integer / total if total else 0.0,
        float_convs,
    )
