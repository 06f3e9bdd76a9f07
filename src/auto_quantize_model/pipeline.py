"""The experiment runner: run a stage plan in order, skipping, resuming and redoing stages.

:func:`run_pipeline` runs the stages of :func:`~auto_quantize_model.runs.plan.plan_stages` in order.
Every decision comes from ``run.json`` and the files, taken under the stage's lock
(:func:`~auto_quantize_model.runs.stage_runner.stage_lock`), so it holds whichever process, executor
or earlier killed run wrote them:

* a stage is **done** only while its record says done, its outputs are still what it recorded and
  the inputs it recorded (its needs' outputs, recipe, scheme file) equal what its needs hold now
  (:mod:`auto_quantize_model.runs.provenance`); otherwise it is redone;
* ``redo`` asks for a redo on purpose, of a stage and everything downstream of it (:func:`asked_redos`);
  a stage whose outputs went missing or changed is redone, and its dependents with it when what it
  rebuilds differs from what they were built from (an identical rebuild, e.g. re-linked val images,
  keeps them);
* a redo sets the old work aside (moved to ``set-aside/<path>.stale-<time>``, never deleted) only once
  it holds the stage's lock: a stage running in another process is refused (:class:`StageBusy`), nothing touched;
  a training that only lost ``best.pt`` (its ``last.pt`` intact) is rerun in place (``--resume``
  finishes it from ``last.pt``: validate, write ``best.pt``);
* before a stage runs, the outputs of its needs are checked again (the dataset fingerprint before
  each evaluation): a change during the run stops it with a one-line reason.

The config's ``executor`` runs :func:`execute_stage` for every stage, in order here (``local``) or as Ray
tasks once their needs are done (``ray``; :mod:`auto_quantize_model.runs.executors`). With either, a failed
stage stops only the stages that need it: the others run to their end, then every failure is named.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import signal
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
from auto_quantize_model.runs.provenance import input_change, output_problem, stage_inputs, utc_now
from auto_quantize_model.runs.run_root import RunRoot
from auto_quantize_model.runs.stage_runner import (
    StageBusy,
    StageResult,
    load_run_state,
    report_skip,
    run_locked_stage,
    stage_lock,
    update_stage_record,
)

INTERRUPTED_EXIT = 128 + signal.SIGINT


class PipelineError(RuntimeError):
    """A stage failed or a request names no stage of this run; the message says which and what to do."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class PipelineOutcome:
    """What one call of :func:`run_pipeline` did."""

    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    redone: list[str] = field(default_factory=list)  # stages whose earlier work was redone (stale, or asked)
    failed: list[StageReport] = field(default_factory=list)  # failed, busy or interrupted
    blocked: list[str] = field(default_factory=list)  # not run: a stage they need did not finish
    stopped_after: str | None = None


@dataclass(frozen=True)
class Redo:
    """Why a stage is redone, and whether its folder stays (a training finishing from its last.pt)."""

    reason: str
    in_place: bool = False


def nothing_built(run_root: RunRoot, stages: Sequence[StageSpec]) -> bool:
    """No stage is done and no training has started: a changed run config may replace the saved one."""
    records = load_run_state(run_root)["stages"]
    trainings = {stage.name for stage in stages if stage.resume_from is not None}
    return not any(name in trainings or record.get("status") == "done" for name, record in records.items())


