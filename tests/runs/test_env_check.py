"""One ONNX Runtime per environment, and the run preflight ``scripts/check_env.py`` on this CPU machine."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from auto_quantize_model.runs.env_check import (
    EnvCheckError,
    installed_onnxruntime_distributions,
    kernels_for,
    parse_device,
    require_single_onnxruntime,
)

ROOT = Path(__file__).resolve().parents[2]
CHECK_ENV = ROOT / "scripts" / "check_env.py"
TORCH_ARCHS = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]  # PyPI torch 2.14.1 +cu130


def _dist_info(site: Path, name: str, version: str) -> Path:
    """Install-record of a distribution (what pip writes next to the package), enough for importlib.metadata."""
    folder = site / f"{name.replace('-', '_')}-{version}.dist-info"
    folder.mkdir(parents=True)
    (folder / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    return folder


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _cuda_provider_available() -> bool:
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def _run(*args: str, env: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


# --- one ONNX Runtime -------------------------------------------------------------------------------


def test_both_onnxruntime_distributions_are_refused_with_the_fix(tmp_path):
    _dist_info(tmp_path, "onnxruntime", "1.31.1")
    _dist_info(tmp_path, "onnxruntime-gpu", "1.31.1")
    with pytest.raises(EnvCheckError, match=r"both onnxruntime 1\.31\.1 and onnxruntime-gpu 1\.31\.1") as caught:
        require_single_onnxruntime(path=[str(tmp_path)])
    assert "pip uninstall -y onnxruntime onnxruntime-gpu" in str(caught.value)
    assert "pixi" in str(caught.value)


def test_one_onnxruntime_distribution_is_accepted(tmp_path):
    _dist_info(tmp_path, "onnxruntime-gpu", "1.31.1")
    assert require_single_onnxruntime(path=[str(tmp_path)]) == "onnxruntime-gpu"
    assert installed_onnxruntime_distributions(path=[str(tmp_path)]) == {"onnxruntime-gpu": "1.31.1"}


def test_no_onnxruntime_names_the_extras(tmp_path):
    with pytest.raises(EnvCheckError, match=r"\.\[cpu\]'.*\.\[gpu\]'"):
        require_single_onnxruntime(path=[str(tmp_path)])


def test_this_pip_venv_has_only_the_cpu_onnxruntime():
    assert require_single_onnxruntime() == "onnxruntime"


def test_evaluator_refuses_an_install_with_both_runtimes(tmp_path):
    # A second install record on the path, as `pip install onnxruntime-gpu` into this venv would leave.
    _dist_info(tmp_path / "site", "onnxruntime-gpu", "1.31.1")
    code = (
        "from pathlib import Path\nfrom auto_quantize_model.evaluation.ort_session import open_session\n"
        "open_session(Path('missing.onnx'), ['CPUExecutionProvider'])"
    )
    result = _run("-c", code, env={"PYTHONPATH": str(tmp_path / "site")})
    assert result.returncode != 0
    assert "EnvCheckError: both onnxruntime" in result.stderr


def test_export_refuses_an_install_with_both_runtimes_before_loading_the_checkpoint(tmp_path):
    _dist_info(tmp_path / "site", "onnxruntime-gpu", "1.31.1")
    (tmp_path / "best.pt").write_bytes(b"not a checkpoint: loading it would fail differently")
    code = (
        "from auto_quantize_model.export import export_onnx\n"
        f"export_onnx({str(tmp_path / 'best.pt')!r}, {str(tmp_path / 'm.onnx')!r})"
    )
    result = _run("-c", code, env={"PYTHONPATH": str(tmp_path / "site")})
    assert result.returncode != 0
    assert "EnvCheckError: both onnxruntime" in result.stderr


# --- device parsing and kernel coverage ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "indices"), [("cpu", ()), ("0", (0,)), ("0,1", (0, 1)), ("cuda:1", (1,)), ("cuda", (0,))]
)
def test_parse_device(text, indices):
    assert parse_device(text) == indices


@pytest.mark.parametrize("text", ["gpu", "0;1", "cuda:x", ""])
def test_parse_device_rejects_what_training_would_not_take(text):
    with pytest.raises(EnvCheckError, match="expected cpu"):
        parse_device(text)


@pytest.mark.parametrize(
    ("capability", "archs", "expected"),
    [
        ((12, 0), TORCH_ARCHS, True),  # RTX 5090 on PyPI's torch 2.14.1
        ((8, 9), TORCH_ARCHS, True),  # sm_86 cubins run on sm_89 (same major, higher minor)
        ((7, 0), TORCH_ARCHS, False),  # V100: older than every cubin
        ((12, 0), ["sm_80", "sm_90"], False),  # Blackwell on a build without sm_100/sm_120 and no PTX
        ((12, 0), ["sm_80", "compute_90"], True),  # PTX is JIT-compiled for newer GPUs
        ((10, 0), ["sm_90a"], False),  # arch-specific cubins run only on their own arch
        ((9, 0), ["sm_90a"], True),
    ],
)
def test_kernels_for_capability(capability, archs, expected):
    assert kernels_for(capability, archs) is expected


# --- scripts/check_env.py ------------------------------------------------------------------------------


@pytest.mark.skipif(_cuda_available(), reason="this machine has a CUDA GPU: --device 0 can pass here")
def test_check_env_device_0_fails_fast_on_a_cpu_machine():
    start = time.perf_counter()
    result = _run(str(CHECK_ENV), "--device", "0", timeout=60)
    elapsed = time.perf_counter() - start
    assert result.returncode == 1
    assert elapsed < 10, f"took {elapsed:.1f} s"
    reason = result.stderr.strip().splitlines()
    assert len(reason) == 1 and reason[0].startswith("check_env: FAIL: torch:"), result.stderr
    assert "sees no CUDA GPU" in reason[0]
    assert "AMP train step" not in result.stdout  # failed before anything expensive


@pytest.mark.skipif(_cuda_provider_available(), reason="this onnxruntime has CUDAExecutionProvider")
def test_check_env_refuses_cuda_provider_with_the_cpu_onnxruntime():
    result = _run(str(CHECK_ENV), "--device", "cpu", "--providers", "CUDAExecutionProvider", "CPUExecutionProvider")
    assert result.returncode == 1
    assert "CUDAExecutionProvider not available in onnxruntime" in result.stderr
    assert "onnxruntime-gpu" in result.stderr
    assert "AMP train step" not in result.stdout


def test_check_env_refuses_a_missing_onnx_model_before_importing_torch(tmp_path):
    result = _run(str(CHECK_ENV), "--qcdq-onnx", str(tmp_path / "nope.onnx"), timeout=60)
    assert result.returncode == 1
    assert "ONNX model not found: QCDQ" in result.stderr
    assert "torch" not in result.stdout


def _tiny_qcdq_model(path: Path) -> Path:
    """Conv whose int8 weight goes through DequantizeLinear (the QCDQ weight pattern); H and W left open."""
    weight = numpy_helper.from_array(np.random.default_rng(0).integers(-7, 8, (4, 3, 3, 3), dtype=np.int8), "w_q")
    scale = numpy_helper.from_array(np.full(4, 0.05, dtype=np.float32), "w_scale")
    zero = numpy_helper.from_array(np.zeros(4, dtype=np.int8), "w_zero")
    nodes = [
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w"], axis=0),
        helper.make_node("Conv", ["images", "w"], ["output0"], pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny-qcdq",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, "height", "width"])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 4, "height", "width"])],
        initializer=[weight, scale, zero],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.mark.slow
def test_check_env_cpu_passes_and_says_what_a_gpu_profile_needs(tmp_path):
    qcdq = _tiny_qcdq_model(tmp_path / "tiny-qcdq.onnx")
    result = _run(str(CHECK_ENV), "--device", "cpu", "--imgsz", "64", "--qcdq-onnx", str(qcdq), "--onnx-imgsz", "32")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1] == "check_env: OK (cpu)"
    assert any(line.startswith("[ ok ] torch: torch ") and "CUDA build" in line for line in lines)
    assert any(line.startswith("[ ok ] onnxruntime install: onnxruntime ") for line in lines)
    assert any(line.startswith("[ ok ] AMP train step: yolov10n w4a16 (107 quantized convs)") for line in lines)
    assert any(
        line.startswith("[ ok ] QCDQ ONNX: tiny-qcdq.onnx: input [1, 3, 32, 32] -> [1, 4, 32, 32]") for line in lines
    )
    assert any(line.startswith("note: a GPU profile would need") and "onnxruntime-gpu" in line for line in lines)
