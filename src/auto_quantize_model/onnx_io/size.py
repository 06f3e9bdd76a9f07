"""What an ONNX file stores its weights as, and the size table float32 / FP16 / QCDQ / INT4 with ratios.

:func:`weight_storage` reads a file (not its metadata) and says what it really holds: float32 or float16
initializers, Brevitas QCDQ (4-bit codes in int8 containers + Clip), or native INT4 (with any 8-bit layers
as INT8). :func:`size_table` turns a set of files into rows with each size as a ratio to the float32 and to
the FP16 file, and :func:`size_table_markdown` renders them for ``summary.md`` or ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

FLOAT32, FLOAT16, QCDQ, INT4, QDQ = "float32", "float16", "qcdq", "int4", "qdq"
WEIGHTS_FORMAT_TEXT = {
    FLOAT32: "float32 weights",
    FLOAT16: "float16 weights, float32 input/output",
    QCDQ: "integer codes in INT8 containers -> Clip -> DequantizeLinear (Brevitas QCDQ)",
    INT4: "packed INT4 codes -> DequantizeLinear (8-bit layers as INT8)",
    QDQ: "INT8 (4-bit layers: packed INT4) codes -> DequantizeLinear, activations QuantizeLinear -> DequantizeLinear "
    "(QDQ)",
}


@dataclass(frozen=True)
class WeightStorage:
    """How one ONNX file stores its initializers."""

    path: Path
    size_bytes: int
    initializer_bytes: dict[str, int]  # ONNX element type name -> serialized bytes of those initializers
    weight_dequantizers: dict[str, int]  # element type of the integer input -> DequantizeLinear count
    opset: int
    activation_quantizers: int = 0  # QuantizeLinear nodes: quantized activations
    weight_clips: int = 0  # int8 initializer -> Clip -> DequantizeLinear chains (Brevitas QCDQ)

    @property
    def weights_format(self) -> str:
        """``int4``, ``qdq``, ``qcdq``, ``float16`` or ``float32``: what dominates the file's weights.

        ``qdq``: quantized activations and INT8 (W8A8) or packed INT4 (W4A8) weights straight into
        DequantizeLinear (no Clip).
        """
        if self.activation_quantizers and self.weight_dequantizers and not self.weight_clips:
            return QDQ
        if self.weight_dequantizers.get("INT4"):
            return INT4
        if self.weight_dequantizers:
            return QCDQ
        floats = {k: v for k, v in self.initializer_bytes.items() if k in ("FLOAT", "FLOAT16")}
        return FLOAT16 if floats and max(floats, key=floats.get) == "FLOAT16" else FLOAT32


def weight_storage(path: str | os.PathLike) -> WeightStorage:
    """Read ``path`` (without external data) and count its initializer bytes by element type."""
    import onnx

    from auto_quantize_model.onnx_io.int4 import default_opset, find_qcdq_weight_chains, weight_storage_counts

    path = Path(path)
    proto = onnx.load(str(path), load_external_data=False)
    by_type: Counter = Counter()
    for init in proto.graph.initializer:
        by_type[onnx.TensorProto.DataType.Name(init.data_type)] += init.ByteSize()
    quantizers = sum(node.op_type == "QuantizeLinear" for node in proto.graph.node)
    clips = len(find_qcdq_weight_chains(proto))
    return WeightStorage(
        path,
        path.stat().st_size,
        dict(sorted(by_type.items())),
        weight_storage_counts(proto),
        default_opset(proto),
        quantizers,
        clips,
    )


@dataclass(frozen=True)
class SizeRow:
    """One file of the size table."""

    label: str
    path: Path
    size_bytes: int
    weights_format: str
    ratio_to_float32: float | None
    ratio_to_fp16: float | None


def size_table(files: Mapping[str, str | os.PathLike]) -> list[SizeRow]:
    """Rows for ``{label: onnx path}`` in the given order; ratios use the first float32 and first float16 file.

    A ratio is ``None`` when the table has no file of that kind (e.g. no FP16 export yet).
    """
    storages = {label: weight_storage(path) for label, path in files.items()}
    base = {
        kind: next((s.size_bytes for s in storages.values() if s.weights_format == kind), None)
        for kind in (FLOAT32, FLOAT16)
    }
    return [
        SizeRow(
            label,
            s.path,
            s.size_bytes,
            s.weights_format,
            s.size_bytes / base[FLOAT32] if base[FLOAT32] else None,
            s.size_bytes / base[FLOAT16] if base[FLOAT16] else None,
        )
        for label, s in storages.items()
    ]


def size_table_markdown(rows: list[SizeRow]) -> str:
    """A Markdown table: file, bytes, MB, stored as, ratio to float32, ratio to FP16."""

    def ratio(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}x"

    lines = ["| model | bytes | MB | weights stored as | vs float32 | vs FP16 |", "|---|---|---|---|---|---|"]
    lines += [
        f"| {r.label} | {r.size_bytes} | {r.size_bytes / 1e6:.2f} | {WEIGHTS_FORMAT_TEXT[r.weights_format]} | "
        f"{ratio(r.ratio_to_float32)} | {ratio(r.ratio_to_fp16)} |"
        for r in rows
    ]
    return "\n".join(lines)
