"""Runner faults a hostile user causes, each followed by the rerun that must end consistent (issue 26).

A second runner redoing a stage that is still running, a redo chain interrupted by --stop-after or a
kill -9, val images deleted after preparation, a lost best.pt, a torn run.json, a read-only run root, a
full disk while old outputs are set aside, Ctrl-C, a closed pipe, a typo in an Ultralytics argument.
Stage commands are stand-ins (tests/runner_stand_ins.py) where the real stage adds nothing to the fault;
the real CLIs and trainings go through the same faults in tests/test_runner_e2e.py.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from runner_stand_ins import ran, stand_in

from auto_quantize_model.pipeline import PipelineError, run_pipeline
from auto_quantize_model.runs.config import resolve_run_config, save_or_check_run_config
from auto_quantize_model.runs.plan import plan_stages
from auto_quantize_model.runs.run_root import RunRoot
from auto_quantize_model.runs.stage_runner import load_run_state

REPO = Path(__file__).resolve().parents[1]
RUNNER = REPO / "scripts" / "cv-models" / "run_pipeline.py"
VARIANTS = "fp16,qat-w4a16,ptq-w4a16,qat-w4a16-ft"

# A runner of stand-in stages in its own process (argv: run root, calls file, then --redo names).
STAND_IN_RUNNER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    from pathlib import Path
    from runner_stand_ins import stand_in
    from auto_quantize_model.pipeline import run_pipeline
    from auto_quantize_model.runs.config import resolve_run_config
    from auto_quantize_model.runs.plan import plan_stages
    from auto_quantize_model.runs.run_root import RunRoot

    run_root = RunRoot(sys.argv[1])
    config = resolve_run_config("demo", {{"variants": {variants!r}}})
    run_pipeline(run_root, stand_in(plan_stages(run_root, config), Path(sys.argv[2])), redo=sys.argv[3:])
    """
)


@pytest.fixture()
def finished(tmp_path: Path):
    """A finished stand-in run root with its run config saved as ``run_pipeline.py --profile demo --variants`` would."""
    run_root = RunRoot(tmp_path / "run")
    config = resolve_run_config("demo", {"variants": VARIANTS})
    save_or_check_run_config(run_root, config)
    stages = plan_stages(run_root, config)
    calls = tmp_path / "calls.txt"
    run_pipeline(run_root, stand_in(stages, calls))
    calls.unlink()
    return run_root, stages, calls


def downstream(stages, root: str) -> list[str]:
    """Every stage that depends on ``root``, directly or not, in plan order."""
    found = {root}
    for stage in stages:
        if set(stage.needs) & found:
            found.add(stage.name)
    return [stage.name for stage in stages if stage.name in found and stage.name != root]


def cli(run_root: RunRoot, *extra: str, **kwargs) -> subprocess.CompletedProcess:
    argv = [sys.executable, str(RUNNER), "--profile", "demo", "--variants", VARIANTS, "--run-root", str(run_root.root)]
    return subprocess.run([*argv, *extra], capture_output=True, text=True, timeout=600, **kwargs)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def stand_in_runner(tmp_path: Path, run_root: RunRoot, calls: Path, *redo: str, **env: str) -> subprocess.Popen:
    script = tmp_path / "stand_in_runner.py"
    script.write_text(STAND_IN_RUNNER.format(tests=str(REPO / "tests"), variants=VARIANTS))
    argv = [sys.executable, str(script), str(run_root.root), str(calls), *redo]
    out = open(tmp_path / "runner.out", "w")  # noqa: SIM115  (the child owns it)
    return subprocess.Popen(
        argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env}, start_new_session=True
    )


