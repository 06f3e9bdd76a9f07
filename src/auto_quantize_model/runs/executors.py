"""Executors of a stage plan: in order in this process (``local``), or as Ray tasks (``ray``).

Both run the same per-stage function (the runner's: skip, redo, set aside, run the stage's CLI through the
stage wrapper, record its outputs), so a stage's log, ``run.json`` record and output hashes do not depend on
the executor; only the order and the overlap do. A stage whose needs failed is not run (``blocked``); every
independent chain runs to its end, and the runner names every failed stage afterwards.

Ray (:func:`run_on_ray`) is imported here only, and only when asked for. Each stage becomes one task that
starts once the tasks of its ``needs`` have returned; it asks Ray for what the stage needs
(:func:`stage_resources`): a CUDA training one GPU, a CPU training ``ray_train_cpus`` CPUs, every training the
custom resources in ``ray_train_resources`` (e.g. ``{trainer: 1}`` pins them to nodes started with that
resource), any other stage one CPU. Each stage process gets an explicit thread count (:func:`thread_env`,
profile key ``stage_threads``) with either executor, so a stage's numbers do not depend on where it ran.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auto_quantize_model.runs.plan import StageSpec, uses_device
from auto_quantize_model.utils.errors import first_line

EXECUTORS = ("local", "ray")
# Stage status after an executor ran it: ran, skipped (already done), failed, blocked (a need did not finish).
FINISHED = ("ran", "skipped")
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
STAGE_THREADS_ENV = "AQM_STAGE_THREADS"  # read by the trainer callback and the evaluator (torch / ORT threads)
RAY_NAMESPACE = "auto-quantize-model"
# Ray's raylet gives each node's agent 30 s to start, then aborts; on a loaded 2-core machine the agent took 30 s
# alone (measured), so a node started here waits up to 3 minutes.
RAY_AGENT_TIMEOUT_ENV = {"RAY_agent_register_timeout_ms": "180000"}
# The execution keys of a run config when a caller gives none (the profiles name all of them).
LOCAL_EXECUTION = {
    "executor": "local",
    "ray_address": None,
    "stage_threads": None,
    "ray_train_cpus": 1,
    "ray_train_resources": {},
    "device": "cpu",
}


class ExecutorError(RuntimeError):
    """The executor cannot start (Ray missing, no cluster at the address, resources no node has)."""


@dataclass(frozen=True)
class StageReport:
    """What happened to one stage under an executor."""

    name: str
    status: str  # one of FINISHED, "failed", "busy" (running elsewhere), "interrupted" (Ctrl-C) or "blocked"
    message: str = ""
    log: str = ""
    node: str = ""  # the Ray node id that ran it ("" locally)
    duration_s: float | None = None
    redone: bool = False  # its earlier work was set aside and redone
    exit_code: int = 0

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


# A per-stage function: (stage, reports of its needs) -> its report. Must be picklable by reference for Ray
# (a module-level function, or functools.partial of one).
StageTask = Callable[[StageSpec, Sequence[StageReport]], StageReport]


@dataclass
class ExecutionResult:
    """Every stage's report, in plan order."""

    reports: list[StageReport] = field(default_factory=list)

    def with_status(self, *statuses: str) -> list[StageReport]:
        return [report for report in self.reports if report.status in statuses]


def blocked_report(stage: StageSpec, upstream: Sequence[StageReport]) -> StageReport | None:
    """The report of a stage that must not run because a stage it needs did not finish, else ``None``."""
    failed = [report.name for report in upstream if not report.finished]
    if not failed:
        return None
    return StageReport(stage.name, "blocked", f"not run: stage(s) it needs did not finish: {', '.join(failed)}")


# --------------------------------------------------------------------------------------------
# Threads and resources
# --------------------------------------------------------------------------------------------
def stage_threads(config: Mapping[str, Any], stage: StageSpec) -> int | None:
    """Threads of one stage process: ``stage_threads``, else (Ray) the CPUs its task holds, else unset."""
    if config["stage_threads"] is not None:
        return int(config["stage_threads"])
    if config["executor"] == "ray":
        return max(1, int(stage_resources(stage, config)["num_cpus"]))
    return None


