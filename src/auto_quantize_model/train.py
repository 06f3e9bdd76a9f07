"""Training stage: FP16/AMP baseline and W4A16 QAT, from scratch or fine-tuned from an FP checkpoint.

``train_stage`` resolves the recipe (``conf/.../hyp.scratch.yaml``) plus command-line values
into Ultralytics arguments, guards the stage folder (a finished run is never overwritten, an
interrupted one resumes only when asked), runs the trainer and records what is needed to
reproduce the run.

A stage folder is in one of four states (:class:`StageState`, decided by :func:`plan_stage`):

* ``fresh``: nothing to continue. No folder, or leftovers without an intact checkpoint (an
  attempt killed before its first save), which are set aside as
  ``<run root>/set-aside/seed-<k>/<stage>.incomplete-<time>/``.
* ``interrupted``: an intact checkpoint that can resume (``last.pt``, else ``best.pt``):
  Ultralytics continues from its next epoch.
* ``last-epoch-saved``: the final epoch's checkpoint (or one ``strip_optimizer`` already ran on)
  is saved but the stage was never recorded finished: the process died during the final strip,
  the final validation or the metadata write. It is finished without training: checkpoints
  stripped as ``final_eval`` does, final validation on ``best.pt``, outcome recorded from it.
* ``finished``: ``train_metadata.json`` says finished and ``best.pt`` exists. Never redone.

A torn checkpoint (fails to load) is moved to ``set-aside/.../<name>.corrupt-<time>`` and the
choice (which checkpoint, what was set aside) goes into the log and the attempt's record in
``train_metadata.json``. Checkpoints are written atomically (:mod:`auto_quantize_model.runs.checkpoints`),
so a torn one only comes from outside (older code, a copy, a failing disk).
"""

from __future__ import annotations

import contextlib
import enum
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auto_quantize_model.runs.checkpoint_policy import CHECKPOINTS_KEY
from auto_quantize_model.runs.config import (
    CLI_OWNED_TRAIN_ARGS,
    ConfigError,
    check_keys,
    dump_yaml,
    load_yaml_mapping,
    resolve_project_path,
)
from auto_quantize_model.runs.provenance import (
    command_line,
    device_info,
    git_state,
    package_versions,
    utc_now,
)
from auto_quantize_model.runs.run_root import (
    RunRoot,
    TrainRunPaths,
    fp_stage_name,
    qat_stage_name,
)
from auto_quantize_model.runs.train_checks import check_init_from, check_model, check_numbers
from auto_quantize_model.utils.io import sha256_file, write_json_atomic, write_text_atomic
from auto_quantize_model.utils.ultralytics_env import (
    pin_ultralytics_settings,
)

DEFAULT_HYP = Path("conf") / "cv-models" / "yolov10m" / "hyp.scratch.yaml"

# The arguments that make a recipe what it says (warm-up, augmentation, schedule, optimizer), recorded as the
# trainer ran them (Ultralytics rewrites optimizer/lr0 for optimizer=auto) in train_metadata.json "recipe".
RECIPE_RECORD_KEYS = (
    "optimizer",
    "lr0",
    "lrf",
    "cos_lr",
    "momentum",
    "weight_decay",
    "warmup_epochs",
    "warmup_bias_lr",
    "mosaic",
    "close_mosaic",
    "nbs",
)


class RunExistsError(RuntimeError):
    """The stage folder holds a finished or interrupted run that this call must not overwrite."""


class StageState(enum.StrEnum):
    """Where a training stage's folder stands (see the module docstring)."""

    FRESH = "fresh"
    INTERRUPTED = "interrupted"
    LAST_EPOCH_SAVED = "last-epoch-saved"
    FINISHED = "finished"


