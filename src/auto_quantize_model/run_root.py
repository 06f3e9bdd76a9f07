"""The run root: one object owns every artifact path of an experiment.

Layout (``R`` is the run root)::

    R/run.json, R/run_config.yaml, R/summary.md, R/logs/<stage>.log
    R/dataset/{dataset.yaml, provenance.json, instances_val.json, images/, labels/}
    R/fp16/                 Ultralytics save_dir of the FP16/AMP baseline
    R/qat-<scheme>/         Ultralytics save_dir of the QAT run (scheme name in the folder)
        args.yaml results.csv weights/{best,last}.pt tensorboard/ loss_curves.{csv,png}
        train_metadata.json train_config.yaml [quant_scheme.json]
    R/onnx/<model>-fp16.onnx (+ .json), R/onnx/<model>-qat-<scheme>-qcdq.onnx (+ .json)
    R/baseline-coco/{metrics.json, detections.json}, R/qat-<scheme>-coco/...

No other module builds these paths by hand.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

FP16_STAGE = "fp16"
DEFAULT_RUN_PARENT = Path("tmp") / "yolov10m_scratch_fp16_vs_w4a16_qat"


def qat_stage_name(scheme_name: str) -> str:
    """Stage (and folder) name of a QAT run: ``qat-<scheme>``, e.g. ``qat-w4a16``."""
    return f"qat-{scheme_name}"


@dataclass(frozen=True)
class TrainRunPaths:
    """Artifacts of one training stage; ``dir`` is the Ultralytics ``save_dir``."""

    dir: Path

    @property
    def name(self) -> str:
        return self.dir.name

    @property
    def weights_dir(self) -> Path:
        return self.dir / "weights"

    @property
    def best(self) -> Path:
        return self.weights_dir / "best.pt"

    @property
    def last(self) -> Path:
        return self.weights_dir / "last.pt"

    @property
    def args_yaml(self) -> Path:
        return self.dir / "args.yaml"

    @property
    def results_csv(self) -> Path:
        return self.dir / "results.csv"

    @property
    def tensorboard_dir(self) -> Path:
        return self.dir / "tensorboard"

    @property
    def loss_curves_csv(self) -> Path:
        return self.dir / "loss_curves.csv"

    @property
    def loss_curves_png(self) -> Path:
        return self.dir / "loss_curves.png"

    @property
    def metadata_json(self) -> Path:
        return self.dir / "train_metadata.json"

    @property
    def config_yaml(self) -> Path:
        """The resolved training configuration (recipe + CLI overrides)."""
        return self.dir / "train_config.yaml"

    @property
    def quant_scheme_json(self) -> Path:
        return self.dir / "quant_scheme.json"

    def incomplete_dir(self, stamp: str) -> Path:
        """Where an attempt that died before its first checkpoint is set aside."""
        return self.dir.with_name(f"{self.dir.name}.incomplete-{stamp}")

    @property
    def nonfinite_log(self) -> Path:
        """One JSON line per non-finite training loss (epoch, batch, value)."""
        return self.dir / "nonfinite_losses.jsonl"

    def is_finished(self) -> bool:
        """A stage is finished once its metadata records completion and ``best.pt`` exists."""
        from auto_quantize_model.io_utils import read_json

        if not (self.metadata_json.is_file() and self.best.is_file()):
            return False
        return read_json(self.metadata_json).get("status") == "finished"


@dataclass(frozen=True)
class RunRoot:
    """All paths of one experiment run root."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).expanduser().resolve())

    @classmethod
    def from_env_or_default(cls, run_root: str | os.PathLike | None, run_id: str) -> RunRoot:
        """Use ``run_root``, else ``$RUN_ROOT``, else ``tmp/yolov10m_scratch_fp16_vs_w4a16_qat/<run_id>``."""
        chosen = run_root or os.environ.get("RUN_ROOT") or DEFAULT_RUN_PARENT / run_id
        return cls(Path(chosen))

    # --- bookkeeping -------------------------------------------------------------------
    @property
    def run_json(self) -> Path:
        return self.root / "run.json"

    @property
    def run_config(self) -> Path:
        return self.root / "run_config.yaml"

    @property
    def summary_md(self) -> Path:
        return self.root / "summary.md"

    @property
    def map_comparison_png(self) -> Path:
        return self.root / "val_map_comparison.png"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    def stage_log(self, stage: str) -> Path:
        return self.logs_dir / f"{stage}.log"

    # --- dataset -------------------------------------------------------------------------
    @property
    def dataset_dir(self) -> Path:
        return self.root / "dataset"

    @property
    def dataset_yaml(self) -> Path:
        return self.dataset_dir / "dataset.yaml"

    @property
    def val_annotations(self) -> Path:
        return self.dataset_dir / "instances_val.json"

    @property
    def val_images_dir(self) -> Path:
        """Symlinks to the validation images (what the ONNX evaluator reads)."""
        return self.dataset_dir / "images" / "val"

    @property
    def dataset_provenance(self) -> Path:
        return self.dataset_dir / "provenance.json"

    @property
    def synthetic_source_dir(self) -> Path:
        """Where the demo profile generates its synthetic COCO-layout source data."""
        return self.root / "synthetic-coco"

    # --- training ------------------------------------------------------------------------
    def train_run(self, stage: str) -> TrainRunPaths:
        """Paths of the training stage ``stage`` (``fp16`` or ``qat-<scheme>``)."""
        return TrainRunPaths(self.root / stage)

    @property
    def fp16(self) -> TrainRunPaths:
        return self.train_run(FP16_STAGE)

    def qat(self, scheme_name: str) -> TrainRunPaths:
        return self.train_run(qat_stage_name(scheme_name))

    # --- export and evaluation -------------------------------------------------------------
    @property
    def onnx_dir(self) -> Path:
        return self.root / "onnx"

    def onnx_model(self, model_name: str, stage: str) -> Path:
        """ONNX file of a stage: ``<model>-fp16.onnx`` or ``<model>-qat-<scheme>-qcdq.onnx``."""
        suffix = "" if stage == FP16_STAGE else "-qcdq"
        return self.onnx_dir / f"{model_name}-{stage}{suffix}.onnx"

    def eval_dir(self, stage: str) -> Path:
        """COCO evaluation folder: ``baseline-coco`` for FP16, ``<stage>-coco`` for QAT."""
        return self.root / ("baseline-coco" if stage == FP16_STAGE else f"{stage}-coco")
