"""Stage tracking: run_stage tees, records, skips, refuses a busy stage and propagates exit codes."""

from __future__ import annotations

import fcntl
import io
import subprocess
import sys
from pathlib import Path

import pytest

from auto_quantize_model.runs.run_root import RunRoot
from auto_quantize_model.runs.stage_runner import StageBusy, load_run_state, run_stage, update_stage_record

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts" / "cv-models"
PY = sys.executable


# --------------------------------------------------------------------------------------------
# run_stage
# --------------------------------------------------------------------------------------------
def py(code: str) -> list[str]:
    return [PY, "-c", code]


def test_successful_stage_is_teed_and_recorded(tmp_path: Path) -> None:
    run_root = RunRoot(tmp_path / "run")
    stream = io.BytesIO()
    result = run_stage(
        run_root, "hello", py("import sys; print('to stdout'); print('to stderr', file=sys.stderr)"), stream=stream
    )
    assert (result.status, result.exit_code, result.attempt) == ("done", 0, 1)
    log = run_root.stage_log("hello").read_text()
    for text in (log, stream.getvalue().decode()):
        assert "to stdout" in text and "to stderr" in text and "stage hello, attempt 1 =====" in text
    record = load_run_state(run_root)["stages"]["hello"]
    assert record["status"] == "done" and record["exit_code"] == 0 and record["log"] == "logs/hello.log"
    assert record["command"][:2] == [PY, "-c"] and record["duration_s"] >= 0
    assert record["started_at"] <= record["ended_at"]


class ClosedTerminal(io.BytesIO):
    def write(self, data):  # like stdout piped into `head` after head exited
        raise BrokenPipeError(32, "Broken pipe")


def test_closed_terminal_does_not_fail_the_stage(tmp_path: Path) -> None:
    run_root = RunRoot(tmp_path / "run")
    result = run_stage(run_root, "quiet", py("print('x' * 200000)"), stream=ClosedTerminal())
    assert result.status == "done"
    assert "x" * 200000 in run_root.stage_log("quiet").read_text()


def test_log_keeps_the_last_state_of_each_progress_bar_and_the_terminal_every_redraw(tmp_path: Path) -> None:
    run_root = RunRoot(tmp_path / "run")
    bar = (
        "import sys\nfor i in range(1001): sys.stdout.write(f'\\rstep {i}/1000'); sys.stdout.flush()\n"
        "print(); print('end')"
    )
    stream = io.BytesIO()
    assert run_stage(run_root, "bar", py(bar), stream=stream).status == "done"
    log = run_root.stage_log("bar").read_text()
    assert "step 1000/1000\nend\n" in log and "step 999/" not in log
    assert stream.getvalue().count(b"\rstep ") == 1001


def test_done_stage_is_skipped_without_running_or_touching_anything(tmp_path: Path) -> None:
    run_root = RunRoot(tmp_path / "run")
    run_stage(run_root, "once", py("print('first')"), stream=io.BytesIO())
    before = (run_root.run_json.read_bytes(), run_root.stage_log("once").read_bytes())
    marker = tmp_path / "ran-again"
    stream = io.BytesIO()
    result = run_stage(run_root, "once", py(f"open({str(marker)!r}, 'w'); raise SystemExit(9)"), stream=stream)
    assert (result.status, result.exit_code) == ("skipped", 0)
    assert stream.getvalue().startswith(b"skip: stage once already done")
    assert not marker.exists()
    assert (run_root.run_json.read_bytes(), run_root.stage_log("once").read_bytes()) == before


def test_failure_is_recorded_propagated_and_a_retry_appends(tmp_path: Path) -> None:
    run_root = RunRoot(tmp_path / "run")
    failed = run_stage(run_root, "flaky", py("print('attempt one'); raise SystemExit(3)"), stream=io.BytesIO())
    assert (failed.status, failed.exit_code, failed.ok) == ("failed", 3, False)
    record = load_run_state(run_root)["stages"]["flaky"]
    assert (record["status"], record["exit_code"], record["attempts"]) == ("failed", 3, 1)

    retried = run_stage(run_root, "flaky", py("print('attempt two')"), stream=io.BytesIO())
    assert (retried.status, retried.attempt) == ("done", 2)
    log = run_root.stage_log("flaky").read_text()
    assert (
        log.index("attempt one")
        < log.index("stage flaky, attempt 2 (previous attempt failed)")
        < log.index("attempt two")
    )
    assert "failed, exit code 3" in log
    assert load_run_state(run_root)["stages"]["flaky"]["exit_code"] == 0


def test_zero_exit_without_declared_output_is_a_failure(tmp_path: Path) -> None:
    run_root = RunRoot(tmp_path / "run")
    wanted = tmp_path / "model.onnx"
    result = run_stage(run_root, "export", py("pass"), outputs=[wanted], stream=io.BytesIO())
    assert (result.status, result.exit_code) == ("failed", 1)
    record = load_run_state(run_root)["stages"]["export"]
    assert record["exit_code"] == 0 and record["error"] == f"exited 0 but did not write: {wanted}"
    wanted.write_bytes(b"x")
    assert run_stage(run_root, "export", py("pass"), outputs=[wanted], stream=io.BytesIO()).status == "done"


def test_missing_program_and_bad_stage_name(tmp_path: Path) -> None:
    run_root = RunRoot(tmp_path / "run")
    result = run_stage(run_root, "nothing", ["/no/such/program"], stream=io.BytesIO())
    assert (result.status, result.exit_code) == ("failed", 127)
    assert "cannot start '/no/such/program'" in run_root.stage_log("nothing").read_text()
    with pytest.raises(ValueError, match="invalid stage name"):
        run_stage(run_root, "../escape", py("pass"), stream=io.BytesIO())


def test_stage_running_elsewhere_is_refused_and_a_dead_run_is_resumed(tmp_path: Path) -> None:
    run_root = RunRoot(tmp_path / "run")
    update_stage_record(run_root, "train", status="running", attempts=1, pid=999999)
    with open(run_root.stage_log("train"), "ab") as held:  # another live process holds the log lock
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        with pytest.raises(StageBusy, match="already running"):
            run_stage(run_root, "train", py("pass"), stream=io.BytesIO())
    # Lock released: the "running" record belongs to a dead process; the stage runs again.
    result = run_stage(run_root, "train", py("pass"), stream=io.BytesIO())
    assert (result.status, result.attempt) == ("done", 2)
    assert "(previous attempt interrupted)" in run_root.stage_log("train").read_text()


def test_run_stage_cli_propagates_exit_code_and_names_the_log(tmp_path: Path) -> None:
    cli = [PY, str(SCRIPTS / "run_stage.py"), "--run-root", str(tmp_path / "r"), "--stage", "s", "--"]
    failed = subprocess.run([*cli, *py("print('out'); raise SystemExit(5)")], capture_output=True, text=True)
    assert failed.returncode == 5 and "out" in failed.stdout
    assert f"FAILED: stage s (exit code 5); log: {tmp_path / 'r' / 'logs' / 's.log'}" in failed.stderr
    ok = subprocess.run([*cli, *py("pass")], capture_output=True, text=True)
    skipped = subprocess.run([*cli, *py("raise SystemExit(1)")], capture_output=True, text=True)
    assert ok.returncode == 0 and skipped.returncode == 0 and skipped.stdout.startswith("skip: stage s already done")
    usage = subprocess.run(cli[:-1], capture_output=True, text=True)
    assert usage.returncode == 2 and "missing '--'" in usage.stderr