def asked_redos(stages: Sequence[StageSpec], redo: Sequence[str]) -> dict[str, str]:
    """``{stage: reason}`` for the stages ``--redo`` reaches: each one named and everything downstream of it."""
    names = [stage.name for stage in stages]
    unknown = [name for name in redo if name not in names]
    if unknown:
        raise PipelineError(
            f"--redo {', '.join(unknown)}: not a stage of this run; its stages are: {' '.join(names)}", exit_code=2
        )
    reasons = {name: "asked with --redo" for name in redo}
    for stage in stages:
        upstream = next((need for need in stage.needs if need in reasons), None)
        if upstream and stage.name not in reasons:
            reasons[stage.name] = f"downstream of {upstream}, asked with --redo"
    return reasons


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

    ``config`` is the resolved run config (its executor keys); without one, stages run here, in order, with the
    libraries' default threads.
    """
    config = {**LOCAL_EXECUTION, **(config or {})}
    names = [stage.name for stage in stages]
    if stop_after is not None and stop_after not in names:
        raise PipelineError(f"--stop-after {stop_after}: not a stage of this run ({' '.join(names)})", exit_code=2)
    asked = asked_redos(stages, redo)
    by_name = {stage.name: stage for stage in stages}
    on_ray = config["executor"] == "ray"  # a Ray task carries its notes back in its report instead of printing
    task = functools.partial(execute_stage, run_root, config, asked, by_name, None if on_ray else say)
    progress = _Progress(run_root, stages, asked, say)
    if on_ray:
        try:
            result = run_on_ray(_up_to(stages, stop_after), task, progress.finished, config, run_root.root)
        except ExecutorError as error:
            raise PipelineError(str(error), exit_code=2) from error
    else:
        result = run_locally(stages, task, progress.finished, stop_after, on_start=progress.starting)
    outcome = _outcome(result, stop_after)
    _raise_for_failures(outcome)
    if outcome.stopped_after:
        say(f"stopping after stage {stop_after} as asked (--stop-after); rerun without it to continue")
    return outcome


def execute_stage(
    run_root: RunRoot,
    config: Mapping[str, Any],
    asked: Mapping[str, str],
    by_name: Mapping[str, StageSpec],
    say: Callable[[str], None] | None,
    stage: StageSpec,
    upstream: Sequence[StageReport],
) -> StageReport:
    """One stage under any executor: decide under its lock (skip, run, redo), run it, say what happened.

    ``say`` prints the runner's notes (a redo and what it set aside); ``None`` (a Ray task) keeps them for the
    report, and the stage's output goes to its log only.
    """
    on_ray = say is None
    notes: list[str] = []
    say = notes.append if on_ray else say
    env = {**os.environ, **thread_env(stage_threads(config, stage))}
    log = str(run_root.stage_log(stage.name))
    try:
        with open(os.devnull, "wb") if on_ray else contextlib.nullcontext(None) as stream:
            result, redone = _run_one(run_root, stage, by_name, asked.get(stage.name), say, stream=stream, env=env)
    except StageBusy as error:
        return StageReport(stage.name, "busy", str(error), log, exit_code=75)
    except PipelineError as error:  # a need that is not usable now
        return StageReport(stage.name, "failed", str(error), log, exit_code=error.exit_code)
    if result.ok:
        status = "skipped" if result.status == "skipped" else "ran"
        return StageReport(stage.name, status, "; ".join(notes), log, "", result.duration_s, redone=redone)
    status = "interrupted" if result.exit_code == INTERRUPTED_EXIT else "failed"
    message = "; ".join([*notes, _failure_message(run_root, stage, result)])
    return StageReport(stage.name, status, message, log, "", result.duration_s, exit_code=result.exit_code)


def _run_one(
    run_root: RunRoot,
    stage: StageSpec,
    by_name: Mapping[str, StageSpec],
    asked: str | None,
    say: Callable[[str], None],
    *,
    stream: Any = None,
    env: Mapping[str, str] | None = None,
) -> tuple[StageResult, bool]:
    """Skip, run or redo one stage, deciding under its lock; return the result and whether it was a redo."""
    with stage_lock(run_root, stage.name) as log:
        records = load_run_state(run_root)["stages"]
        record = records.get(stage.name) or {}
        redo = _redo_for(stage, record, records, asked)
        if record.get("status") == "done" and redo is None:
            return report_skip(run_root, stage.name, record, stage.outputs, stream), False
        _check_needs(run_root, stage, by_name, records)
        if redo is not None:
            say(f"redo: stage {stage.name} ({redo.reason})")
            _set_aside(run_root, stage, redo, say)
        inputs = stage_inputs(stage, records)
        result = run_locked_stage(
            run_root, stage.name, stage.argv, log, outputs=stage.outputs, inputs=inputs, stream=stream, env=env
        )
        return result, redo is not None


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


def _outcome(result: ExecutionResult, stop_after: str | None) -> PipelineOutcome:
    outcome = PipelineOutcome()
    for report in result.reports:
        if report.status in ("ran", "skipped"):
            (outcome.ran if report.status == "ran" else outcome.skipped).append(report.name)
            if report.redone:
                outcome.redone.append(report.name)
        elif report.status == "blocked":
            outcome.blocked.append(report.name)
        else:
            outcome.failed.append(report)
    if stop_after is not None and stop_after in outcome.ran + outcome.skipped:
        outcome.stopped_after = stop_after
    return outcome


def _raise_for_failures(outcome: PipelineOutcome) -> None:
    """Interrupted: exit 130; failed: every failed stage named (exit 2 when all were bad state, else 1); busy: 75."""
    by_status = {status: [r for r in outcome.failed if r.status == status] for status in ("interrupted", "failed")}
    if by_status["interrupted"]:
        raise PipelineError(by_status["interrupted"][0].message, exit_code=INTERRUPTED_EXIT)
    failed = by_status["failed"]
    if failed:
        lines = [f"  {report.name}: {report.message}" for report in failed]
        blocked = f"\nNot run because of them: {', '.join(outcome.blocked)}" if outcome.blocked else ""
        code = 2 if all(report.exit_code == 2 for report in failed) else 1
        raise PipelineError(
            f"{len(failed)} stage(s) failed:\n" + "\n".join(lines) + blocked + "\nFix the cause and rerun the same "
            "command: finished stages are kept and the run continues where it stopped.",
            exit_code=code,
        )
    busy = [report for report in outcome.failed if report.status == "busy"]
    if busy:
        raise StageBusy(busy[0].message)


class _Progress:
    """``[k/N] stage (run ETA ...)`` as a stage starts (local), ``[k/N] stage: status`` as one ends (Ray)."""

    def __init__(self, run_root: RunRoot, stages: Sequence[StageSpec], asked: Mapping[str, str], say) -> None:
        self.run_root, self.stages, self.asked, self.say = run_root, list(stages), asked, say
        self.started = self.finished_count = 0

    def starting(self, stage: StageSpec) -> None:
        self.started += 1
        eta = _eta(self.run_root, self.stages[self.started - 1 :], self.asked)
        self.say(f"[{self.started}/{len(self.stages)}] {stage.name}{eta}")

    def finished(self, report: StageReport) -> None:
        self.finished_count += 1
        if report.node and report.status in ("ran", "failed"):  # which Ray node ran it, beside host and pid
            update_stage_record(self.run_root, report.name, ray_node=report.node)
        if report.node:
            took = f" in {report.duration_s:.1f} s" if report.duration_s is not None else ""
            self.say(f"[{self.finished_count}/{len(self.stages)}] {report.name}: {report.status}{took}")
        if report.message and (report.node or report.status not in ("ran", "skipped")):
            self.say(f"  {report.message}")


def _redo_for(
    stage: StageSpec, record: Mapping[str, Any], records: Mapping[str, Any], asked: str | None
) -> Redo | None:
    """Why this stage's existing work is redone now, from its record and its needs' current records."""
    if not record:
        return None
    if asked is not None:
        return Redo(asked)
    if record.get("status") != "done":
        return None  # a failed or interrupted attempt: rerun as it is (a training resumes)
    changed_input = input_change(stage, record, records)
    problem = output_problem(stage, record)
    if problem:  # a training that only lost best.pt is finished from its last.pt, in its folder
        lost = [path for path in stage.outputs if not path.exists()]
        rebuildable = stage.resume_from is not None and stage.resume_from.is_file() and stage.resume_from not in lost
        return Redo(problem, in_place=bool(lost) and rebuildable and not changed_input)
    return Redo(changed_input) if changed_input else None


def _check_needs(
    run_root: RunRoot, stage: StageSpec, by_name: Mapping[str, StageSpec], records: Mapping[str, Any]
) -> None:
    """The needs' outputs are still what they recorded (the dataset fingerprint before each evaluation)."""
    for need in stage.needs:
        record = records.get(need) or {}
        problem = output_problem(by_name[need], record) if need in by_name else None
        if record.get("status") != "done" or problem:
            why = problem or f"it is {record.get('status', 'not run')}"
            raise PipelineError(
                f"stage {stage.name} not started: its input stage {need} is not usable now ({why}); "
                "rerun the same command to redo it",
                exit_code=2,
            )


