"""Provenance: what a researcher needs to reproduce a run, and what each stage of a run root was built from.

The first half records command, git commit, package versions and device. The second half compares a
stage's ``run.json`` record (``inputs_sha256``: its needs' output digests and input files' sha256 when
it started; ``outputs_sha256``: what it left) with what the run root holds now. The runner redoes a
stage whose inputs or outputs changed; the summary refuses to call a root complete while one did.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from auto_quantize_model.data.fingerprint import fingerprint_problem
from auto_quantize_model.utils.io import sha256_file, tree_digest

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
    "openvino",
    "nncf",
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


# --------------------------------------------------------------------------------------------
# What a stage was built from: its inputs' sha256 against its needs' current outputs
# --------------------------------------------------------------------------------------------
def output_hashes(outputs: Sequence[Path]) -> dict[str, str]:
    """``{path: sha256}`` of the outputs that exist: a file's content, a folder's names, sizes and mtimes."""
    hashes = {}
    for path in map(Path, outputs):
        if path.is_file():
            hashes[str(path)] = sha256_file(path)
        elif path.is_dir():
            hashes[str(path)] = tree_digest(path)
    return hashes


def outputs_digest(record: Mapping[str, Any]) -> str | None:
    """One sha256 for a stage's recorded outputs: the file's own sha256 when it has one output."""
    hashes = record.get("outputs_sha256") or {}
    values = [hashes[path] for path in sorted(hashes)]
    if len(values) <= 1:
        return values[0] if values else None
    return hashlib.sha256("\n".join(values).encode()).hexdigest()


def stage_inputs(stage: Any, records: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """``{need: digest of its recorded outputs, file label: sha256}``: what ``stage`` (a StageSpec) is built from now.

    Needs without file outputs (the GPU preflight) are left out; a missing input file reads ``"missing"``.
    """
    inputs = {}
    for need in stage.needs:
        digest = outputs_digest(records.get(need) or {})
        if digest is not None:
            inputs[need] = digest
    for label, path in stage.input_files:
        inputs[label] = sha256_file(path) if Path(path).is_file() else "missing"
    return inputs


def input_change(stage: Any, record: Mapping[str, Any], records: Mapping[str, Mapping[str, Any]]) -> str | None:
    """Why ``stage``'s recorded inputs differ from what its needs hold now, or ``None``.

    A record written before inputs were recorded (no ``inputs_sha256``) is taken as it is.
    """
    if "inputs_sha256" not in record:
        return None
    recorded, current = record["inputs_sha256"] or {}, stage_inputs(stage, records)
    changed = sorted(key for key in set(recorded) | set(current) if recorded.get(key) != current.get(key))
    if not changed:
        return None
    return f"its input {', '.join(changed[:3])} changed since it ran"


def output_problem(stage: Any, record: Mapping[str, Any]) -> str | None:
    """Why ``stage``'s outputs (a StageSpec's) are not what its record says it left: missing or changed."""
    missing = [path for path in stage.outputs if not Path(path).exists()]
    return f"output missing: {missing[0]}" if missing else changed_output(stage, record)


def changed_output(stage: Any, record: Mapping[str, Any]) -> str | None:
    """An output that exists with other bytes than recorded, or a dataset that changed since its fingerprint."""
    recorded = record.get("outputs_sha256") or {}
    for path in stage.outputs:
        want = recorded.get(str(path))
        if want and Path(path).exists() and output_hashes([path]).get(str(path)) != want:
            return f"output changed since the stage finished: {path}"
    if stage.fingerprint is not None and Path(stage.fingerprint).is_file():
        return fingerprint_problem(Path(stage.fingerprint).parent)
    return None


def stale_stages(
    stages: Sequence[Any], records: Mapping[str, Mapping[str, Any]], skip: Sequence[str] = ()
) -> list[str]:
    """One line per done stage (StageSpec) whose outputs changed or whose inputs differ from its needs' now.

    Missing outputs are not listed here: the summary names each missing artifact itself.
    """
    items = []
    for stage in stages:
        record = records.get(stage.name) or {}
        if stage.name in skip or record.get("status") != "done":
            continue
        reason = changed_output(stage, record) or input_change(stage, record, records)
        if reason:
            items.append(f"stage {stage.name} is stale: {reason}; rerun the runner to redo it")
    return items
