#!/usr/bin/env python
"""Run one pipeline stage with status tracking in ``run.json`` and output teed to its log.

Usage::

    run_stage.py --run-root R --stage NAME [--output PATH ...] -- CMD [ARGS...]

A stage already ``done`` is skipped (prints ``skip: ...``, exit 0). Otherwise the command runs,
its stdout+stderr go to the terminal and are appended to ``R/logs/NAME.log``, and this script
exits with the command's exit code (1 if it exited 0 without writing an ``--output``).
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from auto_quantize_model.runs.run_root import RunRoot
from auto_quantize_model.runs.stage_runner import StageBusy, run_stage
from auto_quantize_model.utils.cli import HelpFormatter, add_version_flag, cli_main, say
from auto_quantize_model.utils.errors import os_error_line


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Split at the first ``--``: our options before it, the stage's command after it."""
    parser = argparse.ArgumentParser(
        usage="%(prog)s --run-root R --stage NAME [--output PATH ...] -- CMD [ARGS...]",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    add_version_flag(parser)
    parser.add_argument("--run-root", required=True, type=Path, help="experiment run root")
    parser.add_argument("--stage", required=True, help="stage name (run.json key and log file name)")
    parser.add_argument("--output", action="append", default=[], type=Path, help="file the stage must create")
    if "--" not in argv:
        parser.parse_args(argv)  # --help (exit 0) and bad options are answered first
        parser.error("missing '--' before the stage command")
    split = argv.index("--")
    args = parser.parse_args(argv[:split])
    args.command = argv[split + 1 :]
    if not args.command:
        parser.error("no command after '--'")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # Under a file-size limit a write past it raises SIGXFSZ, whose default action kills this wrapper with
    # run.json at "running"; ignored, the write fails with EFBIG and is handled like a full disk.
    # (subprocess restores the default in the stage's own process.)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        result = run_stage(RunRoot(args.run_root), args.stage, args.command, outputs=args.output)
    except StageBusy as error:
        say(f"error: {error}", err=True)
        return 75  # EX_TEMPFAIL: try again once the other run ends
    except ValueError as error:  # bad stage name, unreadable run.json
        say(f"error: {error}", err=True)
        return 2
    except OSError as error:  # e.g. a full disk before the stage could start or be recorded
        say(f"FAILED: stage {args.stage}: {os_error_line(error, args.run_root)}", err=True)
        return 1
    if not result.ok:
        detail = f": {result.message}" if result.message else ""
        say(f"FAILED: stage {args.stage} (exit code {result.exit_code}){detail}; log: {result.log}", err=True)
    return result.exit_code


if __name__ == "__main__":
    cli_main(main)
