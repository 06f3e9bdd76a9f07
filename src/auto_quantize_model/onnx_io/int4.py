"""Native INT4 ONNX from a Brevitas QCDQ export: a checked, lossless rewrite of the weight chains.

Brevitas (0.13.4) stores every weight of at most 8 bits as ``int8 initializer -> Clip(-m, m) ->
DequantizeLinear(scale, zero_point, axis=0)``, so a 4-bit file is as large as an 8-bit one. ONNX has a
real INT4 tensor type since opset 21. :func:`convert_qcdq_to_int4` rewrites each chain whose Clip range
fits in INT4 to ``INT4 initializer (packed by onnx/ml_dtypes) -> DequantizeLinear(scale, INT4 zero_point,
axis=0)``; chains of wider layers (``Clip(-127, 127)``, e.g. the first/last convs of ``w4a16-fl8``) keep
their INT8 codes in the same file. A Clip is dropped only where every code already lies inside its range
(then it is the identity); otherwise the chain is left exactly as it was.

What is checked, so the result is the same model:

* the opset upgrade (``onnx.version_converter``) only touches ops whose newer definitions mean the same for
  this graph (:data:`SAME_MEANING_AFTER_UPGRADE`); any other op that changed is refused by name;
* the INT4 codes read back from the new file equal the QCDQ codes, chain by chain (:func:`weight_codes`);
* ``onnx.checker.check_model(full_check=True)`` passes;
* :func:`convert_qcdq_file_to_int4` also runs both files in ONNX Runtime CPU and requires equal outputs.

ONNX Runtime dequantizes and then runs the conv in float: the 4-bit gain is file size and memory
bandwidth, not integer arithmetic.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

INT4_OPSET = 21  # first opset with the INT4 tensor type and INT4 DequantizeLinear
INT4_RANGE = (-8, 7)
DEFAULT_OUTPUT_ATOL = 1e-6  # the two files do the same float arithmetic; expect 0, allow last-bit noise

# Ops whose schema changed between opset 13 and 21, and why the newer version means the same for a
# float32 detector graph. An op that changed and is not listed here stops the upgrade (add it only after
# reading its changelog entry in onnx/docs/Changelog.md).
SAME_MEANING_AFTER_UPGRADE = {
    "Cast": "19: float8 types and 'saturate' (float8 only); 21: int4/uint4 types",
    "CastLike": "19: float8 types and 'saturate' (float8 only); 21: int4/uint4 types",
    "Constant": "19/21: more tensor types",
    "ConstantOfShape": "20/21: more tensor types",
    "DequantizeLinear": "19: float8 and float16 scales; 21: int4/int16 inputs and block_size (default 0: as before)",
    "QuantizeLinear": "19: float8 and saturate (float8 only); 21: int4/int16 outputs and block_size (default 0)",
    "Equal": "19: string type",
    "Flatten": "21: more tensor types",
    "Identity": "19/21: more tensor types",
    "If": "19/21: more tensor types",
    "Loop": "19/21: more tensor types",
    "Pad": "19: new 'wrap' mode (existing modes unchanged); 21: more tensor types",
    "ReduceMax": "20: bool type",
    "ReduceMin": "20: bool type",
    "Reshape": "19/21: more tensor types",
    "Resize": "19: new 'half_pixel_symmetric' coordinate mode (existing modes unchanged)",
    "Scan": "19/21: more tensor types",
    "Shape": "19/21: more tensor types",
    "Size": "19/21: more tensor types",
    "Squeeze": "21: more tensor types",
    "Transpose": "21: more tensor types",
    "Unsqueeze": "21: more tensor types",
}


class Int4ConversionError(ValueError):
    """The input cannot be turned into an INT4 model; the message names the file, node and fix."""


@dataclass(frozen=True)
class WeightChain:
    """One ``codes -> Clip(low, high) -> DequantizeLinear`` weight chain of a QCDQ graph."""

    dequantize: Any  # onnx.NodeProto
    clip: Any  # onnx.NodeProto
    codes_name: str
    low: int
    high: int

    @property
    def fits_int4(self) -> bool:
        return INT4_RANGE[0] <= self.low and self.high <= INT4_RANGE[1]

    @property
    def bit_width(self) -> int:
        """Signed narrow range ``[-(2**(b-1) - 1), 2**(b-1) - 1]``: Clip(-7, 7) is 4 bits, Clip(-127, 127) 8."""
        return int(np.log2(self.high + 1)) + 1


@dataclass(frozen=True)
class Int4ConversionResult:
    """What :func:`convert_qcdq_to_int4` did; sizes are serialized protobuf bytes (= file sizes)."""

    source: str
    opset_before: int
    opset_after: int
    int4_weights: int  # DequantizeLinear chains now fed by an INT4 initializer
    int8_weights: int  # chains that stay INT8 (8-bit layers)
    int4_values: int  # weight values stored as INT4
    int8_values: int
    clips_removed: int
    chains_left_as_qcdq: int  # codes outside their Clip range: Clip kept, chain untouched
    bytes_before: int
    bytes_after: int
    upgraded_ops: dict[str, str] = field(default_factory=dict)  # op -> why it means the same at the new opset
    max_abs_output_diff: float | None = None  # ONNX Runtime CPU, QCDQ vs INT4 (file conversion only)
    onnxruntime_version: str | None = None

    @property
    def size_ratio(self) -> float:
        return self.bytes_after / self.bytes_before


# ----------------------------------------------------------------------------------------------
# Finding the QCDQ weight chains
# ----------------------------------------------------------------------------------------------
def _initializers(graph: Any) -> dict[str, Any]:
    return {init.name: init for init in graph.initializer}


def _consumers(graph: Any) -> Counter:
    """How many node inputs and graph outputs read each value name."""
    uses = Counter(name for node in graph.node for name in node.input if name)
    uses.update(output.name for output in graph.output)
    return uses


def default_opset(proto: Any) -> int:
    return int(next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")))


def find_qcdq_weight_chains(proto: Any) -> list[WeightChain]:
    """Every ``int8 initializer -> Clip(init, init) -> DequantizeLinear`` chain, in graph order."""
    from onnx import TensorProto, numpy_helper

    graph = proto.graph
    inits = _initializers(graph)
    producer = {output: node for node in graph.node for output in node.output}
    chains = []
    for node in graph.node:
        clip = producer.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if clip is None or clip.op_type != "Clip" or len(clip.input) != 3:
            continue
        codes, low, high = (inits.get(name) for name in clip.input)
        if codes is None or low is None or high is None or codes.data_type != TensorProto.INT8:
            continue
        chains.append(
            WeightChain(node, clip, codes.name, int(numpy_helper.to_array(low)), int(numpy_helper.to_array(high)))
        )
    return chains


def weight_codes(proto: Any) -> dict[str, np.ndarray]:
    """The integer weight codes each weight DequantizeLinear sees, keyed by its output name, as int8.

    QCDQ chains are read after their Clip (as ONNX Runtime sees them); a DequantizeLinear fed straight by
    an INT4/INT8 initializer is read as stored. The conversion keeps DequantizeLinear output names, so the
    dicts of a QCDQ file and its INT4 file must be equal array for array.
    """
    from onnx import numpy_helper

    graph = proto.graph
    inits = _initializers(graph)
    codes = {}
    for chain in find_qcdq_weight_chains(proto):
        raw = numpy_helper.to_array(inits[chain.codes_name])
        codes[chain.dequantize.output[0]] = np.clip(raw, chain.low, chain.high).astype(np.int8)
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits and node.output[0] not in codes:
            codes[node.output[0]] = numpy_helper.to_array(inits[node.input[0]]).astype(np.int8)
    return codes


def weight_storage_counts(proto: Any) -> dict[str, int]:
    """Number of weight DequantizeLinear nodes by the element type of their integer input (``INT4``, ``INT8``)."""
    from onnx import TensorProto

    graph = proto.graph
    inits = _initializers(graph)
    producer = {output: node for node in graph.node for output in node.output}
    counts: Counter = Counter()
    for node in (n for n in graph.node if n.op_type == "DequantizeLinear"):
        source = node.input[0]
        if source not in inits and source in producer and producer[source].op_type == "Clip":
            source = producer[source].input[0]
        if source in inits:
            counts[TensorProto.DataType.Name(inits[source].data_type)] += 1
    return dict(sorted(counts.items()))


# ----------------------------------------------------------------------------------------------
# Opset upgrade
# ----------------------------------------------------------------------------------------------
def changed_ops(proto: Any, target: int) -> dict[str, tuple[int, int]]:
    """Default-domain ops of the graph whose schema version differs at ``target``: op -> (old, new)."""
    from onnx import defs

    current = default_opset(proto)
    changed = {}
    for op in sorted({n.op_type for n in proto.graph.node if n.domain in ("", "ai.onnx")}):
        old, new = (defs.get_schema(op, version).since_version for version in (current, target))
        if old != new:
            changed[op] = (old, new)
    return changed


def upgrade_opset(proto: Any, target: int, source: str = "model") -> tuple[Any, dict[str, str]]:
    """``proto`` at default-domain opset ``target`` (``onnx.version_converter``); refuses ops whose meaning changed."""
    from onnx import helper, version_converter

    current = default_opset(proto)
    if current > target:
        raise Int4ConversionError(
            f"{source}: opset {current} is newer than the requested {target}; ask for opset {current}"
        )
    changed = changed_ops(proto, target)
    unknown = sorted(set(changed) - set(SAME_MEANING_AFTER_UPGRADE))
    if unknown:
        detail = ", ".join(f"{op} ({changed[op][0]} -> {changed[op][1]})" for op in unknown)
        raise Int4ConversionError(
            f"{source}: upgrading opset {current} -> {target} changes ops this converter has not checked: {detail}; "
            "read their entries in onnx's Changelog.md and add them to onnx_int4.SAME_MEANING_AFTER_UPGRADE if they "
            "mean the same for this graph"
        )
    upgraded = proto if current == target else version_converter.convert_version(proto, target)
    # The converter keeps the IR version; INT4 needs the IR version that goes with the new opset.
    upgraded.ir_version = helper.find_min_ir_version_for(list(upgraded.opset_import))
    return upgraded, {op: SAME_MEANING_AFTER_UPGRADE[op] for op in changed}


# ----------------------------------------------------------------------------------------------
# The rewrite
# ----------------------------------------------------------------------------------------------
def _check_dequantize_layout(chain: WeightChain, codes: np.ndarray, inits: dict[str, Any], source: str) -> None:
    """Per-tensor or per-output-channel scale on axis 0, as Brevitas writes conv weights."""
    from onnx import helper, numpy_helper

    node = chain.dequantize
    scale = numpy_helper.to_array(inits[node.input[1]]) if node.input[1] in inits else None
    axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 1)
    per_channel = scale is not None and scale.ndim == 1 and axis == 0 and len(scale) == codes.shape[0]
    if scale is None or not (scale.ndim == 0 or per_channel):
        raise Int4ConversionError(
            f"{source}: DequantizeLinear {node.name!r} has scale {getattr(scale, 'shape', 'not an initializer')} on "
            f"axis {axis} for weights {list(codes.shape)}; only per-tensor or per-output-channel (axis=0) constant "
            "scales are converted. Re-export the checkpoint with export_onnx.py (Brevitas QCDQ)"
        )


def _int4_zero_point(chain: WeightChain, inits: dict[str, Any], graph: Any, made: dict[str, str], source: str) -> None:
    """Point the DequantizeLinear at an INT4 copy of its zero point (x and zero point must have one type)."""
    import ml_dtypes
    from onnx import numpy_helper

    node = chain.dequantize
    if len(node.input) < 3 or not node.input[2]:
        return  # no zero point: 0 of the input type
    name = node.input[2]
    if name not in made:
        if name not in inits:
            raise Int4ConversionError(f"{source}: zero point {name!r} of {node.name!r} is not a constant initializer")
        values = numpy_helper.to_array(inits[name])
        if values.min() < INT4_RANGE[0] or values.max() > INT4_RANGE[1]:
            raise Int4ConversionError(
                f"{source}: zero point {name!r} of {node.name!r} does not fit in INT4 {INT4_RANGE}"
            )
        made[name] = f"{name}_int4"
        graph.initializer.append(numpy_helper.from_array(values.astype(ml_dtypes.int4), made[name]))
    node.input[2] = made[name]


def _rewrite_chain(
    chain: WeightChain, graph: Any, inits: dict[str, Any], zero_points: dict[str, str], source: str
) -> bool:
    """Drop the chain's Clip and store its codes as INT4 when they fit; False (untouched) if the Clip changes codes."""
    import ml_dtypes
    from onnx import numpy_helper

    codes = numpy_helper.to_array(inits[chain.codes_name])
    uses = _consumers(graph)
    if (
        codes.min() < chain.low
        or codes.max() > chain.high
        or uses[chain.clip.output[0]] != 1
        or uses[chain.codes_name] != 1
    ):
        return False  # the Clip changes codes (or is shared): removing it would change the model
    _check_dequantize_layout(chain, codes, inits, source)
    if chain.fits_int4:
        # onnx packs ml_dtypes.int4 two values per byte (TensorProto.INT4); no hand-written nibble packing.
        inits[chain.codes_name].CopyFrom(numpy_helper.from_array(codes.astype(ml_dtypes.int4), chain.codes_name))
        _int4_zero_point(chain, inits, graph, zero_points, source)
    chain.dequantize.input[0] = chain.codes_name
    graph.node.remove(chain.clip)
    return True


