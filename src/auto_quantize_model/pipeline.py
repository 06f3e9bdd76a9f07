"""The experiment runner: run a stage plan in order, skipping, resuming and redoing stages.

:func:`run_pipeline` runs the stages of :func:`~auto_quantize_model.runs.plan.plan_stages` in order
through :func:`~auto_quantize_model.runs.stage_runner.run_stage` (``run.json`` tracking, one log per
stage). A rerun skips stages that are done and whose recorded outputs are still there with the same
sha256; a stage whose outputs went missing or changed is redone together with every stage downstream
of it, and ``redo`` asks for that on purpose. Work that is redone is set aside (renamed
``set-aside/<path>.stale-<time>``), never deleted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from auto_quantize_model.runs.plan import StageSpec
from auto_quantize_model.runs.provenance import utc_now
from auto_quantize_model.runs.run_root import RunRoot
from auto_quantize_model.runs.stage_runner import StageResult, load_run_state, run_stage, update_stage_record
from auto_quantize_model.utils.io import sha256_file


class PipelineError(RuntimeError):
    """A stage failed or a request names no stage of this run; the message says which and what to do."""


@dataclass
class PipelineOutcome:
    """What one call of :func:`run_pipeline` did."""

    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    redone: list[str] = field(default_factory=list)  # done stages rerun (missing/changed outputs, or asked)
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
    redo: Sequence[str] = (),
    stop_after: str | None = None,
    say: Callable[[str], None] = print,
) -> PipelineOutcome:
    """Run ``stages`` in order; raise :class:`PipelineError` naming the stage and its log when one fails."""
    if stop_after is not None and stop_after not in [stage.name for stage in stages]:
        raise PipelineError(f"--stop-after {stop_after}: not a stage of this run ({' '.join(s.name for s in stages)})")
    to_redo = stages_to_redo(run_root, stages, redo)
    outcome = PipelineOutcome()
    for stage in stages:
        upstream = next((need for need in stage.needs if need in outcome.ran), None)
        if stage.name not in to_redo and upstream and _is_done(run_root, stage.name):
            to_redo[stage.name] = f"its input stage {upstream} ran again"  # e.g. the summary after an added seed
        if stage.name in to_redo:
            say(f"redo: stage {stage.name} ({to_redo[stage.name]})")
            _set_aside(run_root, stage, say)
            outcome.redone.append(stage.name)
        result = run_stage(run_root, stage.name, list(stage.argv), outputs=list(stage.outputs))
        if not result.ok:
            raise PipelineError(_failure_message(run_root, stage, result))
        if result.status == "skipped":
            outcome.skipped.append(stage.name)
        else:
            outcome.ran.append(stage.name)
            _record_output_hashes(run_root, stage)
        if stage.name == stop_after:
            outcome.stopped_after = stage.name
            say(f"stopping after stage {stage.name} as asked (--stop-after); rerun without it to continue")
            break
    return outcome


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
            moved = run_root.set_aside_path(target, f"stale-{stamp}")
            moved.parent.mkdir(parents=True, exist_ok=True)
            target.rename(moved)
            say(f"  set aside {target} -> {moved}")
    update_stage_record(run_root, stage.name, status="failed", error=f"set aside for a redo at {stamp}")


def _record_output_hashes(run_root: RunRoot, stage: StageSpec) -> None:
    """Remember each output file's sha256, so a later rerun notices a deleted or replaced artifact."""
    hashes = {str(path): sha256_file(path) for path in stage.outputs if path.is_file()}
    if hashes:
        update_stage_record(run_root, stage.name, outputs_sha256=hashes)


def _failure_message(run_root: RunRoot, stage: StageSpec, result: StageResult) -> str:
    detail = f" ({result.message})" if result.message else ""
    return (
        f"pipeline stopped: stage {stage.name} failed with exit code {result.exit_code}{detail}. "
        f"Log: {run_root.stage_log(stage.name)}\n"
        "Fix the cause and rerun the same command: finished stages are kept and the run continues at this stage."
    )
