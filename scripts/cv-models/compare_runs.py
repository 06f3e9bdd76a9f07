#!/usr/bin/env python
"""Compare run roots: ``comparison.md``, ``comparison.csv`` and ``map_vs_size.png`` from each root's ``summary.csv``.

Usage::

    compare_runs.py RUN_ROOT [RUN_ROOT ...] --out DIR [--allow-different-val]

Run roots scored on different val annotations (by sha256) are refused unless ``--allow-different-val``.
A run root without ``summary.csv`` or with unevaluated rows is listed in the report, not fatal.
Exit status: 0 written, 1 written but no run root had any evaluated row, 2 refused or bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from auto_quantize_model.compare import CompareInputError, compare_runs
from auto_quantize_model.utils.cli import HelpFormatter, add_version_flag, cli_main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_version_flag(parser)
    parser.add_argument("run_roots", nargs="+", type=Path, metavar="RUN_ROOT", help="run roots holding summary.csv")
    parser.add_argument("--out", required=True, type=Path, help="folder for comparison.md/.csv and map_vs_size.png")
    parser.add_argument(
        "--allow-different-val", action="store_true", help="compare even if the val annotation sha256 differ"
    )
    args = parser.parse_args(argv)
    try:
        result = compare_runs(args.run_roots, args.out, allow_different_val=args.allow_different_val)
    except CompareInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    written = [result.markdown_path, result.csv_path] + ([result.plot_path] if result.plot_path else [])
    print("wrote " + ", ".join(str(p) for p in written))
    for note in result.notes:
        print(f"note: {note}")
    return 0 if any(run.usable for run in result.runs) else 1


if __name__ == "__main__":
    cli_main(main)
