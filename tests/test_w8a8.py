"""W8A8 end to end on the session's tiny trained yolov10n: PTQ with activation calibration, QDQ export, OpenVINO.

Real Brevitas calibration on train images, real Brevitas export, real ONNX Runtime and OpenVINO (CPU plugin).
"""

from __future__ import annotations

import pytest

import auto_quantize_model  # noqa: F401  (offline Ultralytics before anything imports it)
from auto_quantize_model.ptq import PTQInputError, PTQRequest, quantize_checkpoint
from auto_quantize_model.utils.io import read_json

IMGSZ = 64
CALIB_IMAGES = 8


@pytest.fixture(scope="module")
def ptq_w8a8(fp16_run, prepared_dataset, tmp_path_factory):
    """ptq-w8a8 as the runner makes it (no BN re-estimation): what the export tests and qat-w8a8-ft start from.

    (BN re-estimation of this 2-epoch model in float blows the head's class-branch activations up to ~1e10, which
    neither the export check nor a training survives; a trained model's are O(1).)
    """
    out = tmp_path_factory.mktemp("ptq") / "ptq-w8a8" / "best.pt"
    request = PTQRequest(
        fp16_run.paths.best, out, "w8a8", data=prepared_dataset.dataset_yaml, calib_images=CALIB_IMAGES, batch=4
    )
    return quantize_checkpoint(request)


@pytest.fixture(scope="module")
def w8a8_export(ptq_w8a8, prepared_dataset, tmp_path_factory):
    from auto_quantize_model.export import export_onnx

    out = tmp_path_factory.mktemp("onnx") / "yolov10n-ptq-w8a8-qdq.onnx"
    return export_onnx(
        ptq_w8a8.checkpoint,
        out,
        imgsz=IMGSZ,
        weights_format="qdq",
        validate=True,
        val_images=prepared_dataset.out_dir / "images" / "val",
    )


@pytest.mark.slow
def test_ptq_w8a8_calibrates_on_train_images_and_records_it(ptq_w8a8):
    metadata = read_json(ptq_w8a8.metadata_path)
    calibration = metadata["activation_calibration"]
    assert (calibration["images"], calibration["split"]) == (CALIB_IMAGES, "train")
    assert calibration["placement"]["counts"] == {"a8": 107, "float": 1}
    assert metadata["quant_scheme"]["act_bit_width"] == 8


def test_activation_schemes_refuse_ptq_without_calibration_images(fp16_run, prepared_dataset, tmp_path):
    request = PTQRequest(fp16_run.paths.best, tmp_path / "x.pt", "w8a8")
    with pytest.raises(PTQInputError, match="--calib-images"):
        quantize_checkpoint(request)
    with pytest.raises(PTQInputError, match="--bias-correction"):
        quantize_checkpoint(PTQRequest(fp16_run.paths.best, tmp_path / "y.pt", "w8a16", bias_correction=True))
    with pytest.raises(PTQInputError, match="scheme w8a16 is weight-only.*drop --calib-images"):
        data = prepared_dataset.dataset_yaml
        quantize_checkpoint(PTQRequest(fp16_run.paths.best, tmp_path / "z.pt", "w8a16", data=data, calib_images=4))


@pytest.mark.slow
def test_bn_re_estimation_sees_float_activations_not_uncalibrated_quantizers(fp16_run, prepared_dataset, tmp_path):
    """The same BN batches give w8a8 the statistics w8a16 gets (same 8-bit weights, no activation quantizers):
    uncalibrated activation quantizers (placeholder range 1.0) would have clipped BN's inputs."""
    import random

    import numpy as np
    import torch
    from ultralytics.nn.tasks import load_checkpoint

    def running_means(scheme, **extra):
        random.seed(0), np.random.seed(0), torch.manual_seed(0)  # the same augmented BN batches for both
        request = PTQRequest(
            fp16_run.paths.best, tmp_path / scheme / "best.pt", scheme, data=prepared_dataset.dataset_yaml,
            bn_recalib_batches=1, batch=4, **extra,
        )  # fmt: skip
        model = load_checkpoint(str(quantize_checkpoint(request).checkpoint))[0]
        return [m.running_mean.float() for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]

    with_activations, weight_only = running_means("w8a8", calib_images=4), running_means("w8a16")
    assert len(with_activations) == len(weight_only) > 50
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(with_activations, weight_only, strict=True))