def _set_aside(run_root: RunRoot, stage: StageSpec, redo: Redo, say: Callable[[str], None]) -> None:
    """Forget the done record first, then rename the stage's work out of the way (caller holds the stage lock).

    In that order a failure in between (a full disk) leaves a record that is not done: the stage reruns.
    """
    stamp = utc_now().replace(":", "").replace("+00:00", "Z").replace("+0000", "Z")
    update_stage_record(run_root, stage.name, status="failed", error=f"set aside for a redo at {stamp}: {redo.reason}")
    if redo.in_place:
        say(f"  keeping {stage.workdir}: rerunning the stage finishes it from what it saved")
        return
    targets = [stage.workdir] if stage.workdir is not None else []
    if stage.workdir is not None and stage.workdir.suffix == ".onnx":
        targets.append(stage.workdir.with_suffix(".json"))
    for target in targets:
        if target.exists():
            moved = run_root.set_aside_path(target, f"stale-{stamp}")
            moved.parent.mkdir(parents=True, exist_ok=True)
            target.rename(moved)
            say(f"  set aside {target} -> {moved}")


# --------------------------------------------------------------------------------------------
# Progress: [k/N] and the whole run's ETA from the stages done so far
# --------------------------------------------------------------------------------------------
def _kind(stage: str) -> tuple[str, str]:
    """``s1-train-qat-w4a16`` -> (``train-qat-w4a16``, ``train``): the same stage of another seed, and its action."""
    rest = re.sub(r"^s\d+-", "", stage)
    return rest, rest.split("-", 1)[0]


