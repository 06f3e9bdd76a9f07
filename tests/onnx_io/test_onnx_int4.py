"""Native INT4 ONNX (QCDQ -> INT4 rewrite), the FP16 baseline export, and the size table.

Slow tests export the session's tiny trained yolov10n runs (``fp16_run``/``qat_run``, imgsz 64) and a
random ``w4a16-fl8`` checkpoint built like ``tests/test_export.py`` does; fast tests rewrite small
hand-built ONNX graphs so each refusal of the converter is pinned on its own.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from test_export import IMGSZ, SCRIPT, _prepared_quant_bits, _signal_preserving_checkpoint

import auto_quantize_model  # noqa: F401  (offline Ultralytics before anything imports it)
from auto_quantize_model import export as ex
from auto_quantize_model.onnx_io import int4 as q4
from auto_quantize_model.onnx_io import validation as ev
from auto_quantize_model.onnx_io.size import size_table, size_table_markdown, weight_storage


# --- helpers ----------------------------------------------------------------------------------------
def _load(path: Path):
    import onnx

    return onnx.load(str(path))


def _val_batch(prepared_dataset, limit: int = 8) -> np.ndarray:
    """Letterboxed val images of the generated dataset, as the evaluator feeds them."""
    images = sorted((prepared_dataset.out_dir / "images" / "val").iterdir())[:limit]
    return ev._load_inputs(images, (IMGSZ, IMGSZ))


def _ort_outputs(path: Path, batch: np.ndarray) -> np.ndarray:
    """``output0`` image by image (the exports have a static batch of one)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(["output0"], {"images": image[None]})[0] for image in batch])


def _dequantizer_inputs(path: Path) -> dict[str, tuple[str, np.ndarray]]:
    """DequantizeLinear output name -> (element type of its codes, codes as int8), walked by hand: through a Clip
    (QCDQ, codes clipped as ONNX Runtime sees them) or straight from an initializer (INT4 file)."""
    import onnx
    from onnx import numpy_helper

    graph = _load(path).graph
    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    found = {}
    for node in (n for n in graph.node if n.op_type == "DequantizeLinear"):
        if node.input[0] in inits:
            init = inits[node.input[0]]
            codes = numpy_helper.to_array(init).astype(np.int8)
        else:
            clip = producer[node.input[0]]
            init = inits[clip.input[0]]
            low, high = (int(numpy_helper.to_array(inits[name])) for name in clip.input[1:])
            codes = np.clip(numpy_helper.to_array(init), low, high).astype(np.int8)
        found[node.output[0]] = (onnx.TensorProto.DataType.Name(init.data_type), codes)
    return found


# --- module-scoped exports ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("onnx-int4")


@pytest.fixture(scope="module")
def qcdq_file(qat_run, export_dir) -> Path:
    return ex.export_onnx(qat_run.paths.best, export_dir / "w4a16-qcdq.onnx", imgsz=IMGSZ).onnx_path


@pytest.fixture(scope="module")
def int4_export(qat_run, export_dir):
    return ex.export_onnx(qat_run.paths.best, export_dir / "w4a16-int4.onnx", imgsz=IMGSZ, weights_format="int4")


@pytest.fixture(scope="module")
def fp_files(fp16_run, export_dir) -> dict[str, ex.ExportResult]:
    return {
        "float32": ex.export_onnx(fp16_run.paths.best, export_dir / "fp32.onnx", imgsz=IMGSZ),
        "fp16": ex.export_onnx(fp16_run.paths.best, export_dir / "fp16.onnx", imgsz=IMGSZ, half=True),
    }


