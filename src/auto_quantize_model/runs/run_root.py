"""The run root: one object owns every artifact path and file name of an experiment.

Layout (``R`` is the run root, ``k`` a training seed, ``V`` a variant name such as ``fp16``,
``qat-w4a16``, ``qat-w4a16-ft``, ``ptq-w4a16`` or ``ortq-w8a8``, ``F`` a weight format: float32, float16, qcdq,
int4, qdq)::

    R/run.json, R/run_config.yaml, R/logs/<stage>.log
    R/summary.md, R/summary.csv, R/summary.json, R/*.png       (the summary stage)
    R/dataset/{dataset.yaml, provenance.json, fingerprint.json, instances_val.json, images/, labels/}
        [dataset-selection.yaml, images/selection/, labels/selection/]  (checkpoint_policy best-on-selection)
    R/seed-k/V/             Ultralytics save_dir of a training (PTQ: weights/<last|best>.pt + .json beside it)
        args.yaml results.csv weights/{best,last}.pt tensorboard/ loss_curves.{csv,png}
        train_metadata.json train_config.yaml checkpoint_epochs.json [quant_scheme.json]
    R/seed-k/onnx/<model>-V-F.onnx (+ <model>-V-F.json export metadata)
    R/seed-k/eval/V-F/{metrics.json, detections.json, tensorboard/ (written by the summary)}   (ONNX Runtime)
    R/seed-k/eval/V-F-openvino/{metrics.json, detections.json}   (the same file scored by OpenVINO)
    R/seed-k/latency.json   every ONNX file of the seed timed together (the latency stage)
    R/set-aside/...         work set aside by a redo or a resume, at its old relative path + .<reason>-<time>

No other module builds these paths or spells these file names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from auto_quantize_model.runs.metrics_keys import DETECTIONS_FILE, METRICS_FILE
from auto_quantize_model.runs.summary_schema import SUMMARY_CSV

DEFAULT_RUNTIME = "onnxruntime"  # the evaluator's default runtime: its results keep the plain eval folder names

FP16_STAGE = "fp16"
FINE_TUNE_SUFFIX = "-ft"
DEFAULT_RUN_PARENT = Path("tmp") / "yolov10m_scratch_fp16_vs_w4a16_qat"
SEED_DIR_PREFIX = "seed-"
LATENCY_JSON = "latency.json"  # per seed: every ONNX file timed together (keys: runs.latency_keys)

# Work moved out of the way (a --redo's old outputs, an attempt without a checkpoint, a torn checkpoint) goes under
# this one folder of the run root, at its old relative path: kept, never deleted, and out of a TensorBoard logdir
# that names the seed folders.
SET_ASIDE_DIR = "set-aside"

# File names, as plain constants: the path objects below build every path from them, and a module that needs only a
# name (a published report mirrors the run root's names) imports the constant instead of building a dummy path.
RUN_JSON = "run.json"
RUN_CONFIG_YAML = "run_config.yaml"
SUMMARY_MD = "summary.md"
SUMMARY_JSON = "summary.json"
MAP_COMPARISON_PNG = "val_map_comparison.png"
BEST_PT = "best.pt"
LAST_PT = "last.pt"
RESULTS_CSV = "results.csv"
LOSS_CURVES_CSV = "loss_curves.csv"
LOSS_CURVES_PNG = "loss_curves.png"
TRAIN_METADATA_JSON = "train_metadata.json"
TRAIN_CONFIG_YAML = "train_config.yaml"
QUANT_SCHEME_JSON = "quant_scheme.json"
NONFINITE_LOSSES_JSONL = "nonfinite_losses.jsonl"
CHECKPOINT_EPOCHS_JSON = "checkpoint_epochs.json"
TENSORBOARD_DIR = "tensorboard"


def qat_stage_name(scheme_name: str, fine_tune: bool = False) -> str:
    """Folder name of a QAT run: ``qat-<scheme>``, ``qat-<scheme>-ft`` when initialised from FP weights."""
    return f"qat-{scheme_name}" + (FINE_TUNE_SUFFIX if fine_tune else "")


def fp_stage_name(fine_tune: bool = False) -> str:
    """Folder name of a float run: ``fp16``, ``fp16-ft`` when fine-tuned from the seed's ``fp16`` checkpoint."""
    return FP16_STAGE + (FINE_TUNE_SUFFIX if fine_tune else "")