@pytest.mark.slow
def test_w8a8_qdq_export_matches_pytorch_and_runs_int8_in_openvino(w8a8_export):
    metadata = read_json(w8a8_export.metadata_path)
    assert (metadata["kind"], metadata["weights_format"]) == ("qat-qdq", "qdq")
    assert metadata["validation"]["passed"]
    # e2e export: the one-to-many head branch is gone, 83 of the 107 quantized convs remain
    assert metadata["qdq_conversion"]["clips_removed"] == 83 and metadata["qdq_conversion"]["max_abs_output_diff"] == 0
    openvino = metadata["openvino"]
    assert openvino["int8_mac_share"] >= 0.95 and openvino["meets_target"], openvino
    assert openvino["float_convolutions"] == ["/model.23/dfl/conv/Conv"]  # DFL decoding stays float
    assert metadata["input"]["name"] == "images" and metadata["output"]["shape"][2] == 6  # the same contract


@pytest.mark.slow
def test_openvino_and_onnxruntime_score_the_same_qdq_file(w8a8_export, prepared_dataset, tmp_path):
    """``--runtime openvino`` on the same file: integer kernels, the same detections up to rounding, recorded."""
    from auto_quantize_model.evaluate import evaluate_onnx_coco

    results = {
        runtime: evaluate_onnx_coco(
            w8a8_export.onnx_path,
            prepared_dataset.val_annotations,
            prepared_dataset.out_dir / "images" / "val",
            tmp_path / runtime,
            imgsz=IMGSZ,
            providers=("CPUExecutionProvider",),
            runtime=runtime,
        ).metrics
        for runtime in ("onnxruntime", "openvino")
    }
    ov, ort = results["openvino"], results["onnxruntime"]
    assert ov["runtime"]["name"] == "openvino" and ov["runtime"]["device"].startswith("OpenVINO CPU")
    assert ort["runtime"] == {**ort["runtime"], "name": "onnxruntime", "device": "CPUExecutionProvider"}
    assert ov["session"]["runtime"] == "openvino" and ov["num_images"] == ort["num_images"]
    assert abs(ov["mAP50_95"] - ort["mAP50_95"]) <= 0.02  # int8 kernels in OpenVINO vs float math in ONNX Runtime


@pytest.mark.slow
def test_w4a8_qdq_export_packs_the_4_bit_weights_as_int4(fp16_run, prepared_dataset, tmp_path):
    """W4A8 as QDQ with INT4 weights (opset 21): the same checked export, half the INT8-container file's weights."""
    from auto_quantize_model.export import export_onnx

    request = PTQRequest(
        fp16_run.paths.best,
        tmp_path / "ptq-w4a8" / "best.pt",
        "w4a8",
        data=prepared_dataset.dataset_yaml,
        calib_images=CALIB_IMAGES,
        batch=4,
    )
    checkpoint = quantize_checkpoint(request).checkpoint
    val_images = prepared_dataset.out_dir / "images" / "val"
    result = export_onnx(
        checkpoint, tmp_path / "w4a8-qdq.onnx", imgsz=IMGSZ, weights_format="qdq", validate=True, val_images=val_images
    )
    metadata = read_json(result.metadata_path)
    assert (metadata["kind"], metadata["weights_format"]) == ("qat-qdq", "qdq") and metadata["validation"]["passed"]
    conversion = metadata["qdq_conversion"]
    assert (conversion["int4_weights"], conversion["opset"], conversion["max_abs_output_diff"]) == (83, 21, 0.0)
    assert metadata["graph"]["weight_dequantizers_by_storage"] == {"INT4": 83}