# --- INT4 from a trained W4A16 checkpoint ----------------------------------------------------------
@pytest.mark.slow
def test_int4_export_stores_packed_int4_weights_at_opset_21(int4_export):
    import onnx

    model = _load(int4_export.onnx_path)
    graph = model.graph
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 21
    assert [i.name for i in graph.input] == ["images"] and [o.name for o in graph.output] == ["output0"]
    inits = {i.name: i for i in graph.initializer}
    dequantizers = [n for n in graph.node if n.op_type == "DequantizeLinear"]
    assert len(dequantizers) == 83 and not any(n.op_type == "Clip" for n in graph.node)
    for node in dequantizers:
        codes, scale, zero_point = (inits[name] for name in node.input)
        assert codes.data_type == zero_point.data_type == onnx.TensorProto.INT4
        count = int(np.prod(codes.dims))
        assert len(codes.raw_data) == (count + 1) // 2, "INT4 codes must be packed two per byte"
        assert scale.data_type == onnx.TensorProto.FLOAT and list(scale.dims) == [codes.dims[0]]
        assert {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}.get("axis") == 0
    assert int4_export.weights_format == "int4"


@pytest.mark.slow
def test_int4_codes_equal_the_qcdq_codes_exactly(int4_export, qcdq_file):
    qcdq, int4 = _dequantizer_inputs(qcdq_file), _dequantizer_inputs(int4_export.onnx_path)
    assert set(qcdq) == set(int4) and len(qcdq) == 83
    for name, (storage, codes) in int4.items():
        assert storage == "INT4" and qcdq[name][0] == "INT8"
        np.testing.assert_array_equal(codes, qcdq[name][1], err_msg=name)
        assert codes.min() >= -7 and codes.max() <= 7


@pytest.mark.slow
def test_int4_and_qcdq_outputs_agree_on_val_images(int4_export, qcdq_file, prepared_dataset):
    batch = _val_batch(prepared_dataset)
    qcdq, int4 = _ort_outputs(qcdq_file, batch), _ort_outputs(int4_export.onnx_path, batch)
    assert qcdq.shape == int4.shape == (len(batch), 84, 6)
    assert float(np.abs(qcdq - int4).max()) <= 1e-6
    # Folding the constant DequantizeLinear at load (session.disable_quant_qdq) keeps the same outputs.
    for image in batch[:2]:
        default, folded = (
            q4.onnxruntime_outputs(int4_export.onnx_path, image[None], fold_weights=f)[0] for f in (False, True)
        )
        np.testing.assert_array_equal(default, folded)


@pytest.mark.slow
def test_int4_file_passes_the_full_onnx_check_and_records_its_runtimes(int4_export):
    import onnx

    onnx.checker.check_model(str(int4_export.onnx_path), full_check=True)
    meta = json.loads(int4_export.metadata_path.read_text())
    assert meta["weights_format"] == "int4" and meta["kind"] == "qat-qcdq"
    assert meta["onnx"]["opset"] >= 21 and meta["graph"]["weight_qdq_by_bit_width"] == {"4": 83}
    assert meta["graph"]["weight_dequantizers_by_storage"] == {"INT4": 83}
    conversion = meta["int4_conversion"]
    assert conversion["int4_weights"] == 83 and conversion["int8_weights"] == 0
    assert conversion["max_abs_output_diff"] <= 1e-6 and conversion["bytes_after"] == meta["onnx"]["size_bytes"]
    import onnxruntime as ort

    assert ort.__version__ in meta["runtimes"]["onnxruntime_cpu"]
    assert "untested here (no GPU)" in meta["runtimes"]["onnxruntime_cuda"]
    from auto_quantize_model.onnx_io.embedded import read_provenance

    embedded = read_provenance(int4_export.onnx_path)  # the conversion keeps the QCDQ file's provenance
    assert embedded.quant_scheme == meta["quant_scheme"] and embedded.export["weights_format"] == "int4"


@pytest.mark.slow
def test_int4_file_is_smaller_than_qcdq_and_the_size_table_has_both_ratios(int4_export, qcdq_file, fp_files):
    files = {
        "float32": fp_files["float32"].onnx_path,
        "fp16": fp_files["fp16"].onnx_path,
        "qcdq": qcdq_file,
        "int4": int4_export.onnx_path,
    }
    rows = {row.label: row for row in size_table(files)}
    assert [rows[k].weights_format for k in files] == ["float32", "float16", "qcdq", "int4"]
    assert rows["float32"].ratio_to_float32 == 1.0 and rows["fp16"].ratio_to_fp16 == 1.0
    # yolov10n at 64 px: float biases/scales and the DFL conv keep it above yolov10m's 0.14x (see RESULTS.md)
    assert rows["int4"].ratio_to_float32 < 0.2 and rows["int4"].size_bytes < 0.6 * rows["qcdq"].size_bytes
    assert "| int4 |" in size_table_markdown(list(rows.values()))