@dataclass(frozen=True)
class StagePlan:
    """What :func:`train_stage` does with a stage folder, and why."""

    state: StageState
    checkpoint: Path | None = None  # resume from (interrupted) or finish from (last-epoch-saved)
    notes: tuple[str, ...] = ()  # what was set aside and why; logged and recorded in the attempt

    def to_record(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "checkpoint": str(self.checkpoint) if self.checkpoint else None,
            "notes": list(self.notes),
        }


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
        """``fp16`` or ``qat-<scheme>``; ``fp16-ft`` or ``qat-<scheme>-ft`` when initialised from an FP checkpoint."""
        fine_tune = self.init_from is not None
        if not self.quantized:
            return fp_stage_name(fine_tune)
        from auto_quantize_model.quant.scheme import resolve_scheme

        return qat_stage_name(resolve_scheme(self.quant_scheme).name, fine_tune)

    @property
    def paths(self) -> TrainRunPaths:
        """The stage folder: ``<run_root>/seed-<seed>/<stage>/`` (one place decides it)."""
        return RunRoot(self.run_root).seed(self.seed).train_run(self.stage)


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

    hyp_path = resolve_project_path(request.hyp)
    recipe = load_yaml_mapping(hyp_path)
    check_keys(recipe, DEFAULT_CFG_DICT, str(hyp_path), forbidden=CLI_OWNED_TRAIN_ARGS)
    check_keys(request.overrides, DEFAULT_CFG_DICT, "--train-arg overrides", forbidden=CLI_OWNED_TRAIN_ARGS)
    paths = request.paths
    args = {
        **recipe,
        "model": request.model,
        "data": str(Path(request.data).resolve()),
        "project": str(paths.dir.parent),
        "name": paths.name,
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
    """Train one stage into ``<run_root>/seed-<seed>/<stage>/``; resume or refuse as the folder demands."""
    pin_ultralytics_settings()
    check_request(request)
    paths = request.paths
    if paths.is_finished():
        if not request.resume:
            raise RunExistsError(f"{paths.dir}: this stage already finished; use a new --run-root to train again")
        return _result(request, paths, status="already-finished", resumed=False)
    if not Path(request.data).is_file():
        raise ConfigError(f"{request.data}: dataset YAML not found; run scripts/cv-models/prepare_coco_dataset.py")
    plan = plan_stage(paths, request)
    if plan.state is StageState.LAST_EPOCH_SAVED:
        return _finish_saved_stage(request, paths, plan)
    resuming = plan.state is StageState.INTERRUPTED
    if not resuming:
        check_init_from(request.init_from, float_stage=not request.quantized)  # before the stage folder exists
    args = _resume_args(request, paths, plan.checkpoint) if resuming else resolve_train_args(request)
    if resuming:
        _trim_results_csv(paths, plan.checkpoint)
    scheme = _quant_scheme(request)
    trainer = _make_trainer(args, scheme)
    _write_start_records(request, paths, args, resuming, scheme, plan)
    with _failure_recorded(paths):
        trainer.train()
    outcome = {**_training_outcome(trainer), **_checkpoint_records(paths, request.data)}
    _update_metadata(paths, status="finished", finished_at=utc_now(), **outcome)
    return _result(request, paths, status="finished", resumed=resuming)


def check_request(request: TrainRequest) -> None:
    """Flag values that are wrong whatever the folder holds; raised before anything is written."""
    check_numbers(
        epochs=request.epochs,
        imgsz=request.imgsz,
        batch=request.batch,
        workers=request.workers,
        fraction=request.fraction,
        seed=request.seed,
    )
    check_model(request.model)


@contextlib.contextmanager
def _failure_recorded(paths: TrainRunPaths) -> Iterator[None]:
    """Record ``failed`` with a one-line reason when the block raises (a kill -9 cannot be caught: see plan_stage)."""
    try:
        yield
    except BaseException as error:
        reason = f"{type(error).__name__}: {error}".strip().splitlines()[0]
        with contextlib.suppress(OSError):  # a full disk must not hide the original error
            _update_metadata(paths, status="failed", error=reason, failed_at=utc_now())
        raise


def plan_stage(paths: TrainRunPaths, request: TrainRequest) -> StagePlan:
    """Decide the folder's :class:`StageState`; set aside torn checkpoints and checkpoint-less leftovers.

    Anything but an empty folder needs ``--resume`` (the runner always passes it).
    """
    if paths.is_finished():
        return StagePlan(StageState.FINISHED, paths.best)
    _refuse_live_owner(paths)
    leftovers = sorted(p.name for p in paths.dir.iterdir()) if paths.dir.is_dir() else []
    if not leftovers:
        return StagePlan(StageState.FRESH)
    if not request.resume:
        what = (
            "an interrupted run is here"
            if paths.last.is_file()
            else f"folder exists without a checkpoint ({', '.join(leftovers[:5])})"
        )
        raise RunExistsError(f"{paths.dir}: {what}; pass --resume to continue or finish it, or use a new --run-root")
    plan = _plan_from_checkpoints(paths)
    for note in plan.notes:
        print(f"{paths.dir}: {note}")
    return plan


def _plan_from_checkpoints(paths: TrainRunPaths) -> StagePlan:
    """The newest intact checkpoint decides: last.pt, else best.pt; torn ones are set aside first."""
    from auto_quantize_model.runs.checkpoints import inspect_checkpoint, set_aside

    notes: list[str] = []
    intact = []
    for path in (paths.last, paths.best):
        info = inspect_checkpoint(path)
        if info.intact:
            intact.append(info)
        elif path.is_file():
            moved = set_aside(path, paths.corrupt_checkpoint(path, _stamp()))
            notes.append(f"{path.name} does not load ({info.error}); set aside as {moved}")
    for info in intact:
        if info.final_epoch_saved:
            notes.append(f"{info.path.name} holds the final epoch; finishing the stage without training")
            return StagePlan(StageState.LAST_EPOCH_SAVED, info.path, tuple(notes))
        if info.can_resume:
            notes.append(f"resuming from {info.path.name} (epoch {info.epoch + 1} of {info.epochs} saved)")
            return StagePlan(StageState.INTERRUPTED, info.path, tuple(notes))
    target = _set_aside(paths)
    notes.append(f"no checkpoint to resume from; moved the attempt to {target} and starting fresh")
    return StagePlan(StageState.FRESH, None, tuple(notes))


def _stamp() -> str:
    return utc_now().replace(":", "").replace("+0000", "Z")


def _refuse_live_owner(paths: TrainRunPaths) -> None:
    """A ``running`` record whose process is alive on this host is another training; a dead one was interrupted."""
    with contextlib.suppress(ValueError):  # a torn metadata file belongs to a dead process
        metadata = paths.read_metadata()
        last = (metadata.get("attempts") or [{}])[-1]
        pid, host = last.get("pid"), last.get("host")
        if metadata.get("status") == "running" and host == socket.gethostname() and _alive(pid):
            raise RunExistsError(f"{paths.dir}: stage is being trained by process {pid} on this host; wait for it")


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _set_aside(paths: TrainRunPaths) -> Path:
    """Move an attempt without a usable checkpoint out of the way (kept, not deleted).

    Ultralytics appends to an existing results.csv and TensorBoard would mix both attempts' events.
    """
    target = paths.incomplete_dir(_stamp())
    target.parent.mkdir(parents=True, exist_ok=True)
    paths.dir.rename(target)
    return target


def _resume_args(request: TrainRequest, paths: TrainRunPaths, checkpoint: Path) -> dict[str, Any]:
    """Resume from ``checkpoint``; Ultralytics takes everything else from the checkpoint's args.

    Only what BaseTrainer.check_resume lets change: the dataset's location, device, workers,
    and the save dir (so a moved run root resumes in place).
    """
    return {
        "resume": str(checkpoint),
        "data": str(Path(request.data).resolve()),
        "device": request.device,
        "workers": request.workers,
        "save_dir": str(paths.dir),
    }


def _trim_results_csv(paths: TrainRunPaths, checkpoint: Path) -> None:
    """Drop results.csv rows after the checkpoint's epoch: Ultralytics appends the redone epochs again."""
    from auto_quantize_model.runs.checkpoints import inspect_checkpoint

    epoch = inspect_checkpoint(checkpoint).epoch
    if epoch is None or epoch < 0 or not paths.results_csv.is_file():
        return
    header, *rows = paths.results_csv.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [row for row in rows if _csv_epoch(row) <= epoch + 1]  # the CSV counts epochs from 1
    if len(kept) < len(rows):
        write_text_atomic(paths.results_csv, header + "".join(kept))
        print(f"{paths.results_csv}: dropped {len(rows) - len(kept)} row(s) after epoch {epoch + 1} (redone now)")


def _csv_epoch(row: str) -> float:
    try:
        return float(row.split(",", 1)[0])
    except ValueError:
        return float("inf")


def _finish_saved_stage(request: TrainRequest, paths: TrainRunPaths, plan: StagePlan) -> TrainResult:
    """``last-epoch-saved``: strip the checkpoints as ``final_eval`` does, validate best.pt, record from best.pt."""
    from auto_quantize_model.runs.checkpoints import inspect_checkpoint

    config = paths.read_metadata().get("config", {})
    _write_start_records(request, paths, config, True, _quant_scheme(request), plan)
    with _failure_recorded(paths):
        epochs_completed = _strip_like_final_eval(paths)
        outcome = _validate_best(paths, request)
    outcome["epochs_completed"] = epochs_completed or inspect_checkpoint(paths.best).epochs
    outcome.update(_checkpoint_records(paths, request.data))
    _update_metadata(paths, status="finished", finished_at=utc_now(), **outcome)
    return _result(request, paths, status="finished", resumed=True)


def _strip_like_final_eval(paths: TrainRunPaths) -> int | None:
    """What ``BaseTrainer.final_eval`` does to the checkpoints (atomically); return the epochs in results."""
    import ultralytics.engine.trainer as trainer_module

    from auto_quantize_model.runs.checkpoints import atomic_strip_optimizer, publish_file

    with atomic_strip_optimizer():
        last = trainer_module.strip_optimizer(paths.last) if paths.last.is_file() else {}
        if not paths.best.is_file():  # best.pt was torn: the final epoch's weights are all there is
            tmp = paths.best.with_name(f".{paths.best.name}.tmp-{os.getpid()}")
            tmp.write_bytes(paths.last.read_bytes())
            publish_file(tmp, paths.best)
            print(f"{paths.best}: missing; using the final epoch's last.pt as best.pt")
        updates = {"train_results": last["train_results"]} if last.get("train_results") else None
        best = trainer_module.strip_optimizer(paths.best, updates=updates)
    epochs = (best.get("train_results") or {}).get("epoch") or []
    return int(max(epochs)) if epochs else None


def _validate_best(paths: TrainRunPaths, request: TrainRequest) -> dict[str, Any]:
    """Ultralytics' final validation of best.pt, with the validator settings ``final_eval`` uses."""
    from ultralytics.models.yolo.detect import DetectionValidator
    from ultralytics.utils.patches import torch_load

    ckpt = torch_load(paths.best, map_location="cpu")
    train_args = dict(ckpt.get("train_args") or {})
    batch = int(train_args.get("batch") or 16)
    args = {
        **train_args,
        "mode": "val",
        "data": str(Path(request.data).resolve()),
        "device": request.device,
        "workers": request.workers,
        "save_dir": str(paths.dir),
        "compile": False,
        "batch": max(batch, 1) * 2,  # the trainer's test loader: twice the training batch
    }  # rect comes from train_args: square val batches unless rect=True, as the trainer builds them
    print(f"Validating {paths.best} (final validation of a stage whose last epoch was saved)...")
    metrics = DetectionValidator(args=args, save_dir=paths.dir)(model=str(paths.best))
    metrics.pop("fitness", None)
    fitness = (ckpt.get("train_metrics") or {}).get("fitness")
    return {
        "quantization": _quantization_record(paths),
        "recipe": recipe_record(train_args),
        "best_fitness": float(fitness) if fitness is not None else None,
        "nonfinite_losses": _count_lines(paths.nonfinite_log),
        "final_metrics": {key: float(value) for key, value in metrics.items()},
        "finished_from": "best.pt after the process died with its final epoch saved",
    }


def _quantization_record(paths: TrainRunPaths) -> dict[str, Any] | None:
    """The QAT report rebuilt from best.pt (``None`` for a float model)."""
    from ultralytics.nn.tasks import load_checkpoint

    from auto_quantize_model.quant.yolov10 import (
        QuantizationReport,
        layer_bit_widths,
        quant_scheme_of,
    )

    model, _ = load_checkpoint(str(paths.best))
    scheme = quant_scheme_of(model)
    if scheme is None:
        return None
    return QuantizationReport(scheme.name, tuple(layer_bit_widths(model, scheme).items())).to_dict()


def _count_lines(path: Path) -> int:
    return sum(1 for _ in path.open(encoding="utf-8")) if path.is_file() else 0


def _quant_scheme(request: TrainRequest):
    """The named scheme of a QAT request, ``None`` for FP16."""
    from auto_quantize_model.quant.scheme import resolve_scheme

    return resolve_scheme(request.quant_scheme) if request.quantized else None


def _make_trainer(args: dict[str, Any], scheme):
    from auto_quantize_model.ultralytics_ext.trainers import (
        QATDetectionTrainer,
        ScratchDetectionTrainer,
    )

    if scheme is not None:
        return QATDetectionTrainer(overrides=args, quant_scheme=scheme)
    return ScratchDetectionTrainer(overrides=args)


def _write_start_records(
    request: TrainRequest, paths: TrainRunPaths, args: dict[str, Any], resuming: bool, scheme, plan: StagePlan
) -> None:
    """Resolved config, scheme and metadata, written before the first epoch."""
    paths.dir.mkdir(parents=True, exist_ok=True)
    if not resuming:
        header = f"# Resolved training config of stage {request.stage} (recipe {request.hyp} + command line)\n"
        write_text_atomic(paths.config_yaml, header + dump_yaml(args))
    if scheme is not None:
        scheme.save(paths.quant_scheme_json)
    previous = paths.read_metadata()
    attempt = {
        "started_at": utc_now(),
        "resumed": resuming,
        "command": command_line(),
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "previous_status": _previous_status(previous),
        **plan.to_record(),
    }
    attempts = previous.get("attempts", []) + [attempt]
    write_json_atomic(
        paths.metadata_json,
        {
            "status": "running",
            "stage": request.stage,
            "quantized": request.quantized,
            "quant_scheme": scheme.to_dict() if scheme is not None else None,
            "init_from": str(request.init_from) if request.init_from else None,
            "init_from_sha256": previous.get("init_from_sha256", _sha256_or_none(request.init_from)),
            "seed": request.seed,
            "config": previous.get("config", args),
            "attempts": attempts,
            "git": git_state(),
            "packages": package_versions(),
            "device": device_info(),
        },
    )


def _sha256_or_none(path: Path | None) -> str | None:
    """The starting checkpoint's sha256, recorded at the first attempt (what the summary checks it against)."""
    return sha256_file(path) if path is not None and Path(path).is_file() else None


def _previous_status(previous: dict[str, Any]) -> str | None:
    """``running`` left behind means that process died without a word (kill -9, power loss): interrupted."""
    status = previous.get("status")
    return "interrupted" if status == "running" else status


def _update_metadata(paths: TrainRunPaths, **fields: Any) -> None:
    metadata = paths.read_metadata()
    write_json_atomic(paths.metadata_json, {**metadata, **fields})


def _training_outcome(trainer) -> dict[str, Any]:
    best = trainer.best_fitness
    report = getattr(trainer, "quantization_report", None)  # absent for FP and in a DDP parent
    recipe = recipe_record(vars(trainer.args))
    if getattr(trainer, "train_loader", None) is not None:  # absent in the parent of a DDP launch
        recipe["warmup_iterations"] = int(trainer._get_warmup_iterations(len(trainer.train_loader)))
    return {
        "quantization": report.to_dict() if report is not None else None,
        "recipe": recipe,
        "epochs_completed": int(trainer.epoch) + 1,
        "best_fitness": float(best) if best is not None else None,
        "nonfinite_losses": int(getattr(trainer, "aqm_nonfinite_count", 0)),
        "precision": training_precision(trainer),
        "final_metrics": {key: float(value) for key, value in (trainer.metrics or {}).items()},
    }


def recipe_record(args: dict[str, Any]) -> dict[str, Any]:
    """The recipe arguments a training ran with (see RECIPE_RECORD_KEYS), from the trainer's final args."""
    return {key: args.get(key) for key in RECIPE_RECORD_KEYS}


def _checkpoint_records(paths: TrainRunPaths, data: Path) -> dict[str, Any]:
    """``{"checkpoints": {"last": {"epoch"}, "best": {"epoch", "chosen_on"}}}`` for train_metadata.json.

    The epochs come from the save callback's ``checkpoint_epochs.json`` (the .pt files lose theirs when
    stripped); ``chosen_on`` is the data YAML's ``val:`` split, where Ultralytics' fitness picked best.pt.
    """
    epochs = paths.read_checkpoint_epochs()
    val = load_yaml_mapping(Path(data)).get("val")
    chosen_on = Path(str(val)).name if isinstance(val, str) else str(val)
    return {
        CHECKPOINTS_KEY: {
            "last": {"epoch": epochs.get("last")},
            "best": {"epoch": epochs.get("best"), "chosen_on": chosen_on},
        }
    }


def training_precision(trainer) -> dict[str, Any]:
    """What actually ran: effective AMP (after Ultralytics' check; always off on CPU), device and dtypes.

    ``None`` where this process did not train (the parent of a DDP launch).
    """
    amp = getattr(trainer, "amp", None)
    if amp is None:
        return {"amp": None, "device": None, "compute_dtype": None}
    amp = bool(amp)
    return {
        "amp": amp,
        "device": str(trainer.device),
        "compute_dtype": "float16 autocast (AMP)" if amp else "float32",
        "checkpoint_dtype": "float16 (Ultralytics saves the EMA with .half())",
    }


def _result(request: TrainRequest, paths: TrainRunPaths, status: str, resumed: bool) -> TrainResult:
    metadata = paths.read_metadata()
    return TrainResult(
        stage=request.stage,
        paths=paths,
        status=status,
        resumed=resumed,
        epochs_completed=int(metadata.get("epochs_completed", 0)),
        best_fitness=metadata.get("best_fitness"),
    )
