"""``metrics.json``'s runtime record where the ONNX Runtime wheel is ``onnxruntime-gpu`` (the GPU environments)."""

from __future__ import annotations

from importlib import metadata

import onnxruntime

from auto_quantize_model.evaluation.runtime import runtime_record


class _CpuSession:
    """The one method of a runtime session that ``runtime_record`` reads."""

    def devices(self) -> list[str]:
        return ["CPUExecutionProvider"]


def test_the_runtime_version_comes_from_the_module_not_a_distribution_named_onnxruntime(monkeypatch) -> None:
    real_version = metadata.version

    def gpu_wheel_only(name: str) -> str:  # what importlib.metadata says where only onnxruntime-gpu is installed
        if name == "onnxruntime":
            raise metadata.PackageNotFoundError(name)
        return real_version(name)

    monkeypatch.setattr(metadata, "version", gpu_wheel_only)
    record = runtime_record("onnxruntime", _CpuSession())
    assert record == {"name": "onnxruntime", "version": onnxruntime.__version__, "device": "CPUExecutionProvider"}
