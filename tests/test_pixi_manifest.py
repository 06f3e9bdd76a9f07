"""pixi.toml as users run it: one ONNX Runtime and one torch build per environment, pins that match the pip venv,
the manifest keys current pixi expects, and the runner using the interpreter of the environment it was started in.

pixi itself cannot run on the development machines, so these tests read the manifests the way pixi combines them
(an environment = the default feature, unless excluded, plus its features) and run the runner as `pixi run` does.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ROOT / "scripts" / "cv-models" / "run_yolov10m_scratch_fp16_vs_w4a16_qat.sh"
ONNXRUNTIMES = {"onnxruntime", "onnxruntime-gpu"}
SELF = "auto-quantize-model"
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"


def _pixi() -> dict:
    return tomllib.loads((ROOT / "pixi.toml").read_text())


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _requirements() -> dict[str, Requirement]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    reqs = [Requirement(line) for line in (line.split("#")[0].strip() for line in lines) if line]
    return {req.name.lower(): req for req in reqs}


def _features_of(env: str) -> list[str]:
    spec = _pixi()["environments"][env]
    features = spec if isinstance(spec, list) else spec.get("features", [])
    default = [] if isinstance(spec, dict) and spec.get("no-default-feature") else ["default"]
    return default + list(features)


def _feature(name: str) -> dict:
    pixi = _pixi()
    return pixi if name == "default" else pixi["feature"][name]


def _pypi_deps(env: str) -> dict[str, str | dict]:
    """The environment's PyPI requirements; a package declared by two of its features is an error here."""
    deps: dict[str, str | dict] = {}
    for feature in _features_of(env):
        for name, spec in _feature(feature).get("pypi-dependencies", {}).items():
            assert name not in deps, f"{env}: {name} declared twice (features combine both specs); declare it once"
            deps[name] = spec
    return deps


def _version(spec: str | dict) -> str:
    return spec if isinstance(spec, str) else spec.get("version", "")


def _installed_names(declared: dict[str, str | dict]) -> set[str]:
    """Names an environment gets: declared packages, the project's core dependencies and its chosen extras."""
    project = _pyproject()["project"]
    names = set(declared)
    if SELF in declared:
        names |= {Requirement(r).name for r in project["dependencies"]}
        for extra in declared[SELF].get("extras", []) if isinstance(declared[SELF], dict) else []:
            names |= {Requirement(r).name for r in project["optional-dependencies"][extra]}
    return names


@pytest.mark.parametrize("env", sorted(_pixi()["environments"]))
def test_each_pixi_environment_gets_exactly_one_onnxruntime(env):
    runtimes = _installed_names(_pypi_deps(env)) & ONNXRUNTIMES
    assert len(runtimes) == 1, f"{env}: {sorted(runtimes)}"


def test_default_is_cpu_and_rtx5090_is_gpu():
    assert _installed_names(_pypi_deps("default")) & ONNXRUNTIMES == {"onnxruntime"}
    assert _installed_names(_pypi_deps("rtx5090")) & ONNXRUNTIMES == {"onnxruntime-gpu"}
    assert _pixi()["dependencies"]["python"].startswith("3.11")


def test_the_pip_venv_gets_exactly_one_onnxruntime_the_cpu_extras_pin():
    project = _pyproject()["project"]
    assert not {Requirement(r).name for r in project["dependencies"]} & ONNXRUNTIMES, "core deps name an ONNX Runtime"
    pinned = {name: req for name, req in _requirements().items() if name in ONNXRUNTIMES}
    assert list(pinned) == ["onnxruntime"]
    assert [str(Requirement(r)) for r in project["optional-dependencies"]["cpu"]] == [str(pinned["onnxruntime"])]


