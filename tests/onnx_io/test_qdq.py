"""QDQ for integer runtimes: Brevitas' weight Clips folded into the codes, checked exact on ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from auto_quantize_model.onnx_io.int4 import onnxruntime_outputs
from auto_quantize_model.onnx_io.qdq import QDQConversionError, integer_runtime_qdq, integer_runtime_qdq_file
from auto_quantize_model.onnx_io.size import weight_storage


def _qcdq_model(codes: np.ndarray, max_code: int = 127) -> onnx.ModelProto:
    """x -> Q/DQ -> Conv, weights: int8 codes -> Clip(-max_code, max_code) -> DequantizeLinear (Brevitas' chain)."""
    inits = [
        numpy_helper.from_array(codes.astype(np.int8), "codes"),
        numpy_helper.from_array(np.array(-max_code, np.int8), "low"),
        numpy_helper.from_array(np.array(max_code, np.int8), "high"),
        numpy_helper.from_array(np.full(codes.shape[0], 0.01, np.float32), "w_scale"),
        numpy_helper.from_array(np.zeros(codes.shape[0], np.int8), "w_zero"),
        numpy_helper.from_array(np.array(0.05, np.float32), "x_scale"),
        numpy_helper.from_array(np.array(0, np.int8), "x_zero"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["images", "x_scale", "x_zero"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zero"], ["xdq"]),
        helper.make_node("Clip", ["codes", "low", "high"], ["clipped"]),
        helper.make_node("DequantizeLinear", ["clipped", "w_scale", "w_zero"], ["w"], axis=0),
        helper.make_node("Conv", ["xdq", "w"], ["output0"], pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(
        nodes,
        "qcdq",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 2, 5, 5])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 3, 5, 5])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_clips_fold_into_the_codes_exactly_including_codes_outside_the_range(tmp_path):
    codes = np.random.default_rng(0).integers(-120, 120, (3, 2, 3, 3))
    codes[0, 0, 0, 0], codes[1, 1, 1, 1] = -128, 127  # a code one step outside [-127, 127], as fp16 latents leave
    src = tmp_path / "qcdq.onnx"
    onnx.save(_qcdq_model(codes), src)
    x = np.random.default_rng(1).random((1, 2, 5, 5), dtype=np.float32)
    result = integer_runtime_qdq_file(src, tmp_path / "qdq.onnx", x)
    folded = onnx.load(tmp_path / "qdq.onnx")
    assert "Clip" not in {node.op_type for node in folded.graph.node}
    stored = numpy_helper.to_array(next(i for i in folded.graph.initializer if i.name == "codes"))
    assert stored.min() == -127 and stored[1, 1, 1, 1] == 127
    assert (result.clips_removed, result.codes_clamped, result.activation_quantizers) == (1, 1, 1)
    assert result.activations_to_uint8 == 2  # the Q and its DQ: int8 zero point 0 -> uint8 zero point 128
    assert result.max_abs_output_diff == 0.0
    np.testing.assert_array_equal(onnxruntime_outputs(src, x)[0], onnxruntime_outputs(tmp_path / "qdq.onnx", x)[0])


def test_w4a8_weights_are_packed_int4_and_give_identical_outputs(tmp_path):
    """4-bit codes (Clip(-7, 7)) leave the INT8 container for packed INT4 at opset 21; a code one step outside the
    range is clamped first (as the Clip computes), so it is packed too; the activations stay uint8 Q/DQ."""
    codes = np.random.default_rng(0).integers(-7, 8, (3, 2, 3, 3))
    codes[2, 0, 1, 1] = -8  # outside Clip(-7, 7)
    src = tmp_path / "qcdq.onnx"
    onnx.save(_qcdq_model(codes, max_code=7), src)
    x = np.random.default_rng(1).random((1, 2, 5, 5), dtype=np.float32)
    result = integer_runtime_qdq_file(src, tmp_path / "qdq.onnx", x)
    packed = onnx.load(tmp_path / "qdq.onnx")
    stored = next(i for i in packed.graph.initializer if i.name == "codes")
    assert stored.data_type == TensorProto.INT4 and len(stored.raw_data) == (codes.size + 1) // 2
    assert "Clip" not in {node.op_type for node in packed.graph.node}
    assert (result.int4_weights, result.opset, result.codes_clamped, result.clips_removed) == (1, 21, 1, 1)
    assert result.activations_to_uint8 == 2 and result.max_abs_output_diff == 0.0
    assert weight_storage(tmp_path / "qdq.onnx").weights_format == "qdq"  # what the export's request checks


def test_w8a8_weights_stay_int8_at_their_opset(tmp_path):
    src = tmp_path / "qcdq.onnx"
    onnx.save(_qcdq_model(np.random.default_rng(0).integers(-120, 120, (3, 2, 3, 3))), src)
    x = np.random.default_rng(1).random((1, 2, 5, 5), dtype=np.float32)
    result = integer_runtime_qdq_file(src, tmp_path / "qdq.onnx", x)
    stored = next(i for i in onnx.load(tmp_path / "qdq.onnx").graph.initializer if i.name == "codes")
    assert stored.data_type == TensorProto.INT8 and (result.int4_weights, result.opset) == (0, 17)


def test_sub_8_bit_activations_keep_their_clip_in_uint8(tmp_path):
    """4-bit activations export as Q -> Clip(-8, 7) -> DQ: the DQ behind the Clip and the Clip's bounds move to uint8
    with the zero point, so the graph type-checks and ONNX Runtime gives identical outputs."""
    model = _qcdq_model(np.random.default_rng(0).integers(-120, 120, (3, 2, 3, 3)))
    graph = model.graph
    graph.initializer.extend(
        [numpy_helper.from_array(np.array(-8, np.int8), "a_low"), numpy_helper.from_array(np.array(7, np.int8), "a_hi")]
    )
    dequantize = next(node for node in graph.node if node.input[0] == "xq")
    dequantize.input[0] = "xq_clipped"
    graph.node.insert(1, helper.make_node("Clip", ["xq", "a_low", "a_hi"], ["xq_clipped"]))
    src = tmp_path / "qcdq.onnx"
    onnx.save(model, src)
    x = np.random.default_rng(1).random((1, 2, 5, 5), dtype=np.float32) * 4 - 2  # beyond the 4-bit range
    result = integer_runtime_qdq_file(src, tmp_path / "qdq.onnx", x)
    converted = onnx.load(tmp_path / "qdq.onnx")
    clip = next(node for node in converted.graph.node if node.op_type == "Clip")
    bounds = {i.name: numpy_helper.to_array(i) for i in converted.graph.initializer if i.name in clip.input[1:]}
    assert [bounds[name].tolist() for name in clip.input[1:]] == [120, 135]
    assert all(value.dtype == np.uint8 for value in bounds.values())
    assert result.activations_to_uint8 == 2 and result.max_abs_output_diff == 0.0


def test_a_graph_without_weight_chains_is_refused():
    model = _qcdq_model(np.zeros((3, 2, 3, 3)))
    clip = next(node for node in model.graph.node if node.op_type == "Clip")
    dequantize = next(node for node in model.graph.node if node.input[0] == "clipped")
    dequantize.input[0] = "codes"
    model.graph.node.remove(clip)
    with pytest.raises(QDQConversionError, match="no 'int8 initializer -> Clip -> DequantizeLinear'"):
        integer_runtime_qdq(model, "plain.onnx")


def _detections(rows: list[tuple[float, float, float, float, float, int]], total: int = 300) -> np.ndarray:
    """One image's end-to-end output: the given rows, then low-score filler rows (what top-k pads with)."""
    out = np.zeros((1, total, 6), np.float32)
    out[0, : len(rows)] = rows
    filler = np.random.default_rng(0).random((total - len(rows), 6), dtype=np.float32) * [150, 150, 150, 150, 0.01, 3]
    out[0, len(rows) :] = np.round(filler, 0)
    out[0, len(rows) :, 4] = np.linspace(0.009, 0.001, total - len(rows))
    return out


CONFIDENT = [(10, 10, 60, 60, 0.9, 0), (80, 20, 150, 90, 0.6, 1), (5, 100, 40, 150, 0.3, 2)]


@pytest.mark.parametrize(
    ("change", "passes"),
    [
        (lambda d: d, True),
        (lambda d: d + np.array([0.5, -0.5, 0.5, 0, 0.04, 0], np.float32) * (d[..., 4:5] > 0.25), True),  # flips
        (lambda d: d + np.array([0, 0, 0, 0, 0.15, 0], np.float32) * (d[..., 4:5] > 0.25), False),  # score 0.15 off
        (lambda d: d + np.array([4, 4, 4, 4, 0, 0], np.float32) * (d[..., 4:5] > 0.25), False),  # boxes 4 px off
        (lambda d: np.concatenate([d[:, :2], d[:, 3:], d[:, :1] * 0], axis=1), False),  # a confident row lost
        (lambda d: d[:, ::-1].copy(), True),  # order of rows: top-k ties reorder, not an error
    ],
)
def test_the_qdq_tolerance_checks_confident_detections_only(change, passes):
    """Quantized activations flip rounding differently in each runtime: low-score rows churn and are not compared;
    the detections scoring >= 0.25 must match within 1% of the box scale and 0.1 in score."""
    from auto_quantize_model.onnx_io.validation import TOLERANCES, compare_outputs

    expected = _detections(CONFIDENT)
    actual = change(expected.copy())
    actual[..., :4] += 30.0 * (actual[..., 4:5] < 0.0087)  # rows below the best 10 churn freely
    result = compare_outputs(expected, actual, "e2e", TOLERANCES[("qat-qdq", False)])
    assert result["passed"] is passes, result


FALLBACK = np.linspace(0.009, 0.001, 297) >= 0.0087  # the filler rows among the image's best 10 (scores as _detections)


@pytest.mark.parametrize(
    ("confident_shift", "fallback_shift", "passes"),
    [(0, 2.0, True), (0, 4.0, False), (2.0, 0, False)],  # box limit 1.5 px here (1% of 150), fallback rows 3.0 px
)
def test_rows_compared_only_to_reach_ten_get_twice_the_box_limit(confident_shift, fallback_shift, passes):
    """The 3 rows scoring >= 0.25 keep the QDQ box limit; the 7 low-score rows added to reach 10 get twice it."""
    from auto_quantize_model.onnx_io.validation import TOLERANCES, compare_outputs

    expected = _detections(CONFIDENT)
    actual = expected.copy()
    actual[0, : len(CONFIDENT), :4] += confident_shift
    actual[0, len(CONFIDENT) :, :4] += np.where(FALLBACK, fallback_shift, 30.0)[:, None]  # the rest churn freely
    result = compare_outputs(expected, actual, "e2e", TOLERANCES[("qat-qdq", False)])
    assert result["passed"] is passes, result
