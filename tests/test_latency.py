"""The latency stage: every ONNX file of a seed timed in one process, interleaved, warm, equal threads.

Uses the table models of ``test_evaluator`` (tiny real ONNX graphs) with real onnxruntime.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from test_evaluator import build_table_model

from auto_quantize_model.evaluation import ort_session
from auto_quantize_model.evaluation.errors import EvaluationInputError
from auto_quantize_model.latency import LatencySettings, time_onnx_latency
from auto_quantize_model.runs import latency_keys as L
from auto_quantize_model.utils.io import sha256_file

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "cv-models" / "time_onnx_latency.py"
LABELS = ("fp16-float32", "qat-w4a16-qcdq", "qat-w4a16-int4")


@pytest.fixture()
def files(tmp_path) -> dict[str, Path]:
    """Three small real ONNX files (different tables, so different files)."""
    return {
        label: build_table_model(tmp_path / f"{label}.onnx", np.full((3, 4, 6), i, np.float32), (64, 64))
        for i, label in enumerate(LABELS)
    }


def test_latency_json_has_median_spread_load_and_provider_of_every_file(tmp_path, files):
    result = time_onnx_latency(files, tmp_path / "latency.json", LatencySettings(rounds=20, threads=1))
    report = json.loads(result.path.read_text())
    assert report == result.report and set(report[L.FILES]) == set(LABELS)
    for label, entry in report[L.FILES].items():
        assert entry[L.SHA256] == sha256_file(files[label]) and entry[L.PROVIDERS] == ["CPUExecutionProvider"]
        assert len(entry[L.RUNS_MS]) == 20
        assert entry[L.MIN_MS] <= entry[L.P25_MS] <= entry[L.MEDIAN_MS] <= entry[L.P75_MS] <= entry[L.MAX_MS]
        assert entry[L.MEDIAN_MS] == pytest.approx(float(np.median(entry[L.RUNS_MS])))
        assert entry[L.INPUT]["shape"] == [1, 3, 64, 64]
    assert report[L.THREADS] == 1 and report[L.ROUNDS] == 20 and report[L.FOLD_WEIGHTS] is False
    load = report[L.LOAD_AVG_1MIN]
    assert load[L.LOAD_MIN] <= load[L.LOAD_MEDIAN] <= load[L.LOAD_MAX] and load[L.LOAD_MIN] >= 0
    assert report[L.PROVIDERS_REQUESTED] == ["CPUExecutionProvider"] and report[L.CPUS] >= 1


def test_files_are_warmed_up_then_timed_in_rotating_interleaved_rounds(tmp_path, files, monkeypatch):
    order = []
    real_run = ort_session.OrtRuntimeSession.run
    monkeypatch.setattr(
        ort_session.OrtRuntimeSession,
        "run",
        lambda self, x: order.append(Path(self.session._model_path).stem) or real_run(self, x),
    )
    time_onnx_latency(files, tmp_path / "latency.json", LatencySettings(rounds=20, threads=1, warmup_runs=2))
    warm, timed = order[: 2 * len(LABELS)], order[2 * len(LABELS) :]
    assert warm == [label for label in LABELS for _ in range(2)]
    rounds = [timed[i : i + len(LABELS)] for i in range(0, len(timed), len(LABELS))]
    assert len(rounds) == 20 and all(sorted(r) == sorted(LABELS) for r in rounds)  # every file once per round
    assert [r[0] for r in rounds[:3]] == list(LABELS)  # the starting file rotates


def test_bad_requests_are_refused_before_any_session_opens(tmp_path, files, monkeypatch):
    def no_session(*args, **kwargs):
        raise AssertionError("a session was opened")

    monkeypatch.setattr(ort_session, "open_session", no_session)
    with pytest.raises(EvaluationInputError, match="rounds=5: at least 20 .*latency_rounds"):
        time_onnx_latency(files, tmp_path / "l.json", LatencySettings(rounds=5, threads=1))
    with pytest.raises(EvaluationInputError, match="missing.onnx: ONNX file not found"):
        time_onnx_latency({"x": tmp_path / "missing.onnx"}, tmp_path / "l.json", LatencySettings(20, 1))
    assert not (tmp_path / "l.json").exists()


def _cli_main():
    spec = importlib.util.spec_from_file_location("latency_cli", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_cli_times_the_files_and_a_provider_that_does_not_start_exits_2(tmp_path, files, capsys):
    onnx_args = [f"--onnx={label}={path}" for label, path in files.items()]
    out = tmp_path / "latency.json"
    assert _cli_main()([*onnx_args, "--out", str(out), "--threads", "1", "--fold-weights"]) == 0
    assert json.loads(out.read_text())[L.FOLD_WEIGHTS] is True
    assert "qat-w4a16-int4: " in capsys.readouterr().out
    cuda = ["--providers", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert _cli_main()([*onnx_args, "--out", str(tmp_path / "cuda.json"), *cuda]) == 2
    assert "--allow-provider-fallback" in capsys.readouterr().err and not (tmp_path / "cuda.json").exists()
    assert _cli_main()([*onnx_args, "--out", str(tmp_path / "cpu.json"), *cuda, "--allow-provider-fallback"]) == 0
    entry = json.loads((tmp_path / "cpu.json").read_text())[L.FILES]["fp16-float32"]
    assert entry[L.PROVIDERS] == ["CPUExecutionProvider"]
