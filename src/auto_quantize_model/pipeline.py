"""Run profiles and stage tracking for the FP16-vs-W4A16-QAT pipeline.

Two jobs, both keyed on a :class:`~auto_quantize_model.run_root.RunRoot`:

* **Run profiles** (``conf/cv-models/yolov10m/profiles/<name>.yaml``): a flat mapping of every
  setting the runner needs. :func:`resolve_run_config` applies CLI overrides and validates
  every key; :func:`save_or_check_run_config` saves the result as ``RunRoot.run_config`` and,
  on a rerun, refuses when the resolved config differs from the saved one, so that a resumed
  run is the same experiment.
* **Stage tracking** in ``RunRoot.run_json``: :func:`run_stage` runs one command with its
  output teed to ``RunRoot.stage_log(stage)``, records status, times, exit code and command,
  skips a stage that is already ``done`` and propagates a failing exit code.

``run.json`` schema (``schema_version`` 1)::

    {"schema_version": 1, "run_root": "/abs/R", "created_at": ISO, "updated_at": ISO,
     "stages": {"<stage>": {"status": "running|done|failed", "attempts": 2,
                            "started_at": ISO, "ended_at": ISO|null, "duration_s": float|null,
                            "exit_code": int|null, "command": [argv...],
                            "log": "logs/<stage>.log", "pid": int, "host": str,
                            "error": str|null (set when it exited 0 without its outputs)}}}
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from auto_quantize_model.io_utils import write_text_atomic
from auto_quantize_model.run_root import FP16_STAGE, RunRoot, qat_stage_name
from auto_quantize_model.ultralytics_ext.env import project_root

PROFILES_DIR = project_root() / "conf" / "cv-models" / "yolov10m" / "profiles"
SUMMARY_STAGE = "summary"  # the last stage; it runs auto_quantize_model.report


class RunConfigError(ValueError):
    """A profile or override is invalid (unknown key, wrong type, inconsistent settings)."""


class RunConfigMismatch(RunConfigError):
    """The resolved config differs from the one saved in the run root."""

    def __init__(self, path: Path, differences: dict[str, tuple[Any, Any]]):
        self.path = path
        self.differences = differences
        lines = [f"  {key}: saved {saved!r}, now {now!r}" for key, (saved, now) in differences.items()]
        super().__init__(
            f"{path} was written by an earlier run with different settings; refusing so that a "
            f"resumed run stays the same experiment. Differing keys ({', '.join(differences)}):\n"
            + "\n".join(lines)
            + "\nRerun with the saved settings, or use a new --run-root."
        )


# --------------------------------------------------------------------------------------------
# Value checks: each takes (key, value) and returns the normalized value or raises.
# --------------------------------------------------------------------------------------------
def _int(minimum: int | None = None, optional: bool = False, multiple_of: int | None = None) -> Callable:
    def check(key: str, value: Any) -> int | None:
        if value is None and optional:
            return None
        # bool is an int subclass; `epochs: true` is a typo, not 1.
        if isinstance(value, bool) or not isinstance(value, int):
            raise RunConfigError(f"{key}: expected an integer{' or null' if optional else ''}, got {value!r}")
        if minimum is not None and value < minimum:
            raise RunConfigError(f"{key}: must be >= {minimum}, got {value}")
        if multiple_of and value % multiple_of:
            raise RunConfigError(f"{key}: must be a multiple of {multiple_of} (the model stride), got {value}")
        return value

    return check


def _fraction(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise RunConfigError(f"{key}: expected a number in (0, 1], got {value!r}")
    return float(value)


def _str(pattern: str | None = None, optional: bool = False, suffix: str | None = None) -> Callable:
    def check(key: str, value: Any) -> str | None:
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value).strip() == "":
            raise RunConfigError(f"{key}: expected a non-empty string, got {value!r}")
        text = str(value).strip()  # YAML reads `device: 0` as an int; Ultralytics wants "0".
        if pattern and not re.fullmatch(pattern, text):
            raise RunConfigError(f"{key}: {text!r} does not match {pattern}")
        if suffix and not text.endswith(suffix):
            raise RunConfigError(f"{key}: expected a {suffix} file, got {text!r}")
        return text

    return check


def _choice(*choices: str) -> Callable:
    def check(key: str, value: Any) -> str:
        if value not in choices:
            raise RunConfigError(f"{key}: expected one of {', '.join(choices)}, got {value!r}")
        return value

    return check


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise RunConfigError(f"{key}: expected true or false, got {value!r}")
    return value


def _str_list(key: str, value: Any) -> list[str]:
    # Accept "A B" or "A,B" from a --set override as well as a YAML list.
    items = re.split(r"[\s,]+", value.strip()) if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(i, str) and i for i in items):
        raise RunConfigError(f"{key}: expected a non-empty list of strings, got {value!r}")
    return list(items)


def _key_value_list(key: str, value: Any) -> list[str]:
    # Ultralytics arguments for both trainings, passed on as `--set KEY=VALUE`; the trainer checks the keys.
    if not isinstance(value, list) or not all(isinstance(i, str) and re.fullmatch(r"\w+=\S.*", i) for i in value):
        raise RunConfigError(f"{key}: expected a list of 'KEY=VALUE' strings (may be empty), got {value!r}")
    return list(value)


# Every key a profile must define, in the order they are saved. No hidden defaults: a profile
# names each setting, so the saved run config documents the whole experiment.
PROFILE_SCHEMA: dict[str, Callable[[str, Any], Any]] = {
    "model": _str(suffix=".yaml"),
    "epochs": _int(1),
    "imgsz": _int(32, multiple_of=32),
    "batch": _int(1),
    "device": _str(),
    "workers": _int(0),
    "seed": _int(0),
    "fraction": _fraction,
    "hyp": _str(suffix=".yaml"),
    "quant_scheme": _str(pattern=r"[A-Za-z0-9][A-Za-z0-9_.-]*"),
    "train_overrides": _key_value_list,
    "data_source": _choice("coco", "synthetic"),
    "source_root": _str(optional=True),
    "max_train_images": _int(1, optional=True),
    "max_val_images": _int(1, optional=True),
    "data_seed": _int(0),
    "synthetic_train": _int(1, optional=True),
    "synthetic_val": _int(1, optional=True),
    "synthetic_imgsz": _int(32, optional=True),
    "export_format": _choice("e2e", "raw"),
    "export_opset": _int(7, optional=True),
    "export_dynamic_batch": _bool,
    "eval_batch": _int(1),
    "eval_providers": _str_list,
    "eval_max_images": _int(1, optional=True),
}
# Keys the resolver adds; they are saved and compared but never come from a profile file.
DERIVED_KEYS = ("profile",)
# The runner's named CLI overrides (the rest go through --set KEY=VALUE).
CLI_OVERRIDE_KEYS = ("model", "epochs", "imgsz", "batch", "device", "workers", "seed", "fraction", "quant_scheme")


# --------------------------------------------------------------------------------------------
# Profiles
# --------------------------------------------------------------------------------------------
def profile_path(profile: str | os.PathLike, profiles_dir: Path = PROFILES_DIR) -> Path:
    """A profile given by name (``demo``) lives in ``profiles_dir``; a ``.yaml`` path is used as is."""
    text = str(profile)
    if text.endswith((".yaml", ".yml")) or os.sep in text:
        return Path(text)
    return Path(profiles_dir) / f"{text}.yaml"


def load_profile(profile: str | os.PathLike, profiles_dir: Path = PROFILES_DIR) -> dict[str, Any]:
    """Read a profile YAML; unknown and missing keys are errors that name the file."""
    path = profile_path(profile, profiles_dir)
    if not path.is_file():
        known = sorted(p.stem for p in Path(profiles_dir).glob("*.yaml"))
        raise RunConfigError(f"profile not found: {path} (known profiles: {', '.join(known) or 'none'})")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise RunConfigError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    unknown = sorted(set(data) - set(PROFILE_SCHEMA))
    if unknown:
        raise RunConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(PROFILE_SCHEMA)}")
    missing = [key for key in PROFILE_SCHEMA if key not in data]
    if missing:
        raise RunConfigError(f"{path}: missing key(s) {', '.join(missing)}")
    return data


def parse_set_overrides(items: Sequence[str]) -> dict[str, Any]:
    """Turn ``["eval_max_images=50", ...]`` into a dict; values are parsed as YAML scalars/lists."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise RunConfigError(f"--set {item!r}: expected KEY=VALUE")
        overrides[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
    return overrides


def validate_run_config(config: Mapping[str, Any], origin: str) -> dict[str, Any]:
    """Check every key's type and the cross-key rules; ``origin`` names the source in errors."""
    resolved = {}
    for key, check in PROFILE_SCHEMA.items():
        try:
            resolved[key] = check(key, config[key])
        except RunConfigError as error:
            raise RunConfigError(f"{origin}: {error}") from None
    _check_consistency(resolved, origin)
    return resolved


def _check_consistency(config: Mapping[str, Any], origin: str) -> None:
    """Rules across keys, so a bad combination fails before hours of training, not after."""
    if config["data_source"] == "coco" and not config["source_root"]:
        raise RunConfigError(f"{origin}: data_source coco needs source_root")
    if config["data_source"] == "synthetic":
        absent = [k for k in ("synthetic_train", "synthetic_val", "synthetic_imgsz") if config[k] is None]
        if absent:
            raise RunConfigError(f"{origin}: data_source synthetic needs {', '.join(absent)}")
    # A fixed-batch ONNX graph cannot take batched inputs.
    if config["eval_batch"] > 1 and not config["export_dynamic_batch"]:
        raise RunConfigError(f"{origin}: eval_batch > 1 needs export_dynamic_batch: true")


def resolve_run_config(
    profile: str | os.PathLike, overrides: Mapping[str, Any] | None = None, profiles_dir: Path = PROFILES_DIR
) -> dict[str, Any]:
    """Profile + overrides (``None`` values are ignored) -> validated config with ``profile`` first."""
    path = profile_path(profile, profiles_dir)
    data = load_profile(path, profiles_dir)
    given = {key: value for key, value in (overrides or {}).items() if value is not None}
    unknown = sorted(set(given) - set(PROFILE_SCHEMA))
    if unknown:
        raise RunConfigError(f"override(s) {', '.join(unknown)} are not profile keys; allowed: {', '.join(PROFILE_SCHEMA)}")
    data.update(given)
    origin = f"{path}" + (f" with overrides {sorted(given)}" if given else "")
    return {"profile": path.stem, **validate_run_config(data, origin)}


# --------------------------------------------------------------------------------------------
# Saved run config
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunConfigCheck:
    """Outcome of :func:`save_or_check_run_config`."""

    path: Path
    created: bool  # False: an identical config was already saved (a resumed run)


def load_run_config(run_root: RunRoot) -> dict[str, Any] | None:
    """The saved run config, or ``None`` before the first run."""
    if not run_root.run_config.is_file():
        return None
    data = yaml.safe_load(run_root.run_config.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise RunConfigError(f"{run_root.run_config}: not a mapping; delete or repair the file")
    return data


def config_differences(saved: Mapping[str, Any], resolved: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{key: (saved, resolved)}`` for every key whose value differs (absent keys read as ``None``)."""
    keys = list(resolved) + [key for key in saved if key not in resolved]
    return {key: (saved.get(key), resolved.get(key)) for key in keys if saved.get(key) != resolved.get(key)}


def save_or_check_run_config(run_root: RunRoot, config: Mapping[str, Any]) -> RunConfigCheck:
    """Save ``config`` as the run config, or refuse (:class:`RunConfigMismatch`) if a different one exists."""
    saved = load_run_config(run_root)
    if saved is not None:
        differences = config_differences(saved, config)
        if differences:
            raise RunConfigMismatch(run_root.run_config, differences)
        return RunConfigCheck(run_root.run_config, created=False)
    header = (
        f"# Resolved run config of {run_root.root} (profile {config.get('profile')} + CLI overrides).\n"
        "# Written once; a rerun on this run root must resolve to exactly these values.\n"
    )
    write_text_atomic(run_root.run_config, header + yaml.safe_dump(dict(config), sort_keys=False))
    return RunConfigCheck(run_root.run_config, created=True)


def model_name(config: Mapping[str, Any]) -> str:
    """The model name used in ONNX file names: the model cfg stem (``yolov10n.yaml`` -> ``yolov10n``)."""
    return Path(str(config["model"])).stem


def artifact_paths(run_root: RunRoot, config: Mapping[str, Any]) -> dict[str, Path]:
    """Every path the shell runner needs, all from :class:`RunRoot` (the runner builds none itself)."""
    name, qat = model_name(config), qat_stage_name(str(config["quant_scheme"]))
    return {
        "run_root": run_root.root,
        "run_config": run_root.run_config,
        "run_json": run_root.run_json,
        "logs_dir": run_root.logs_dir,
        "synthetic_dir": run_root.synthetic_source_dir,
        "dataset_dir": run_root.dataset_dir,
        "dataset_yaml": run_root.dataset_yaml,
        "val_annotations": run_root.val_annotations,
        "val_images": run_root.val_images_dir,
        "fp16_best": run_root.fp16.best,
        "qat_best": run_root.train_run(qat).best,
        "onnx_fp16": run_root.onnx_model(name, FP16_STAGE),
        "onnx_qat": run_root.onnx_model(name, qat),
        "eval_fp16_metrics": run_root.eval_dir(FP16_STAGE) / "metrics.json",
        "eval_qat_metrics": run_root.eval_dir(qat) / "metrics.json",
        "eval_fp16_dir": run_root.eval_dir(FP16_STAGE),
        "eval_qat_dir": run_root.eval_dir(qat),
        "summary_md": run_root.summary_md,
    }


def pipeline_stages(config: Mapping[str, Any]) -> list[str]:
    """Stage names in run order; the demo's synthetic data gets its own stage before prepare-data."""
    qat = qat_stage_name(str(config["quant_scheme"]))
    data = ["make-synthetic-data"] if config["data_source"] == "synthetic" else []
    return [*data, "prepare-data", "train-fp16", "export-fp16", f"train-{qat}", f"export-{qat}",
            "eval-fp16", f"eval-{qat}", SUMMARY_STAGE]  # fmt: skip


def _shell_value(value: Any) -> str:
    """One shell word (or a bash array for lists); ``None`` becomes the empty string."""
    if isinstance(value, list):
        return "(" + " ".join(shlex.quote(str(item)) for item in value) + ")"
    if isinstance(value, bool):
        return "true" if value else "false"
    return shlex.quote("" if value is None else str(value))


def shell_assignments(run_root: RunRoot, config: Mapping[str, Any]) -> list[str]:
    """``CFG_<KEY>=value`` for each config key, ``ART_<NAME>=path`` for each artifact, all quoted.

    Extra derived names: ``CFG_MODEL_NAME``, ``CFG_QAT_STAGE``, the bash array ``PIPELINE_STAGES``
    and the associative array ``STAGE_LOGS`` (stage -> log path).
    """
    lines = [f"CFG_{key.upper()}={_shell_value(value)}" for key, value in config.items()]
    lines.append(f"CFG_MODEL_NAME={_shell_value(model_name(config))}")
    lines.append(f"CFG_QAT_STAGE={_shell_value(qat_stage_name(str(config['quant_scheme'])))}")
    lines += [f"ART_{name.upper()}={_shell_value(str(path))}" for name, path in artifact_paths(run_root, config).items()]
    stages = pipeline_stages(config)
    lines.append(f"PIPELINE_STAGES={_shell_value(stages)}")
    logs = " ".join(f"[{shlex.quote(s)}]={shlex.quote(str(run_root.stage_log(s)))}" for s in stages)
    lines.append(f"declare -A STAGE_LOGS=({logs})")
    return lines


