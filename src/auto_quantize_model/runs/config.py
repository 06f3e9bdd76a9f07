"""The one config mechanism: YAML mappings, ``KEY=VALUE`` overrides and the run profile schema.

Two layers use it, each with its defaults in one place:

* **Training recipes** (``conf/.../hyp.*.yaml``): Ultralytics arguments, checked against
  Ultralytics' own key list by :mod:`auto_quantize_model.train`; the train CLI's
  ``--train-arg KEY=VALUE`` overrides them.
* **Run profiles** (``conf/cv-models/yolov10m/profiles/<name>.yaml``): every setting of a runner
  run, no hidden defaults. :func:`resolve_run_config` applies the runner's ``--set KEY=VALUE``
  (and its named flags), checks every key, value and referenced file, and names the key, the
  value, what is allowed and the file on error, before any stage runs; ``train_overrides``
  (``--train-arg``) are checked against Ultralytics' own argument list, with a did-you-mean.
  :func:`save_or_check_run_config` saves the result in the run root, with the sha256 of every
  referenced recipe, under a lock; a rerun whose config (or recipe content) differs is refused
  once a training has started or any stage is done (before that, nothing was built from it).

Nothing here imports torch or Ultralytics: a bad config is refused within a second.
"""

from __future__ import annotations

import contextlib
import difflib
import fcntl
import hashlib
import importlib.util
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from auto_quantize_model.runs.checkpoint_policy import BEST_ON_SELECTION, POLICIES
from auto_quantize_model.runs.run_root import RunRoot
from auto_quantize_model.runs.variants import VariantError, parse_variants
from auto_quantize_model.utils.io import write_text_atomic
from auto_quantize_model.utils.ultralytics_env import project_root

PROFILES_DIR = project_root() / "conf" / "cv-models" / "yolov10m" / "profiles"
EVAL_RUNTIMES = ("onnxruntime", "openvino")  # evaluation.runtime.RUNTIMES, named here without importing it
# Ultralytics arguments the train CLI sets from its flags or the run root; a recipe or --train-arg must not.
CLI_OWNED_TRAIN_ARGS = (
    "model",
    "data",
    "project",
    "name",
    "exist_ok",
    "resume",
    "pretrained",
    "save_dir",
    "mode",
    "task",
)
MIN_OPSET = 13  # the oldest opset with per-axis DequantizeLinear (QCDQ weights)
MIN_LATENCY_ROUNDS = 20  # the latency stage's floor: fewer and one disturbed round moves the median
DEVICE_PATTERN = r"cpu|mps|\d+(,\d+)*"


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the key, the file and the fix."""


class RunConfigMismatch(ConfigError):
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
# YAML and overrides
# --------------------------------------------------------------------------------------------
def load_yaml_mapping(path: Path) -> dict[str, Any]:
    """Load a YAML file that must hold a mapping (an empty file is an empty mapping)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error})") from error
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of key: value, got {type(data).__name__}")
    return data


def check_keys(config: Mapping[str, Any], allowed: Iterable[str], source: str, forbidden: Iterable[str] = ()) -> None:
    """Raise :class:`ConfigError` for keys outside ``allowed`` or inside ``forbidden``."""
    allowed = set(allowed)
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown}; fix the spelling or remove them")
    owned = sorted(set(config) & set(forbidden))
    if owned:
        raise ConfigError(f"{source}: key(s) {owned} are set by the command line, not by this file; remove them")