def test_extras_cpu_and_gpu_pin_the_same_onnxruntime_version():
    extras = _pyproject()["project"]["optional-dependencies"]
    cpu, gpu = Requirement(extras["cpu"][0]), Requirement(extras["gpu"][0])
    assert (cpu.name, gpu.name) == ("onnxruntime", "onnxruntime-gpu")
    assert str(cpu.specifier) == str(gpu.specifier) and str(cpu.specifier).startswith("==")
    for env, name in (("default", "onnxruntime"), ("rtx5090", "onnxruntime-gpu")):
        assert _version(_pypi_deps(env)[name]) == str(cpu.specifier), env


@pytest.mark.parametrize("env", sorted(_pixi()["environments"]))
def test_pixi_and_requirements_pin_the_same_stack(env):
    pins = _requirements()
    deps = _pypi_deps(env)
    for name in (
        "torch",
        "torchvision",
        "ultralytics",
        "brevitas",
        "onnx",
        "onnxoptimizer",
        "openvino",
        "nncf",
        "pycocotools",
        "tensorboard",
        "matplotlib",
        "pandas",
        "numpy",
        "pyyaml",
        "cloudpickle",
        "ray",
    ):
        assert _version(deps[name]) == str(pins[name].specifier), f"{env}: {name}"


def test_the_ray_extra_pins_the_requirements_version():
    extra = Requirement(_pyproject()["project"]["optional-dependencies"]["ray"][0])
    assert extra.name == "ray" and str(extra.specifier) == str(_requirements()["ray"].specifier)


def test_default_environment_takes_cpu_torch_wheels_and_rtx5090_the_pypi_cuda_build():
    cpu = _pypi_deps("default")
    for name in ("torch", "torchvision"):
        assert cpu[name]["index"] == CPU_TORCH_INDEX, name
    gpu = _pypi_deps("rtx5090")
    # PyPI's linux torch 2.14.1 is the +cu130 build with sm_120 kernels; no other index may replace it.
    assert isinstance(gpu["torch"], str) and isinstance(gpu["torchvision"], str)


def test_requires_pixi_covers_rich_platforms():
    spec = _pixi()["workspace"]["requires-pixi"]
    match = re.fullmatch(r">=\s*(\d+\.\d+(?:\.\d+)?)", spec)
    assert match, spec
    # rich platforms: 0.71; a bare subdir and a named variant of it in different features: 0.72.1.
    assert Version(match.group(1)) >= Version("0.72.1")


def test_cuda_is_declared_on_a_named_platform_used_only_by_rtx5090():
    pixi = _pixi()
    assert "system-requirements" not in pixi
    assert all("system-requirements" not in feature for feature in pixi["feature"].values())
    platforms = {p if isinstance(p, str) else p.get("name", p["platform"]): p for p in pixi["workspace"]["platforms"]}
    for name, feature in pixi["feature"].items():
        for platform in feature.get("platforms", []):
            assert platform in platforms, f"feature {name}: platform {platform!r} is not a workspace platform"
    (gpu_platform,) = pixi["feature"]["rtx5090"]["platforms"]
    assert platforms[gpu_platform]["platform"] == "linux-64" and platforms[gpu_platform]["cuda"] == "13"
    assert pixi["feature"]["cpu"]["platforms"] == ["linux-64"] and isinstance(platforms["linux-64"], str)


def test_solve_groups_tie_at_least_two_environments_or_are_absent():
    groups: dict[str, int] = {}
    for spec in _pixi()["environments"].values():
        if isinstance(spec, dict) and "solve-group" in spec:
            groups[spec["solve-group"]] = groups.get(spec["solve-group"], 0) + 1
    assert all(count >= 2 for count in groups.values()), groups


@pytest.mark.parametrize("feature", ["cpu", "rtx5090"])
def test_check_env_task_of_each_environment(feature):
    words = shlex.split(_pixi()["feature"][feature]["tasks"]["check-env"])
    assert words[:2] == ["python", "scripts/check_env.py"] and (ROOT / words[1]).is_file()
    device = words[words.index("--device") + 1]
    assert device == ("cpu" if feature == "cpu" else "0")
    if feature == "rtx5090":
        assert words[words.index("--providers") + 1 :] == ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_tensorboard_task_runs_the_environments_tensorboard_and_the_readme_compares_two_run_roots():
    assert shlex.split(_pixi()["tasks"]["tensorboard"]) == ["tensorboard"]
    assert "tensorboard" in _pypi_deps("default") and "tensorboard" in _pypi_deps("rtx5090")
    readme = (ROOT / "README.md").read_text()
    example = re.search(r"pixi run tensorboard --logdir_spec (\S+)", readme)
    runs = dict(entry.split(":", 1) for entry in example.group(1).split(","))
    assert len(runs) == 2 and all(path.endswith("/seed-0") for path in runs.values())  # seed folders: no set-aside/


