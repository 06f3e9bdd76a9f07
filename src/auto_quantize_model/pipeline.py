"""The experiment runner: run a stage plan in order, skipping, resuming and redoing stages.

:func:`run_pipeline` runs the stages of :func:`~auto_quantize_model.runs.plan.plan_stages` in order
through :func:`~auto_quantize_model.runs.stage_runner.run_stage` (``run.json`` tracking, one log per
stage). A rerun skips stages that are done and whose recorded outputs are still there with the same
sha256; a stage whose outputs went missing or changed is redone together with every stage downstream
of it, and ``redo`` asks for that on purpose. Work that is redone is set aside (renamed
``*.stale-<time>``), never deleted.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from auto_quantize_model.runs.executors import (
    LOCAL_EXECUTION,
    ExecutionResult,
    ExecutorError,
    StageReport,
    run_locally,
    run_on_ray,
    stage_threads,
    thread_env,
)
from auto_quantize_model.runs.plan import StageSpec
from auto_quantize_model.runs.provenance import utc_now
from auto_quantize_model.runs.run_root import RunRoot
from auto_quantize_model.runs.stage_runner import (
    StageBusy,
    StageResult,
    load_run_state,
    run_stage,
    update_stage_record,
)
from auto_quantize_model.utils.io import sha256_file


class PipelineError(RuntimeError):
    """A stage failed or a request names no stage of this run; the message says which and what to do."""


@dataclass
class PipelineOutcome:
    """What one call of :func:`run_pipeline` did."""

    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    redone: list[str] = field(default_factory=list)  # done stages rerun (missing/changed outputs, or asked)
    failed: list[StageReport] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)  # not run: a stage they need did not finish
    stopped_after: str | None = None


def stages_to_redo(run_root: RunRoot, stages: Sequence[StageSpec], redo: Sequence[str] = ()) -> dict[str, str]:
    """``{stage: reason}`` for done stages to rerun: asked for, outputs missing or changed, or downstream of one."""
    names = [stage.name for stage in stages]
    unknown = [name for name in redo if name not in names]
    if unknown:
        raise PipelineError(f"--redo {', '.join(unknown)}: not a stage of this run; its stages are: {' '.join(names)}")
    records = load_run_state(run_root)["stages"]
    reasons = {name: "asked with --redo" for name in redo}
    for stage in stages:
        record = records.get(stage.name) or {}
        if stage.name in reasons or record.get("status") != "done":
            continue
        problem = _output_problem(stage, record)
        if problem:
            reasons[stage.name] = problem
        elif any(need in reasons for need in stage.needs):
            reasons[stage.name] = f"downstream of {next(need for need in stage.needs if need in reasons)}"
    return reasons


def _output_problem(stage: StageSpec, record: Mapping[str, Any]) -> str | None:
    recorded = record.get("outputs_sha256") or {}
    for path in stage.outputs:
        if not path.exists():
            return f"output missing: {path}"
        want = recorded.get(str(path))
        if want and path.is_file() and sha256_file(path) != want:
            return f"output changed since the stage finished: {path}"
    return None


def run_pipeline(
    run_root: RunRoot,
    stages: Sequence[StageSpec],
    *,
    config: Mapping[str, Any] | None = None,
    redo: Sequence[str] = (),
    stop_after: str | None = None,
    say: Callable[[str], None] = print,
) -> PipelineOutcome:
    """Run ``stages`` with the config's executor; raise :class:`PipelineError` naming every stage that failed.

    A failed stage stops only the stages that need it; every independent chain runs to its end first.
    ``config`` is the resolved run config (its executor keys); without one, stages run locally with the
    libraries' default threads.
    """
    config = {**LOCAL_EXECUTION, **(config or {})}
    names = [stage.name for stage in stages]
    if stop_after is not None and stop_after not in names:
        raise PipelineError(f"--stop-after {stop_after}: not a stage of this run ({' '.join(names)})")
    to_redo = stages_to_redo(run_root, stages, redo)
    task = functools.partial(execute_stage, run_root, config, to_redo)
    progress = _Progress(run_root, len(stages), say)
    if config["executor"] == "ray":
        try:
            result = run_on_ray(_up_to(stages, stop_after), task, progress.report, config, run_root.root)
        except ExecutorError as error:
            raise PipelineError(str(error)) from error
    else:
        result = run_locally(stages, task, progress.report, stop_after)
    outcome = _outcome(result, to_redo, stop_after)
    _raise_for_failures(run_root, outcome)
    if outcome.stopped_after:
        say(f"stopping after stage {stop_after} as asked (--stop-after); rerun without it to continue")
    return outcome


def execute_stage(
    run_root: RunRoot,
    config: Mapping[str, Any],
    to_redo: Mapping[str, str],
    stage: StageSpec,
    upstream: Sequence[StageReport],
) -> StageReport:
    """One stage under any executor: redo (set aside) when asked or when a need ran again, run it, record it."""
    reason = to_redo.get(stage.name)
    rerun_need = next((report.name for report in upstream if report.status == "ran"), None)
    if reason is None and rerun_need and _is_done(run_root, stage.name):
        reason = f"its input stage {rerun_need} ran again"  # e.g. the summary after an added seed
    notes: list[str] = []
    if reason:
        notes.append(f"redo: stage {stage.name} ({reason})")
        _set_aside(run_root, stage, notes.append)
    env = {**os.environ, **thread_env(stage_threads(config, stage))}
    quiet = config["executor"] == "ray"  # a Ray worker's stdout goes nowhere useful: the stage log has it all
    with open(os.devnull, "wb") if quiet else contextlib.nullcontext(None) as stream:
        try:
            result = run_stage(run_root, stage.name, stage.argv, outputs=stage.outputs, stream=stream, env=env)
        except StageBusy as error:
            return StageReport(stage.name, "busy", str(error), str(run_root.stage_log(stage.name)))
    if result.ok and result.status != "skipped":
        _record_output_hashes(run_root, stage)
    status = {"skipped": "skipped"}.get(result.status, "ran" if result.ok else "failed")
    message = "; ".join([*notes, *([_failure_message(run_root, stage, result)] if not result.ok else [])])
    return StageReport(stage.name, status, message, str(run_root.stage_log(stage.name)), "", result.duration_s)


class _Progress:
    """One line per finished stage: ``[k/N] stage: status (time)``."""

    def __init__(self, run_root: RunRoot, total: int, say: Callable[[str], None]) -> None:
        self.run_root, self.total, self.done, self.say = run_root, total, 0, say

    def report(self, report: StageReport) -> None:
        self.done += 1
        if report.node and report.status in ("ran", "failed"):  # which Ray node ran it, beside host and pid
            update_stage_record(self.run_root, report.name, ray_node=report.node)
        took = f" in {report.duration_s:.1f} s" if report.duration_s is not None else ""
        where = f" on node {report.node[:8]}" if report.node else ""
        self.say(f"[{self.done}/{self.total}] {report.name}: {report.status}{took}{where}")
        if report.message:
            self.say(f"  {report.message}")


def _up_to(stages: Sequence[StageSpec], stop_after: str | None) -> list[StageSpec]:
    """``stop_after`` and every stage it needs, directly or not (all stages when ``None``)."""
    if stop_after is None:
        return list(stages)
    by_name, wanted, todo = {s.name: s for s in stages}, set(), [stop_after]
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            todo += list(by_name[name].needs)
    return [stage for stage in stages if stage.name in wanted]


def _outcome(result: ExecutionResult, to_redo: Mapping[str, str], stop_after: str | None) -> PipelineOutcome:
    outcome = PipelineOutcome()
    for report in result.reports:
        if report.status == "ran":
            outcome.ran.append(report.name)
            if report.message.startswith("redo:"):
                outcome.redone.append(report.name)
        elif report.status == "skipped":
            outcome.skipped.append(report.name)
        elif report.status == "blocked":
            outcome.blocked.append(report.name)
        else:
            outcome.failed.append(report)
    if stop_after is not None and stop_after in outcome.ran + outcome.skipped:
        outcome.stopped_after = stop_after
    return outcome


def _raise_for_failures(run_root: RunRoot, outcome: PipelineOutcome) -> None:
    busy = [report for report in outcome.failed if report.status == "busy"]
    failed = [report for report in outcome.failed if report.status != "busy"]
    if failed:
        lines = [f"  {report.name}: {report.message.splitlines()[0] if report.message else ''}" for report in failed]
        blocked = f"\nNot run because of them: {', '.join(outcome.blocked)}" if outcome.blocked else ""
        raise PipelineError(
            f"{len(failed)} stage(s) failed:\n" + "\n".join(lines) + blocked + "\n"
            "Fix the cause and rerun the same command: finished stages are kept and the run continues where it stopped."
        )
    if busy:
        raise StageBusy(busy[0].message)


def _is_done(run_root: RunRoot, stage: str) -> bool:
    return (load_run_state(run_root)["stages"].get(stage) or {}).get("status") == "done"


def _set_aside(run_root: RunRoot, stage: StageSpec, say: Callable[[str], None]) -> None:
    """Rename the stage's work (folder or file + its metadata) out of the way and forget its done record."""
    stamp = utc_now().replace(":", "").replace("+00:00", "Z").replace("+0000", "Z")
    targets = [stage.workdir] if stage.workdir is not None else []
    if stage.workdir is not None and stage.workdir.suffix == ".onnx":
        targets.append(stage.workdir.with_suffix(".json"))
    for target in targets:
        if target.exists():
            moved = target.with_name(f"{target.name}.stale-{stamp}")
            target.rename(moved)
            say(f"  set aside {target} -> {moved.name}")
    update_stage_record(run_root, stage.name, status="failed", error=f"set aside for a redo at {stamp}")


def _record_output_hashes(run_root: RunRoot, stage: StageSpec) -> None:
    """Remember each output file's sha256, so a later rerun notices a deleted or replaced artifact."""
    hashes = {str(path): sha256_file(path) for path in stage.outputs if path.is_file()}
    if hashes:
        update_stage_record(run_root, stage.name, outputs_sha256=hashes)


def _failure_message(run_root: RunRoot, stage: StageSpec, result: StageResult) -> str:
    detail = f" ({result.message})" if result.message else ""
    return f"exit code {result.exit_code}{detail}; log: {run_root.stage_log(stage.name)}"