def parse_overrides(pairs: Iterable[str], flag: str = "--set") -> dict[str, Any]:
    """Parse ``KEY=VALUE`` strings; values are read as YAML (``0.01``, ``false``, ``[1,2]``; empty = null)."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} {pair!r}: expected KEY=VALUE")
        try:
            overrides[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as error:
            raise ConfigError(f"{flag} {pair!r}: value is not valid YAML ({error})") from error
    return overrides


def dump_yaml(data: Mapping[str, Any]) -> str:
    """Serialize a config mapping in file order."""
    return yaml.safe_dump(dict(data), sort_keys=False, default_flow_style=None)


def resolve_project_path(path: str | os.PathLike) -> Path:
    """Relative config paths are read from the working directory, else from the project root."""
    path = Path(path)
    return path if path.is_absolute() or path.exists() else project_root() / path


# --------------------------------------------------------------------------------------------
# Value checks: each takes (key, value) and returns the normalized value or raises ConfigError.
# --------------------------------------------------------------------------------------------
def _int(minimum: int | None = None, optional: bool = False, multiple_of: int | None = None) -> Callable:
    def check(key: str, value: Any) -> int | None:
        if value is None and optional:
            return None
        # bool is an int subclass; `epochs: true` is a typo, not 1.
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer{' or null' if optional else ''}, got {value!r}")
        if minimum is not None and value < minimum:
            raise ConfigError(f"{key}: must be >= {minimum}, got {value}")
        if multiple_of and value % multiple_of:
            low = max(multiple_of, value - value % multiple_of)
            raise ConfigError(
                f"{key}: must be a multiple of {multiple_of} (the model stride), got {value}; "
                f"use {low} or {low + multiple_of}"
            )
        return value

    return check


def _fraction(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ConfigError(f"{key}: expected a number in (0, 1], got {value!r}")
    return float(value)


def _str(pattern: str | None = None, optional: bool = False, suffix: str | None = None) -> Callable:
    def check(key: str, value: Any) -> str | None:
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value).strip() == "":
            raise ConfigError(f"{key}: expected a non-empty string, got {value!r}")
        text = str(value).strip()  # YAML reads `device: 0` as an int; Ultralytics wants "0".
        if pattern and not re.fullmatch(pattern, text):
            raise ConfigError(f"{key}: {text!r} is not of the form {pattern}")
        if suffix and not text.endswith(suffix):
            raise ConfigError(f"{key}: expected a {suffix} file, got {text!r}")
        return text

    return check


def _choice(*choices: str) -> Callable:
    def check(key: str, value: Any) -> str:
        if value not in choices:
            raise ConfigError(f"{key}: expected one of {', '.join(choices)}, got {value!r}")
        return value

    return check


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    return value


def _words(value: Any) -> Any:
    # Accept "A B" or "A,B" from a --set override or a runner flag as well as a YAML list.
    if isinstance(value, str):
        return [word for word in re.split(r"[\s,]+", value.strip()) if word]
    return [value] if isinstance(value, int) and not isinstance(value, bool) else value


def _str_list(key: str, value: Any) -> list[str]:
    items = _words(value)
    if not isinstance(items, list) or not items or not all(isinstance(i, str) and i for i in items):
        raise ConfigError(f"{key}: expected a non-empty list of strings, got {value!r}")
    return list(items)


def _seed_list(key: str, value: Any) -> list[int]:
    items = _words(value)
    if isinstance(items, list) and all(isinstance(i, str) and i.isdigit() for i in items):
        items = [int(i) for i in items]
    if (
        not isinstance(items, list)
        or not items
        or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in items)
    ):
        raise ConfigError(f"{key}: expected a non-empty list of integers >= 0 (e.g. 0,1,2), got {value!r}")
    if len(set(items)) != len(items):
        raise ConfigError(f"{key}: seeds {items} repeat a value")
    return list(items)


def _variant_list(key: str, value: Any) -> list[str]:
    items = _str_list(key, value)
    try:
        parse_variants(items)
    except VariantError as error:
        raise ConfigError(f"{key}: {error}") from None
    return items


def _runtime_list(key: str, value: Any) -> list[str]:
    items = _str_list(key, value)
    unknown = [item for item in items if item not in EVAL_RUNTIMES]
    if unknown or "onnxruntime" not in items or len(set(items)) != len(items):
        raise ConfigError(
            f"{key}: expected onnxruntime and optionally openvino (each once), e.g. [onnxruntime, openvino]; "
            f"got {value!r}"
        )
    return items


def _key_value_list(key: str, value: Any) -> list[str]:
    # Ultralytics arguments for every training, passed on as `--train-arg KEY=VALUE`.
    if not isinstance(value, list) or not all(isinstance(i, str) and re.fullmatch(r"\w+=\S.*", i) for i in value):
        raise ConfigError(f"{key}: expected a list of 'KEY=VALUE' strings (may be empty), got {value!r}")
    for item in value:
        check_ultralytics_arg(item.split("=", 1)[0], f"{key}: {item!r} (--train-arg)")
    return list(value)


def ultralytics_arg_names() -> frozenset[str]:
    """Ultralytics' own argument list (``ultralytics/cfg/default.yaml``), read without importing Ultralytics."""
    spec = importlib.util.find_spec("ultralytics")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("ultralytics is not installed in this environment; run scripts/setup_venv.sh")
    return frozenset(load_yaml_mapping(Path(next(iter(spec.submodule_search_locations))) / "cfg" / "default.yaml"))


