"""Reading an exported ONNX graph: its input/output shapes, Q/DQ/Clip counts and the bit widths of weight Q/DQ chains
(what the export metadata records and the export contract checks)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from auto_quantize_model.onnx_io.contract import anchor_count
from auto_quantize_model.onnx_io.settings import (
    MAX_DET,
    ExportSettings,
)


def _dims(value_info: Any) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def _initializer_arrays(graph: Any) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    return {init.name: numpy_helper.to_array(init) for init in graph.initializer}


def weight_qdq_bit_widths(proto: Any) -> list[int]:
    """Bit width of every weight ``int8 initializer -> Clip(-m, m) -> DequantizeLinear`` chain, in graph order.

    ``m = 2**(b-1) - 1`` (signed narrow range), so ``Clip(-7, 7)`` is a 4-bit and ``Clip(-127, 127)`` an
    8-bit weight. In a native INT4 file (no Clip) a DequantizeLinear fed by an INT4 initializer counts as 4 bits
    and one fed by an INT8 initializer as 8. A DequantizeLinear fed any other way is not counted.
    """
    graph = proto.graph
    arrays = _initializer_arrays(graph)
    producer = {output: node for node in graph.node for output in node.output}
    widths = []
    for node in graph.node:
        direct = arrays.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if direct is not None and str(direct.dtype) in ("int4", "int8"):
            widths.append(4 if str(direct.dtype) == "int4" else 8)
            continue
        clip = producer.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if clip is None or clip.op_type != "Clip" or len(clip.input) != 3:
            continue
        codes, low, high = (arrays.get(name) for name in clip.input)
        if codes is None or codes.dtype != np.int8 or low is None or high is None or int(low) != -int(high):
            continue
        widths.append(int(math.log2(int(high) + 1)) + 1)
    return widths


@dataclass(frozen=True)
class GraphSummary:
    """What the metadata JSON records about the written ONNX graph."""

    opset: int
    ir_version: int
    inputs: dict[str, list[int | str]]
    outputs: dict[str, list[int | str]]
    op_counts: dict[str, int]
    weight_qdq_bits: dict[str, int]
    external_data: bool
    metadata_props: dict[str, str]


def inspect_onnx(path: Path) -> GraphSummary:
    """Read I/O shapes, op counts, weight Q/DQ chains and external-data use of an ONNX file."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    proto = onnx.load(str(path), load_external_data=False)
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    bits = Counter(str(b) for b in weight_qdq_bit_widths(proto))
    return GraphSummary(
        opset=int(opset),
        ir_version=int(proto.ir_version),
        inputs={i.name: _dims(i) for i in proto.graph.input},
        outputs={o.name: _dims(o) for o in proto.graph.output},
        op_counts=dict(sorted(Counter(n.op_type for n in proto.graph.node).items())),
        weight_qdq_bits=dict(sorted(bits.items())),
        external_data=any(uses_external_data(t) for t in proto.graph.initializer),
        metadata_props={p.key: p.value for p in proto.metadata_props},
    )


def expected_output_shape(
    settings: ExportSettings, nc: int, strides: Sequence[float], batch: int = 1
) -> tuple[int, ...]:
    """``output0`` shape of the contract: ``(N, min(300, anchors), 6)`` or ``(N, 4 + nc, anchors)``."""
    anchors = anchor_count(settings.imgsz, strides)
    return (batch, min(MAX_DET, anchors), 6) if settings.end2end else (batch, 4 + nc, anchors)
