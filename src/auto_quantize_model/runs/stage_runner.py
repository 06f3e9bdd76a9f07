"""Stage tracking in ``run.json``: run one stage's command, tee its output to its log, record the outcome.

:func:`run_stage` runs one command with its output teed to ``RunRoot.stage_log(stage)``, records
status, times, exit code, command, the sha256 of the inputs it was started on and of the outputs it
left, skips a stage that is already ``done`` and propagates a failing exit code. The runner
(:mod:`auto_quantize_model.pipeline`) takes the stage's lock itself (:func:`stage_lock`), decides
under it whether the stage is redone, and then calls :func:`run_locked_stage`.

``run.json`` schema (``schema_version`` 1)::

    {"schema_version": 1, "run_root": "/abs/R", "created_at": ISO, "updated_at": ISO,
     "stages": {"<stage>": {"status": "running|done|failed", "attempts": 2,
                            "started_at": ISO, "ended_at": ISO|null, "duration_s": float|null,
                            "exit_code": int|null, "command": [argv...],
                            "log": "logs/<stage>.log", "pid": int, "host": str,
                            "inputs_sha256": {input: sha256} (what the attempt was started on),
                            "outputs_sha256": {path: sha256} (files; a folder: its names/sizes/mtimes),
                            "error": str|null (set when it exited 0 without its outputs)}}}

Each attempt also writes its record to its log, as one ``##### record {json}`` line at the start and
one at the end (not shown on the terminal), so ``run.json`` can be rebuilt from the logs
(:mod:`auto_quantize_model.runs.repair`). The log keeps the last state of each progress bar, not
every redraw (the terminal gets them all).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from auto_quantize_model.runs.provenance import output_hashes, utc_now
from auto_quantize_model.runs.run_root import RunRoot
from auto_quantize_model.utils.io import read_json, write_json_atomic

RUN_JSON_SCHEMA_VERSION = 1
STAGE_STATUSES = ("running", "done", "failed")
PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h)
REBUILD_HINT = "rebuild it from the stage logs and outputs with the same runner command plus --repair"
LOG_RECORD_PREFIX = "##### record "  # a log line holding an attempt's record as JSON (see repair.py)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class StageBusy(RuntimeError):
    """Another process is running the same stage of the same run root."""


class RunStateError(ValueError):
    """``run.json`` cannot be read; the message names the file and how to rebuild it."""


# --------------------------------------------------------------------------------------------
# run.json
# --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _run_json_lock(run_root: RunRoot) -> Iterator[None]:
    """Serialize read-modify-write of ``run.json`` (flock on the logs folder, which always exists)."""
    run_root.logs_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_root.logs_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def load_run_state(run_root: RunRoot) -> dict[str, Any]:
    """``run.json`` as a dict; an empty state when the run root has none yet."""
    if not run_root.run_json.is_file():
        return {"schema_version": RUN_JSON_SCHEMA_VERSION, "run_root": str(run_root.root), "stages": {}}
    try:
        state = read_json(run_root.run_json)
    except ValueError as error:  # invalid JSON or UTF-8: a torn or hand-edited file
        cause = error.__cause__ or error
        raise RunStateError(f"{run_root.run_json}: not valid JSON ({cause}); {REBUILD_HINT}") from None
    if not isinstance(state, dict) or not isinstance(state.get("stages"), dict):
        raise RunStateError(f"{run_root.run_json}: expected an object with a 'stages' object; {REBUILD_HINT}")
    return state


def stage_record(run_root: RunRoot, stage: str) -> dict[str, Any] | None:
    """The ``run.json`` record of ``stage``, or ``None`` if it never ran."""
    return load_run_state(run_root)["stages"].get(stage)


def update_stage_record(run_root: RunRoot, stage: str, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into the stage's record and write ``run.json`` atomically; return the record."""
    _check_stage_name(stage)
    if "status" in fields and fields["status"] not in STAGE_STATUSES:
        raise ValueError(f"stage {stage}: status must be one of {', '.join(STAGE_STATUSES)}, not {fields['status']!r}")
    with _run_json_lock(run_root):
        state = load_run_state(run_root)
        now = utc_now()
        state.setdefault("created_at", now)
        state["updated_at"] = now
        record = state["stages"].setdefault(stage, {})
        record.update(fields)
        write_json_atomic(run_root.run_json, state)
    return record