def set_aside_path(base: Path, path: Path, label: str) -> Path:
    """Where ``path`` (inside ``base``) is set aside: ``<base>/set-aside/<its path relative to base>.<label>``."""
    relative = Path(path).relative_to(base)
    return base / SET_ASIDE_DIR / relative.parent / f"{relative.name}.{label}"


def artifact_label(variant: str, weights_format: str) -> str:
    """``<variant>-<format>``, e.g. ``qat-w4a16-int4``: names an evaluation folder and a file in ``latency.json``."""
    return f"{variant}-{weights_format}"


def export_metadata_path(onnx_path: str | os.PathLike) -> Path:
    """The export metadata JSON beside an ONNX file: ``<model>-V-F.onnx`` -> ``<model>-V-F.json``."""
    return Path(onnx_path).with_suffix(".json")


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
        return self.weights_dir / BEST_PT

    @property
    def last(self) -> Path:
        return self.weights_dir / LAST_PT

    @property
    def args_yaml(self) -> Path:
        return self.dir / "args.yaml"

    @property
    def results_csv(self) -> Path:
        return self.dir / RESULTS_CSV

    @property
    def tensorboard_dir(self) -> Path:
        return self.dir / TENSORBOARD_DIR

    @property
    def loss_curves_csv(self) -> Path:
        return self.dir / LOSS_CURVES_CSV

    @property
    def loss_curves_png(self) -> Path:
        return self.dir / LOSS_CURVES_PNG

    @property
    def metadata_json(self) -> Path:
        return self.dir / TRAIN_METADATA_JSON

    @property
    def config_yaml(self) -> Path:
        """The resolved training configuration (recipe + CLI overrides)."""
        return self.dir / TRAIN_CONFIG_YAML

    @property
    def checkpoint_epochs_json(self) -> Path:
        """The epoch each checkpoint holds, written on every save (``strip_optimizer`` erases it from the .pt)."""
        return self.dir / CHECKPOINT_EPOCHS_JSON

    @property
    def quant_scheme_json(self) -> Path:
        return self.dir / QUANT_SCHEME_JSON

    @property
    def set_aside_base(self) -> Path:
        """Whose ``set-aside/`` folder takes this training's set-aside work: the run root of ``R/seed-k/V``, else
        (a training outside a run root) the training's parent folder."""
        seed_dir = self.dir.parent
        in_run_root = seed_dir.name.startswith(SEED_DIR_PREFIX) and seed_dir.name[len(SEED_DIR_PREFIX) :].isdigit()
        return seed_dir.parent if in_run_root else seed_dir

    def incomplete_dir(self, stamp: str) -> Path:
        """Where an attempt that died before its first checkpoint is set aside."""
        return set_aside_path(self.set_aside_base, self.dir, f"incomplete-{stamp}")

    def corrupt_checkpoint(self, checkpoint: Path, stamp: str) -> Path:
        """Where a checkpoint of this training that does not load is set aside."""
        return set_aside_path(self.set_aside_base, checkpoint, f"corrupt-{stamp}")

    @property
    def nonfinite_log(self) -> Path:
        """One JSON line per non-finite training loss (epoch, batch, value)."""
        return self.dir / NONFINITE_LOSSES_JSONL

    def read_metadata(self) -> dict:
        """``train_metadata.json`` (the one reader of that file), ``{}`` before the training wrote it."""
        from auto_quantize_model.utils.io import read_json

        return read_json(self.metadata_json) if self.metadata_json.is_file() else {}

    def read_checkpoint_epochs(self) -> dict:
        """``checkpoint_epochs.json`` (the one reader of that file): ``{"last": E, "best": E}``, ``{}`` before."""
        from auto_quantize_model.utils.io import read_json

        return read_json(self.checkpoint_epochs_json) if self.checkpoint_epochs_json.is_file() else {}

    def is_finished(self) -> bool:
        """A stage is finished once its metadata records completion and ``best.pt`` exists."""
        return self.best.is_file() and self.read_metadata().get("status") == "finished"


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
        return self.root / RUN_JSON

    @property
    def run_config(self) -> Path:
        return self.root / RUN_CONFIG_YAML

    @property
    def summary_md(self) -> Path:
        return self.root / SUMMARY_MD

    @property
    def summary_csv(self) -> Path:
        """One row per (variant, seed, weights_format); written by the summary stage."""
        return self.root / SUMMARY_CSV

    @property
    def summary_json(self) -> Path:
        """``{"complete": bool, "missing": [...], ...}``: the run root is complete iff this says so."""
        return self.root / SUMMARY_JSON

    @property
    def map_comparison_png(self) -> Path:
        return self.root / MAP_COMPARISON_PNG

    @property
    def set_aside_dir(self) -> Path:
        """Everything set aside in this run root (see :data:`SET_ASIDE_DIR`)."""
        return self.root / SET_ASIDE_DIR

    def set_aside_path(self, path: Path, label: str) -> Path:
        """Where ``path`` of this run root is set aside, e.g. ``set-aside/seed-0/fp16.stale-<time>``."""
        return set_aside_path(self.root, path, label)

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
    def selection_dataset_yaml(self) -> Path:
        """Data YAML whose ``val:`` is the selection split carved from train (training validates there)."""
        return self.dataset_dir / "dataset-selection.yaml"  # spelled like dataset.yaml by the dataset writer

    @property
    def dataset_provenance(self) -> Path:
        return self.dataset_dir / "provenance.json"

    @property
    def dataset_fingerprint(self) -> Path:
        """Names, sizes and mtimes of the prepared images and hashes of the small files (prepare-data writes it)."""
        from auto_quantize_model.data.fingerprint import FINGERPRINT_FILE  # the dataset writer (data/) names it

        return self.dataset_dir / FINGERPRINT_FILE

    @property
    def synthetic_source_dir(self) -> Path:
        """Where the demo profile generates its synthetic COCO-layout source data."""
        return self.root / "synthetic-coco"

    # --- per training seed ----------------------------------------------------------------
    def seed(self, seed: int) -> SeedRoot:
        """Everything one training seed produces: ``R/seed-<k>/``."""
        return SeedRoot(self.root / f"{SEED_DIR_PREFIX}{int(seed)}", int(seed))

    def seeds_present(self) -> list[int]:
        """Seeds that have a folder in this run root, sorted."""
        found = (p.name[len(SEED_DIR_PREFIX) :] for p in self.root.glob(f"{SEED_DIR_PREFIX}*") if p.is_dir())
        return sorted(int(s) for s in found if s.isdigit())