def wait_for_log(run_root: RunRoot, stage: str, text: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    log = run_root.stage_log(stage)
    while not (log.is_file() and text in log.read_text()):
        assert proc.poll() is None and time.monotonic() < deadline, f"{stage} never logged {text!r}"
        time.sleep(0.05)


# --------------------------------------------------------------------------------------------
# 1. A redo from a second runner never touches a stage that is running
# --------------------------------------------------------------------------------------------
def test_redo_of_a_running_stage_is_refused_with_75_and_nothing_touched(finished, tmp_path):
    run_root, stages, calls = finished
    stage = "s0-train-qat-w4a16"
    release = tmp_path / "release"
    first = stand_in_runner(
        tmp_path, run_root, calls, stage, WAIT_STAGE=stage, WAIT_FILE=str(release), STAND_IN_VERSION="2"
    )
    try:
        wait_for_log(run_root, stage, "waiting now", first)
        workdir = run_root.seed(0).train_run("qat-w4a16").dir
        before = sorted(p.name for p in workdir.parent.iterdir())

        second = cli(run_root, "--redo", stage)

        assert second.returncode == 75, second.stderr
        assert "already running" in one_line_error(second) and "nothing was changed" in second.stderr
        assert sorted(p.name for p in workdir.parent.iterdir()) == before, second.stdout  # nothing renamed
        assert load_run_state(run_root)["stages"][stage]["status"] == "running"  # the live record is intact
    finally:
        release.touch()
        assert first.wait(timeout=300) == 0
    assert load_run_state(run_root)["stages"][stage]["status"] == "done"


# --------------------------------------------------------------------------------------------
# 2. An interrupted redo chain: dependents are redone on the next plain run, from the records alone
# --------------------------------------------------------------------------------------------
def test_redo_stopped_after_the_upstream_stage_redoes_exactly_its_downstream_next(finished, monkeypatch):
    run_root, stages, calls = finished
    monkeypatch.setenv("STAND_IN_VERSION", "2")  # the retrained model differs from the old one
    run_pipeline(run_root, stand_in(stages, calls), redo=["s0-train-fp16"], stop_after="s0-train-fp16")
    calls.unlink()

    outcome = run_pipeline(run_root, stand_in(stages, calls))

    expected = downstream(stages, "s0-train-fp16")
    assert ran(calls) == expected and outcome.redone == expected
    assert {"s0-eval-fp16-float32", "s0-train-qat-w4a16-ft", "summary"} <= set(expected)
    assert "s0-train-qat-w4a16" not in expected  # from scratch: built from nothing fp16 holds
    records = load_run_state(run_root)["stages"]
    checkpoint = next(stage for stage in stages if stage.name == "s0-train-fp16").outputs[0]
    trained = records["s0-train-fp16"]["outputs_sha256"][str(checkpoint)]
    assert records["s0-export-fp16-float32"]["inputs_sha256"]["s0-train-fp16"] == trained


def test_kill_9_between_an_upstream_stage_and_its_dependents_leaves_nothing_stale(finished, tmp_path):
    run_root, stages, calls = finished
    waiting = "s0-export-fp16-float32"  # the first dependent: killed while it runs
    first = stand_in_runner(
        tmp_path, run_root, calls, "s0-train-fp16", WAIT_STAGE=waiting, WAIT_FILE=str(tmp_path / "never"),
        STAND_IN_VERSION="2",
    )  # fmt: skip
    wait_for_log(run_root, waiting, "waiting now", first)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    calls.unlink()

    run_pipeline(run_root, stand_in(stages, calls))

    assert ran(calls) == downstream(stages, "s0-train-fp16")
    assert all(record["status"] == "done" for record in load_run_state(run_root)["stages"].values())


# --------------------------------------------------------------------------------------------
# 3. The val set changed after preparation
# --------------------------------------------------------------------------------------------
def test_deleted_val_images_are_noticed_and_prepare_data_restores_them(finished, capsys):
    run_root, stages, calls = finished
    for name in ("0.jpg", "1.jpg"):
        (run_root.val_images_dir / name).unlink()

    run_pipeline(run_root, stand_in(stages, calls))

    assert "val images: 2 of 4 missing or unreadable" in capsys.readouterr().out
    assert ran(calls) == ["prepare-data"]  # the same images linked again: everything built on them still holds
    assert sorted(p.name for p in run_root.val_images_dir.iterdir()) == ["0.jpg", "1.jpg", "2.jpg", "3.jpg"]


def test_changed_source_images_redo_everything_built_on_the_dataset(finished):
    run_root, stages, calls = finished
    (calls.parent / "source-images" / "2.jpg").write_bytes(b"another image")  # the link now reads other bytes

    run_pipeline(run_root, stand_in(stages, calls))

    assert ran(calls) == ["prepare-data", *downstream(stages, "prepare-data")]


def test_val_images_deleted_during_a_run_stop_the_next_evaluation(finished, tmp_path):
    run_root, stages, calls = finished
    release = tmp_path / "release"
    waiting = "s0-export-fp16-float32"
    runner = stand_in_runner(
        tmp_path, run_root, calls, waiting, WAIT_STAGE=waiting, WAIT_FILE=str(release), STAND_IN_VERSION="2"
    )
    wait_for_log(run_root, waiting, "waiting now", runner)
    (run_root.val_images_dir / "3.jpg").unlink()
    release.touch()

    assert runner.wait(timeout=300) != 0
    out = (tmp_path / "runner.out").read_text()
    assert "stage s0-eval-fp16-float32 not started: its input stage prepare-data is not usable now" in out
    assert "val images: 1 of 4 missing" in out
    assert "s0-eval-fp16-float32" not in ran(calls)


# --------------------------------------------------------------------------------------------
# 4. A training that lost only best.pt is finished in place, not set aside; a lost last.pt is retrained
# --------------------------------------------------------------------------------------------
def test_lost_best_pt_beside_last_pt_reruns_the_training_in_its_folder(tmp_path, capsys):
    run_root = RunRoot(tmp_path / "run")
    config = resolve_run_config("demo", {"checkpoint_policy": "best-on-selection", "selection_images": 8})
    stages, calls = plan_stages(run_root, config), tmp_path / "calls.txt"
    run_pipeline(run_root, stand_in(stages, calls))
    paths = run_root.seed(0).train_run("qat-w4a16")
    paths.last.write_bytes(b"the final epoch, as a finished training leaves it")
    paths.best.unlink()
    calls.unlink()

    run_pipeline(run_root, stand_in(stages, calls))

    assert ran(calls)[0] == "s0-train-qat-w4a16" and not run_root.set_aside_dir.exists()
    assert "rerunning the stage finishes it from what it saved" in capsys.readouterr().out


def test_lost_last_pt_under_the_last_policy_sets_the_training_aside(finished, capsys):
    run_root, stages, calls = finished
    paths = run_root.seed(0).train_run("qat-w4a16")
    paths.last.unlink()  # the scored checkpoint: best.pt is not the final epoch, nothing to finish from

    run_pipeline(run_root, stand_in(stages, calls))

    assert ran(calls)[0] == "s0-train-qat-w4a16" and paths.last.is_file()
    assert list((run_root.set_aside_dir / "seed-0").glob("qat-w4a16.stale-*"))


# --------------------------------------------------------------------------------------------
# 6. One-line errors: torn run.json (+ --repair), read-only run root, full disk while setting aside
# --------------------------------------------------------------------------------------------
def test_torn_run_json_is_one_line_and_repair_rebuilds_it_from_the_logs(finished):
    run_root, stages, calls = finished
    before = load_run_state(run_root)["stages"]
    lines = run_root.run_json.read_text().splitlines(keepends=True)
    run_root.run_json.write_text("".join(lines[:38]))

    torn = cli(run_root)
    assert torn.returncode == 2
    line = one_line_error(torn)
    assert "run.json: not valid JSON" in line and line.endswith("--repair")

    repaired = cli(run_root, "--repair")
    assert repaired.returncode == 0, repaired.stderr
    after = load_run_state(run_root)["stages"]
    for name, record in before.items():
        for key in ("status", "attempts", "inputs_sha256", "outputs_sha256", "command"):
            assert after[name][key] == record[key], (name, key)
    assert len(list(run_root.set_aside_dir.glob("run.json.corrupt-*"))) == 1  # kept, not deleted
    run_pipeline(run_root, stand_in(stages, calls))
    assert ran(calls) == []


@pytest.fixture()
def read_only(finished):
    """The run root made read-only: immutable for root (who ignores modes), mode 555 for anyone else."""
    run_root = finished[0]
    as_root = os.geteuid() == 0
    if as_root:
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(run_root.root)]).returncode:
            pytest.skip("running as root on a file system without chattr +i: no way to make a folder read-only")
    else:
        run_root.root.chmod(0o555)
    yield finished
    if as_root:
        subprocess.run(["chattr", "-i", str(run_root.root)], check=True)
    else:
        run_root.root.chmod(0o755)


