"""The stage graph on a real Ray instance: the same records as the local executor, overlap, failure isolation.

Every stage's command is replaced by a small Python call that writes the stage's declared outputs (the same
stand-in as tests/test_pipeline.py), so these tests exercise the executors; tests/test_ray_runner.py runs the
real CLIs on Ray.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import pytest
from runner_stand_ins import stand_in  # tests/ is on sys.path (pytest rootdir conftest)

from auto_quantize_model.pipeline import PipelineError, run_pipeline
from auto_quantize_model.runs.config import resolve_run_config
from auto_quantize_model.runs.executors import (
    RAY_AGENT_TIMEOUT_ENV,
    ExecutorError,
    check_resources,
    stage_resources,
    thread_env,
)
from auto_quantize_model.runs.plan import plan_stages
from auto_quantize_model.runs.run_root import RunRoot
from auto_quantize_model.runs.stage_runner import load_run_state

ray = pytest.importorskip("ray")


def control(calls: Path, **settings) -> None:
    """Steer the stand-ins of this run (Ray's workers do not see environment changes made after they start)."""
    calls.with_suffix(".json").write_text(json.dumps(settings))


def calls_of(calls: Path) -> dict[str, str]:
    """``{stage: the OMP_NUM_THREADS its process got}`` for every stand-in that ran."""
    threads = calls.with_suffix(".threads")
    return dict(line.split() for line in threads.read_text().splitlines()) if threads.exists() else {}


@pytest.fixture(scope="module")
def local_ray():
    """One real local Ray instance (2 CPUs) for the module; the executor reuses an initialised Ray."""
    for name, value in RAY_AGENT_TIMEOUT_ENV.items():
        os.environ.setdefault(name, value)
    for attempt in range(3):  # Ray gives its node 30 s to register; a heavily loaded 2-core machine can miss that
        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
            break
        except Exception:  # Ray raises a bare Exception for "node timed out during startup"
            ray.shutdown()
            if attempt == 2:
                raise
    yield ray
    ray.shutdown()


def ray_config(**sets):
    overrides = {"variants": "fp16,qat-w4a16", "seeds": "0,1", "executor": "ray", "stage_threads": 1, **sets}
    return resolve_run_config("demo", overrides)


def _times(record) -> tuple[datetime, datetime]:
    return datetime.fromisoformat(record["started_at"]), datetime.fromisoformat(record["ended_at"])


def test_ray_runs_every_stage_once_with_the_same_records_and_overlapping_trainings(local_ray, tmp_path) -> None:
    run_root, calls = RunRoot(tmp_path / "run"), tmp_path / "calls.txt"
    config = ray_config()
    stages = stand_in(plan_stages(run_root, config), calls)
    control(calls, train_sleep_s=4)
    outcome = run_pipeline(run_root, stages, config=config)
    assert sorted(outcome.ran) == sorted(stage.name for stage in stages)
    records = load_run_state(run_root)["stages"]
    assert all(records[stage.name]["status"] == "done" for stage in stages)
    assert all(records[stage.name]["outputs_sha256"] for stage in stages if stage.outputs)
    assert all(records[stage.name].get("ray_node") for stage in stages)  # which node ran it is recorded
    assert set(calls_of(calls).values()) == {"1"}  # every stage process got the explicit thread count
    # The four trainings need nothing of each other: Ray runs two at a time (2 CPUs, 1 per training).
    trainings = [_times(records[stage.name]) for stage in stages if "-train-" in stage.name]
    overlapping = [(a, b) for i, a in enumerate(trainings) for b in trainings[i + 1 :] if a[0] < b[1] and b[0] < a[1]]
    assert len(trainings) == 4 and len(overlapping) >= 2, trainings
    # Needs are respected: nothing started before what it needs had ended.
    for stage in stages:
        for need in stage.needs:
            assert _times(records[need])[1] <= _times(records[stage.name])[0], (need, stage.name)


def test_ray_failure_stops_only_its_dependents_and_either_executor_resumes(local_ray, tmp_path) -> None:
    run_root, calls = RunRoot(tmp_path / "run"), tmp_path / "calls.txt"
    config = ray_config()
    stages = stand_in(plan_stages(run_root, config), calls)
    control(calls, fail="s0-train-qat-w4a16")
    with pytest.raises(PipelineError, match=r"1 stage\(s\) failed:\n  s0-train-qat-w4a16: exit code 3") as failure:
        run_pipeline(run_root, stages, config=config)
    assert "s0-export-qat-w4a16-qcdq" in str(failure.value) and "summary" in str(failure.value)
    ran = set(calls_of(calls))
    assert {"s1-eval-qat-w4a16-int4", "s0-eval-fp16-float16"} <= ran  # independent chains ran to the end
    assert not any(name.startswith("s0-export-qat-w4a16") for name in ran)
    control(calls)
    calls.with_suffix(".threads").unlink()
    local = {**config, "executor": "local"}
    outcome = run_pipeline(run_root, stages, config=local)  # the other executor picks up what is left
    left = {stage.name for stage in stages if stage.name.startswith("s0-") and "qat-w4a16" in stage.name}
    assert set(calls_of(calls)) == left | {"s0-latency", "summary"}  # the latency stage needs every s0 export
    assert "s1-train-fp16" in outcome.skipped


def test_a_resource_no_node_has_is_refused_before_anything_runs(local_ray, tmp_path) -> None:
    config = ray_config(ray_train_resources={"trainer": 1})
    stages = plan_stages(RunRoot(tmp_path / "run"), config)
    with pytest.raises(ExecutorError, match=r"stage s0-train-fp16 needs .*'trainer': 1.*no node of the Ray cluster"):
        check_resources(ray, stages, config)


def test_trainings_ask_for_a_gpu_on_cuda_and_the_rest_for_one_cpu(tmp_path) -> None:
    config = resolve_run_config("demo", {"device": "0", "ray_train_cpus": 4, "ray_train_resources": {"trainer": 1}})
    by_name = {stage.name: stage for stage in plan_stages(RunRoot(tmp_path), config)}
    assert stage_resources(by_name["s0-train-fp16"], config) == {
        "num_cpus": 4,
        "num_gpus": 1,
        "resources": {"trainer": 1},
    }
    assert stage_resources(by_name["s0-eval-fp16-float32"], config) == {"num_cpus": 1, "num_gpus": 0, "resources": {}}
    assert thread_env(2)["OMP_NUM_THREADS"] == "2" and thread_env(None) == {}


def test_the_lock_probe_tells_a_shared_lock_from_a_per_host_one_and_a_missing_root(tmp_path) -> None:
    from auto_quantize_model.runs.executors import _try_lock, held_lock

    probe = tmp_path / ".lock-probe"
    with held_lock(probe):
        assert _try_lock(str(probe)) == "held elsewhere"  # what every node of a safe cluster must answer
    assert _try_lock(str(probe)).startswith("not held")  # what a node answers when locks do not cross hosts
    assert "not on a filesystem this node shares" in _try_lock(str(tmp_path / "absent" / ".lock-probe"))


def test_without_an_address_the_runner_starts_its_own_ray_not_the_last_ray_start(tmp_path) -> None:
    """A recorded `ray start` cluster (here a dead one) is not joined: ray.init(address=None) would wait on it."""
    current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
    if current.exists():
        pytest.skip(f"{current} records a `ray start` cluster on this machine; the test leaves it alone")
    with socket.socket() as sock:  # a port nothing listens on once the socket is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    current.parent.mkdir(exist_ok=True)
    current.write_text(f"127.0.0.1:{port}")
    code = "from auto_quantize_model.runs.executors import ray_session\n"
    code += "with ray_session(None) as ray: print(ray.nodes())"
    env = {name: value for name, value in os.environ.items() if name != "RAY_ADDRESS"}
    try:
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180)
    finally:
        current.unlink(missing_ok=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "'Alive': True" in done.stdout and f":{port}" not in done.stdout
