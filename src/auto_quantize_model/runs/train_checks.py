"""Checks of a training request that run before anything is written: one-line errors, no tracebacks.

Ultralytics accepts ``epochs=-1`` and fails deep in its loop, rounds ``imgsz=150`` up to 160 while
``args.yaml`` keeps 150, resolves the typo ``yolov10x9.yaml`` to ``yolov109.yaml`` before saying it
is missing, and creates the stage folder before it loads ``--init-from``. Each check here raises
:class:`~auto_quantize_model.runs.config.ConfigError` naming the flag, the value and the fix instead.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

from auto_quantize_model.runs.config import ConfigError

# YOLOv10 (and every P3-P5 Ultralytics detector) downsamples by at most 32; an input size must be a multiple.
MAX_STRIDE = 32


def check_numbers(*, epochs: int, imgsz: int, batch: int, workers: int, fraction: float, seed: int) -> None:
    """Range checks of the numeric training flags."""
    if epochs < 1:
        raise ConfigError(f"--epochs {epochs}: must be at least 1")
    if batch < 1 and batch != -1:
        raise ConfigError(f"--batch {batch}: must be at least 1 (or -1 for Ultralytics AutoBatch on a GPU)")
    if workers < 0:
        raise ConfigError(f"--workers {workers}: must be 0 or more")
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f"--fraction {fraction}: must be in (0, 1]")
    if seed < 0:
        raise ConfigError(f"--seed {seed}: must be 0 or more")
    check_imgsz(imgsz)


def check_imgsz(imgsz: int) -> None:
    """Refuse a size Ultralytics would silently round, and name the nearest sizes it would accept."""
    if imgsz < MAX_STRIDE:
        raise ConfigError(f"--imgsz {imgsz}: must be at least {MAX_STRIDE} (the model's max stride)")
    if imgsz % MAX_STRIDE:
        lower = imgsz // MAX_STRIDE * MAX_STRIDE
        raise ConfigError(
            f"--imgsz {imgsz}: not a multiple of the max stride {MAX_STRIDE} (Ultralytics would silently use "
            f"{lower + MAX_STRIDE}); use {lower} or {lower + MAX_STRIDE}"
        )


def _ultralytics_model_yamls() -> list[Path]:
    import ultralytics

    return sorted((Path(ultralytics.__file__).parent / "cfg" / "models").rglob("*.yaml"))


def known_model_names() -> list[str]:
    """Every model YAML name Ultralytics resolves: the files, and ``yolov10m.yaml``-style scaled names."""
    import yaml

    names = set()
    for path in _ultralytics_model_yamls():
        names.add(path.name)
        scales = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("scales") or {}
        digits = re.search(r"\d+", path.stem)
        # Ultralytics maps yolov10m.yaml back to yolov10.yaml + scale m; yolov10n.yaml already carries one.
        if digits and _unscaled(path.stem) == path.stem:
            head, tail = path.stem[: digits.end()], path.stem[digits.end() :]
            names.update(f"{head}{scale}{tail}.yaml" for scale in scales if scale in "nslmx")
    return sorted(names)


def _unscaled(name: str) -> str:
    """``yolov10m.yaml`` -> ``yolov10.yaml``, as ``nn/tasks.py yaml_model_load`` does."""
    return re.sub(r"(\d+)([nslmx])(.+)?$", r"\1\3", name)


def _ultralytics_resolves(name: str) -> bool:
    """Mirror of ``yaml_model_load``'s lookup: the name itself, or the name without its scale letter."""
    from ultralytics.utils.checks import check_yaml

    return any(_quiet_check_yaml(check_yaml, candidate) for candidate in (name, _unscaled(name)))


def _quiet_check_yaml(check_yaml: Any, name: str) -> bool:
    try:
        return bool(check_yaml(name, hard=False))
    except Exception:  # noqa: BLE001  (check_yaml raises for odd names instead of returning '')
        return False


def check_model(model: str) -> None:
    """``--model`` must be a YAML file or a model YAML Ultralytics knows (training starts from random weights)."""
    path = Path(model)
    if path.is_file() and path.suffix in (".yaml", ".yml"):
        return
    if path.suffix not in (".yaml", ".yml"):
        raise ConfigError(f"--model {model}: expected a model YAML such as yolov10m.yaml (training is from scratch)")
    if path.parent == Path(".") and _ultralytics_resolves(path.name):
        return
    known = known_model_names()
    family = re.match(r"[A-Za-z]+(\d+)?", path.stem)
    relatives = [name for name in known if family and name.startswith(family.group(0))] or known
    guesses = difflib.get_close_matches(path.name, known, n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(guesses)}? " if guesses else ""
    raise ConfigError(
        f"--model {model}: no such file and no Ultralytics model YAML of that name; {hint}"
        f"known: {', '.join(relatives[:20])}"
    )


def check_init_from(init_from: Path | None, float_stage: bool = False) -> None:
    """``--init-from`` must be a loadable Ultralytics checkpoint, a float one for ``fp16-ft``; checked early."""
    from auto_quantize_model.runs.checkpoints import inspect_checkpoint

    if init_from is None:
        return
    info = inspect_checkpoint(Path(init_from))
    if not info.intact:
        raise ConfigError(
            f"--init-from {init_from}: not a loadable checkpoint ({info.error}); "
            "pass the weights/last.pt or best.pt of a finished FP training"
        )
    if float_stage and info.quant_scheme is not None:
        raise ConfigError(
            f"--init-from {init_from}: is quantized (scheme {info.quant_scheme}); fp16-ft fine-tunes a float "
            "model: pass the fp16 stage's weights/last.pt or best.pt"
        )