def test_read_only_run_root_is_one_line_and_nothing_moves(read_only):
    run_root, stages, calls = read_only
    eval_dir = run_root.seed(0).eval_dir("fp16", "float32")

    proc = cli(run_root, "--redo", "s0-eval-fp16-float32")

    assert proc.returncode == 2 and f"cannot write in {run_root.root}" in one_line_error(proc)
    assert eval_dir.is_dir() and load_run_state(run_root)["stages"]["s0-eval-fp16-float32"]["status"] == "done"


def _file_size_limit(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_full_disk_while_a_redo_sets_aside_is_one_line_and_the_stage_stays_done(finished):
    run_root, stages, calls = finished
    eval_dir = run_root.seed(0).eval_dir("fp16", "float32")
    limit = run_root.run_json.stat().st_size // 2  # run.json can be read but not rewritten

    proc = cli(run_root, "--redo", "s0-eval-fp16-float32", preexec_fn=_file_size_limit(limit))

    assert proc.returncode == 2 and "File too large" in one_line_error(proc)
    assert eval_dir.is_dir() and not run_root.set_aside_dir.exists()  # the record goes first: nothing moved
    assert load_run_state(run_root)["stages"]["s0-eval-fp16-float32"]["status"] == "done"


# --------------------------------------------------------------------------------------------
# Issue 24: Ctrl-C, a closed pipe, --help, an Ultralytics argument typo
# --------------------------------------------------------------------------------------------
def test_ctrl_c_during_a_stage_exits_130_and_records_it(tmp_path):
    run_root = RunRoot(tmp_path / "run")
    argv = [sys.executable, str(RUNNER), "--profile", "demo", "--run-root", str(run_root.root)]
    slow = ["--set", "synthetic_train=4000", "--set", "synthetic_val=8"]  # a first stage that takes a while
    proc = subprocess.Popen([*argv, *slow], stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    wait_for_log(run_root, "make-synthetic-data", "attempt 1", proc)
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends: the whole foreground process group
    _, stderr = proc.communicate(timeout=120)

    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr.decode() and "interrupted" in stderr.decode()
    record = load_run_state(run_root)["stages"]["make-synthetic-data"]
    assert record["status"] == "failed" and record["exit_code"] == 130


def test_list_stages_into_a_closed_pipe_and_help_have_no_traceback(tmp_path):
    argv = [sys.executable, str(RUNNER), "--profile", "demo", "--run-root", str(tmp_path / "r"), "--list-stages"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # `| head` that already exited
    stderr = proc.stderr.read().decode()
    assert proc.wait() == 141 and stderr == ""  # quiet, with the status a shell reports for SIGPIPE
    stage_cli = REPO / "scripts" / "cv-models" / "run_stage.py"
    help_text = subprocess.run([sys.executable, str(stage_cli), "--help"], capture_output=True, text=True)
    assert help_text.returncode == 0 and "-- CMD" in help_text.stdout


def test_ultralytics_argument_typo_is_refused_before_anything_is_written(tmp_path):
    root = tmp_path / "run"
    argv = [sys.executable, str(RUNNER), "--profile", "demo", "--run-root", str(root)]
    typo = subprocess.run([*argv, "--train-arg", "close_mosiac=10"], capture_output=True, text=True)
    assert typo.returncode == 2 and not root.exists()
    line = one_line_error(typo)
    assert "close_mosiac is not an Ultralytics argument" in line and "did you mean close_mosaic" in line

    fixed = subprocess.run(
        [*argv, "--train-arg", "close_mosaic=10", "--set", "synthetic_train=4", "--stop-after", "make-synthetic-data"],
        capture_output=True,
        text=True,
    )
    assert fixed.returncode == 0, fixed.stderr
    assert "close_mosaic=10" in RunRoot(root).run_config.read_text()


def test_a_changed_config_replaces_the_saved_one_only_while_nothing_was_built(finished):
    run_root, stages, calls = finished
    refused = cli(run_root, "--set", "eval_max_images=5", "--stop-after", "prepare-data")
    assert refused.returncode == 2 and "different settings" in refused.stderr

    fresh = RunRoot(run_root.root.parent / "fresh")
    save_or_check_run_config(fresh, resolve_run_config("demo", {"variants": VARIANTS}))  # saved, nothing ran
    accepted = cli(fresh, "--set", "eval_max_images=5", "--stop-after", "make-synthetic-data", "--set",
                   "synthetic_train=4")  # fmt: skip
    assert accepted.returncode == 0, accepted.stderr
    assert "eval_max_images: 5" in fresh.run_config.read_text()


def test_unknown_redo_stage_is_a_bad_request(finished):
    run_root, stages, calls = finished
    with pytest.raises(PipelineError, match="not a stage of this run") as error:
        run_pipeline(run_root, stand_in(stages, calls), redo=["s9-train-fp16"])
    assert error.value.exit_code == 2
    assert json.loads(run_root.run_json.read_text())["stages"]["summary"]["status"] == "done"
