"""Latency a reader can use: every ONNX file of one training seed timed in one process, interleaved and warm.

Each evaluation times its own file while other work shares the cores, one file after another, so the latency of
one file against another in ``metrics.json`` is mostly the load of the moment. This stage opens one session per
file, all with the same providers, the same intra-op threads (one run at a time) and the evaluator's
``fold_weights`` setting (:mod:`auto_quantize_model.evaluation.ort_session`), runs each ``warmup_runs`` times
untimed, then times ``rounds`` rounds: each round runs every file once on the same input, the starting file
rotating from round to round, so drifting load hits every file alike. The 1-minute load average is sampled
before every round and after the last.

``latency.json`` (keys in :mod:`auto_quantize_model.runs.latency_keys`): per file (keyed by its artifact label,
``<variant>-<weights format>``) its path, sha256, providers, input and the median, min, max, 25th and 75th
percentile of ``session.run`` in milliseconds with every run; and for the whole measurement rounds, warm-up runs,
threads, fold_weights, providers requested, the order, CPUs, the load average, versions and the time.

The input is one batch of seeded uniform noise in [0, 1] of each model's input shape: ONNX Runtime's CPU work
does not depend on pixel values for these graphs (fixed-size convs, a fixed top-k), and raw-layout NMS is not part
of ``session.run``. A requested provider that does not start is an error unless ``allow_provider_fallback``.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from auto_quantize_model.evaluation.errors import EvaluationInputError
from auto_quantize_model.evaluation.ort_session import SessionSettings, available_cpus
from auto_quantize_model.evaluation.runtime import DEFAULT_RUNTIME, RuntimeSession, open_runtime_session
from auto_quantize_model.runs import latency_keys as L
from auto_quantize_model.runs.config import MIN_LATENCY_ROUNDS
from auto_quantize_model.runs.provenance import package_versions, utc_now
from auto_quantize_model.utils.io import sha256_file_cached, write_json_atomic

SCHEMA_VERSION = 1
DEFAULT_WARMUP_RUNS = 3
INPUT_SEED = 0


@dataclass(frozen=True)
class LatencySettings:
    """How every file is timed: ``threads`` 0 means every CPU this process may use."""

    rounds: int
    threads: int
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    fold_weights: bool = False
    allow_provider_fallback: bool = False
    warmup_runs: int = DEFAULT_WARMUP_RUNS
    imgsz: int | tuple[int, int] = 640  # for dynamic-size inputs only; fixed model sizes win


@dataclass(frozen=True)
class LatencyResult:
    """What :func:`time_onnx_latency` wrote: the ``latency.json`` content and its path."""

    report: dict[str, Any]
    path: Path


def time_onnx_latency(
    files: Mapping[str, str | os.PathLike], out: str | os.PathLike, settings: LatencySettings
) -> LatencyResult:
    """Time every file of ``files`` (label -> ONNX path) together and write ``out`` (``latency.json``)."""
    paths = _check_request(files, settings)
    sessions = {label: _open(path, settings) for label, path in paths.items()}
    inputs = {label: _noise_input(session) for label, session in sessions.items()}
    for label, session in sessions.items():
        for _ in range(settings.warmup_runs):
            session.run(inputs[label])
    times, loads = _interleaved_rounds(sessions, inputs, settings.rounds)
    loads.append(os.getloadavg()[0])
    report = {
        L.SCHEMA_VERSION: SCHEMA_VERSION,
        L.FILES: {label: _file_entry(paths[label], sessions[label], inputs[label], times[label]) for label in paths},
        L.ROUNDS: settings.rounds,
        L.WARMUP_RUNS: settings.warmup_runs,
        L.THREADS: next(iter(sessions.values())).describe()["intra_op_threads"],
        L.FOLD_WEIGHTS: settings.fold_weights,
        L.PROVIDERS_REQUESTED: list(settings.providers),
        L.ALLOW_PROVIDER_FALLBACK: settings.allow_provider_fallback,
        L.ORDER: "interleaved: each round runs every file once, the starting file rotating round by round",
        L.CPUS: available_cpus(),
        L.LOAD_AVG_1MIN: _load_summary(loads),
        L.VERSIONS: package_versions(),
        L.MEASURED_AT: utc_now(),
    }
    return LatencyResult(report, write_json_atomic(Path(out), report))


def _check_request(files: Mapping[str, str | os.PathLike], settings: LatencySettings) -> dict[str, Path]:
    """Refuse bad input before any session opens."""
    if not files:
        raise EvaluationInputError("no ONNX files given; pass --onnx LABEL=PATH once per file")
    if settings.rounds < MIN_LATENCY_ROUNDS:
        raise EvaluationInputError(
            f"rounds={settings.rounds}: at least {MIN_LATENCY_ROUNDS} (profile key latency_rounds)"
        )
    if settings.threads < 0 or settings.warmup_runs < 1:
        raise EvaluationInputError(
            f"threads={settings.threads} must be >= 0 (0 = every CPU) and warmup_runs={settings.warmup_runs} >= 1"
        )
    paths = {str(label): Path(path) for label, path in files.items()}
    for label, path in paths.items():
        if not label or not path.is_file():
            raise EvaluationInputError(f"{label}={path}: ONNX file not found; export it first (or fix the path)")
    return paths


def _open(path: Path, settings: LatencySettings) -> RuntimeSession:
    session_settings = SessionSettings(settings.threads, 1, "all", settings.fold_weights)
    return open_runtime_session(
        DEFAULT_RUNTIME, path, settings.providers, session_settings, settings.imgsz, 1, settings.allow_provider_fallback
    )


def _noise_input(session: RuntimeSession) -> np.ndarray:
    io_spec = session.io
    rng = np.random.default_rng(INPUT_SEED)
    return rng.random((io_spec.batch, 3, *io_spec.input_hw), dtype=np.float32).astype(io_spec.input_dtype)


def _interleaved_rounds(
    sessions: Mapping[str, RuntimeSession], inputs: Mapping[str, np.ndarray], rounds: int
) -> tuple[dict[str, list[float]], list[float]]:
    """``rounds`` rounds of one timed run per file, the starting file rotating; and the load before each round."""
    labels = list(sessions)
    times: dict[str, list[float]] = {label: [] for label in labels}
    loads = []
    for index in range(rounds):
        loads.append(os.getloadavg()[0])
        start = index % len(labels)
        for label in labels[start:] + labels[:start]:
            began = time.perf_counter()
            sessions[label].run(inputs[label])
            times[label].append((time.perf_counter() - began) * 1e3)
    return times, loads


def _file_entry(path: Path, session: RuntimeSession, x: np.ndarray, runs_ms: Sequence[float]) -> dict[str, Any]:
    p25, median, p75 = np.percentile(np.asarray(runs_ms), [25, 50, 75])
    return {
        L.PATH: str(path.resolve()),
        L.SHA256: sha256_file_cached(path),
        L.PROVIDERS: session.devices(),
        L.INPUT: {
            "shape": list(x.shape),
            "dtype": str(x.dtype),
            "content": f"uniform noise in [0, 1], seed {INPUT_SEED}",
        },
        L.MEDIAN_MS: float(median),
        L.MIN_MS: float(min(runs_ms)),
        L.MAX_MS: float(max(runs_ms)),
        L.P25_MS: float(p25),
        L.P75_MS: float(p75),
        L.RUNS_MS: [float(v) for v in runs_ms],
    }


def _load_summary(loads: Sequence[float]) -> dict[str, float]:
    return {
        L.LOAD_BEFORE: loads[0],
        L.LOAD_AFTER: loads[-1],
        L.LOAD_MIN: min(loads),
        L.LOAD_MEDIAN: statistics.median(loads),
        L.LOAD_MAX: max(loads),
    }
