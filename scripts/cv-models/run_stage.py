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
import sys
from pathlib import Path

from auto_quantize_model.stages import StageBusy, run_stage
from auto_quantize_model.run_root import RunRoot


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Split at the first ``--``: our options before it, the stage's command after it."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-root", required=True, type=Path, help="experiment run root")
    parser.add_argument("--stage", required=True, help="stage name (run.json key and log file name)")
    parser.add_argument("--output", action="append", default=[], type=Path, help="file the stage must create")
    if "--" not in argv:
        parser.error("missing '--' before the stage command")
    split = argv.index("--")
    args = parser.parse_args(argv[:split])
    args.command = argv[split + 1 :]
    if not args.command:
        parser.error("no command after '--'")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        result = run_stage(RunRoot(args.run_root), args.stage, args.command, outputs=args.output)
    except StageBusy as error:
        print(f"error: {error}", file=sys.stderr)
        return 75  # EX_TEMPFAIL: try again once the other run ends
    except ValueError as error:  # bad stage name, unreadable run.json
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not result.ok:
        detail = f": {result.message}" if result.message else ""
        print(f"FAILED: stage {args.stage} (exit code {result.exit_code}){detail}; log: {result.log}", file=sys.stderr)
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
