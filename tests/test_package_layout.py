"""The package's shape: stage modules at the top, helpers in subpackages, imports pointing down.

The rule and the map are in README.md, "Where things are"; these tests keep the tree, the imports and the map
in agreement.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "auto_quantize_model"
PREFIX = "auto_quantize_model"

# Stage modules: one per runner stage or CLI a user runs.
STAGES = {
    "train",
    "ptq",
    "onnx_ptq",
    "export",
    "evaluate",
    "latency",
    "report",
    "publish",
    "compare",
    "sensitivity",
    "pipeline",
}
# Subpackages from the bottom up: each may import only itself and those before it.
LAYERS = ["utils", "quant", "data", "runs", "ultralytics_ext", "onnx_io", "evaluation", "reports", "cv_models"]
MAX_LINES = 600
# Modules allowed over MAX_LINES, with the reason (README says the same).
LONG_MODULES = {"quant/yolov10.py": "one Brevitas integration: layers, their pickling and the model transformation"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every package module ``path`` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == PREFIX:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == PREFIX)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PKG.rglob("*.py")}
    return {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}


def _place(module: str) -> str:
    """``stage`` for a top-level stage module, the subpackage name for a helper, ``package`` for the root."""
    parts = module.split(".")
    if len(parts) == 1:
        return "package"
    return "stage" if len(parts) == 2 and parts[1] in STAGES else parts[1]


def test_top_level_holds_only_stage_modules():
    top = {p.stem for p in PKG.glob("*.py")} - {"__init__"}
    assert top == STAGES, f"top-level modules that are not stages: {sorted(top - STAGES)}"


def test_every_subpackage_has_a_layer():
    packages = {p.parent.name for p in PKG.glob("*/__init__.py")}
    assert packages == set(LAYERS), f"subpackages {sorted(packages ^ set(LAYERS))} missing from LAYERS or the tree"


def test_no_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path[path.index(nxt) :], nxt]))
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_helpers_never_import_stages_and_layers_point_down():
    wrong = []
    for module, targets in _graph().items():
        where = _place(module)
        if where in ("stage", "package"):
            continue
        for target in targets:
            to = _place(target)
            if to == "stage":
                wrong.append(f"{module} imports the stage {target}")
            elif to != "package" and LAYERS.index(to) > LAYERS.index(where):
                wrong.append(f"{module} ({where}) imports {target} ({to}), which sits above it")
    assert not wrong, "\n".join(wrong)


def test_no_module_is_over_the_size_limit_without_a_reason():
    long = {
        str(p.relative_to(PKG)): n
        for p in PKG.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES and str(p.relative_to(PKG)) not in LONG_MODULES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"


# The path owners: the only modules that spell run-root file names; every other module imports their constants.
NAME_OWNERS = {"runs/run_root.py", "runs/summary_schema.py", "runs/metrics_keys.py"}


PATH_TYPES = {"Path", "RunRoot", "SeedRoot", "TrainRunPaths"}


def _called_name(node: ast.AST) -> str | None:
    if not isinstance(node, ast.Call):
        return None
    return getattr(node.func, "id", None) or getattr(node.func, "attr", None)


def _run_root_file_names() -> set[str]:
    from auto_quantize_model.runs import metrics_keys, run_root, summary_schema

    owners = (run_root, summary_schema, metrics_keys)
    return {v for m in owners for k, v in vars(m).items() if k.isupper() and isinstance(v, str) and "." in v}


def test_run_root_file_names_are_spelled_only_by_their_owners():
    """No module outside the path owners writes "summary.md" or builds a dummy ``RunRoot(Path("/"))`` for a name."""
    names = _run_root_file_names()
    wrong = []
    for path in PKG.rglob("*.py"):
        relative = str(path.relative_to(PKG))
        for node in ast.walk(ast.parse(path.read_text())):
            if relative not in NAME_OWNERS and isinstance(node, ast.Constant) and node.value in names:
                wrong.append(f"{relative}:{node.lineno} spells {node.value!r}")
            if _called_name(node) in PATH_TYPES and any(
                isinstance(a, ast.Constant) and a.value == "/" for a in node.args
            ):
                wrong.append(f"{relative}:{node.lineno} builds a path object on '/' to get a file name")
    assert not wrong, "\n".join(wrong)


def _readme_map() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Where things are", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```\nsrc/auto_quantize_model/\n(.*?)```", section, re.S).group(1)
    return [line.split()[0] for line in block.splitlines() if line.startswith("  ") and line.strip()]


def test_readme_map_matches_the_tree():
    """One line per subpackage and per stage module, nothing that is not there."""
    listed = _readme_map()
    folders = {f"{p.parent.name}/" for p in PKG.glob("*/__init__.py")}
    stages = {f"{name}.py" for name in STAGES}
    assert set(listed) == folders | stages, f"README map vs tree: {sorted(set(listed) ^ (folders | stages))}"
    assert len(listed) == len(set(listed)), "a README map line is repeated"


def test_tests_mirror_the_subpackages():
    """tests/<subpackage>/ exists for each helper subpackage with its own tests (no test folder for a shim)."""
    test_dirs = {p.name for p in (ROOT / "tests").iterdir() if p.is_dir() and any(p.glob("test_*.py"))}
    assert test_dirs <= set(LAYERS), f"test folders with no subpackage: {sorted(test_dirs - set(LAYERS))}"