# --- the runner under pixi --------------------------------------------------------------------------------


def _repo_with_runner(tmp_path: Path) -> tuple[Path, Path]:
    """A checkout holding the runner and a `.venv/bin/python` that records being run (a box where `make test` ran)."""
    repo, marks = tmp_path / "repo", tmp_path / "marks"
    (repo / "scripts" / "cv-models").mkdir(parents=True)
    marks.mkdir()
    shutil.copy2(RUNNER, repo / "scripts" / "cv-models" / RUNNER.name)
    _recording_python(repo / ".venv" / "bin" / "python", marks / "venv-python.args")
    return repo, marks


def _recording_python(path: Path, record: Path) -> None:
    """An interpreter stand-in: writes its arguments and fails, so nothing real runs after it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/usr/bin/env bash\nprintf '%s\\n' \"$@\" > {shlex.quote(str(record))}\nexit 7\n")
    path.chmod(0o755)


def _run_runner(repo: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PIXI_") and k != "INIT_CWD"}
    return subprocess.run(
        ["bash", str(repo / "scripts" / "cv-models" / RUNNER.name), *args],
        cwd=repo,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("pixi_var", ["PIXI_ENVIRONMENT_NAME", "PIXI_PROJECT_ROOT"])
def test_runner_under_pixi_uses_the_pixi_python_not_the_venv(tmp_path, pixi_var):
    repo, marks = _repo_with_runner(tmp_path)
    _recording_python(tmp_path / "pixi-env" / "bin" / "python", marks / "pixi-python.args")
    env = {
        pixi_var: "rtx5090" if pixi_var == "PIXI_ENVIRONMENT_NAME" else str(repo),
        "PATH": f"{tmp_path / 'pixi-env' / 'bin'}:{os.environ['PATH']}",
    }
    result = _run_runner(repo, env, "--profile", "demo")
    assert result.returncode != 0  # the stand-in failed the config step, as intended
    assert (marks / "pixi-python.args").is_file(), result.stderr
    assert not (marks / "venv-python.args").exists()


def test_runner_outside_pixi_uses_the_repo_venv(tmp_path):
    repo, marks = _repo_with_runner(tmp_path)
    _recording_python(tmp_path / "path-bin" / "python", marks / "path-python.args")
    env = {"PATH": f"{tmp_path / 'path-bin'}:{os.environ['PATH']}"}
    _run_runner(repo, env, "--profile", "demo")
    assert (marks / "venv-python.args").is_file()
    assert not (marks / "path-python.args").exists()


def test_runner_under_pixi_resolves_relative_paths_against_init_cwd(tmp_path):
    repo, marks = _repo_with_runner(tmp_path)
    caller = tmp_path / "where-the-user-typed"
    caller.mkdir()
    _recording_python(tmp_path / "pixi-env" / "bin" / "python", marks / "pixi-python.args")
    env = {
        "PIXI_PROJECT_ROOT": str(repo),
        "PIXI_ENVIRONMENT_NAME": "default",
        "INIT_CWD": str(caller),
        "PATH": f"{tmp_path / 'pixi-env' / 'bin'}:{os.environ['PATH']}",
    }
    _run_runner(repo, env, "--profile", "my/profile.yaml", "--run-root", "runs/r1")
    args = (marks / "pixi-python.args").read_text().splitlines()
    assert f"{caller}/runs/r1" in args
    assert f"{caller}/my/profile.yaml" in args