def thread_env(threads: int | None) -> dict[str, str]:
    """Environment entries that fix a stage process's thread count (empty: the libraries' own defaults)."""
    if threads is None:
        return {}
    return {**{name: str(threads) for name in THREAD_ENV_VARS}, STAGE_THREADS_ENV: str(threads)}


def stage_resources(stage: StageSpec, config: Mapping[str, Any]) -> dict[str, Any]:
    """Ray resource request of one stage (``num_cpus``, ``num_gpus``, ``resources``)."""
    if not uses_device(stage):
        return {"num_cpus": 1, "num_gpus": 0, "resources": {}}
    on_cuda = str(config["device"]) not in ("cpu", "mps")
    return {
        "num_cpus": config["ray_train_cpus"],
        "num_gpus": 1 if on_cuda else 0,
        "resources": dict(config["ray_train_resources"]),
    }


# --------------------------------------------------------------------------------------------
# Local: in plan order, in this process
# --------------------------------------------------------------------------------------------
def run_locally(
    stages: Sequence[StageSpec],
    task: StageTask,
    on_report: Callable[[StageReport], None],
    stop_after: str | None,
    on_start: Callable[[StageSpec], None] = lambda stage: None,
) -> ExecutionResult:
    """Run ``stages`` one after another; a failure blocks only what depends on it, Ctrl-C stops them all."""
    result, by_name = ExecutionResult(), {}
    for stage in stages:
        upstream = [by_name[name] for name in stage.needs if name in by_name]
        report = blocked_report(stage, upstream)
        if report is None:
            on_start(stage)
            report = task(stage, upstream)
        by_name[stage.name] = report
        result.reports.append(report)
        on_report(report)
        if stage.name == stop_after or report.status == "interrupted":
            break
    return result


# --------------------------------------------------------------------------------------------
# Ray
# --------------------------------------------------------------------------------------------
def _ray_task(task: StageTask, stage: StageSpec, *upstream: StageReport) -> StageReport:
    """Body of one Ray task: Ray passes the needs' reports once their tasks returned."""
    import ray

    report = blocked_report(stage, upstream) or task(stage, upstream)
    return dataclasses.replace(report, node=ray.get_runtime_context().get_node_id())


@contextlib.contextmanager
def ray_session(address: str | None) -> Iterator[Any]:
    """Connect to the Ray cluster at ``address`` (or ``RAY_ADDRESS``), else start a local instance of our own."""
    try:
        import ray
    except ImportError as error:
        raise ExecutorError(
            "executor 'ray' needs Ray: install the pinned version (pip install -r requirements.txt, or the "
            "package's [ray] extra)"
        ) from error
    started_here = not ray.is_initialized()
    if started_here:
        for name, value in RAY_AGENT_TIMEOUT_ENV.items():
            os.environ.setdefault(name, value)
        # ray.init(address=None) would attach to whatever cluster `ray start` last recorded on this machine (even a
        # dead one, and then wait for it); null means a local instance of the runner's own.
        target = address or os.environ.get("RAY_ADDRESS") or "local"
        try:
            ray.init(
                address=target,
                namespace=RAY_NAMESPACE,
                include_dashboard=False,
                log_to_driver=False,  # each stage's output is in its own log; the runner prints one line per stage
                configure_logging=False,
            )
        except ConnectionError as error:
            raise ExecutorError(f"cannot connect to the Ray cluster at {target!r} ({error}); start it first") from error
        except Exception as error:  # Ray raises a bare Exception when its node does not come up in 30 s
            ray.shutdown()
            raise ExecutorError(
                f"Ray did not start ({first_line(error)}); on a loaded machine start it once with `ray start --head` "
                "and pass --ray-address auto (or set RAY_ADDRESS)"
            ) from error
    try:
        yield ray
    finally:
        if started_here:
            ray.shutdown()


