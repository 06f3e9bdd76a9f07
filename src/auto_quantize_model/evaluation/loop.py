"""The inference loop: decode and letterbox images in a thread pool, run batches concurrently, decode outputs,
merge results in image order, time each run."""

from __future__ import annotations

import itertools
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from auto_quantize_model.evaluation.coco import (
    ImageRecord,
)
from auto_quantize_model.evaluation.decode import (
    decode_end_to_end,
    decode_raw,
    resolve_output_format,
    to_coco_detections,
)
from auto_quantize_model.evaluation.errors import EvaluationInputError
from auto_quantize_model.evaluation.runtime import RuntimeSession
from auto_quantize_model.onnx_io.preprocess import (
    LETTERBOX_MODE,
    LetterboxInfo,
    letterbox,
    read_image,
)

LOGGER = logging.getLogger(__name__)


@dataclass
class LoadedImage:
    """A decoded, letterboxed image, or the reason it was skipped."""

    record: ImageRecord
    tensor: np.ndarray | None = None
    info: LetterboxInfo | None = None
    skip_reason: str | None = None


@dataclass
class RunState:
    """Everything collected while running the model over the images."""

    detections: list[dict[str, Any]] = field(default_factory=list)
    evaluated_ids: list[int] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    batch_ms: list[float] = field(default_factory=list)  # every timed batch but each run slot's first
    image_ms: list[float] = field(default_factory=list)
    first_batches: int = 0  # left out of the latency lists: they pay first-run allocations (there is no warm-up)
    runners_seen: set[int] = field(default_factory=set)
    output_format: str | None = None
    nonfinite: int = 0  # prediction rows (e2e) or anchors (raw) holding NaN/inf, dropped and reported


def load_one(record: ImageRecord, input_hw: tuple[int, int], dtype: type = np.float32) -> LoadedImage:
    """Read and letterbox one image; a missing, corrupt or wrongly sized file becomes a skip with its reason."""
    if not record.path.is_file():
        return LoadedImage(record, skip_reason="missing file")
    image = read_image(record.path)
    if image is None:
        return LoadedImage(record, skip_reason="cannot decode image (corrupt or unsupported format)")
    h, w = image.shape[:2]
    if record.width and record.height and (w, h) != (record.width, record.height):
        # Ground-truth boxes are in annotation pixels; a different decoded size would misplace every box.
        return LoadedImage(
            record, skip_reason=f"decoded size {w}x{h} differs from annotation {record.width}x{record.height}"
        )
    tensor, info = letterbox(image, input_hw, mode=LETTERBOX_MODE)
    return LoadedImage(record, tensor.astype(dtype, copy=False), info)


def prefetch(items: Iterable[Any], fn: Callable[[Any], Any], workers: int, depth: int) -> Iterator[Any]:
    """Yield ``fn(item)`` in order, computed by a thread pool at most ``depth`` items ahead.

    OpenCV decode and resize release the GIL, so loading overlaps with onnxruntime even on 2 cores.
    """
    iterator = iter(items)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="eval-load") as pool:
        pending = deque(pool.submit(fn, item) for item in itertools.islice(iterator, depth))
        while pending:
            result = pending.popleft().result()
            for item in itertools.islice(iterator, 1):
                pending.append(pool.submit(fn, item))
            yield result


def batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Group an iterable into lists of ``size`` (the last one may be shorter)."""
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@dataclass(frozen=True)
class DecodeSettings:
    """Decoding settings shared by every batch."""

    conf: float
    iou: float
    max_dets: int
    output_format: str | None
    nc: int
    cat_ids: tuple[int, ...]
    source: str


@dataclass
class BatchOutput:
    """What one batch produced; built in an inference thread, merged into ``RunState`` in image order."""

    image_ids: list[int]
    detections: list[dict[str, Any]]
    run_ms: float
    output_format: str
    nonfinite: int
    runner: int  # the inference thread (run slot) that ran it


def _run_batch(session: RuntimeSession, loaded: list[LoadedImage], settings: DecodeSettings) -> BatchOutput:
    """Run one batch through the model and decode it (safe to call from several threads at once)."""
    io_spec = session.io
    x = np.stack([item.tensor for item in loaded])
    if io_spec.batch_fixed and len(loaded) < io_spec.batch:  # a fixed batch dimension needs a full batch
        x = np.concatenate([x, np.zeros((io_spec.batch - len(loaded), *x.shape[1:]), x.dtype)])
    start = time.perf_counter()
    output = session.run(x)
    run_ms = (time.perf_counter() - start) * 1e3
    fmt = resolve_output_format(output.shape, settings.nc, settings.output_format, settings.source)
    if output.shape[0] != x.shape[0]:
        raise EvaluationInputError(f"{settings.source}: output batch {output.shape[0]} != input batch {x.shape[0]}")
    detections: list[dict[str, Any]] = []
    nonfinite = 0
    for item, pred in zip(loaded, output):
        nonfinite += int((~np.isfinite(pred)).any(axis=1 if fmt == "e2e" else 0).sum())
        if fmt == "e2e":
            boxes, scores, classes = decode_end_to_end(
                pred, settings.conf, settings.max_dets, settings.nc, settings.source
            )
        else:
            boxes, scores, classes = decode_raw(pred, settings.conf, settings.iou, settings.max_dets)
        detections += to_coco_detections(boxes, scores, classes, item.info, item.record.image_id, settings.cat_ids)
    image_ids = [item.record.image_id for item in loaded]
    return BatchOutput(image_ids, detections, run_ms, fmt, nonfinite, threading.get_ident())


def _merge(state: RunState, batch: BatchOutput) -> None:
    """Append one batch's results to ``state``; a run slot's first batch is not a latency sample."""
    state.output_format = state.output_format or batch.output_format
    state.detections += batch.detections
    state.evaluated_ids += batch.image_ids
    state.nonfinite += batch.nonfinite
    if batch.runner not in state.runners_seen:
        state.runners_seen.add(batch.runner)
        state.first_batches += 1
        return
    state.batch_ms.append(batch.run_ms)
    state.image_ms.append(batch.run_ms / len(batch.image_ids))


TERMINAL_INTERVAL_S = 1.0  # a redrawn line costs nothing to read
LOG_INTERVAL_S = 5.0  # a stage log gets a new line each time: often enough to see it move, rarely enough to read


class Progress:
    """Progress on stderr: on a terminal one line redrawn at most once a second; elsewhere (a stage log under the
    runner) a plain line every ``LOG_INTERVAL_S`` seconds and one at the end, no carriage returns.

    tqdm is not in this environment (Ultralytics ships its own bar), and importing Ultralytics here just for a
    bar would slow every evaluation start.
    """

    def __init__(self, total: int, terminal: bool | None = None, interval_s: float | None = None) -> None:
        self.total, self.done, self.finished = total, 0, False
        self.terminal = sys.stderr.isatty() if terminal is None else terminal
        default_interval = TERMINAL_INTERVAL_S if self.terminal else LOG_INTERVAL_S
        self.interval_s = default_interval if interval_s is None else interval_s
        self.start = self.last = time.perf_counter()

    def update(self, n: int) -> None:
        """Count ``n`` more images; write when the interval has passed, and once when the work is done."""
        self.done += n
        now = time.perf_counter()
        done_now = self.done >= self.total and not self.finished
        if done_now or (not self.finished and now - self.last >= self.interval_s):
            self.last, self.finished = now, self.finished or done_now
            rate = self.done / max(now - self.start, 1e-9)
            text = f"evaluate {self.done}/{self.total} images ({rate:.1f} img/s)"
            sys.stderr.write(f"\r{text}" if self.terminal else f"{text}\n")
            sys.stderr.flush()

    def close(self) -> None:
        """End the redrawn line (a log's lines already end)."""
        if self.terminal:
            sys.stderr.write("\n")


def run_model(
    session: RuntimeSession,
    records: list[ImageRecord],
    settings: DecodeSettings,
    workers: int = 2,
) -> RunState:
    """Decode and letterbox (thread pool), run the session's ``parallel_runs`` batches at once, decode outputs.

    Results are merged in image order, so ``detections.json`` does not depend on thread timing; skipped images
    are recorded, not fatal.
    """
    state = RunState()
    io_spec, parallel_runs = session.io, session.parallel_runs
    depth = (parallel_runs + 1) * io_spec.batch + 2
    loaded = prefetch(records, lambda r: load_one(r, io_spec.input_hw, io_spec.input_dtype), workers, depth)
    bar = Progress(len(records))
    pending: deque[Any] = deque()
    try:
        with ThreadPoolExecutor(max_workers=parallel_runs, thread_name_prefix="eval-run") as runners:
            for chunk in batched(_skip_filter(loaded, state), io_spec.batch):
                pending.append(runners.submit(_run_batch, session, chunk, settings))
                while len(pending) > parallel_runs:  # one batch queued beyond the running ones keeps them busy
                    _merge(state, pending.popleft().result())
                    bar.update(len(state.evaluated_ids) + len(state.skipped) - bar.done)  # skips count as done
            while pending:
                _merge(state, pending.popleft().result())
        bar.update(len(state.evaluated_ids) + len(state.skipped) - bar.done)
    finally:
        for future in pending:  # an error in one batch: do not leave the others running
            future.cancel()
        bar.close()
    return state


def _skip_filter(loaded: Iterable[LoadedImage], state: RunState) -> Iterator[LoadedImage]:
    """Pass decoded images through; record the others as skips with file and reason."""
    for item in loaded:
        if item.skip_reason is None:
            yield item
        else:
            LOGGER.warning("skipping %s: %s", item.record.path, item.skip_reason)
            state.skipped.append(
                {"image_id": item.record.image_id, "file": str(item.record.path), "reason": item.skip_reason}
            )


def latency_summary(values_ms: list[float]) -> dict[str, float | None]:
    """Mean and p50/p95/p99 (linear interpolation) of a latency list in milliseconds."""
    if not values_ms:
        return {"mean": None, "p50": None, "p95": None, "p99": None, "count": 0}
    arr = np.asarray(values_ms, dtype=np.float64)
    p50, p95, p99 = np.percentile(arr, [50, 95, 99])
    return {"mean": float(arr.mean()), "p50": float(p50), "p95": float(p95), "p99": float(p99), "count": int(arr.size)}


def check_run(state: RunState, requested: int, onnx_path: Path, ann_file: Path, allow_skips: bool = False) -> None:
    """Fail when no image could be evaluated, or any could not unless ``allow_skips``; warn about non-finite rows."""
    if state.nonfinite:
        LOGGER.warning("%s: %d prediction rows held NaN/inf and were dropped", onnx_path, state.nonfinite)
    if not state.evaluated_ids:
        reasons = "; ".join(f"{s['file']}: {s['reason']}" for s in state.skipped[:5])
        raise EvaluationInputError(
            f"all {requested} images were skipped ({reasons}); check --images-dir against {ann_file}"
        )
    if state.skipped and not allow_skips:
        raise unreadable_images_error([(s["file"], s["reason"]) for s in state.skipped], requested, ann_file)


def check_images_exist(records: list[ImageRecord], ann_file: Path, allow_skips: bool = False) -> None:
    """Before the model runs: every image the annotations list must be there, unless ``allow_skips``."""
    missing = [(str(record.path), "missing file") for record in records if not record.path.is_file()]
    if missing and not allow_skips and len(missing) < len(records):
        raise unreadable_images_error(missing, len(records), ann_file)


def unreadable_images_error(problems: list[tuple[str, str]], requested: int, ann_file: Path) -> EvaluationInputError:
    """One line: how many listed images cannot be read, a few of them, and the two ways on."""
    examples = "; ".join(f"{Path(file).name}: {reason}" for file, reason in problems[:3])
    return EvaluationInputError(
        f"{len(problems)} of {requested} images listed in {ann_file} cannot be read (e.g. {examples}); restore them "
        "(the runner's prepare-data rebuilds the links) or pass --allow-missing-images to score the rest"
    )


def run_warnings(state: RunState) -> list[str]:
    """One line per skipped image and one for dropped non-finite predictions (the ``warnings`` of metrics.json)."""
    lines = [f"skipped image {s['image_id']} ({s['file']}): {s['reason']}" for s in state.skipped]
    if state.nonfinite:
        lines.append(f"{state.nonfinite} prediction rows held NaN/inf and were dropped")
    return lines