@pytest.mark.slow
def test_w4a16_fl8_keeps_its_8_bit_layers_int8(tmp_path, prepared_dataset):
    weights = _signal_preserving_checkpoint("w4a16-fl8", tmp_path / "fl8.pt")
    qcdq = ex.export_onnx(weights, tmp_path / "fl8-qcdq.onnx", imgsz=IMGSZ, output_format="raw").onnx_path
    int4 = ex.export_onnx(weights, tmp_path / "fl8-int4.onnx", imgsz=IMGSZ, output_format="raw", weights_format="int4")
    expected = _prepared_quant_bits(weights, end2end=False)
    assert set(expected) == {4, 8}
    stored = _dequantizer_inputs(int4.onnx_path)
    assert Counter(storage for storage, _ in stored.values()) == Counter({"INT4": expected[4], "INT8": expected[8]})
    eight_bit = [codes for storage, codes in stored.values() if storage == "INT8"]
    assert max(int(np.abs(c).max()) for c in eight_bit) > 7, "8-bit layers must keep codes beyond the INT4 range"
    qcdq_codes = _dequantizer_inputs(qcdq)
    for name, (_, codes) in stored.items():
        np.testing.assert_array_equal(codes, qcdq_codes[name][1], err_msg=name)
    batch = _val_batch(prepared_dataset, limit=4)
    assert float(np.abs(_ort_outputs(qcdq, batch) - _ort_outputs(int4.onnx_path, batch)).max()) <= 1e-6


# --- FP16 baseline and refusals -----------------------------------------------------------------------
@pytest.mark.slow
def test_fp16_baseline_stores_float16_weights_with_float32_io(fp_files, prepared_dataset):
    import onnx

    fp16 = fp_files["fp16"]
    model = _load(fp16.onnx_path)
    conv_weights = {n.input[1] for n in model.graph.node if n.op_type == "Conv"}
    types = {i.name: i.data_type for i in model.graph.initializer}
    assert conv_weights and all(types[name] == onnx.TensorProto.FLOAT16 for name in conv_weights)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert fp16.weights_format == "float16" and fp_files["float32"].weights_format == "float32"
    meta = json.loads(fp16.metadata_path.read_text())
    assert meta["weights_format"] == "float16" and meta["input"]["dtype"] == "float32"
    assert weight_storage(fp16.onnx_path).initializer_bytes.get("FLOAT", 0) < 0.01 * fp16.size_bytes
    # Runs on ONNX Runtime CPU, close to the float32 file (scores are probabilities).
    batch = _val_batch(prepared_dataset, limit=4)
    half, full = _ort_outputs(fp16.onnx_path, batch), _ort_outputs(fp_files["float32"].onnx_path, batch)
    assert half.dtype == np.float32 and float(np.abs(half[..., 4] - full[..., 4]).max()) < 5e-3


@pytest.mark.slow
def test_int4_is_refused_for_a_float_checkpoint(fp16_run, tmp_path):
    with pytest.raises(ex.ExportInputError, match="--weights-format int4 needs a QAT checkpoint"):
        ex.export_onnx(fp16_run.paths.best, tmp_path / "x.onnx", imgsz=IMGSZ, weights_format="int4")
    cli = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--weights",
            str(fp16_run.paths.best),
            "--out",
            str(tmp_path / "y.onnx"),
            "--imgsz",
            str(IMGSZ),
            "--weights-format",
            "int4",
        ],
        check=False,
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 2 and "needs a QAT checkpoint" in cli.stderr
    assert not list(tmp_path.iterdir())


