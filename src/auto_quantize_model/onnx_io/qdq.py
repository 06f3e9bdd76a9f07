"""QDQ ONNX for integer runtimes: Brevitas' QCDQ export of an activation-quantized model, made plain QDQ.

Brevitas (0.13.4) writes every weight as ``int8 initializer -> Clip(-m, m) -> DequantizeLinear``, even at 8 bits
where the codes already lie in ``[-127, 127]``. OpenVINO's low-precision transformations do not see through that
Clip: every convolution of a W8A8 QCDQ file was measured running in bf16/f32. :func:`drop_identity_weight_clips`
removes each Clip that cannot change a code (every code already inside its range), keeping the opset and the
activations' ``QuantizeLinear -> DequantizeLinear`` pairs, so the file has the ``DQ(x), DQ(w) -> Conv`` pattern
integer runtimes execute; the weight codes read back equal and ONNX Runtime gives the same outputs (checked).

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
    """What :func:`drop_identity_weight_clips_file` did."""

    source: str
    opset: int
    clips_removed: int
    chains_left_as_qcdq: int  # codes outside their Clip range: the Clip changes codes and stays
    activation_quantizers: int  # QuantizeLinear nodes (the quantized activations)
    max_abs_output_diff: float | None = None  # ONNX Runtime CPU, QCDQ vs QDQ
    onnxruntime_version: str | None = None


def drop_identity_weight_clips(proto: Any, source: str = "model") -> tuple[Any, QDQConversionResult]:
    """A copy of ``proto`` without the weight Clips that are identities; the weight codes are checked equal."""
    import onnx

    from auto_quantize_model.onnx_io.int4 import (
        _check_same_codes,
        _consumers,
        _drop_unused_initializers,
        _initializers,
        default_opset,
        find_qcdq_weight_chains,
    )

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    graph, inits = model.graph, _initializers(model.graph)
    chains = find_qcdq_weight_chains(model)
    if not chains:
        raise QDQConversionError(f"{source}: no 'int8 initializer -> Clip -> DequantizeLinear' weight chains")
    removed = []
    for chain in chains:
        codes = onnx.numpy_helper.to_array(inits[chain.codes_name])
        uses = _consumers(graph)
        inside = chain.low <= int(codes.min()) and int(codes.max()) <= chain.high
        if inside and uses[chain.clip.output[0]] == 1 and uses[chain.codes_name] == 1:
            chain.dequantize.input[0] = chain.codes_name
            graph.node.remove(chain.clip)
            removed.append(chain)
    _drop_unused_initializers(graph, {name for chain in removed for name in chain.clip.input[1:]})
    _check_same_codes(proto, model, source)
    onnx.checker.check_model(model, full_check=True)
    quantizers = sum(node.op_type == "QuantizeLinear" for node in graph.node)
    kept = len(chains) - len(removed)
    return model, QDQConversionResult(source, default_opset(model), len(removed), kept, quantizers)


def drop_identity_weight_clips_file(
    src: str | os.PathLike, dst: str | os.PathLike, check_inputs: np.ndarray
) -> QDQConversionResult:
    """:func:`drop_identity_weight_clips` from file to file (atomic); ONNX Runtime must give identical outputs."""
    from dataclasses import replace

    import onnx
    import onnxruntime as ort

    from auto_quantize_model.onnx_io.int4 import max_output_difference
    from auto_quantize_model.utils.io import atomic_output

    src, dst = Path(src), Path(dst)
    model, result = drop_identity_weight_clips(onnx.load(str(src)), str(src))
    with atomic_output(dst) as tmp:
        onnx.save(model, str(tmp))
        diff = max_output_difference(src, tmp, check_inputs)
        if diff != 0.0:
            raise QDQConversionError(
                f"{dst}: ONNX Runtime outputs differ from the QCDQ file by {diff:.3g} after removing identity Clips; "
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
