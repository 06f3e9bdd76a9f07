"""A real two-node Ray cluster on this machine: a head and a second node started with ``ray start``.

The second node alone has the custom resource ``trainer``; a profile that asks trainings for it
(``ray_train_resources: {trainer: 1}``) must run every training there and may run the rest anywhere.
Stage commands are the stand-ins of tests/runs/test_executors.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from runner_stand_ins import stand_in  # tests/ is on sys.path (pytest rootdir conftest)

from auto_quantize_model.pipeline import run_pipeline
from auto_quantize_model.runs.config import resolve_run_config
from auto_quantize_model.runs.executors import RAY_AGENT_TIMEOUT_ENV
from auto_quantize_model.runs.plan import plan_stages, uses_device
from auto_quantize_model.runs.run_root import RunRoot
from auto_quantize_model.runs.stage_runner import load_run_state

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow

RAY_CLI = str(Path(sys.executable).with_name("ray"))
# A cluster on one machine needs no token (Ray's token auth is for clusters across machines; see README).
CLUSTER_ENV = {**os.environ, **RAY_AGENT_TIMEOUT_ENV, "RAY_AUTH_MODE": "disabled"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ray_start(*args: str) -> None:
    done = subprocess.run([RAY_CLI, "start", "--disable-usage-stats", *args], env=CLUSTER_ENV, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-2000:]


@pytest.fixture()
def two_node_cluster(monkeypatch):
    """``ray start --head`` (1 CPU) plus ``ray start --address`` (1 CPU, resource ``trainer``); stopped after."""
    ray.shutdown()  # this process must connect to the cluster, not reuse another test's local instance
    port = _free_port()
    address = f"127.0.0.1:{port}"
    try:
        _ray_start("--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false")
        _ray_start(f"--address={address}", "--num-cpus=1", '--resources={"trainer": 1}')
        for name, value in CLUSTER_ENV.items():
            if name.startswith("RAY_"):
                monkeypatch.setenv(name, value)
        yield address
    finally:
        ray.shutdown()
        _stop_cluster(port)


def _cluster_pids(port: int) -> set[int]:
    """Processes of the cluster whose GCS listens on ``port``: every Ray process started with that address
    (``--gcs-address=<node ip>:<port>``; the GCS server ``--gcs_server_port=<port>``) and their children (the
    agents rename themselves, ``ray::DashboardAgent``, so only their parent tells whose they are)."""
    suffix, server = f":{port}".encode(), f"--gcs_server_port={port}".encode()
    matched, parents = set(), {}
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0") if proc.name.isdigit() else []
            parents[int(proc.name)] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) if argv else 0
        except (OSError, ValueError, IndexError):
            continue
        addresses = [a for a in argv if a.startswith((b"--gcs-address=", b"--gcs_address=", b"--address="))]
        if server in argv or any(a.endswith(suffix) for a in addresses):
            matched.add(int(proc.name))
    while children := {pid for pid, parent in parents.items() if parent in matched} - matched:
        matched |= children
    return matched


def _stop_cluster(port: int) -> None:
    """Stop this test's cluster only: ``ray stop --force`` would kill every Ray instance on the machine, a
    researcher's running job included."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _cluster_pids(port):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 10
        while _cluster_pids(port) and time.monotonic() < deadline:
            time.sleep(0.2)
    assert not _cluster_pids(port), "the test's Ray cluster left processes behind"
    # what `ray stop` also removes: the record of the last `ray start`, which ray.init() without an address reads
    current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
    with contextlib.suppress(FileNotFoundError):
        if current.read_text().strip().endswith(f":{port}"):
            current.unlink()


def test_trainings_run_on_the_node_with_the_trainer_resource(two_node_cluster, tmp_path) -> None:
    run_root, calls = RunRoot(tmp_path / "run"), tmp_path / "calls.txt"
    calls.with_suffix(".json").write_text(json.dumps({}))
    config = resolve_run_config(
        "demo",
        {
            "variants": "fp16,ptq-w8a16",
            "seeds": "0,1",
            "executor": "ray",
            "ray_address": two_node_cluster,
            "ray_train_resources": {"trainer": 1},
        },
    )
    stages = stand_in(plan_stages(run_root, config), calls)
    run_pipeline(run_root, stages, config=config)

    ray.init(address=two_node_cluster, log_to_driver=False, configure_logging=False)
    trainer_node = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("trainer"))
    records = load_run_state(run_root)["stages"]
    assert all(records[stage.name]["status"] == "done" for stage in stages)
    device_stages = [stage.name for stage in stages if uses_device(stage)]
    assert len(device_stages) == 4  # two FP trainings, two PTQ stages
    assert {records[name]["ray_node"] for name in device_stages} == {trainer_node}