def check_ultralytics_arg(name: str, where: str) -> None:
    """Refuse a name outside Ultralytics' arguments (with a did-you-mean) or one the train CLI sets itself."""
    if name in CLI_OWNED_TRAIN_ARGS:
        raise ConfigError(f"{where}: {name} is set by the train CLI from the run root and its flags; remove it")
    known = ultralytics_arg_names()
    if name not in known:
        guesses = difflib.get_close_matches(name, sorted(known), n=2, cutoff=0.6)
        hint = f"; did you mean {' or '.join(guesses)}?" if guesses else ""
        raise ConfigError(f"{where}: {name} is not an Ultralytics argument (ultralytics/cfg/default.yaml){hint}")


def _positive_number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"{key}: expected a number > 0, got {value!r}")
    return value


def _resource_map(key: str, value: Any) -> dict[str, float]:
    """Ray custom resources, e.g. ``{trainer: 1}``; CPU and GPU have their own keys."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a mapping of resource name to amount, e.g. {{trainer: 1}}; got {value!r}")
    for name, amount in value.items():
        if not isinstance(name, str) or name.upper() in ("CPU", "GPU"):
            raise ConfigError(f"{key}: {name!r} is not a custom resource name (CPUs and GPUs have their own keys)")
        _positive_number(f"{key}.{name}", amount)
    return dict(value)


def _opset(key: str, value: Any) -> int | None:
    value = _int(MIN_OPSET, optional=True)(key, value)
    if value is not None:
        import onnx.defs  # light: no torch

        newest = onnx.defs.onnx_opset_version()
        if value > newest:
            raise ConfigError(
                f"{key}: opset {value} is newer than this onnx ({newest}); use {MIN_OPSET}..{newest} or null"
            )
    return value


# Every key a profile must define, in the order they are saved. No hidden defaults: a profile
# names each setting, so the saved run config documents the whole experiment.
PROFILE_SCHEMA: dict[str, Callable[[str, Any], Any]] = {
    "model": _str(suffix=".yaml"),
    "epochs": _int(1),
    "imgsz": _int(32, multiple_of=32),
    "batch": _int(1),
    "device": _str(pattern=DEVICE_PATTERN),
    "workers": _int(0),
    "seeds": _seed_list,
    "fraction": _fraction,
    "hyp": _str(suffix=".yaml"),
    "variants": _variant_list,
    "ft_epochs": _int(1),
    "ft_hyp": _str(suffix=".yaml"),
    "ptq_bn_recalib_batches": _int(0),
    "ptq_calib_images": _int(0),
    "ptq_bias_correction": _bool,
    "train_overrides": _key_value_list,
    "ft_train_overrides": _key_value_list,
    "checkpoint_policy": _choice(*POLICIES),
    "selection_images": _int(1, optional=True),
    "data_source": _choice("coco", "synthetic"),
    "source_root": _str(optional=True),
    "max_train_images": _int(1, optional=True),
    "max_val_images": _int(1, optional=True),
    "data_seed": _int(0),
    "synthetic_train": _int(1, optional=True),
    "synthetic_val": _int(1, optional=True),
    "synthetic_imgsz": _int(32, optional=True),
    "export_format": _choice("e2e", "raw"),
    "export_opset": _opset,
    "export_dynamic_batch": _bool,
    "eval_batch": _int(1),
    "eval_providers": _str_list,
    "eval_max_images": _int(1, optional=True),
    "eval_fold_weights": _bool,
    "eval_runtimes": _runtime_list,
    "latency_rounds": _int(MIN_LATENCY_ROUNDS),
    "latency_threads": _int(0),
    "executor": _choice("local", "ray"),
    "ray_address": _str(optional=True),
    "stage_threads": _int(1, optional=True),
    "ray_train_cpus": _positive_number,
    "ray_train_resources": _resource_map,
}
# Keys that say where and how stages run, not what they compute: a rerun may change them (e.g. resume a local run
# on a Ray cluster); they are saved with the rest.
EXECUTION_KEYS = ("executor", "ray_address", "ray_train_cpus", "ray_train_resources")
# Keys the resolver adds; they are saved and compared but never come from a profile file.
DERIVED_KEYS = ("profile", "recipe_sha256")
# Profile keys that name recipe files whose content is part of the experiment.
RECIPE_KEYS = ("hyp", "ft_hyp")
# The runner's named flags (the rest go through --set KEY=VALUE).
CLI_OVERRIDE_KEYS = (
    "model",
    "epochs",
    "imgsz",
    "batch",
    "device",
    "workers",
    "seeds",
    "fraction",
    "variants",
    "executor",
    "ray_address",
)


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
        raise ConfigError(f"profile not found: {path} (known profiles: {', '.join(known) or 'none'})")
    data = load_yaml_mapping(path)
    check_keys(data, PROFILE_SCHEMA, str(path))
    missing = [key for key in PROFILE_SCHEMA if key not in data]
    if missing:
        raise ConfigError(f"{path}: missing key(s) {', '.join(missing)}; every profile names every setting")
    return data


def validate_run_config(config: Mapping[str, Any], origin: str) -> dict[str, Any]:
    """Check every key's type, the cross-key rules and the referenced files; ``origin`` names the source."""
    resolved = {}
    for key, check in PROFILE_SCHEMA.items():
        try:
            resolved[key] = check(key, config[key])
        except ConfigError as error:
            raise ConfigError(f"{origin}: {error}") from None
    for check in (
        _check_data_settings,
        _check_selection_settings,
        _check_eval_settings,
        _check_activation_settings,
        _check_files,
    ):
        problem = check(resolved)
        if problem:
            raise ConfigError(f"{origin}: {problem}")
    return resolved


