"""scripts/setup_venv.sh checks the interpreter: Python 3.11, else a refusal naming PYTHON=, before installing.

The script runs in a temporary copy of the repository's setup files. Its interpreters are test fixtures of the
shell script: tiny executables that answer the version query and log every other call, so a test sees whether
the script would have created a venv or installed anything.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _checkout(tmp_path: Path) -> Path:
    """A copy of what setup_venv.sh reads: the script, requirements.txt and pyproject.toml."""
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    shutil.copy2(ROOT / "scripts" / "setup_venv.sh", root / "scripts" / "setup_venv.sh")
    for name in ("requirements.txt", "pyproject.toml"):
        shutil.copy2(ROOT / name, root / name)
    return root


def _interpreter(path: Path, version: str) -> Path:
    """An executable that reports Python ``version`` and records any other use in calls.log beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "#!/bin/sh\n"
        'case "$*" in\n'
        f"  *version_info*) echo {version} ;;\n"
        f'  *) echo "$*" >> "$(dirname "$0")/calls.log" ;;\n'
        "esac\n"
    )
    path.chmod(0o755)
    return path


def _setup(root: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(root / "scripts" / "setup_venv.sh")],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **env},
        timeout=60,
        check=False,
    )


def test_a_venv_of_another_python_is_refused_not_reused(tmp_path: Path) -> None:
    root = _checkout(tmp_path)
    venv_python = _interpreter(root / ".venv" / "bin" / "python", "3.12")
    done = _setup(root)
    assert done.returncode == 1
    message = done.stderr.strip()
    assert ".venv/bin/python is Python 3.12, this project needs 3.11" in message
    assert "PYTHON=python3.11" in message and "rm -rf .venv" in message
    assert not (venv_python.parent / "calls.log").exists()  # no pip, no install into the wrong venv
    assert venv_python.is_file()  # refused, not deleted


def test_a_wrong_interpreter_is_refused_before_creating_the_venv(tmp_path: Path) -> None:
    root = _checkout(tmp_path)
    python = _interpreter(tmp_path / "bin" / "python3.10", "3.10")
    done = _setup(root, PYTHON=str(python))
    assert done.returncode == 1
    assert f"PYTHON={python} is Python 3.10, this project needs 3.11" in done.stderr
    assert "rerun with PYTHON=python3.11" in done.stderr
    assert not (root / ".venv").exists() and not (python.parent / "calls.log").exists()


def test_a_ready_311_venv_is_reused_without_installing(tmp_path: Path) -> None:
    root = _checkout(tmp_path)
    venv_python = _interpreter(root / ".venv" / "bin" / "python", "3.11")
    stamp = hashlib.sha256((root / "requirements.txt").read_bytes() + (root / "pyproject.toml").read_bytes())
    (root / ".venv" / ".aqm-installed").write_text(stamp.hexdigest() + "\n")
    done = _setup(root)
    assert done.returncode == 0, done.stderr
    assert not (venv_python.parent / "calls.log").exists()
