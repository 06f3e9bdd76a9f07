"""Part ``env``: what this machine is and whether torch can run on the requested GPU.

GPU name, compute capability, torch / CUDA / cuDNN versions, whether torch's arch list covers the device, and where
torch, Ultralytics and Brevitas were imported from (the GPU test machine uses its own torch; the carried wheels
only add what it lacks).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from auto_quantize_model.runs.env_check import kernels_for
from gpu_proof_parts.budget import Part
from gpu_proof_parts.settings import ProofSettings

VERSIONS = ("torch", "torchvision", "ultralytics", "brevitas", "onnx", "onnxruntime", "onnxruntime-gpu", "numpy")


def run(settings: ProofSettings, part: Part) -> None:
    import torch

    data = part.data
    data["python"] = f"{platform.python_version()} ({sys.executable})"
    data["versions"] = _versions()
    data["imported_from"] = _import_locations()
    data["torch_cuda_build"] = torch.version.cuda
    data["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    data["cpu_count"] = os.cpu_count()
    data["load_average"] = _load_average()
    data["pythonpath"] = os.environ.get("PYTHONPATH", "")
    print(f"[env] torch {torch.__version__} (CUDA build {torch.version.cuda}, cuDNN {data['cudnn']})", flush=True)
    if not settings.cuda:
        part.check("device", True, f"CPU requested; torch {torch.__version__}")
        return
    if not torch.cuda.is_available():
        part.check("cuda", False, f"torch {torch.__version__} (CUDA build {torch.version.cuda}) sees no CUDA GPU")
        return
    index = int(settings.device)
    if index >= torch.cuda.device_count():
        part.check("cuda", False, f"cuda:{index} asked for, {torch.cuda.device_count()} GPU(s) visible")
        return
    props = torch.cuda.get_device_properties(index)
    capability = (props.major, props.minor)
    arch_list = torch.cuda.get_arch_list()
    data["gpu"] = {
        "name": props.name,
        "compute_capability": f"{props.major}.{props.minor}",
        "memory_gib": round(props.total_memory / 2**30, 1),
        "multiprocessors": props.multi_processor_count,
        "driver": _driver_version(),
        "torch_arch_list": arch_list,
        "arch_list_covers_device": kernels_for(capability, arch_list),
        "bf16_supported": torch.cuda.is_bf16_supported(),
    }
    detail = f"{props.name} sm_{props.major}{props.minor}; torch {torch.__version__} has {' '.join(arch_list)}"
    print(f"[env] {detail}; covered: {data['gpu']['arch_list_covers_device']}", flush=True)
    part.check("torch kernels for the device", data["gpu"]["arch_list_covers_device"], detail)


def _versions() -> dict[str, str]:
    found = {}
    for name in VERSIONS:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def _import_locations() -> dict[str, str]:
    """Folder each key package was imported from: the machine's own torch vs the carried wheels."""
    import brevitas
    import torch
    import ultralytics

    return {module.__name__: str(Path(module.__file__).parent) for module in (torch, ultralytics, brevitas)}


def _driver_version() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
    try:
        done = subprocess.run(query, capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip().splitlines()[0] if done.stdout.strip() else None


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None
