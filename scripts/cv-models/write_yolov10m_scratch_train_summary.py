#!/usr/bin/env python
"""Write ``summary.md`` (FP16/AMP baseline vs W4A16 QAT) for a run root.

Usage::

    write_yolov10m_scratch_train_summary.py --run-root R [--strict]

Works on half-finished run roots too: the summary then lists what is missing, and this script
prints the same list. ``--strict`` exits 1 when anything is missing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from auto_quantize_model.report import write_summary
from auto_quantize_model.runs.run_root import RunRoot
from auto_quantize_model.utils.cli import HelpFormatter, add_version_flag, cli_main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_version_flag(parser)
    parser.add_argument("--run-root", required=True, type=Path, help="experiment run root")
    parser.add_argument("--strict", action="store_true", help="exit 1 if any expected artifact is missing")
    args = parser.parse_args(argv)
    run_root = RunRoot(args.run_root)
    if not run_root.root.is_dir():
        print(f"error: run root {run_root.root} does not exist", file=sys.stderr)
        return 2
    result = write_summary(run_root)
    print(
        f"wrote {result.path}, {result.csv_path.name} and {result.json_path.name}"
        + ("" if result.complete else " (incomplete)")
    )
    for item in result.missing:
        print(f"missing: {item}")
    return 1 if args.strict and result.missing else 0


if __name__ == "__main__":
    cli_main(main)