def _drop_unused_initializers(graph: Any, candidates: set[str]) -> None:
    """Remove the Clip bounds and zero points that no node reads any more."""
    uses = _consumers(graph)
    for init in [i for i in graph.initializer if i.name in candidates and not uses[i.name]]:
        graph.initializer.remove(init)


def convert_qcdq_to_int4(
    proto: Any, *, opset: int = INT4_OPSET, source: str = "model"
) -> tuple[Any, Int4ConversionResult]:
    """Rewrite a Brevitas QCDQ ModelProto into native INT4 weights at ``opset`` (>= 21); ``proto`` is not modified.

    Raises :class:`Int4ConversionError` (naming ``source``) when the graph has no QCDQ weight chains, an
    op's meaning could change with the opset upgrade, a chain has an unexpected scale layout, the INT4
    codes do not read back equal, or ``onnx.checker`` (full check) rejects the result.
    """
    import onnx

    if opset < INT4_OPSET:
        raise Int4ConversionError(f"{source}: INT4 tensors need opset {INT4_OPSET} or newer, got {opset}")
    original = onnx.ModelProto()
    original.CopyFrom(proto)
    chains = find_qcdq_weight_chains(original)
    if not chains:
        raise Int4ConversionError(
            f"{source}: no 'int8 initializer -> Clip -> DequantizeLinear' weight chains; expected a Brevitas QCDQ "
            "export of a QAT checkpoint (export_onnx.py --weights-format qcdq)"
        )
    model, upgraded_ops = upgrade_opset(original, opset, source)
    graph = model.graph
    inits = _initializers(graph)
    zero_points: dict[str, str] = {}
    chains = find_qcdq_weight_chains(model)  # the converter returns a new proto: find the nodes again
    rewritten = [chain for chain in chains if _rewrite_chain(chain, graph, inits, zero_points, source)]
    _drop_unused_initializers(graph, {name for c in rewritten for name in c.clip.input[1:]} | set(zero_points))
    _check_same_codes(original, model, source)
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        raise Int4ConversionError(
            f"{source}: the INT4 model fails onnx.checker (full check): {error}; "
            "keep using the QCDQ file and report this"
        ) from error
    int4 = [c for c in rewritten if c.fits_int4]
    int8 = [c for c in rewritten if not c.fits_int4]
    values = {c.codes_name: int(np.prod(inits[c.codes_name].dims)) for c in rewritten}
    return model, Int4ConversionResult(
        source=source,
        opset_before=default_opset(original),
        opset_after=default_opset(model),
        int4_weights=len(int4),
        int8_weights=len(int8),
        int4_values=sum(values[c.codes_name] for c in int4),
        int8_values=sum(values[c.codes_name] for c in int8),
        clips_removed=len(rewritten),
        chains_left_as_qcdq=len(chains) - len(rewritten),
        bytes_before=original.ByteSize(),
        bytes_after=model.ByteSize(),
        upgraded_ops=upgraded_ops,
    )