def _check_data_settings(config: Mapping[str, Any]) -> str | None:
    if config["data_source"] == "coco":
        if not config["source_root"]:
            return "data_source coco needs source_root (the folder holding train2017/ val2017/ annotations/)"
        source = resolve_project_path(config["source_root"])
        absent = [name for name in ("train2017", "val2017", "annotations") if not (source / name).is_dir()]
        if absent:
            return (
                f"source_root {source}: missing {', '.join(absent)}; put COCO2017 there (see datasets/README.md) "
                "or pass --set source_root=PATH"
            )
    if config["data_source"] == "synthetic":
        absent = [k for k in ("synthetic_train", "synthetic_val", "synthetic_imgsz") if config[k] is None]
        if absent:
            return f"data_source synthetic needs {', '.join(absent)}"
    return None


def _check_selection_settings(config: Mapping[str, Any]) -> str | None:
    """A selection split exists only for the policy that selects on it, and must leave train images."""
    count, policy = config["selection_images"], config["checkpoint_policy"]
    if policy == BEST_ON_SELECTION and count is None:
        return (
            f"checkpoint_policy {BEST_ON_SELECTION} needs selection_images (how many train images to carve out "
            "for choosing best.pt), e.g. --set selection_images=32"
        )
    if policy != BEST_ON_SELECTION and count is not None:
        return (
            f"selection_images {count}: only checkpoint_policy {BEST_ON_SELECTION} uses a selection split "
            f"(the policy is {policy}); set selection_images to null"
        )
    train = config["synthetic_train"] if config["data_source"] == "synthetic" else config["max_train_images"]
    if count is not None and train is not None and count >= train:
        return f"selection_images {count}: carved out of {train} train images, it must leave some; lower it"
    return None


def _check_eval_settings(config: Mapping[str, Any]) -> str | None:
    # A fixed-batch ONNX graph cannot take batched inputs.
    if config["eval_batch"] > 1 and not config["export_dynamic_batch"]:
        return "eval_batch > 1 needs export_dynamic_batch: true"
    return None


def _check_activation_settings(config: Mapping[str, Any]) -> str | None:
    """Activation calibration needs train images. (W4A8 beside openvino is fine: OpenVINO scores only all-int8
    files, ``variants.eval_runtimes``; ``evaluate.py --runtime openvino`` refuses a W4A8 file.)"""
    variants = parse_variants(list(config["variants"]))
    starting_from_ptq = [v.name for v in variants if v.calibration_variant]
    if config["ptq_bias_correction"] and starting_from_ptq:
        # Bias correction adds biases to bias-less convs; the fine-tune's float-built convs have none to load them.
        return (
            f"ptq_bias_correction: {starting_from_ptq} start from the PTQ calibration and would lose its corrected "
            "biases; set ptq_bias_correction false or drop those variants"
        )
    calibrating = [v.name for v in variants if v.quantizes_activations and (v.post_training or v.needs_fp_onnx)]
    if calibrating and config["ptq_calib_images"] < 1:
        return (
            f"ptq_calib_images: variants {calibrating} calibrate activation ranges on train images; "
            "set ptq_calib_images to the number of train images (>= 1)"
        )
    return None


