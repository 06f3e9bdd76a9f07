"""Every CLI under scripts/ behaves alike: --version, help with defaults, Ctrl-C -> 130, a closed pipe -> quiet.

The CLIs run for real in subprocesses (the handlers live in ``cli_main``, which only a real process exercises);
the help texts are read from the parsers the scripts really build.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from auto_quantize_model.utils.cli import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, HelpFormatter

ROOT = Path(__file__).resolve().parents[1]
# run_pipeline.py and run_stage.py (the runner) adopt utils/cli.py separately; every other CLI is here.
RUNNER = ("run_pipeline.py", "run_stage.py")
CLIS = [
    ROOT / "scripts" / "check_env.py",
    *sorted(p for p in (ROOT / "scripts" / "cv-models").glob("*.py") if p.name not in RUNNER),
]
IDS = [path.name for path in CLIS]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), **extra}


def _git_head() -> str | None:
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


@pytest.mark.parametrize("script", CLIS, ids=IDS)
def test_version_names_the_package_version_and_git_commit(script: Path, tmp_path: Path) -> None:
    """Run from another folder: the commit is the checkout's that holds the package, not the working directory's."""
    from importlib import metadata

    argv = [sys.executable, str(script), "--version"]
    done = subprocess.run(argv, capture_output=True, text=True, env=_env(), cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip()
    assert line.startswith(f"{script.name} (auto-quantize-model {metadata.version('auto-quantize-model')}, ")
    head = _git_head()
    assert (f"git {head}" if head else "git commit unknown") in line


def test_version_outside_a_git_checkout_says_so(tmp_path: Path) -> None:
    script = ROOT / "scripts" / "cv-models" / "compare_runs.py"
    done = subprocess.run(
        [sys.executable, str(script), "--version"],
        capture_output=True,
        text=True,
        env=_env(GIT_DIR=str(tmp_path / "no-git"), GIT_CEILING_DIRECTORIES=str(tmp_path)),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "git commit unknown (not a git checkout)" in done.stdout


def _parsers(script: Path, monkeypatch) -> list[argparse.ArgumentParser]:
    """The parser the script builds (and its subcommand parsers), caught where it would parse ``--help``."""
    caught: list[argparse.ArgumentParser] = []

    class Caught(Exception):
        pass

    def catch(self, *args, **kwargs):
        caught.append(self)
        raise Caught

    spec = importlib.util.spec_from_file_location(f"cli_under_test_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", catch)
    with pytest.raises(Caught):
        module.main(["--help"])
    parser = caught[0]
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return [parser, *(sub for action in subparsers for sub in action.choices.values())]


@pytest.mark.parametrize("script", CLIS, ids=IDS)
def test_every_option_has_help_and_shows_its_default(script: Path, monkeypatch) -> None:
    parsers = _parsers(script, monkeypatch)
    assert "--version" in parsers[0]._option_string_actions
    for parser in parsers:
        assert parser.formatter_class is HelpFormatter, f"{parser.prog}: help does not show defaults"
        rendered = " ".join(parser.format_help().split())
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            name = "/".join(action.option_strings) or action.dest
            assert action.help, f"{parser.prog} {name}: no help text"
            default = action.default
            if default not in (None, False, [], argparse.SUPPRESS) and "default" not in action.help.lower():
                shown = " ".join(map(str, default)) if isinstance(default, list) else str(default)
                assert f"(default: {shown})" in rendered, f"{parser.prog} {name}: default {shown} not shown"


def _run_into_closed_pipe(argv: list[str]) -> subprocess.CompletedProcess:
    """Run a CLI whose stdout reader is already gone, as in ``CLI | head -0``."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [sys.executable, *argv], stdout=write_end, stderr=subprocess.PIPE, text=True, env=_env(), check=False
        )
    finally:
        os.close(write_end)


@pytest.mark.parametrize("script", CLIS, ids=IDS)
def test_a_pipe_closed_early_ends_quietly(script: Path) -> None:
    done = _run_into_closed_pipe([str(script), "--version"])
    assert (done.returncode, done.stderr) == (EXIT_BROKEN_PIPE, "")


def test_a_pipe_closed_early_on_a_real_report_ends_quietly(tmp_path: Path) -> None:
    """The summary writer on an empty run root prints a line per missing artifact: no BrokenPipe traceback."""
    script = ROOT / "scripts" / "cv-models" / "write_yolov10m_scratch_train_summary.py"
    done = _run_into_closed_pipe([str(script), "--run-root", str(tmp_path)])
    assert (done.returncode, done.stderr) == (EXIT_BROKEN_PIPE, "")
    assert (tmp_path / "summary.md").is_file()  # the work was done; only the printing stopped


def test_ctrl_c_exits_130_with_one_line(tmp_path: Path) -> None:
    """SIGINT while the synthetic-data generator is writing images: one line on stderr, exit 130."""
    out = tmp_path / "synthetic"
    script = ROOT / "scripts" / "cv-models" / "make_synthetic_coco.py"
    process = subprocess.Popen(
        [sys.executable, str(script), "--out", str(out), "--train", "100000", "--val", "1", "--imgsz", "32"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        # A child of a background job inherits SIGINT ignored; a terminal's Ctrl-C reaches a default handler.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 60
        while not any(out.rglob("*.jpg")):  # inside main(), writing images
            assert process.poll() is None and time.monotonic() < deadline, "the generator never started writing"
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == EXIT_INTERRUPTED, stderr
    assert stderr.strip() == "make_synthetic_coco.py: interrupted (Ctrl-C)"
    assert stdout == ""
