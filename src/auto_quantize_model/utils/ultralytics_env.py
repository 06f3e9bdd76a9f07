"""Run Ultralytics offline with a project-local configuration directory.

Ultralytics probes the network (settings sync, hub, AMP-check weights, fonts) and, when a
checkpoint names a module it cannot import, tries to pip-install a package of that name.
A research run must not depend on any of that, so the environment is fixed here, before
Ultralytics is imported anywhere.
"""

from __future__ import annotations

import os
from pathlib import Path

# Integrations that would phone home or write outside the run root.
_DISABLED_SETTINGS = ("sync", "hub", "clearml", "comet", "dvc", "mlflow", "raytune", "wandb", "tensorboard")


def project_root() -> Path:
    """Return the repository root (the folder holding ``pyproject.toml``), else the working directory."""
    candidate = Path(__file__).resolve().parents[3]  # <root>/src/auto_quantize_model/utils/ultralytics_env.py
    return candidate if (candidate / "pyproject.toml").is_file() else Path.cwd()


def configure_offline_environment() -> None:
    """Set ``YOLO_OFFLINE`` and a project-local ``YOLO_CONFIG_DIR`` unless the caller set them.

    Only environment variables are touched here, so importing the package stays cheap; the
    settings file is pinned by :func:`pin_ultralytics_settings` once Ultralytics loads.
    """
    os.environ.setdefault("YOLO_OFFLINE", "1")
    # A checkpoint naming a module Ultralytics cannot import makes it try `pip install <module>`.
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    config_dir = Path(os.environ.setdefault("YOLO_CONFIG_DIR", str(project_root() / "tmp" / "ultralytics-config")))
    config_dir.mkdir(parents=True, exist_ok=True)
    # Ultralytics plots call matplotlib; keep its cache local and headless too.
    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ.setdefault("MPLCONFIGDIR", str(config_dir / "matplotlib"))


def pin_ultralytics_settings() -> None:
    """Turn off Ultralytics' sync, hub and logger integrations and keep its folders inside the project.

    Our own TensorBoard callback writes into the run root, so Ultralytics' is off as well.
    """
    from ultralytics.utils import SETTINGS

    root = project_root()
    wanted = {key: False for key in _DISABLED_SETTINGS if key in SETTINGS}
    wanted.update(
        datasets_dir=str(root / "datasets"),
        weights_dir=str(root / "tmp" / "ultralytics-weights"),
        runs_dir=str(root / "tmp" / "ultralytics-runs"),
    )
    changed = {key: value for key, value in wanted.items() if SETTINGS.get(key) != value}
    if changed:
        SETTINGS.update(changed)
