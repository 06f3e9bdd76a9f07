#!/usr/bin/env python
"""Publish a finished run root's report into the repository and regenerate the reports index.

Usage::

    publish_run_report.py --run-root R [--name RUN_ID] [--dest models/cv-models/yolov10m/reports]
        [--allow-partial] [--max-mb 5]

Copies the light artifacts of R (summary.md with its links rewritten, PNGs, CSVs, configs,
metrics.json, export metadata) into DEST/RUN_ID/ (RUN_ID defaults to R's folder name), writes
DEST/RUN_ID/MANIFEST.json listing what stayed behind (weights, ONNX, logs, images, TensorBoard
events, detections) with sizes and sha256s, and rewrites DEST/README.md, the index of every
published report. Refuses an incomplete run root (summary.json) unless --allow-partial, a
different existing report of that name, and a report over the size cap. Publishing the same
run root twice changes nothing. Exit code 0 on success, 1 when refused.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from auto_quantize_model.publish import DEFAULT_MAX_BYTES, DEFAULT_REPORTS_SUBDIR, PublishError, publish_run_report
from auto_quantize_model.utils.cli import HelpFormatter, add_version_flag, cli_main

REPO_ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_version_flag(parser)
    parser.add_argument("--run-root", required=True, type=Path, help="experiment run root to publish")
    parser.add_argument("--name", default=None, help="report folder name (default: the run root's folder name)")
    parser.add_argument(
        "--dest",
        type=Path,
        default=REPO_ROOT / DEFAULT_REPORTS_SUBDIR,
        help=f"reports folder (default: {DEFAULT_REPORTS_SUBDIR} in this repository)",
    )
    parser.add_argument("--allow-partial", action="store_true", help="publish an incomplete run root, marked partial")
    parser.add_argument("--max-mb", type=float, default=DEFAULT_MAX_BYTES / 1e6, help="size cap of one report in MB")
    args = parser.parse_args(argv)
    try:
        result = publish_run_report(
            args.run_root,
            args.dest,
            args.name,
            allow_partial=args.allow_partial,
            max_bytes=int(args.max_mb * 1e6),
            repository=REPO_ROOT,
        )
    except PublishError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    what = "published" if result.created else "unchanged (identical report already published)"
    print(f"{what}: {result.report_dir}" + (" [partial]" if result.partial else ""))
    print(
        f"  {result.copied} files copied ({result.report_bytes / 1e6:.2f} MB with MANIFEST.json), "
        f"{result.left_behind} left behind (listed in MANIFEST.json)"
    )
    print(f"index: {result.index}")
    return 0


if __name__ == "__main__":
    cli_main(main)
