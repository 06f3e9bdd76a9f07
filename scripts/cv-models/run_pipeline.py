#!/usr/bin/env python
"""Run the experiment: resolve the profile, check everything, then run (or resume) every stage.

Usage::

    run_pipeline.py --profile demo|dry-run|bench|coco2017|PATH.yaml [--run-root R]
        [--seeds 0,1,2] [--variants fp16,qat-w4a16,ptq-w4a16,qat-w4a16-ft] [--epochs N] [--imgsz S]
        [--batch B] [--device D] [--model CFG] [--workers W] [--fraction F]
        [--set KEY=VALUE ...]        any profile key, e.g. --set eval_max_images=50
        [--train-arg KEY=VALUE ...]  an Ultralytics argument for every training, e.g. --train-arg close_mosaic=10
        [--stop-after STAGE] [--redo STAGE ...] [--publish] [--list-stages] [--repair]

The whole config (schemes, variants, seeds, opset, model YAML, recipes, data paths, device) is
checked before anything is written; a refused config exits 2 and leaves the run root untouched.
Rerunning the same command resumes: finished stages are skipped, an interrupted training resumes
from its last.pt, a stage whose outputs went missing or changed is redone, and so is every stage
whose recorded inputs no longer equal what its input stages hold (run.json records both).
``--redo STAGE`` redoes one stage and its dependents on purpose (the old work is set aside).
A rerun that adds seeds (``--seeds 0,1`` after ``--seeds 0``) runs only the new ones.
``--repair`` rebuilds a torn ``run.json`` from the stage logs (then rerun without it).

Exit status: 0 done (or stopped as asked), 1 a stage failed, 2 bad config or bad run root state
(torn run.json, read-only root, full disk), 75 a stage is running in another process, 130 Ctrl-C,
141 stdout closed early (``--list-stages | head``).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from auto_quantize_model.pipeline import PipelineError, nothing_built, run_pipeline
from auto_quantize_model.runs.config import (
    CLI_OVERRIDE_KEYS,
    ConfigError,
    parse_overrides,
    resolve_run_config,
    save_or_check_run_config,
)
from auto_quantize_model.runs.plan import plan_stages
from auto_quantize_model.runs.repair import rebuild_run_state
from auto_quantize_model.runs.run_root import RunRoot
from auto_quantize_model.runs.stage_runner import RunStateError, StageBusy
from auto_quantize_model.utils.cli import HelpFormatter, add_version_flag, cli_main, say
from auto_quantize_model.utils.errors import os_error_line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_version_flag(parser)
    parser.add_argument("--profile", required=True, help="profile name (conf/cv-models/yolov10m/profiles) or YAML path")
    parser.add_argument("--run-root", default=None, help="run root (default: $RUN_ROOT, else tmp/.../<profile>-<time>)")
    parser.add_argument("--model", help="model cfg, e.g. yolov10m.yaml")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--imgsz", type=int)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--device")
    parser.add_argument("--workers", type=int)
    parser.add_argument("--seeds", help="training seeds, e.g. 0,1,2 (each variant trains once per seed)")
    parser.add_argument("--fraction", type=float)
    parser.add_argument("--variants", help="e.g. fp16,qat-w4a16,ptq-w4a16,qat-w4a16-ft (see variants.py)")
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any profile key (value parsed as YAML)",
    )
    parser.add_argument(
        "--train-arg",
        dest="train_args",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Ultralytics argument added to every training (profile key train_overrides)",
    )
    parser.add_argument(
        "--executor",
        choices=("local", "ray"),
        help="run the stages one after another here (local), or as a graph on Ray (profile key executor)",
    )
    parser.add_argument(
        "--ray-address",
        help="Ray cluster to use with --executor ray (default: $RAY_ADDRESS, else start a local instance)",
    )
    parser.add_argument("--stop-after", help="stop (exit 0) once this stage is done; a later call continues")
    parser.add_argument(
        "--redo",
        action="append",
        default=[],
        metavar="STAGE",
        help="rerun this done stage and every stage downstream of it (old outputs set aside)",
    )
    parser.add_argument("--publish", action="store_true", help="finally copy the report into the repository")
    parser.add_argument("--list-stages", action="store_true", help="print the stages of this run and exit")
    parser.add_argument(
        "--repair", action="store_true", help="rebuild a torn run.json from the stage logs and outputs, then exit"
    )
    return parser.parse_args(argv)


def resolve(args: argparse.Namespace) -> dict:
    overrides = parse_overrides(args.sets)
    overrides.update({key: getattr(args, key) for key in CLI_OVERRIDE_KEYS if getattr(args, key) is not None})
    config = resolve_run_config(args.profile, overrides)
    if args.train_args:  # appended to the profile's list; the trainer checks the Ultralytics keys
        parse_overrides(args.train_args, flag="--train-arg")
        overrides["train_overrides"] = [*config["train_overrides"], *args.train_args]
        config = resolve_run_config(args.profile, overrides)
    return config


def main(argv: list[str] | None = None) -> int:
    """Resolve, check, then list, repair or run; every expected failure is one line on stderr."""
    args = parse_args(argv)
    run_root = None
    try:
        config = resolve(args)
        run_id = f"{config['profile']}-{time.strftime('%Y%m%d-%H%M%S')}"
        run_root = RunRoot.from_env_or_default(args.run_root, run_id)
        stages = plan_stages(run_root, config, publish=args.publish)
        if args.list_stages:
            print("\n".join(stage.name for stage in stages))  # a reader that left ends it: cli_main exits 141
            return 0
        check = save_or_check_run_config(run_root, config, nothing_built=lambda: nothing_built(run_root, stages))
        if args.repair:
            return _repair(run_root)
        verb = "saved" if check.created else "matches the saved"
        say(f"run root: {run_root.root} (profile {config['profile']}; run config {verb} {check.path})")
        say(f"stages: {' '.join(stage.name for stage in stages)}")
        outcome = run_pipeline(run_root, stages, config=config, redo=args.redo, stop_after=args.stop_after, say=say)
    except ConfigError as error:
        return _fail(str(error), 2)
    except RunStateError as error:
        given = sys.argv[1:] if argv is None else argv
        return _fail(f"{error}: {shlex.join([sys.executable, __file__, *given, '--repair'])}", 2)
    except StageBusy as error:
        return _fail(str(error), 75)  # EX_TEMPFAIL: try again once the other run ends
    except PipelineError as error:
        return _fail(str(error), error.exit_code)
    except BrokenPipeError:
        raise  # our reader left (| head): cli_main ends quietly
    except OSError as error:  # read-only run root, full disk: anywhere in the runner
        return _fail(os_error_line(error, run_root.root if run_root else Path(args.run_root or ".")), 2)
    if outcome.stopped_after is None:
        say(f"done: {run_root.summary_md}")
    return 0


def _repair(run_root: RunRoot) -> int:
    report = rebuild_run_state(run_root)
    aside = f"; the unreadable one is kept as {report.set_aside}" if report.set_aside else ""
    say(f"rebuilt {report.run_json} from {run_root.logs_dir}{aside}")
    say(f"  done ({len(report.done)}): {' '.join(report.done) or '-'}")
    say(f"  not done, will rerun ({len(report.not_done)}): {' '.join(report.not_done) or '-'}")
    if report.without_records:
        say(f"  logs without records (older version; will rerun): {' '.join(report.without_records)}")
    say("Rerun the same command without --repair: every rebuilt stage is checked against its files first.")
    return 0


def _fail(message: str, code: int) -> int:
    say(f"error: {message}", err=True)
    return code


if __name__ == "__main__":
    cli_main(main)
