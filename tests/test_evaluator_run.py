"""The evaluator's run around the model: providers, warm-up, progress, hashing and the model's own provenance.

Uses the table models of ``test_evaluator`` (tiny ONNX graphs that emit chosen detections per image) with real
onnxruntime.
"""

from __future__ import annotations

import json

import onnx
import pytest
from test_evaluator import SIZES, _cli_main, _evaluate, build_table_model, detections_table, gt_detections, make_dataset

from auto_quantize_model.evaluation import ort_session
from auto_quantize_model.evaluation.loop import LOG_INTERVAL_S, Progress
from auto_quantize_model.evaluation.ort_session import SessionSettings
from auto_quantize_model.onnx_io.embedded import provenance_props
from auto_quantize_model.onnx_io.settings import ExportSettings
from auto_quantize_model.quant.scheme import named_scheme
from auto_quantize_model.runs import metrics_keys as K
from auto_quantize_model.runs.run_root import export_metadata_path
from auto_quantize_model.utils.io import sha256_cache_path
from auto_quantize_model.utils.version import package_version


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("coco"))


@pytest.fixture()
def gt_model(tmp_path, dataset):
    table = detections_table(dataset, gt_detections(dataset), (128, 128), "e2e")
    return build_table_model(tmp_path / "gt.onnx", table, (128, 128))


# --- no warm-up: the first batch of each run slot is left out of the latency figures ---------------------------


def test_no_warm_up_run_and_each_slots_first_batch_is_not_a_latency_sample(tmp_path, dataset, gt_model, monkeypatch):
    calls = []
    real_run = ort_session.OrtRuntimeSession.run
    monkeypatch.setattr(ort_session.OrtRuntimeSession, "run", lambda self, x: calls.append(1) or real_run(self, x))
    m = _evaluate(tmp_path, dataset, gt_model, "out", session_settings=SessionSettings(1, 1)).metrics
    assert len(calls) == len(SIZES)  # one run per image, nothing before the first
    latency = m[K.LATENCY_MS]
    assert latency[K.LATENCY_FIRST_BATCHES_EXCLUDED] == 1
    assert latency[K.LATENCY_PER_BATCH][K.LATENCY_STAT_COUNT] == len(SIZES) - 1
    assert m[K.MAP50_95] == pytest.approx(1.0, abs=1e-12)  # the first batch still counts for accuracy


def test_model_hash_is_cached_beside_the_file_and_reused(tmp_path, dataset, gt_model):
    first = _evaluate(tmp_path, dataset, gt_model, "a").metrics[K.ONNX][K.SHA256]
    cache = sha256_cache_path(gt_model)
    assert json.loads(cache.read_text())["sha256"] == first
    record = json.loads(cache.read_text())
    cache.write_text(json.dumps({**record, "sha256": "planted"}))  # proves the second run read the cache
    assert _evaluate(tmp_path, dataset, gt_model, "b").metrics[K.ONNX][K.SHA256] == "planted"


# --- progress without a terminal -------------------------------------------------------------------------------


def test_progress_prints_plain_lines_when_stderr_is_not_a_terminal(capsys):
    bar = Progress(10, interval_s=0.0)  # capsys' stderr is not a terminal
    for n in (3, 3, 4, 0):
        bar.update(n)
    bar.close()
    err = capsys.readouterr().err
    assert "\r" not in err
    assert err.splitlines() == [line for line in err.splitlines() if line.startswith("evaluate ")]
    assert err.splitlines()[-1].startswith("evaluate 10/10 images") and len(err.splitlines()) == 3
    assert Progress(10).interval_s == LOG_INTERVAL_S == 5.0


def test_evaluation_without_a_terminal_ends_with_a_progress_line(tmp_path, dataset, gt_model, capsys):
    _evaluate(tmp_path, dataset, gt_model, "out")
    lines = capsys.readouterr().err.splitlines()
    assert f"evaluate {len(SIZES)}/{len(SIZES)} images" in lines[-1]


# --- providers -------------------------------------------------------------------------------------------------


