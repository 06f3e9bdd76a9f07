"""ONNX Runtime as the evaluator's inference runtime: providers, session options, weight folding, model I/O.

A requested provider that this onnxruntime lacks, that fails to start or that onnxruntime drops is an error
naming the provider and :data:`FALLBACK_FLAG`; only with that flag does the session fall back to what starts
(with a warning, and ``metrics.json`` lists the providers that really ran).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from auto_quantize_model.evaluation.errors import EvaluationInputError
from auto_quantize_model.evaluation.runtime import ModelIO
from auto_quantize_model.onnx_io.preprocess import (
    as_hw,
)
from auto_quantize_model.runs.env_check import require_single_onnxruntime
from auto_quantize_model.runs.executors import STAGE_THREADS_ENV

LOGGER = logging.getLogger(__name__)

GRAPH_OPTIMIZATIONS = ("disable", "basic", "extended", "all")


MAX_AUTO_PARALLEL_RUNS = 4  # each run holds its own activations; more buys little and costs memory
FALLBACK_FLAG = "--allow-provider-fallback"  # the CLIs' flag; errors name it
CPU_PROVIDER = "CPUExecutionProvider"


@dataclass(frozen=True)
class SessionSettings:
    """onnxruntime options of the evaluator; 0 means "choose for this machine" (see :func:`resolve_session_settings`).

    ``intra_op_threads``: threads inside one ``session.run``. ``parallel_runs``: batches in flight at once (one
    session, concurrent ``run`` calls, which onnxruntime allows). ``graph_optimization``: one of
    ``GRAPH_OPTIMIZATIONS``. ``fold_weights``: ``session.disable_quant_qdq=1``, so DequantizeLinear on constant
    weights is folded once at load (QCDQ models run at float speed; outputs identical).
    """

    intra_op_threads: int = 0
    parallel_runs: int = 0
    graph_optimization: str = "all"
    fold_weights: bool = False

    def describe(self) -> dict[str, Any]:
        """The ``session`` entry of ``metrics.json``."""
        return {
            "intra_op_threads": self.intra_op_threads,
            "parallel_runs": self.parallel_runs,
            "graph_optimization": self.graph_optimization,
            "fold_weights": self.fold_weights,
            "allow_spinning": False,
        }


def _usable_providers(requested: Sequence[str], allow_fallback: bool) -> list[str]:
    """The requested providers this onnxruntime build has; a missing one is an error unless ``allow_fallback``."""
    import onnxruntime as ort

    unknown = [p for p in requested if p not in ort.get_all_providers()]
    if unknown:
        raise EvaluationInputError(f"unknown onnxruntime provider(s) {unknown}; valid names: {ort.get_all_providers()}")
    available = ort.get_available_providers()
    missing = [p for p in requested if p not in available]
    if missing and not allow_fallback:
        raise EvaluationInputError(
            f"{', '.join(missing)} requested but not in this onnxruntime build (available: {available}); install the "
            f"build that has it (scripts/check_env.py says what is missing), request --providers {CPU_PROVIDER}, "
            f"or pass {FALLBACK_FLAG} to run on what is available"
        )
    chosen = [p for p in requested if p in available] or [CPU_PROVIDER]
    if missing:
        LOGGER.warning(
            "%s not available (available: %s); %s given: falling back to %s", missing, available, FALLBACK_FLAG, chosen
        )
    return chosen


def available_cpus() -> int:
    """CPUs this process may use: the runner's explicit stage thread count, else the affinity-aware CPU count."""
    if os.environ.get(STAGE_THREADS_ENV):
        return max(1, int(os.environ[STAGE_THREADS_ENV]))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def resolve_session_settings(requested: SessionSettings, providers: Sequence[str]) -> SessionSettings:
    """Fill the 0 ("auto") fields for the chosen providers.

    CPU: ``min(cpus, MAX_AUTO_PARALLEL_RUNS)`` runs in flight, the CPUs shared between them (on 2 cores: 2 runs of
    1 thread, measured 1.3-2x the images/s of one 2-thread run on yolov10n 320, and far steadier under other
    load). A GPU provider: one run at a time with onnxruntime's default threads.
    """
    if requested.graph_optimization not in GRAPH_OPTIMIZATIONS:
        raise EvaluationInputError(
            f"graph_optimization={requested.graph_optimization!r} must be one of {GRAPH_OPTIMIZATIONS}"
        )
    if requested.intra_op_threads < 0 or requested.parallel_runs < 0:
        raise EvaluationInputError(
            f"intra_op_threads={requested.intra_op_threads} and parallel_runs={requested.parallel_runs} "
            "must be >= 0 (0 = auto)"
        )
    cpus = available_cpus()
    on_gpu = providers[0] != CPU_PROVIDER
    parallel = requested.parallel_runs or (1 if on_gpu else min(cpus, MAX_AUTO_PARALLEL_RUNS))
    threads = requested.intra_op_threads or max(1, cpus // parallel)
    return SessionSettings(threads, parallel, requested.graph_optimization, requested.fold_weights)


def session_options(settings: SessionSettings) -> Any:
    """An ``onnxruntime.SessionOptions`` for resolved ``settings``."""
    import onnxruntime as ort

    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    options = ort.SessionOptions()
    options.graph_optimization_level = levels[settings.graph_optimization]
    options.intra_op_num_threads = settings.intra_op_threads
    # Busy-waiting CPU worker threads would steal the cores the image-loading threads need.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if settings.fold_weights:
        # onnxruntime keeps DequantizeLinear out of constant folding (for its QDQ fusions) unless told otherwise.
        options.add_session_config_entry("session.disable_quant_qdq", "1")
    return options


def open_session(
    onnx_path: Path, providers: Sequence[str], settings: SessionSettings | None = None, allow_fallback: bool = False
) -> tuple[Any, SessionSettings]:
    """Create an onnxruntime session on exactly the requested ``providers``.

    A provider that is missing, fails to start or is dropped raises :class:`EvaluationInputError`; with
    ``allow_fallback`` the session falls back to the CPU provider instead, with a warning (onnxruntime's own
    silent fallback, at session start and on a failing run, is off otherwise). Returns the session and the
    resolved settings it was created with.
    """
    require_single_onnxruntime()  # both ONNX Runtime wheels installed: the providers would be whichever came last
    import onnxruntime as ort

    chosen = _usable_providers(providers, allow_fallback)
    resolved = resolve_session_settings(settings or SessionSettings(), chosen)
    options = session_options(resolved)
    try:
        session = ort.InferenceSession(str(onnx_path), options, providers=chosen, enable_fallback=int(allow_fallback))
    except Exception as error:
        if chosen == [CPU_PROVIDER]:
            raise EvaluationInputError(
                f"{onnx_path}: onnxruntime cannot load the model ({error}); re-export it"
            ) from error
        if not allow_fallback:
            raise EvaluationInputError(
                f"{onnx_path}: onnxruntime could not start {chosen} ({error}); fix that provider's installation "
                f"(scripts/check_env.py says what is missing) or pass {FALLBACK_FLAG} to run on {CPU_PROVIDER}"
            ) from error
        LOGGER.warning(
            "onnxruntime could not start %s (%s); %s given: falling back to %s",
            chosen,
            error,
            FALLBACK_FLAG,
            CPU_PROVIDER,
        )
        return open_session(onnx_path, [CPU_PROVIDER], settings, allow_fallback)
    dropped = [p for p in chosen if p not in session.get_providers()]
    if dropped and not allow_fallback:
        raise EvaluationInputError(
            f"{onnx_path}: onnxruntime dropped {dropped} at session start (running on {session.get_providers()}); "
            f"fix that provider's installation or pass {FALLBACK_FLAG}"
        )
    if dropped:
        LOGGER.warning("onnxruntime dropped %s at session start; running on %s", dropped, session.get_providers())
    return session, resolved


def resolve_model_io(session: Any, onnx_path: Path, imgsz: int | tuple[int, int], batch: int) -> ModelIO:
    """Read input/output names, batch and spatial size: fixed model dimensions win over ``imgsz``/``batch``."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    shape = list(inputs[0].shape)
    if len(shape) != 4 or (isinstance(shape[1], int) and shape[1] != 3):
        raise EvaluationInputError(
            f"{onnx_path}: input {inputs[0].name} has shape {shape}; expected [N, 3, H, W] images"
        )
    dtypes = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
    if inputs[0].type not in dtypes:
        raise EvaluationInputError(f"{onnx_path}: input type {inputs[0].type} is not float32/float16 images")
    names = [o.name for o in outputs]
    output_name = "output0" if "output0" in names else names[0]
    batch_fixed = isinstance(shape[0], int) and shape[0] > 0
    hw_fixed = all(isinstance(d, int) and d > 0 for d in shape[2:])
    if batch_fixed and shape[0] != batch:
        LOGGER.info("model input batch is fixed at %d; using it instead of batch=%d", shape[0], batch)
    input_hw = (shape[2], shape[3]) if hw_fixed else as_hw(imgsz)
    if hw_fixed and input_hw != as_hw(imgsz):
        LOGGER.info("model input size is fixed at %s; imgsz=%s is ignored", input_hw, imgsz)
    return ModelIO(
        inputs[0].name,
        output_name,
        shape[0] if batch_fixed else batch,
        batch_fixed,
        input_hw,
        hw_fixed,
        dtypes[inputs[0].type],
    )


class OrtRuntimeSession:
    """An ONNX Runtime session behind the evaluator's ``RuntimeSession`` interface (evaluation.runtime)."""

    def __init__(self, session: Any, io: ModelIO, settings: SessionSettings) -> None:
        self.session, self.io, self.settings = session, io, settings
        self.parallel_runs = settings.parallel_runs

    def run(self, x: np.ndarray) -> np.ndarray:
        from onnxruntime.capi.onnxruntime_pybind11_state import EPFail

        try:
            return self.session.run([self.io.output_name], {self.io.input_name: x})[0]
        except EPFail as error:  # raised only without the fallback flag: onnxruntime would switch providers
            raise EvaluationInputError(
                f"{self.session.get_providers()[0]} failed while running ({error}); pass {FALLBACK_FLAG} to let "
                f"onnxruntime retry on {CPU_PROVIDER}"
            ) from error

    def devices(self) -> list[str]:
        return list(self.session.get_providers())

    def describe(self) -> dict[str, Any]:
        return self.settings.describe()

    def model_metadata(self) -> dict[str, str]:
        return dict(self.session.get_modelmeta().custom_metadata_map)


def open_runtime_session(
    onnx_path: Path,
    providers: Sequence[str],
    settings: SessionSettings | None,
    imgsz: int | tuple[int, int],
    batch: int,
    allow_fallback: bool = False,
) -> OrtRuntimeSession:
    """Open ``onnx_path`` on ``providers`` (see :func:`open_session`) and read its input/output layout."""
    session, resolved = open_session(onnx_path, providers, settings, allow_fallback)
    return OrtRuntimeSession(session, resolve_model_io(session, onnx_path, imgsz, batch), resolved)
