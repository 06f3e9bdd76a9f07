#!/usr/bin/env python
"""Pool training seeds of several run roots into one paired bootstrap per variant (ratio of means, CI).

Each run root's summary already has a paired CI over its own seeds; two run roots of the same profile and data
(equal val annotation sha256) with different seeds make one larger seed set. For every ``--variant`` this pairs
each seed's evaluation folder with its matched baseline's (``--baseline``, default from the variant: ``*-ft`` rows
against ``fp16-ft``, the rest against ``fp16``) and calls the package's own
:func:`~auto_quantize_model.evaluation.stats.paired_bootstrap_from_eval_dirs` (the same resample for every seed).

Usage::

    pooled_bootstrap.py --run-root R1 --run-root R2 --variant qat-w8a8-ft:qdq --variant ptq-w8a8:qdq \
        [--extra-pair FP_EVAL_DIR QUANT_EVAL_DIR VARIANT:FORMAT ...] [--json OUT.json]

``--extra-pair`` adds a seed scored outside a run root (e.g. a diagnostic made with the same CLIs).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import yaml

from auto_quantize_model.evaluation.stats import paired_bootstrap_from_eval_dirs
from auto_quantize_model.runs.run_root import RunRoot
from auto_quantize_model.runs.variants import parse_variant


def _pairs(run_roots: list[RunRoot], variant: str, weights_format: str) -> list[tuple[Path, Path]]:
    """One ``(baseline eval dir, variant eval dir)`` per seed of every run root that evaluated the file."""
    pairs = []
    for root in run_roots:
        config = yaml.safe_load(root.run_config.read_text(encoding="utf-8"))
        baseline = parse_variant(variant).baseline(config["variants"])
        for seed in config["seeds"]:
            seed_root = root.seed(int(seed))
            quant = seed_root.eval_dir(variant, weights_format)
            if quant.is_dir() and baseline is not None:
                pairs.append((seed_root.eval_dir(baseline.name, "float32"), quant))
    return pairs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-root", action="append", required=True, type=Path)
    parser.add_argument("--variant", action="append", required=True, help="VARIANT:FORMAT, e.g. qat-w8a8-ft:qdq")
    parser.add_argument("--extra-pair", action="append", nargs=3, default=[], metavar=("FP_DIR", "QUANT_DIR", "V:F"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    roots = [RunRoot(path) for path in args.run_root]
    ann = roots[0].val_annotations
    results = {}
    for spec in args.variant:
        variant, _, weights_format = spec.partition(":")
        pairs = _pairs(roots, variant, weights_format)
        pairs += [(Path(fp), Path(quant)) for fp, quant, name in args.extra_pair if name == spec]
        result = paired_bootstrap_from_eval_dirs(ann, pairs)
        results[spec] = asdict(result)
        low, high = result.ratio_ci
        print(
            f"{spec:<24} seeds {result.n_seeds}  ratio {result.ratio:.3f} [{low:.3f}, {high:.3f}]  "
            f"quant {result.quant_map:.4f} vs baseline {result.fp_map:.4f}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
