"""Training stage: FP16/AMP baseline and W4A16 QAT, from scratch or from an FP checkpoint.

``train_stage`` resolves the recipe (``conf/.../hyp.scratch.yaml``) plus command-line values
into Ultralytics arguments, guards the stage folder (a finished run is never overwritten, an
interrupted one resumes from ``last.pt`` only when asked), runs the trainer and records
what is needed to reproduce the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auto_quantize_model.config import ConfigError, check_keys, dump_yaml, load_yaml_mapping
from auto_quantize_model.io_utils import read_json, write_json_atomic, write_text_atomic
from auto_quantize_model.provenance import command_line, device_info, git_state, package_versions, utc_now
from auto_quantize_model.run_root import FP16_STAGE, RunRoot, TrainRunPaths, qat_stage_name
from auto_quantize_model.ultralytics_ext.env import pin_ultralytics_settings, project_root

DEFAULT_HYP = Path("conf") / "cv-models" / "yolov10m" / "hyp.scratch.yaml"

# Arguments the command line (or the run root) owns; a recipe file must not set them.
CLI_OWNED_ARGS = ("model", "data", "project", "name", "exist_ok", "resume", "pretrained", "save_dir", "mode", "task")


class RunExistsError(RuntimeError):
    """The stage folder holds a finished or interrupted run that this call must not overwrite."""


@dataclass(frozen=True)
class TrainRequest:
    """Everything one training stage needs; built by the CLI from its flags."""

    run_root: Path
    data: Path
    quantized: bool = False
    quant_scheme: str = "w4a16"
    model: str = "yolov10m.yaml"
    epochs: int = 300
    imgsz: int = 640
    batch: int = 32
    device: str = "0"
    hyp: Path = DEFAULT_HYP
    seed: int = 0
    workers: int = 8
    fraction: float = 1.0
    resume: bool = False
    init_from: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def stage(self) -> str:
        return qat_stage_name(self.quant_scheme) if self.quantized else FP16_STAGE


@dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`train_stage`."""

    stage: str
    paths: TrainRunPaths
    status: str  # "finished" or "already-finished"
    resumed: bool
    epochs_completed: int
    best_fitness: float | None


def resolve_train_args(request: TrainRequest) -> dict[str, Any]:
    """Ultralytics arguments for a fresh run: recipe file, then flags, then ``--set`` overrides."""
    from ultralytics.cfg import get_cfg
    from ultralytics.utils import DEFAULT_CFG_DICT

    hyp_path = _resolve_path(request.hyp)
    recipe = load_yaml_mapping(hyp_path)
    check_keys(recipe, DEFAULT_CFG_DICT, str(hyp_path), forbidden=CLI_OWNED_ARGS)
    check_keys(request.overrides, DEFAULT_CFG_DICT, "--set overrides", forbidden=CLI_OWNED_ARGS)
    run_root = RunRoot(request.run_root)
    args = {
        **recipe,
        "model": request.model,
        "data": str(Path(request.data).resolve()),
        "project": str(run_root.root),
        "name": request.stage,
        "exist_ok": True,
        "epochs": request.epochs,
        "imgsz": request.imgsz,
        "batch": request.batch,
        "device": request.device,
        "seed": request.seed,
        "workers": request.workers,
        "fraction": request.fraction,
        "pretrained": str(Path(request.init_from).resolve()) if request.init_from else False,
        **request.overrides,
    }
    get_cfg(overrides=args)  # Ultralytics' own type and range checks, before anything is written
    return args


def train_stage(request: TrainRequest) -> TrainResult:
    """Train one stage into ``<run_root>/<stage>/``; resume or refuse as the folder demands."""
    pin_ultralytics_settings()
    run_root = RunRoot(request.run_root)
    paths = run_root.train_run(request.stage)
    if paths.is_finished():
        if not request.resume:
            raise RunExistsError(f"{paths.dir}: this stage already finished; use a new --run-root to train again")
        return _result(request, paths, status="already-finished", resumed=False)
    if not Path(request.data).is_file():
        raise ConfigError(f"{request.data}: dataset YAML not found; run scripts/cv-models/prepare_coco_dataset.py")
    resuming = _check_interrupted(paths, request)
    args = _resume_args(request, paths) if resuming else resolve_train_args(request)
    scheme = _quant_scheme(request)
    trainer = _make_trainer(args, scheme)
    _write_start_records(request, paths, args, resuming, scheme)
    try:
        trainer.train()
    except BaseException as error:
        _update_metadata(paths, status="failed", error=f"{type(error).__name__}: {error}", failed_at=utc_now())
        raise
    _update_metadata(paths, status="finished", finished_at=utc_now(), **_training_outcome(trainer))
    return _result(request, paths, status="finished", resumed=resuming)