# --------------------------------------------------------------------------------------------
# Running a stage
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StageResult:
    """What happened to one stage in this call."""

    stage: str
    status: str  # done | failed | skipped
    exit_code: int  # 0 for done and skipped; the command's code (or 1 for missing outputs) if failed
    log: Path
    attempt: int
    duration_s: float | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("done", "skipped")


def _check_stage_name(stage: str) -> None:
    # The name becomes a log file name and a run.json key.
    if not _NAME_RE.fullmatch(stage):
        raise ValueError(f"invalid stage name {stage!r}: use letters, digits, '.', '_' and '-'")


def _relative(path: Path, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(root))
    except ValueError:
        return str(path)


@contextlib.contextmanager
def stage_lock(run_root: RunRoot, stage: str) -> Iterator[BinaryIO]:
    """Hold the stage's exclusive lock (on its log, opened for appending) for the block; :class:`StageBusy` if held.

    Whoever holds it owns the stage's folder and record: a redo sets the old work aside only under it.
    """
    _check_stage_name(stage)
    log_path = run_root.stage_log(stage)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab")  # noqa: SIM115  (closed below, where a failing final flush must not raise)
    try:
        try:
            fcntl.flock(log.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StageBusy(
                f"stage {stage} is already running for this run root (its log {log_path} is locked); "
                "nothing was changed: wait for it to end, then rerun"
            ) from None
        yield log
    finally:
        with contextlib.suppress(OSError):  # bytes a full disk refused are already reported by _tee
            log.close()


class _LogLines:
    """Writes a child's output to the log, keeping only the last redraw of each ``\\r``-redrawn line.

    Progress bars redraw one line with ``\\r`` on every step; the log gets the line's final state
    once it ends (``\\n``), or whatever is pending when the stage ends.
    """

    def __init__(self, log: BinaryIO) -> None:
        self.log = log
        self.pending = b""

    def write(self, chunk: bytes) -> None:
        *lines, self.pending = (self.pending + chunk).split(b"\n")
        self.pending = _last_redraw(self.pending, keep_cr=True)
        if lines:
            self.log.write(b"".join(_last_redraw(line) + b"\n" for line in lines))
            self.log.flush()

    def close(self) -> None:
        if self.pending:
            self.log.write(_last_redraw(self.pending) + b"\n")
            self.log.flush()
            self.pending = b""


def _last_redraw(line: bytes, keep_cr: bool = False) -> bytes:
    """The text after the last ``\\r`` that is followed by something (``a\\rb\\r`` -> ``b``)."""
    parts = [part for part in line.split(b"\r") if part]
    last = parts[-1] if parts else b""
    return b"\r" + last if keep_cr and line.startswith(b"\r") and last else last


def _tee(source: BinaryIO, log: BinaryIO | None, out: BinaryIO | None) -> str | None:
    """Copy ``source`` to the log and to ``out`` as bytes arrive (``read1`` keeps progress bars live).

    A closed terminal (e.g. the runner piped into ``head``) must not kill the stage: ``out`` is
    dropped on a write error and the log keeps everything. A log that cannot be written (full
    disk, file-size limit, a broken pipe) is dropped the same way and the child keeps running
    (its checkpoints may still be fine); the one-line reason is returned so the stage is
    recorded failed rather than done with an incomplete log.
    """
    log_error = None
    lines = _LogLines(log) if log is not None else None
    while chunk := source.read1(65536):
        if lines is not None:
            try:
                lines.write(chunk)
            except OSError as error:
                log_error = _log_error(log, error)
                lines = None
        if out is not None:
            try:
                out.write(chunk)
                out.flush()
            except OSError:
                out = None
    if lines is not None:
        try:
            lines.close()
        except OSError as error:
            log_error = _log_error(log, error)
    return log_error


def _die_with_parent() -> None:
    """In the stage process (Linux): get SIGTERM when the process that started it dies.

    A killed runner or Ray worker releases the stage's log lock; without this its stage process would go on
    training, orphaned, beside the rerun that takes the lock next. Elsewhere this does nothing.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _log_error(log: BinaryIO, error: OSError) -> str:
    return (
        f"could not write its log {getattr(log, 'name', '?')} ({error.strerror or error}); "
        "output after that is not in the log"
    )


def _exit_code(returncode: int) -> int:
    """Shell convention: killed by signal N -> 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def _execute(
    argv: Sequence[str], log: BinaryIO, out: BinaryIO, env: Mapping[str, str] | None
) -> tuple[int, str | None]:
    """Run ``argv`` with stdout+stderr teed into ``log`` and ``out``.

    Return its exit code (127 if it cannot start) and why the log could not be written, if it could not.
    """
    child_env = dict(os.environ if env is None else env)
    child_env.setdefault("PYTHONUNBUFFERED", "1")  # so the log follows the child in real time
    try:
        proc = subprocess.Popen(
            list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=child_env, preexec_fn=_die_with_parent
        )
    except OSError as error:
        _emit(f"cannot start {argv[0]!r}: {error}\n", log, out)
        return 127, None
    try:
        log_error = _tee(proc.stdout, log, out)
        return _exit_code(proc.wait()), log_error
    except KeyboardInterrupt:
        # The child shares our process group and got the SIGINT too; give it time to stop cleanly.
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return 128 + signal.SIGINT, None
    finally:
        proc.stdout.close()


def report_skip(
    run_root: RunRoot, stage: str, record: Mapping[str, Any], outputs: Sequence[Path], out: BinaryIO | None = None
) -> StageResult:
    """A ``done`` stage is not rerun (its artifacts are final); say so, and warn about lost outputs."""
    out = out if out is not None else sys.stdout.buffer
    missing = [str(path) for path in outputs if not Path(path).exists()]
    message = f"skip: stage {stage} already done (finished {record.get('ended_at')})"
    if missing:
        message += f"; warning: its output(s) are missing now: {', '.join(missing)}"
    with contextlib.suppress(OSError):  # a closed terminal is no reason to fail
        out.write((message + "\n").encode())
        out.flush()
    return StageResult(stage, "skipped", 0, run_root.stage_log(stage), int(record.get("attempts", 1)), message=message)


def run_stage(
    run_root: RunRoot,
    stage: str,
    argv: Sequence[str],
    *,
    outputs: Sequence[Path] = (),
    inputs: Mapping[str, str] | None = None,
    stream: BinaryIO | None = None,
    env: Mapping[str, str] | None = None,
) -> StageResult:
    """Run ``argv`` as ``stage`` of ``run_root`` unless it is already ``done``.

    Output goes to ``stream`` (default: our stdout) and is appended to ``RunRoot.stage_log(stage)``
    under a header per attempt. ``outputs`` are files the stage must leave behind: a zero exit
    without them counts as a failure. ``inputs`` (``{input: sha256}``) is recorded as what the
    attempt started from. Raises :class:`StageBusy` if the stage runs elsewhere.
    """
    _check_stage_name(stage)
    record = stage_record(run_root, stage) or {}
    if record.get("status") == "done":
        return report_skip(run_root, stage, record, outputs, stream)
    with stage_lock(run_root, stage) as log:
        previous = stage_record(run_root, stage) or {}
        if previous.get("status") == "done":  # finished by another process meanwhile
            return report_skip(run_root, stage, previous, outputs, stream)
        return run_locked_stage(run_root, stage, argv, log, outputs=outputs, inputs=inputs, stream=stream, env=env)


def run_locked_stage(
    run_root: RunRoot,
    stage: str,
    argv: Sequence[str],
    log: BinaryIO,
    *,
    outputs: Sequence[Path] = (),
    inputs: Mapping[str, str] | None = None,
    stream: BinaryIO | None = None,
    env: Mapping[str, str] | None = None,
) -> StageResult:
    """Run one attempt of ``stage`` whatever its record says; the caller holds :func:`stage_lock` (``log``)."""
    if not argv:
        raise ValueError(f"stage {stage}: no command given")
    out = stream if stream is not None else sys.stdout.buffer
    argv = list(map(str, argv))
    previous = stage_record(run_root, stage) or {}
    attempt = _begin_attempt(run_root, stage, argv, previous, dict(inputs or {}), log, out)
    start = time.monotonic()
    exit_code, log_error = _execute(argv, log, out, env)
    duration = round(time.monotonic() - start, 3)
    return _finish_attempt(run_root, stage, attempt, exit_code, duration, outputs, log, out, log_error)


def _emit(text: str, log: BinaryIO, out: BinaryIO | None) -> None:
    """Write our own line (header, footer, error) to the log and the terminal (``None``: the log only)."""
    for sink in (log, out) if out is not None else (log,):
        with contextlib.suppress(OSError):  # see _tee: a closed terminal is not the stage's failure
            sink.write(text.encode())
            sink.flush()


def _log_record(log: BinaryIO, fields: Mapping[str, Any]) -> None:
    """The attempt's record as one log line, for rebuilding ``run.json`` from the logs (repair.py)."""
    _emit(LOG_RECORD_PREFIX + json.dumps(fields, default=str) + "\n", log, None)


def _begin_attempt(
    run_root: RunRoot,
    stage: str,
    argv: list[str],
    previous: Mapping[str, Any],
    inputs: dict[str, str],
    log: BinaryIO,
    out: BinaryIO,
) -> int:
    """Write the attempt header and mark the stage ``running``; return the attempt number."""
    attempt = int(previous.get("attempts", 0)) + 1
    started_at = utc_now()
    # "running" without the log lock held means that process died (killed, machine rebooted).
    state = {"running": "interrupted"}.get(previous.get("status"), previous.get("status"))
    note = f" (previous attempt {state})" if previous else ""
    _emit(f"===== [{started_at}] stage {stage}, attempt {attempt}{note} =====\n$ {shlex.join(argv)}\n", log, out)
    fields = {
        "status": "running",
        "attempts": attempt,
        "started_at": started_at,
        "ended_at": None,
        "duration_s": None,
        "exit_code": None,
        "command": argv,
        "log": _relative(run_root.stage_log(stage), run_root.root),
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "inputs_sha256": inputs,
        "outputs_sha256": {},
        "error": None,
    }
    _log_record(log, {"stage": stage, **fields})
    update_stage_record(run_root, stage, **fields)
    return attempt


def _finish_attempt(
    run_root: RunRoot,
    stage: str,
    attempt: int,
    exit_code: int,
    duration: float,
    outputs: Sequence[Path],
    log,
    out,
    log_error: str | None = None,
) -> StageResult:
    """Check the declared outputs, record done/failed with the outputs' sha256, write the footer; return the result."""
    missing = [str(p) for p in outputs if not Path(p).exists()] if exit_code == 0 else []
    error = log_error or (f"exited 0 but did not write: {', '.join(missing)}" if missing else None)
    status = "done" if exit_code == 0 and not error else "failed"
    fields = {
        "status": status,
        "ended_at": utc_now(),
        "duration_s": duration,
        "exit_code": exit_code,
        "error": error,
        "outputs_sha256": output_hashes(outputs) if status == "done" else {},
    }
    try:
        _log_record(log, {"stage": stage, "attempts": attempt, **fields})
        update_stage_record(run_root, stage, **fields)
    except OSError as record_error:  # e.g. the same full disk: run.json keeps "running", read later as interrupted
        status = "failed"
        error = f"{error + '; ' if error else ''}run.json not updated ({record_error.strerror or record_error})"
    footer = f"===== stage {stage}, attempt {attempt}: {status}, exit code {exit_code} after {duration:.1f} s"
    _emit(footer + (f" ({error})" if error else "") + " =====\n", log, out)
    returned = exit_code if exit_code else (0 if status == "done" else 1)
    return StageResult(stage, status, returned, run_root.stage_log(stage), attempt, duration, message=error or "")
