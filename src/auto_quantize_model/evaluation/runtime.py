"""The evaluator's inference-runtime interface: what the loop needs of a runtime, and how one is opened.

A runtime is one module with an ``open_runtime_session(onnx_path, providers, settings, imgsz, batch,
allow_fallback)`` that returns a :class:`RuntimeSession`; a requested device that does not start is an error
unless ``allow_fallback``: ONNX Runtime (:mod:`auto_quantize_model.evaluation.ort_session`) and OpenVINO
(:mod:`auto_quantize_model.evaluation.openvino_session`), one entry each in :data:`RUNTIMES`.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from auto_quantize_model.evaluation.errors import EvaluationInputError

# runtime name -> module implementing ``open_runtime_session``
RUNTIMES = {
    "onnxruntime": "auto_quantize_model.evaluation.ort_session",
    "openvino": "auto_quantize_model.evaluation.openvino_session",
}
DEFAULT_RUNTIME = "onnxruntime"


@dataclass(frozen=True)
class ModelIO:
    """What the ONNX model expects and returns."""

    input_name: str
    output_name: str
    batch: int
    batch_fixed: bool
    input_hw: tuple[int, int]
    input_hw_fixed: bool
    input_dtype: type


class RuntimeSession(Protocol):
    """One loaded model; ``run`` must be safe to call from several threads at once."""

    io: ModelIO
    parallel_runs: int  # batches the loop may keep in flight at once

    def run(self, x: np.ndarray) -> np.ndarray:
        """``output0`` for one input batch."""

    def devices(self) -> list[str]:
        """What really ran the model (for ONNX Runtime: the session's providers), for ``metrics.json``."""

    def describe(self) -> dict[str, Any]:
        """The ``session`` entry of ``metrics.json``: the resolved settings the model ran under."""

    def model_metadata(self) -> dict[str, str]:
        """The model file's ``metadata_props`` (key -> string value)."""


def open_runtime_session(
    runtime: str,
    onnx_path: Path,
    providers: Sequence[str],
    settings: Any,
    imgsz: int | tuple[int, int],
    batch: int,
    allow_fallback: bool = False,
) -> RuntimeSession:
    """Load ``onnx_path`` in ``runtime`` (one of :data:`RUNTIMES`) on exactly ``providers`` (or what starts, with
    ``allow_fallback``)."""
    if runtime not in RUNTIMES:
        raise EvaluationInputError(f"runtime={runtime!r} must be one of {sorted(RUNTIMES)}")
    module = importlib.import_module(RUNTIMES[runtime])
    return module.open_runtime_session(onnx_path, providers, settings, imgsz, batch, allow_fallback)


def runtime_record(runtime: str, session: RuntimeSession) -> dict[str, str]:
    """``metrics.json``'s ``runtime``: which runtime ran the file, its version and the device it ran on."""
    # The imported module's version (runtime names are their modules): the GPU environments install the wheel
    # "onnxruntime-gpu", so importlib.metadata.version("onnxruntime") would fail there after the whole run.
    module = importlib.import_module(runtime)
    return {"name": runtime, "version": module.__version__, "device": session.devices()[0]}
