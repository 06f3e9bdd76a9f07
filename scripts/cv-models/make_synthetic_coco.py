#!/usr/bin/env python
"""Write the deterministic synthetic COCO2017-layout demo set.

Usage: make_synthetic_coco.py --out DIR [--train 128 --val 32 --imgsz 160 --seed 0 --overwrite]
"""

from __future__ import annotations

import argparse
import sys

from auto_quantize_model.data.synthetic import generate_synthetic_coco
from auto_quantize_model.utils.cli import HelpFormatter, add_version_flag, cli_main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_version_flag(parser)
    parser.add_argument("--out", required=True, help="output folder (gets train2017/, val2017/, annotations/)")
    parser.add_argument("--train", type=int, default=128, help="number of training images")
    parser.add_argument("--val", type=int, default=32, help="number of validation images")
    parser.add_argument("--imgsz", type=int, default=160, help="longest image side in pixels")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bytes")
    parser.add_argument("--overwrite", action="store_true", help="replace the set in a non-empty --out")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Generate the set and print one line saying where it went; exit 2 on bad input."""
    args = parse_args(argv)
    try:
        result = generate_synthetic_coco(
            args.out, args.train, args.val, args.imgsz, args.seed, overwrite=args.overwrite
        )
    except ValueError as error:
        print(f"make_synthetic_coco: error: {error}", file=sys.stderr)
        return 2
    print(
        f"wrote {result.num_train} train / {result.num_val} val images "
        f"({result.num_train_boxes} / {result.num_val_boxes} boxes) to {result.root}"
    )
    return 0


if __name__ == "__main__":
    cli_main(main)