def _eta(run_root: RunRoot, remaining: Sequence[StageSpec], asked: Mapping[str, str]) -> str:
    """``" (run ETA ...)"``: the mean recorded duration of each remaining stage's kind, summed (``""``: none timed)."""
    records = load_run_state(run_root)["stages"]
    durations: dict[str, list[float]] = {}
    for name, record in records.items():
        if record.get("status") == "done" and isinstance(record.get("duration_s"), int | float):
            for key in _kind(name):
                durations.setdefault(key, []).append(float(record["duration_s"]))
    if not durations:
        return ""
    todo = [s.name for s in remaining if s.name in asked or (records.get(s.name) or {}).get("status") != "done"]
    timed = [_mean_duration(durations, name) for name in todo]
    known = [seconds for seconds in timed if seconds is not None]
    if not known:
        return ""
    untimed = f" + {len(todo) - len(known)} not timed yet" if len(known) < len(todo) else ""
    return f" (run ETA ~{_duration(sum(known))} for {len(known)} stage(s) left{untimed})"


def _mean_duration(durations: Mapping[str, list[float]], stage: str) -> float | None:
    known = next((durations[key] for key in _kind(stage) if key in durations), None)
    return sum(known) / len(known) if known else None


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _failure_message(run_root: RunRoot, stage: StageSpec, result: StageResult) -> str:
    if result.exit_code == INTERRUPTED_EXIT:
        return f"interrupted during stage {stage.name}; rerun the same command to continue (log: {result.log})"
    detail = f" ({result.message})" if result.message else ""
    return f"exit code {result.exit_code}{detail}; log: {run_root.stage_log(stage.name)}"
