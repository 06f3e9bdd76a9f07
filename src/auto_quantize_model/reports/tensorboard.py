"""The study's numbers in TensorBoard: after the summary, each evaluated ONNX file's mAP, size and latency.

Every (seed, variant, weights format) with a ``metrics.json`` becomes one hparams session in
``seed-<k>/eval/<variant>-<format>/tensorboard/`` (HPARAMS tab: variant, format, seed, run root against the
``onnx/*`` metrics; SCALARS tab: the same metrics at step 0), beside the trainings' curves in
``seed-<k>/<variant>/tensorboard/``. A rerun of the summary replaces each session, so nothing is counted twice.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from auto_quantize_model.runs import metrics_keys as mk

if TYPE_CHECKING:
    from auto_quantize_model.reports.summary_view import Cell, RunView

MAP50_95_TAG = "onnx/mAP50-95"
MAP50_TAG = "onnx/mAP50"
SIZE_TAG = "onnx/size_MB"
LATENCY_TAG = "onnx/latency_p50_ms"


def onnx_metrics(cell: Cell) -> dict[str, float]:
    """The ``onnx/*`` metrics of one evaluated file (those it has)."""
    from auto_quantize_model.reports.summary_view import finite_number

    size = cell.onnx_bytes
    values = {
        MAP50_95_TAG: cell.map50_95,
        MAP50_TAG: finite_number((cell.metrics or {}).get(mk.MAP50)),
        SIZE_TAG: size / 1e6 if size is not None else None,
        LATENCY_TAG: cell.latency_p50,
    }
    return {tag: value for tag, value in values.items() if value is not None}


def write_onnx_tensorboard(view: RunView) -> list[Path]:
    """Write (or replace) the hparams session of every evaluated cell; returns the session folders."""
    written = []
    for cell in view.cells:
        metrics = onnx_metrics(cell) if cell.metrics else {}
        if not metrics:
            continue
        folder = view.run_root.seed(cell.seed).eval_tensorboard_dir(cell.variant.name, cell.weights_format)
        hparams = {
            "run_root": view.run_root.root.name,
            "variant": cell.variant.name,
            "weights_format": cell.weights_format,
            "seed": cell.seed,
        }
        written.append(_replace_session(folder, hparams, metrics))
    return written


def _replace_session(folder: Path, hparams: dict, metrics: dict[str, float]) -> Path:
    """Write the session into a staging folder beside ``folder``, then swap it in (an old session is removed)."""
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams as hparams_summaries

    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.staging-", dir=folder.parent))
    with SummaryWriter(log_dir=str(staging)) as writer:
        for summary in hparams_summaries(hparams, metrics):  # experiment, session start, session end
            writer.file_writer.add_summary(summary)
        for tag, value in metrics.items():
            writer.add_scalar(tag, value, 0)
    if folder.exists():
        old = folder.with_name(f".{folder.name}.old-{staging.name}")
        folder.rename(old)
        staging.rename(folder)
        shutil.rmtree(old)
    else:
        staging.rename(folder)
    return folder
