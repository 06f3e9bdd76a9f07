"""What a researcher needs to reproduce a run: command, git commit, package versions, device."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from auto_quantize_model.utils.ultralytics_env import project_root

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


def git_state(repo: Path | None = None) -> dict[str, object]:
    """Commit hash and whether the work tree had uncommitted changes (``None`` outside git)."""
    repo = repo or project_root()

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=10, check=True)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip()

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


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