def _check_files(config: Mapping[str, Any]) -> str | None:
    for key in RECIPE_KEYS:
        if not resolve_project_path(config[key]).is_file():
            return f"{key}: recipe file {config[key]} not found (relative paths are read from the project root)"
    if not model_yaml_exists(config["model"]):
        model = config["model"]
        return f"model: {model!r} is neither a YAML file nor a model config Ultralytics ships (e.g. yolov10m.yaml)"
    return None


def model_yaml_exists(model: str) -> bool:
    """True for an existing YAML path or a model config in Ultralytics' ``cfg/models`` (without importing it).

    Ultralytics also accepts a scale letter on a unified config (``yolov8n.yaml`` -> ``yolov8.yaml``).
    """
    if resolve_project_path(model).is_file():
        return True
    spec = importlib.util.find_spec("ultralytics")
    if spec is None or not spec.submodule_search_locations:
        return False
    models = Path(next(iter(spec.submodule_search_locations))) / "cfg" / "models"
    name = Path(model).name
    unified = re.sub(r"(\d+)([nslmx])(.+)?$", r"\1\3", Path(name).stem) + ".yaml"
    return any(models.rglob(name)) or any(models.rglob(unified))


def resolve_run_config(
    profile: str | os.PathLike, overrides: Mapping[str, Any] | None = None, profiles_dir: Path = PROFILES_DIR
) -> dict[str, Any]:
    """Profile + overrides (``None`` values are ignored) -> validated config with the derived keys first."""
    path = profile_path(profile, profiles_dir)
    data = load_profile(path, profiles_dir)
    given = {key: value for key, value in (overrides or {}).items() if value is not None}
    unknown = sorted(set(given) - set(PROFILE_SCHEMA))
    if unknown:
        raise ConfigError(f"{path}: --set {', '.join(unknown)}: not profile keys; allowed: {', '.join(PROFILE_SCHEMA)}")
    data.update(given)
    origin = f"{path}" + (f" with overrides {sorted(given)}" if given else "")
    resolved = validate_run_config(data, origin)
    recipes = {key: _sha256(resolve_project_path(resolved[key])) for key in RECIPE_KEYS}
    return {"profile": path.stem, "recipe_sha256": recipes, **resolved}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


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
        raise ConfigError(f"{run_root.run_config}: not a mapping; delete or repair the file")
    return data


def config_differences(saved: Mapping[str, Any], resolved: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{key: (saved, resolved)}`` for every key whose value differs (absent keys read as ``None``)."""
    keys = list(resolved) + [key for key in saved if key not in resolved]
    return {key: (saved.get(key), resolved.get(key)) for key in keys if saved.get(key) != resolved.get(key)}


@contextlib.contextmanager
def _run_config_lock(run_root: RunRoot) -> Iterator[None]:
    """Serialize the check-then-write of the run config across processes (flock on a lock file)."""
    run_root.root.mkdir(parents=True, exist_ok=True)
    with open(run_root.root / ".run_config.lock", "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        yield


def save_or_check_run_config(
    run_root: RunRoot, config: Mapping[str, Any], *, nothing_built: Callable[[], bool] = lambda: False
) -> RunConfigCheck:
    """Save ``config`` as the run config, or refuse (:class:`RunConfigMismatch`) if a different one exists.

    Allowed differences: a seed list that only adds seeds (finished seeds are kept, the new ones run; the saved
    list grows), and the execution keys (:data:`EXECUTION_KEYS`: where stages run, not what they compute). Any
    change is accepted (and saved) when ``nothing_built()`` says no stage was built from the saved config yet
    (asked under the lock).
    """
    with _run_config_lock(run_root):
        saved = load_run_config(run_root)
        if saved is None:
            _write_run_config(run_root, config)
            return RunConfigCheck(run_root.run_config, created=True)
        differences = config_differences(saved, config)
        experiment = {key: value for key, value in differences.items() if key not in EXECUTION_KEYS}
        adds_seeds = set(experiment) == {"seeds"} and set(saved["seeds"]) <= set(config["seeds"])
        if experiment and not adds_seeds and not nothing_built():
            raise RunConfigMismatch(run_root.run_config, experiment)
        if differences:
            _write_run_config(run_root, config)
        return RunConfigCheck(run_root.run_config, created=False)


def _write_run_config(run_root: RunRoot, config: Mapping[str, Any]) -> None:
    header = (
        f"# Resolved run config of {run_root.root} (profile {config.get('profile')} + CLI overrides).\n"
        "# A rerun on this run root must resolve to exactly these values (it may add seeds).\n"
    )
    write_text_atomic(run_root.run_config, header + yaml.safe_dump(dict(config), sort_keys=False))