def check_resources(ray: Any, stages: Sequence[StageSpec], config: Mapping[str, Any]) -> None:
    """Refuse a plan whose stages ask for resources no node of the cluster has (Ray would wait forever)."""
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    for stage in stages:
        want = stage_resources(stage, config)
        need = {"CPU": want["num_cpus"], "GPU": want["num_gpus"], **want["resources"]}
        need = {key: value for key, value in need.items() if value}
        if not any(all(node.get(key, 0) >= value for key, value in need.items()) for node in nodes):
            have = [{key: value for key, value in node.items() if not key.startswith("node:")} for node in nodes]
            raise ExecutorError(
                f"stage {stage.name} needs {need}, which no node of the Ray cluster has (nodes: {have}); "
                "start a node with those resources, or change ray_train_cpus / ray_train_resources / device"
            )


# --------------------------------------------------------------------------------------------
# Locks on the run root, from every node
# --------------------------------------------------------------------------------------------
LOCK_PROBE = ".lock-probe"


def _try_lock(probe: str) -> str:
    """On a node: ``"held elsewhere"`` when another process holds ``probe``'s flock, else what went wrong."""
    import errno
    import fcntl

    try:
        fd = os.open(probe, os.O_RDWR)
    except OSError as error:
        return f"cannot open {probe} ({error.strerror}): the run root is not on a filesystem this node shares"
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        return "held elsewhere" if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN) else f"flock fails ({error})"
    finally:
        os.close(fd)
    return "not held: flock on this filesystem is not shared between hosts"


@contextlib.contextmanager
def held_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``path``; refuse (ExecutorError) a filesystem where flock does not work."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            raise ExecutorError(
                f"{path.parent}: flock does not work on this filesystem ({error.strerror}); run.json and the "
                "stage locks need it: use a local disk or a shared filesystem with working locks (README, "
                "'Many GPUs, many machines')"
            ) from error
        yield
    finally:
        os.close(fd)


def check_shared_locking(ray: Any, run_root: Path) -> None:
    """Every node sees the run root and sees this process's lock on it, or the run is refused.

    Stages on several hosts write one ``run.json`` and lock one stage folder each; that is only safe when the
    run root is one shared folder whose flock holds across hosts (some NFS setups keep locks per host).
    """
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = run_root / LOCK_PROBE
    with held_lock(probe):
        probe_task = ray.remote(num_cpus=0)(_try_lock)
        nodes = [node["NodeID"] for node in ray.nodes() if node.get("Alive")]
        answers = ray.get(
            [
                probe_task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(
                    str(probe)
                )
                for node in nodes
            ]
        )
    wrong = [f"node {node[:8]}: {answer}" for node, answer in zip(nodes, answers) if answer != "held elsewhere"]
    if wrong:
        raise ExecutorError(f"{run_root}: not safe to share between the Ray nodes: " + "; ".join(wrong))


def run_on_ray(
    stages: Sequence[StageSpec],
    task: StageTask,
    on_report: Callable[[StageReport], None],
    config: Mapping[str, Any],
    run_root: Path,
) -> ExecutionResult:
    """Submit every stage as a Ray task chained on its needs; report each as it ends; wait for all."""
    with ray_session(config["ray_address"]) as ray:
        check_resources(ray, stages, config)
        check_shared_locking(ray, run_root)
        remote = ray.remote(_ray_task)
        refs: dict[str, Any] = {}
        for stage in stages:
            options = stage_resources(stage, config)
            upstream = [refs[name] for name in stage.needs if name in refs]
            refs[stage.name] = remote.options(max_retries=0, **options).remote(task, stage, *upstream)
        reports: dict[str, StageReport] = {}
        pending = list(refs.values())
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            report = ray.get(done[0])
            reports[report.name] = report
            on_report(report)
    return ExecutionResult([reports[stage.name] for stage in stages])
