"""OpenVINO as the evaluator's inference runtime: the same ONNX file, compiled by OpenVINO's CPU plugin.

OpenVINO reads a QDQ ONNX and runs its convolutions on integer kernels (the precision of each executed layer is in
its runtime model, see :func:`auto_quantize_model.onnx_io.qdq.openvino_int8_report`); a float file runs in float
(bf16 where the CPU has it, OpenVINO's default; ``f32`` forces float32). The ONNX Runtime options the evaluator
takes map as: ``intra_op_threads`` -> ``INFERENCE_NUM_THREADS`` per inference (0 = every CPU), ``parallel_runs`` ->
that many streams and infer requests (0 = auto = 1: two requests driven from Python threads once hung for good in
a demo run, while OpenVINO's own threads already use every core); ``fold_weights`` does not apply (OpenVINO folds
constant DequantizeLinear when it compiles) and only ``graph_optimization="all"`` exists.
"""

from __future__ import annotations

import queue
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from auto_quantize_model.evaluation.errors import EvaluationInputError
from auto_quantize_model.evaluation.runtime import ModelIO
from auto_quantize_model.onnx_io.contract import OUTPUT_NAME
from auto_quantize_model.onnx_io.preprocess import as_hw

DEVICES = ("CPU",)  # what this module was measured on; OpenVINO's GPU/NPU plugins are untested here
PRECISION_HINTS = ("default", "f32", "bf16", "f16")


@dataclass(frozen=True)
class OpenVINOSettings:
    """Resolved OpenVINO options, as recorded in ``metrics.json`` (``session``)."""

    device: str
    inference_num_threads: int
    parallel_runs: int
    inference_precision_hint: str  # what the compiled model reports (bf16 on CPUs with it: OpenVINO's default)

    def describe(self) -> dict[str, Any]:
        return {
            "runtime": "openvino",
            "device": self.device,
            "inference_num_threads": self.inference_num_threads,
            "parallel_runs": self.parallel_runs,
            "num_streams": self.parallel_runs,
            "inference_precision_hint": self.inference_precision_hint,
        }


def _resolve(settings: Any) -> tuple[int, int]:
    """(threads per inference, parallel runs) from the evaluator's ONNX Runtime-style settings (0 = auto)."""
    from auto_quantize_model.evaluation.ort_session import available_cpus

    threads = int(getattr(settings, "intra_op_threads", 0) or 0)
    parallel = int(getattr(settings, "parallel_runs", 0) or 0)
    if getattr(settings, "graph_optimization", "all") != "all":
        raise EvaluationInputError(
            f"graph_optimization={settings.graph_optimization!r} is an ONNX Runtime option; OpenVINO has only 'all'"
        )
    if threads < 0 or parallel < 0:
        raise EvaluationInputError(f"intra_op_threads={threads} and parallel_runs={parallel} must be >= 0 (0 = auto)")
    parallel = parallel or 1
    return threads or max(1, available_cpus() // parallel), parallel


def compile_model(onnx_path: Path, device: str, threads: int, streams: int, precision: str = "default") -> Any:
    """``ov.Core().compile_model`` of the ONNX file with explicit threads and streams (latency-style settings)."""
    import openvino as ov

    if device not in DEVICES:
        raise EvaluationInputError(f"OpenVINO device {device!r}: only {DEVICES} is supported here")
    if precision not in PRECISION_HINTS:
        raise EvaluationInputError(f"inference precision {precision!r} must be one of {PRECISION_HINTS}")
    config = {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": streams, "PERFORMANCE_HINT": "LATENCY"}
    if precision != "default":
        config["INFERENCE_PRECISION_HINT"] = precision
    try:
        return ov.Core().compile_model(str(onnx_path), device, config)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise EvaluationInputError(f"{onnx_path}: OpenVINO cannot compile the model ({first})") from error


def _model_io(compiled: Any, onnx_path: Path, imgsz: int | tuple[int, int], batch: int) -> ModelIO:
    """Input/output names, batch and spatial size (fixed model dimensions win, as for ONNX Runtime)."""
    inputs = compiled.inputs
    shape = inputs[0].get_partial_shape()
    if len(inputs) != 1 or shape.rank.get_length() != 4:
        raise EvaluationInputError(f"{onnx_path}: expected one [N, 3, H, W] image input, got {len(inputs)} inputs")
    dims = [d.get_length() if d.is_static else None for d in shape]
    names = [next(iter(o.get_names()), "") for o in compiled.outputs]
    output_name = OUTPUT_NAME if OUTPUT_NAME in names else names[0]
    dtype = {"f32": np.float32, "f16": np.float16}.get(inputs[0].get_element_type().to_string())
    if dtype is None:
        raise EvaluationInputError(f"{onnx_path}: input type {inputs[0].get_element_type()} is not float32/float16")
    hw_fixed = dims[2] is not None and dims[3] is not None
    input_hw = (dims[2], dims[3]) if hw_fixed else as_hw(imgsz)
    batch_fixed = dims[0] is not None
    input_name = next(iter(inputs[0].get_names()))
    return ModelIO(input_name, output_name, dims[0] if batch_fixed else batch, batch_fixed, input_hw, hw_fixed, dtype)


class OpenVINORuntimeSession:
    """A compiled OpenVINO model behind the evaluator's ``RuntimeSession`` interface (evaluation.runtime).

    ``run`` is thread-safe: each call borrows one of ``parallel_runs`` infer requests.
    """

    def __init__(self, compiled: Any, io: ModelIO, settings: OpenVINOSettings, onnx_path: Path) -> None:
        self.compiled, self.io, self.settings, self.onnx_path = compiled, io, settings, onnx_path
        self.parallel_runs = settings.parallel_runs
        self._requests: queue.Queue = queue.Queue()
        for _ in range(settings.parallel_runs):
            self._requests.put(compiled.create_infer_request())
        self._output = next(o for o in compiled.outputs if io.output_name in o.get_names())

    def run(self, x: np.ndarray) -> np.ndarray:
        request = self._requests.get()
        try:
            return request.infer({self.io.input_name: x})[self._output].copy()
        finally:
            self._requests.put(request)

    def devices(self) -> list[str]:
        import openvino as ov

        full_name = ov.Core().get_property(self.settings.device, "FULL_DEVICE_NAME")
        return [f"OpenVINO {self.settings.device} ({full_name})"]

    def describe(self) -> dict[str, Any]:
        return self.settings.describe()

    def model_metadata(self) -> dict[str, str]:
        """The ONNX file's ``metadata_props`` (OpenVINO does not carry them into the compiled model)."""
        import onnx

        proto = onnx.load(str(self.onnx_path), load_external_data=False)
        return {prop.key: prop.value for prop in proto.metadata_props}


def open_runtime_session(
    onnx_path: Path,
    providers: Sequence[str],
    settings: Any,
    imgsz: int | tuple[int, int],
    batch: int,
    allow_fallback: bool = False,
) -> OpenVINORuntimeSession:
    """Compile ``onnx_path`` on OpenVINO's CPU plugin; ONNX Runtime's ``providers`` and ``allow_fallback`` do not
    apply (the CPU plugin is the one device here, and a model it cannot compile is an error)."""
    threads, parallel = _resolve(settings)
    compiled = compile_model(onnx_path, "CPU", threads, parallel)
    hint = compiled.get_property("INFERENCE_PRECISION_HINT")
    resolved = OpenVINOSettings("CPU", threads, parallel, getattr(hint, "to_string", lambda: str(hint))())
    return OpenVINORuntimeSession(compiled, _model_io(compiled, onnx_path, imgsz, batch), resolved, onnx_path)
