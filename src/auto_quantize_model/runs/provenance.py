"""What a researcher needs to reproduce a run: command, git commit, package versions, device."""

from __future__ import annotations

import os
import platform
import sys
from datetime import UTC, datetime
from importlib import metadata

# git_state lives in utils (the --version of every CLI reads it too); run records take it from here.
from auto_quantize_model.utils.version import git_state as git_state

TRACKED_PACKAGES = (
    "torch",
    "torchvision",
    "ultralytics",
    "brevitas",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxoptimizer",
    "pycocotools",
    "numpy",
    "opencv-python",
)


def utc_now() -> str:
    """ISO-8601 UTC timestamp, second resolution."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that decide numerics, plus Python's."""
    versions = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def device_info() -> dict[str, object]:
    """CPU count and the CUDA devices torch sees."""
    import torch

    info: dict[str, object] = {"cpu_count": os.cpu_count(), "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info["cuda_version"] = torch.version.cuda
    return info


def command_line() -> list[str]:
    """The command that started this process."""
    return [sys.executable, *sys.argv]