def _quantizers(checkpoint):
    from ultralytics.nn.tasks import load_checkpoint

    from auto_quantize_model.quant.activations import activation_quantizers

    return dict(activation_quantizers(load_checkpoint(str(checkpoint))[0]))


@pytest.mark.slow
def test_qat_w8a8_ft_starts_from_the_ptq_ranges_and_trains_them(ptq_w8a8, prepared_dataset, tmp_path):
    """Fine-tuning copies the calibrated thresholds (learned from there); the saved EMA holds real ranges."""
    from conftest import tiny_train_request

    from auto_quantize_model.train import train_stage

    request = tiny_train_request(
        tmp_path,
        prepared_dataset.dataset_yaml,
        quantized=True,
        quant_scheme="w8a8",
        init_from=ptq_w8a8.checkpoint,
    )
    result = train_stage(request)
    assert result.stage == "qat-w8a8-ft"
    assert not result.paths.dir.joinpath("nonfinite_losses.jsonl").exists()
    calibrated, tuned = _quantizers(ptq_w8a8.checkpoint), _quantizers(result.paths.best)
    assert set(calibrated) == set(tuned)
    assert all(q.is_initialized for q in tuned.values())
    moved = [name for name, q in tuned.items() if q.kind != "image" and q.threshold() != calibrated[name].threshold()]
    assert moved, "the thresholds are learned: fine-tuning moves them"
    ratios = [float(q.threshold() / calibrated[n].threshold()) for n, q in tuned.items() if q.kind != "image"]
    assert 0.5 < min(ratios) and max(ratios) < 2.0  # started from the calibration, not from Brevitas' placeholder


@pytest.mark.slow
def test_qat_w8a8_from_scratch_sets_ranges_before_the_first_step(prepared_dataset, tmp_path):
    """Without calibration the EMA (what is saved) would keep Brevitas' placeholder threshold 1.0 for ever."""
    from conftest import tiny_train_request

    from auto_quantize_model.train import train_stage

    result = train_stage(
        tiny_train_request(tmp_path, prepared_dataset.dataset_yaml, quantized=True, quant_scheme="w8a8")
    )
    quantizers = _quantizers(result.paths.best)
    runtime = [q for q in quantizers.values() if q.kind != "image"]
    thresholds = [float(q.threshold()) for q in runtime]
    assert runtime and all(q.is_initialized for q in runtime)
    assert all(0 < t < float("inf") for t in thresholds), [t for t in thresholds if not 0 < t < float("inf")]
    assert sum(t == 1.0 for t in thresholds) <= 1, "still Brevitas' placeholder threshold 1.0"
    assert len(set(thresholds)) > len(thresholds) // 2  # each tensor's own range


@pytest.mark.parametrize(("scheme", "refused"), [("w4a8", True), ("w8a8", False), ("w4a16", False)])
def test_openvino_is_refused_a_file_with_sub_8_bit_weights_and_quantized_activations(scheme, refused, tmp_path):
    """The check reads the file's embedded scheme before any session starts (an Identity graph carries it)."""
    import json

    import onnx
    from onnx import TensorProto, helper

    from auto_quantize_model.evaluate import EvaluationInputError, evaluate_onnx_coco
    from auto_quantize_model.onnx_io.embedded import QUANT_SCHEME_KEY
    from auto_quantize_model.quant.scheme import named_scheme

    value = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 32, 32])
    output = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, 32, 32])
    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["out"])], "g", [value], [output])
    model = helper.make_model(graph)
    onnx.helper.set_model_props(model, {QUANT_SCHEME_KEY: json.dumps(named_scheme(scheme).to_dict())})
    onnx.save(model, tmp_path / "m.onnx")
    (tmp_path / "images").mkdir()
    with pytest.raises(EvaluationInputError) as caught:
        evaluate_onnx_coco(tmp_path / "m.onnx", tmp_path / "no.json", tmp_path / "images", tmp_path, runtime="openvino")
    assert ("--runtime onnxruntime" in str(caught.value)) is refused  # else it got past the check, to the annotations