@dataclass(frozen=True)
class SeedRoot:
    """Paths of one training seed: training folders, ONNX files and evaluations of every variant."""

    dir: Path
    seed: int

    def train_run(self, variant: str) -> TrainRunPaths:
        """The Ultralytics save_dir (or PTQ folder) of ``variant`` (``fp16``, ``qat-w4a16``, ...)."""
        return TrainRunPaths(self.dir / variant)

    @property
    def onnx_dir(self) -> Path:
        return self.dir / "onnx"

    def onnx_model(self, model_name: str, variant: str, weights_format: str) -> Path:
        """``<model>-<variant>-<format>.onnx``, e.g. ``yolov10m-qat-w4a16-int4.onnx``."""
        return self.onnx_dir / f"{model_name}-{variant}-{weights_format}.onnx"

    def eval_dir(self, variant: str, weights_format: str, runtime: str = DEFAULT_RUNTIME) -> Path:
        """``eval/<variant>-<format>`` (ONNX Runtime), ``eval/<variant>-<format>-<runtime>`` for another runtime."""
        suffix = "" if runtime == DEFAULT_RUNTIME else f"-{runtime}"
        return self.dir / "eval" / f"{artifact_label(variant, weights_format)}{suffix}"

    def eval_metrics(self, variant: str, weights_format: str, runtime: str = DEFAULT_RUNTIME) -> Path:
        return self.eval_dir(variant, weights_format, runtime) / METRICS_FILE

    def eval_detections(self, variant: str, weights_format: str, runtime: str = DEFAULT_RUNTIME) -> Path:
        return self.eval_dir(variant, weights_format, runtime) / DETECTIONS_FILE

    @property
    def latency_json(self) -> Path:
        """Latency of every ONNX file of this seed, timed in one process (keys: ``runs.latency_keys``)."""
        return self.dir / LATENCY_JSON

    def read_latency(self) -> dict | None:
        """``latency.json`` (the one reader of that file), ``None`` before the latency stage wrote it."""
        from auto_quantize_model.utils.io import read_json

        return read_json(self.latency_json) if self.latency_json.is_file() else None

    def eval_tensorboard_dir(self, variant: str, weights_format: str) -> Path:
        """The summary's TensorBoard record of this file's ONNX mAP, size and latency (an hparams session)."""
        return self.eval_dir(variant, weights_format) / TENSORBOARD_DIR
