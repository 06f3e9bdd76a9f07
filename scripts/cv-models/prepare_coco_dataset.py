#!/usr/bin/env python
"""Turn a COCO-format source into an Ultralytics detection dataset (images symlinked, never copied).

Usage: prepare_coco_dataset.py --source-root datasets/coco2017/source-data --out-dir OUT
       [--max-train-images N --max-val-images M --selection-images S --seed K --overwrite]
"""

from __future__ import annotations

import argparse
import sys

from auto_quantize_model.data.coco_dataset import DatasetError, prepare_coco_dataset
from auto_quantize_model.utils.cli import HelpFormatter, add_version_flag, cli_main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line; the four source paths are relative to --source-root."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_version_flag(parser)
    parser.add_argument("--source-root", required=True, help="folder holding the COCO images and annotations")
    parser.add_argument("--out-dir", required=True, help="output dataset folder (dataset.yaml, images/, labels/, ...)")
    parser.add_argument("--train-images", default="train2017", help="training image folder")
    parser.add_argument("--val-images", default="val2017", help="validation image folder")
    parser.add_argument("--train-ann", default="annotations/instances_train2017.json", help="training annotations")
    parser.add_argument("--val-ann", default="annotations/instances_val2017.json", help="validation annotations")
    parser.add_argument("--max-train-images", type=int, default=None, help="keep a seeded random subset of N images")
    parser.add_argument("--max-val-images", type=int, default=None, help="keep a seeded random subset of M images")
    parser.add_argument(
        "--selection-images",
        type=int,
        default=None,
        help="carve S train images into a selection split (images/selection, dataset-selection.yaml) for choosing "
        "checkpoints without the val images",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the subsets and the selection split")
    parser.add_argument("--overwrite", action="store_true", help="replace the dataset files in a non-empty --out-dir")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Write the dataset and print one line with its counts; exit 2 on bad input."""
    args = parse_args(argv)
    try:
        result = prepare_coco_dataset(
            args.source_root,
            args.out_dir,
            train_images=args.train_images,
            val_images=args.val_images,
            train_ann=args.train_ann,
            val_ann=args.val_ann,
            max_train_images=args.max_train_images,
            max_val_images=args.max_val_images,
            selection_images=args.selection_images,
            seed=args.seed,
            overwrite=args.overwrite,
        )
    except DatasetError as error:
        print(f"prepare_coco_dataset: error: {error}", file=sys.stderr)
        return 2
    splits = ", ".join(f"{name} {c.images} images / {c.boxes_written} boxes" for name, c in result.counts.items())
    print(f"wrote {result.dataset_yaml}: {len(result.names)} classes, {splits}")
    return 0


if __name__ == "__main__":
    cli_main(main)
