"""W8A8 variants in the run config and the stage plan: ptq-w8a8, qat-w8a8-ft, ortq-w8a8, nncf-w8a8, OpenVINO evals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from auto_quantize_model.runs.config import ConfigError, resolve_run_config
from auto_quantize_model.runs.plan import plan_stages
from auto_quantize_model.runs.run_root import RunRoot
from auto_quantize_model.runs.variants import parse_variant

VARIANTS = "fp16,ptq-w8a8,qat-w8a8-ft,ortq-w8a8,nncf-w8a8"


@pytest.fixture(scope="module")
def stages() -> dict[str, tuple[str, ...]]:
    config = resolve_run_config("demo", {"variants": VARIANTS})
    return {stage.name: stage for stage in plan_stages(RunRoot("/r"), config)}


def _flag(argv: tuple[str, ...], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_variants_of_activation_schemes_export_qdq_and_baselines_have_no_checkpoint() -> None:
    ptq, ortq = parse_variant("ptq-w8a8"), parse_variant("nncf-w8a8")
    assert (ptq.weight_formats, ptq.headline_format, ptq.integer_weights_and_activations) == (("qdq",), "qdq", True)
    assert (ortq.name, ortq.needs_fp_onnx, ortq.trains, ortq.weight_formats) == ("nncf-w8a8", True, False, ("qdq",))
    assert not parse_variant("ptq-w4a8").integer_weights_and_activations  # 4-bit weights: no int8 claim
    assert parse_variant("qat-w8a8-ft").calibration_variant == "ptq-w8a8"
    assert parse_variant("qat-w4a16").weight_formats == ("qcdq", "int4")  # weight-only variants unchanged


def test_ptq_w8a8_calibrates_on_the_profiles_train_image_count(stages) -> None:
    argv = stages["s0-quantize-ptq-w8a8"].argv
    assert _flag(argv, "--calib-images") == "64" and "--bias-correction" not in argv
    export = stages["s0-export-ptq-w8a8-qdq"].argv
    assert _flag(export, "--weights-format") == "qdq"


def test_qat_w8a8_ft_starts_from_the_ptq_calibration(stages) -> None:
    stage = stages["s0-train-qat-w8a8-ft"]
    assert _flag(stage.argv, "--init-from") == "/r/seed-0/ptq-w8a8/weights/last.pt"  # checkpoint_policy: last
    assert "s0-quantize-ptq-w8a8" in stage.needs
    names = list(stages)
    assert names.index("s0-quantize-ptq-w8a8") < names.index("s0-train-qat-w8a8-ft")


@pytest.mark.parametrize("tool", ["ortq", "nncf"])
def test_baselines_quantize_the_fp32_onnx_on_the_same_images(stages, tool) -> None:
    stage = stages[f"s0-export-{tool}-w8a8-qdq"]
    assert Path(stage.argv[1]).name == "quantize_onnx_baseline.py"
    assert _flag(stage.argv, "--tool") == tool and _flag(stage.argv, "--calib-images") == "64"
    assert _flag(stage.argv, "--fp-onnx") == "/r/seed-0/onnx/yolov10n-fp16-float32.onnx"
    assert "s0-export-fp16-float32" in stage.needs
    assert stage.outputs == (Path(f"/r/seed-0/onnx/yolov10n-{tool}-w8a8-qdq.onnx"),)


def test_int8_files_and_fp32_are_scored_by_both_runtimes(stages) -> None:
    for variant in ("fp16-float32", "ptq-w8a8-qdq", "qat-w8a8-ft-qdq", "ortq-w8a8-qdq", "nncf-w8a8-qdq"):
        openvino = stages[f"s0-eval-{variant}-openvino"]
        assert _flag(openvino.argv, "--runtime") == "openvino" and "--fold-weights" not in openvino.argv
        assert openvino.outputs == (Path(f"/r/seed-0/eval/{variant}-openvino/metrics.json"),)
        assert "--runtime" not in stages[f"s0-eval-{variant}"].argv  # ONNX Runtime: the plain eval folder
    assert "s0-eval-fp16-float16-openvino" not in stages


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"variants": "fp16,ptq-w8a8", "ptq_calib_images": 0}, r"ptq_calib_images: variants \['ptq-w8a8'\] calibrate"),
        (
            {"variants": "fp16,ptq-w8a8,qat-w8a8-ft", "ptq_bias_correction": True},
            r"ptq_bias_correction: \['qat-w8a8-ft'\] start from the PTQ calibration",
        ),
        ({"variants": "fp16,qat-w8a8-ft"}, r"qat-w8a8-ft starts from the calibrated ptq-w8a8 checkpoint; add ptq-w8a8"),
        ({"variants": "fp16,ortq-w4a8"}, r"the ortq baseline is ortq-w8a8"),
        ({"eval_runtimes": "openvino"}, r"eval_runtimes: expected onnxruntime and optionally openvino"),
        ({"eval_runtimes": "onnxruntime,tensorrt"}, r"eval_runtimes: expected onnxruntime"),
    ],
)
def test_bad_activation_settings_are_refused_when_the_config_resolves(overrides, message) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        resolve_run_config("demo", overrides)
    assert "demo.yaml" in str(caught.value)


@pytest.mark.parametrize(
    ("scheme", "message"),
    [
        ({"act_bit_width": 9}, r"act_bit_width: bit width 9 outside \[2, 8\]"),
        ({"act_bit_width": 8, "act_overrides": [["haed_pred", 4]]}, r"act_overrides\[0\]: 'haed_pred' is no role"),
    ],
)
def test_a_bad_activation_scheme_file_is_refused_naming_key_and_file(tmp_path, scheme, message) -> None:
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"name": "mine", "weight_bit_width": 8, **scheme}))
    with pytest.raises(ConfigError, match=message) as caught:
        resolve_run_config("demo", {"variants": f"fp16,ptq-{path}"})
    assert str(path) in str(caught.value)