def _resolve_path(path: Path) -> Path:
    """Relative config paths are read from the working directory, else from the project root."""
    path = Path(path)
    return path if path.is_absolute() or path.exists() else project_root() / path


def _check_interrupted(paths: TrainRunPaths, request: TrainRequest) -> bool:
    """True when an interrupted run should resume; refuse to overwrite one without ``--resume``."""
    if paths.last.is_file():
        if request.resume:
            return True
        raise RunExistsError(f"{paths.last}: an interrupted run is here; pass --resume to continue it")
    leftovers = [p.name for p in paths.dir.iterdir()] if paths.dir.is_dir() else []
    if leftovers and not request.resume:
        raise RunExistsError(
            f"{paths.dir}: folder exists without a checkpoint ({', '.join(sorted(leftovers)[:5])}); "
            "pass --resume to restart this stage from scratch, or use a new --run-root"
        )
    if leftovers:
        _set_aside(paths)
    return False


def _set_aside(paths: TrainRunPaths) -> None:
    """Move an attempt that died before its first checkpoint out of the way (kept, not deleted).

    Ultralytics appends to an existing results.csv and TensorBoard would mix both attempts' events.
    """
    target = paths.incomplete_dir(utc_now().replace(":", "").replace("+0000", "Z"))
    paths.dir.rename(target)
    print(f"{paths.dir}: an earlier attempt left no checkpoint; moved it to {target} and starting fresh")


def _resume_args(request: TrainRequest, paths: TrainRunPaths) -> dict[str, Any]:
    """Resume from ``last.pt``; Ultralytics takes everything else from the checkpoint's args.

    Only what BaseTrainer.check_resume lets change: the dataset's location, device, workers,
    and the save dir (so a moved run root resumes in place).
    """
    return {
        "resume": str(paths.last),
        "data": str(Path(request.data).resolve()),
        "device": request.device,
        "workers": request.workers,
        "save_dir": str(paths.dir),
    }


def _quant_scheme(request: TrainRequest):
    """The named scheme of a QAT request, ``None`` for FP16."""
    from auto_quantize_model.quant.scheme import named_scheme

    return named_scheme(request.quant_scheme) if request.quantized else None


def _make_trainer(args: dict[str, Any], scheme):
    from auto_quantize_model.ultralytics_ext.trainers import QATDetectionTrainer, ScratchDetectionTrainer

    if scheme is not None:
        return QATDetectionTrainer(overrides=args, quant_scheme=scheme)
    return ScratchDetectionTrainer(overrides=args)


def _write_start_records(
    request: TrainRequest, paths: TrainRunPaths, args: dict[str, Any], resuming: bool, scheme
) -> None:
    """Resolved config, scheme and metadata, written before the first epoch."""
    paths.dir.mkdir(parents=True, exist_ok=True)
    if not resuming:
        header = f"# Resolved training config of stage {request.stage} (recipe {request.hyp} + command line)\n"
        write_text_atomic(paths.config_yaml, header + dump_yaml(args))
    if scheme is not None:
        scheme.save(paths.quant_scheme_json)
    previous = read_json(paths.metadata_json) if paths.metadata_json.is_file() else {}
    attempts = previous.get("attempts", []) + [{"started_at": utc_now(), "resumed": resuming, "command": command_line()}]
    write_json_atomic(
        paths.metadata_json,
        {
            "status": "running",
            "stage": request.stage,
            "quantized": request.quantized,
            "quant_scheme": scheme.to_dict() if scheme is not None else None,
            "init_from": str(request.init_from) if request.init_from else None,
            "seed": request.seed,
            "config": previous.get("config", args),
            "attempts": attempts,
            "git": git_state(),
            "packages": package_versions(),
            "device": device_info(),
        },
    )


def _update_metadata(paths: TrainRunPaths, **fields: Any) -> None:
    metadata = read_json(paths.metadata_json) if paths.metadata_json.is_file() else {}
    write_json_atomic(paths.metadata_json, {**metadata, **fields})


def _training_outcome(trainer) -> dict[str, Any]:
    best = trainer.best_fitness
    report = getattr(trainer, "quantization_report", None)  # absent for FP and in a DDP parent
    return {
        "quantization": report.to_dict() if report is not None else None,
        "epochs_completed": int(trainer.epoch) + 1,
        "best_fitness": float(best) if best is not None else None,
        "nonfinite_losses": int(getattr(trainer, "aqm_nonfinite_count", 0)),
        "final_metrics": {key: float(value) for key, value in (trainer.metrics or {}).items()},
    }


def _result(request: TrainRequest, paths: TrainRunPaths, status: str, resumed: bool) -> TrainResult:
    metadata = read_json(paths.metadata_json)
    return TrainResult(
        stage=request.stage,
        paths=paths,
        status=status,
        resumed=resumed,
        epochs_completed=int(metadata.get("epochs_completed", 0)),
        best_fitness=metadata.get("best_fitness"),
    )