def _cli_args(dataset, model, out) -> list[str]:
    return ["--onnx", str(model), "--ann-file", str(dataset.ann_file), "--images-dir", str(dataset.images_dir)] + [
        "--out-dir",
        str(out),
        "--imgsz",
        "128",
    ]


def test_cli_requested_provider_that_does_not_start_exits_2_unless_fallback(tmp_path, dataset, gt_model, capsys):
    cuda = ["--providers", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert _cli_main()([*_cli_args(dataset, gt_model, tmp_path / "no"), *cuda]) == 2
    err = capsys.readouterr().err
    assert "CUDAExecutionProvider" in err and "--allow-provider-fallback" in err
    assert not (tmp_path / "no").exists()
    assert _cli_main()([*_cli_args(dataset, gt_model, tmp_path / "yes"), *cuda, "--allow-provider-fallback"]) == 0
    metrics = json.loads((tmp_path / "yes" / K.METRICS_FILE).read_text())
    assert metrics[K.PROVIDERS] == ["CPUExecutionProvider"] and metrics[K.ALLOW_PROVIDER_FALLBACK] is True


def test_cli_default_provider_is_cpu_and_recorded(tmp_path, dataset, gt_model):
    assert _cli_main()(_cli_args(dataset, gt_model, tmp_path / "o")) == 0
    metrics = json.loads((tmp_path / "o" / K.METRICS_FILE).read_text())
    assert metrics[K.PROVIDERS_REQUESTED] == metrics[K.PROVIDERS] == ["CPUExecutionProvider"]
    assert metrics[K.ALLOW_PROVIDER_FALLBACK] is False


# --- the model's own provenance --------------------------------------------------------------------------------


def _embed(model_path, scheme_name: str) -> dict:
    """Write the exporter's provenance keys into ``model_path`` (as export.py does for QCDQ/INT4 files)."""
    scheme = named_scheme(scheme_name).to_dict()
    settings = ExportSettings((128, 128), "e2e", 17, False, False, "qcdq")
    proto = onnx.load(str(model_path))
    for key, value in provenance_props(scheme, "ab" * 32, settings, validated=True).items():
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.save(proto, str(model_path))
    return scheme


def test_quantized_file_without_its_sidecar_reports_its_full_scheme(tmp_path, dataset, gt_model):
    scheme = _embed(gt_model, "w4a16-fl8")
    onnx_record = _evaluate(tmp_path, dataset, gt_model, "out").metrics[K.ONNX]
    assert onnx_record[K.ONNX_QUANT_SCHEME] == scheme
    assert onnx_record[K.ONNX_PROVENANCE_SOURCE] == "onnx metadata_props"
    assert onnx_record[K.ONNX_PACKAGE_VERSION] == package_version()
    assert onnx_record[K.ONNX_GIT_COMMIT]  # the tests run inside the git checkout


def test_sidecar_is_read_first_when_present(tmp_path, dataset, gt_model):
    _embed(gt_model, "w4a16-fl8")
    sidecar_scheme = named_scheme("w8a16").to_dict()
    sidecar = {"quant_scheme": sidecar_scheme, "package_version": "9.9", "git": {"commit": "abc", "dirty": True}}
    export_metadata_path(gt_model).write_text(json.dumps(sidecar))
    onnx_record = _evaluate(tmp_path, dataset, gt_model, "out").metrics[K.ONNX]
    assert onnx_record[K.ONNX_QUANT_SCHEME] == sidecar_scheme and onnx_record[K.ONNX_GIT_COMMIT] == "abc-dirty"
    assert onnx_record[K.ONNX_PROVENANCE_SOURCE] == f"sidecar {export_metadata_path(gt_model).name}"


def test_float_file_has_no_scheme(tmp_path, dataset, gt_model):
    onnx_record = _evaluate(tmp_path, dataset, gt_model, "out").metrics[K.ONNX]
    assert onnx_record[K.ONNX_QUANT_SCHEME] is None and onnx_record[K.ONNX_PROVENANCE_SOURCE] is None