# --- the converter on hand-built graphs (fast) ----------------------------------------------------------
def _qcdq_conv_graph(codes: np.ndarray, low: int, high: int, extra_op: str | None = None, opset: int = 18):
    """``images -> Conv(DequantizeLinear(Clip(codes, low, high), scale, 0, axis=0))`` (+ an optional unary op)."""
    from onnx import TensorProto, helper, numpy_helper

    channels = codes.shape[0]
    inits = [
        numpy_helper.from_array(codes.astype(np.int8), "w_codes"),
        numpy_helper.from_array(np.array(low, np.int8), "lo"),
        numpy_helper.from_array(np.array(high, np.int8), "hi"),
        numpy_helper.from_array(np.linspace(0.01, 0.05, channels).astype(np.float32), "w_scale"),
        numpy_helper.from_array(np.zeros(channels, np.int8), "w_zp"),
    ]
    nodes = [
        helper.make_node("Clip", ["w_codes", "lo", "hi"], ["w_clipped"], name="clip"),
        helper.make_node("DequantizeLinear", ["w_clipped", "w_scale", "w_zp"], ["w"], name="dq", axis=0),
        helper.make_node("Conv", ["images", "w"], ["conv"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node(extra_op or "Identity", ["conv"], ["output0"], name="tail"),
    ]
    out_type = TensorProto.BOOL if extra_op == "IsNaN" else TensorProto.FLOAT
    graph = helper.make_graph(
        nodes,
        "qcdq",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, codes.shape[1], 8, 8])],
        [helper.make_tensor_value_info("output0", out_type, None)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def _codes(low: int, high: int, shape=(4, 3, 3, 3)) -> np.ndarray:
    return np.random.default_rng(0).integers(low, high + 1, size=shape).astype(np.int8)


def test_converter_rewrites_a_4_bit_chain_and_keeps_outputs(tmp_path):
    import onnx

    src = tmp_path / "qcdq.onnx"
    onnx.save(_qcdq_conv_graph(_codes(-7, 7), -7, 7), str(src))
    result = q4.convert_qcdq_file_to_int4(src, tmp_path / "int4.onnx")
    assert (result.int4_weights, result.int8_weights, result.clips_removed) == (1, 0, 1)
    assert result.opset_before == 18 and result.opset_after == 21 and result.max_abs_output_diff == 0.0
    model = onnx.load(str(tmp_path / "int4.onnx"))
    assert model.ir_version >= 10 and {i.name for i in model.graph.initializer} == {"w_codes", "w_scale", "w_zp_int4"}
    assert q4.weight_codes(model)["w"].tolist() == _codes(-7, 7).tolist()


def test_converter_keeps_8_bit_codes_int8(tmp_path):
    import onnx

    model, result = q4.convert_qcdq_to_int4(_qcdq_conv_graph(_codes(-127, 127), -127, 127))
    assert (result.int4_weights, result.int8_weights) == (0, 1)
    assert q4.weight_storage_counts(model) == {"INT8": 1}
    assert not any(n.op_type == "Clip" for n in model.graph.node)
    onnx.checker.check_model(model, full_check=True)


def test_converter_keeps_a_clip_that_changes_codes():
    codes = _codes(-7, 7)
    codes[0, 0, 0, 0] = 9  # outside Clip(-7, 7): the Clip is not the identity here
    model, result = q4.convert_qcdq_to_int4(_qcdq_conv_graph(codes, -7, 7))
    assert (result.int4_weights, result.chains_left_as_qcdq) == (0, 1)
    assert [n.op_type for n in model.graph.node][:2] == ["Clip", "DequantizeLinear"]
    assert q4.weight_storage_counts(model) == {"INT8": 1}


def test_converter_refuses_an_op_whose_meaning_it_has_not_checked():
    with pytest.raises(q4.Int4ConversionError, match=r"IsNaN \(13 -> 20\).*SAME_MEANING_AFTER_UPGRADE"):
        q4.convert_qcdq_to_int4(_qcdq_conv_graph(_codes(-7, 7), -7, 7, extra_op="IsNaN"), source="m.onnx")


def test_converter_refuses_a_graph_without_qcdq_weights(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["images"], ["output0"])],
        "float",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 3, 8, 8])],
    )
    src = tmp_path / "float.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(src))
    with pytest.raises(q4.Int4ConversionError, match=rf"{src}: no 'int8 initializer -> Clip -> DequantizeLinear'"):
        q4.convert_qcdq_file_to_int4(src, tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()