def _check_same_codes(before: Any, after: Any, source: str) -> None:
    """The codes every weight DequantizeLinear sees are unchanged, value for value."""
    old, new = weight_codes(before), weight_codes(after)
    differing = sorted(k for k in old if k not in new or not np.array_equal(old[k], new[k]))
    if differing or set(new) != set(old):
        raise Int4ConversionError(
            f"{source}: INT4 rewrite changed the weight codes of {differing[:5]}; this is a bug, "
            "keep using the QCDQ file"
        )


# ----------------------------------------------------------------------------------------------
# Files, with the ONNX Runtime check
# ----------------------------------------------------------------------------------------------
def onnxruntime_outputs(path: str | os.PathLike, inputs: np.ndarray, fold_weights: bool = False) -> list[np.ndarray]:
    """All outputs of ``path`` on ONNX Runtime CPU for the single input ``inputs``.

    ``fold_weights`` sets ``session.disable_quant_qdq=1``: constant DequantizeLinear is folded at load
    instead of running every time.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    if fold_weights:
        options.add_session_config_entry("session.disable_quant_qdq", "1")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: inputs})


def max_output_difference(path_a: str | os.PathLike, path_b: str | os.PathLike, inputs: np.ndarray) -> float:
    """Largest |difference| over all outputs of two files on ONNX Runtime CPU (inf if shapes differ)."""
    diffs = [
        float(np.abs(a.astype(np.float64) - b).max()) if a.shape == b.shape else float("inf")
        for a, b in zip(onnxruntime_outputs(path_a, inputs), onnxruntime_outputs(path_b, inputs))
    ]
    return max(diffs, default=0.0)


def check_inputs_for(proto: Any, source: str, seed: int = 0) -> np.ndarray:
    """A gray and a seeded random image in [0, 1] for the graph's static input shape (batch 1)."""
    dims = [d.dim_value if d.HasField("dim_value") else None for d in proto.graph.input[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or None in dims[1:]:
        raise Int4ConversionError(
            f"{source}: input shape {dims} has symbolic sizes; pass check_inputs to the conversion"
        )
    gray = np.full((1, *dims[1:]), 114 / 255, dtype=np.float32)
    noise = np.random.default_rng(seed).random((1, *dims[1:]), dtype=np.float32)
    return np.concatenate([gray, noise]) if dims[0] in (None, 0) else noise


def convert_qcdq_file_to_int4(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    opset: int = INT4_OPSET,
    check_inputs: np.ndarray | None = None,
    atol: float = DEFAULT_OUTPUT_ATOL,
) -> Int4ConversionResult:
    """Convert the QCDQ file ``src`` to the INT4 file ``dst`` (written atomically) and check ONNX Runtime agrees.

    ``check_inputs`` (default: one seeded random image of the static input size) runs through both files on
    ONNX Runtime CPU; an output difference above ``atol`` raises and leaves ``dst`` unwritten.
    """
    import onnx
    import onnxruntime as ort

    from auto_quantize_model.utils.io import atomic_output

    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise Int4ConversionError(
            f"{src}: QCDQ ONNX not found; export it first with export_onnx.py --weights-format qcdq"
        )
    if dst.suffix != ".onnx" or dst.resolve() == src.resolve():
        raise Int4ConversionError(f"{dst}: the INT4 output must be a different .onnx path than {src}")
    proto = onnx.load(str(src))
    model, result = convert_qcdq_to_int4(proto, opset=opset, source=str(src))
    inputs = check_inputs if check_inputs is not None else check_inputs_for(proto, str(src))
    del proto
    with atomic_output(dst) as tmp:
        onnx.save(model, str(tmp))
        diff = max_output_difference(src, tmp, inputs)
        if not diff <= atol:
            raise Int4ConversionError(
                f"{dst}: ONNX Runtime outputs of the INT4 file differ from {src} by {diff:.3g} (> {atol:g}); "
                "nothing was written, keep using the QCDQ file"
            )
    return _with_runtime_check(result, diff, ort.__version__, dst)


def _with_runtime_check(result: Int4ConversionResult, diff: float, version: str, dst: Path) -> Int4ConversionResult:
    from dataclasses import replace

    return replace(result, max_abs_output_diff=diff, onnxruntime_version=version, bytes_after=dst.stat().st_size)
