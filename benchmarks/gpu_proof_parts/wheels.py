"""The wheels the GPU test machine lacks (for ``scripts/gpu_wheels.sh``) and what the machine has (for the test).

``python benchmarks/gpu_proof_parts/wheels.py pins`` prints one ``name==version`` per distribution in
:data:`MISSING_ON_MACHINE`: the pin of ``requirements.txt`` (the one source of versions), else, for a dependency of
a pinned package that requirements.txt leaves to pip, the version pip resolved into this ``.venv`` (the stack the
tests ran). :func:`machine_distributions` reads ``benchmarks/gpu-test-machine.md`` and adds what the listed packages
require, :func:`project_distributions` is what installing this package pulls in: a test checks that every
distribution of the latter that the proof imports is on the machine or collected.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MACHINE_NOTE = ROOT / "benchmarks" / "gpu-test-machine.md"
REQUIREMENTS = ROOT / "requirements.txt"
THIS_PACKAGE = "auto-quantize-model"  # built from the tree by gpu_wheels.sh, not downloaded
MACHINE_PYTHON = "3.12"
# Distributions the proof and the stages it runs need that the machine does not list.
MISSING_ON_MACHINE = (
    "ultralytics",
    "brevitas",
    "onnxoptimizer",  # Brevitas' ONNX export imports it
    "pycocotools",
    "faster-coco-eval",  # the evaluator's default COCOeval backend
    "cloudpickle",  # the package's own dependency (Ultralytics' DDP launcher)
    # Ultralytics' requirements the machine lacks. polars is imported by Trainer.save_model (read_results_csv) and
    # the label plots: training fails without it; it is most of the folder (polars-runtime-32, ~51 MiB).
    # nvidia-ml-py (pynvml) is imported, guarded, on CUDA only. Not collected: ultralytics-platform, which
    # Ultralytics loads lazily for its Platform integration only (its httpx stack is missing there too).
    "polars",
    "polars-runtime-32",
    "ultralytics-thop",
    "nvidia-ml-py",
    # Brevitas' requirements the machine lacks.
    "dependencies",
    "unfoldNd",
    # Imported by Brevitas' graph calibration (activation calibration) when present; the package's nncf pin
    # requires both, so installing the package pulls them in. Pure Python (pydot's pyparsing is on the machine).
    "tabulate",
    "pydot",
)
# A machine package that provides the same modules as the one this venv has.
SAME_MODULES = {"opencv-python-headless": "opencv-python"}


def canonical(name: str) -> str:
    """PEP 503 name: lower case, runs of ``-_.`` as one ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_pins(path: Path = REQUIREMENTS) -> dict[str, str]:
    """``{canonical name: version}`` of every ``name==version`` line."""
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.fullmatch(r"([A-Za-z0-9][\w.-]*)==([\w.+!-]+)", line.split("#")[0].strip())
        if match:
            pins[canonical(match.group(1))] = match.group(2)
    return pins


def wheel_pins(names: tuple[str, ...] = MISSING_ON_MACHINE) -> list[str]:
    """``name==version`` for each distribution to collect; an error names one that has no version source."""
    pins = requirement_pins()
    chosen = []
    for name in names:
        version = pins.get(canonical(name)) or _installed_version(name)
        if version is None:
            raise SystemExit(f"{name}: not pinned in {REQUIREMENTS.name} and not installed in this venv; run make venv")
        chosen.append(f"{name}=={version}")
    return chosen


def _installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def listed_machine_packages(note: Path = MACHINE_NOTE) -> set[str]:
    """Canonical names of the packages the note lists for the machine's Python (the "with a, b, c." bullet)."""
    match = re.search(r"Python 3\.12[^\n]*? with (.*?)\.\n", note.read_text(encoding="utf-8"), re.S)
    if match is None:
        raise ValueError(f"{note}: no 'Python 3.12 ... with <packages>.' bullet to read the machine's packages from")
    items = (item.strip() for item in " ".join(match.group(1).split()).split(","))
    names = {canonical(item.split()[0]) for item in items if item}
    return names | {SAME_MODULES[name] for name in names if name in SAME_MODULES}


def machine_distributions(note: Path = MACHINE_NOTE) -> set[str]:
    """The packages the note lists and everything they require: what pip put on the machine with them."""
    return requirement_closure(listed_machine_packages(note))


def project_distributions(pyproject: Path = ROOT / "pyproject.toml") -> set[str]:
    """This package's dependencies (with the ``cpu`` extra's onnxruntime, the machine's kind) and their requirements.

    A module the proof imports from outside this set is an optional import of a package that guards it (torch
    imports pydot or tabulate when they happen to be installed): pip never installs it, the machine need not have it.
    """
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    names = [Requirement(text).name for text in [*project["dependencies"], *project["optional-dependencies"]["cpu"]]]
    return requirement_closure(names)


def requirement_closure(names) -> set[str]:
    """``names`` and everything they require, per this venv's metadata, markers read for the machine's Python 3.12."""
    from packaging.requirements import Requirement

    environment = {"python_version": MACHINE_PYTHON, "python_full_version": f"{MACHINE_PYTHON}.3", "extra": ""}
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = canonical(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue  # not in this venv: its requirements are unknown here (the machine has them)
        for text in requires:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate(environment):
                todo.append(requirement.name)
    return seen


def main(argv: list[str]) -> int:
    if argv != ["pins"]:
        print("usage: wheels.py pins   (one name==version per line, for scripts/gpu_wheels.sh)", file=sys.stderr)
        return 2
    print("\n".join(wheel_pins()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
