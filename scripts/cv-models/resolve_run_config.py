#!/usr/bin/env python
"""Resolve a run profile + overrides, save/check it in the run root, print shell assignments.

Usage::

    resolve_run_config.py --profile demo [--run-root R | --run-id ID] [--epochs N ...] [--set KEY=VALUE ...]

Prints one ``CFG_<KEY>=value`` line per config key and one ``ART_<NAME>=path`` line per
artifact path, each value quoted with ``shlex.quote`` (lists become bash arrays), for a bash
runner to ``eval``. Exits 2 with a message on an invalid profile or when the run root already
holds a different config (the differing keys are named).
"""

from __future__ import annotations

import argparse
import sys

from auto_quantize_model.pipeline import (
    CLI_OVERRIDE_KEYS,
    RunConfigError,
    parse_set_overrides,
    resolve_run_config,
    save_or_check_run_config,
    shell_assignments,
)
from auto_quantize_model.run_root import RunRoot


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", required=True, help="profile name (conf/cv-models/yolov10m/profiles) or YAML path")
    parser.add_argument("--run-root", default=None, help="run root (default: $RUN_ROOT, else tmp/.../<run-id>)")
    parser.add_argument("--run-id", default=None, help="run id for the default run root (default: the profile name)")
    parser.add_argument("--model", help="model cfg, e.g. yolov10m.yaml")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--imgsz", type=int)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--device")
    parser.add_argument("--workers", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--fraction", type=float)
    parser.add_argument("--quant-scheme", dest="quant_scheme")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override any profile key (value parsed as YAML), e.g. eval_max_images=50")  # fmt: skip
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        overrides = parse_set_overrides(args.sets)
        overrides.update({key: getattr(args, key) for key in CLI_OVERRIDE_KEYS if getattr(args, key) is not None})
        config = resolve_run_config(args.profile, overrides)
        run_root = RunRoot.from_env_or_default(args.run_root, args.run_id or config["profile"])
        check = save_or_check_run_config(run_root, config)
    except RunConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    verb = "saved" if check.created else "matches the saved"
    print(f"run config {verb} {check.path}", file=sys.stderr)
    print("\n".join(shell_assignments(run_root, config)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
