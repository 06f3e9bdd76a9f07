"""Which code is running: the package version and the git commit of the checkout it was loaded from.

Both are read without failing: outside a git checkout (an sdist, a copied tree, no ``git`` binary) the
commit is ``None``; a package that was never installed reports its version as unknown.
"""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

from auto_quantize_model.utils.ultralytics_env import project_root

DISTRIBUTION = "auto-quantize-model"


def package_version() -> str:
    """The installed distribution's version (pyproject.toml's, via the editable install)."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown (not installed; run scripts/setup_venv.sh or pip install -e .)"


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


def version_text(program: str) -> str:
    """One line for ``--version``: the program, the package version and the git commit it runs from."""
    state = git_state()
    if state["commit"] is None:
        commit = "git commit unknown (not a git checkout)"
    else:
        commit = f"git {state['commit']}" + (" with uncommitted changes" if state["dirty"] else "")
    return f"{program} ({DISTRIBUTION} {package_version()}, {commit})"
