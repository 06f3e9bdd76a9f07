#!/usr/bin/env python
"""Local vs Ray executor on this machine: per-stage overhead, and the wall time of a two-seed demo run.

Part 1 (``--part overhead``): a chain of ``--chain`` stand-in stages (each a ``python -c`` that writes its
output and needs the one before), run with each executor on fresh run roots, interleaved ``--rounds`` times.
No two stages can overlap, so ``(ray - local) / chain`` is what the Ray path adds per stage (task dispatch,
result passing, and the per-run resource and lock checks spread over the chain; Ray's own start is timed apart).

Part 2 (``--part demo``): the real runner on the demo profile with ``--seeds 0,1`` and ``--set stage_threads=1``,
once with ``--executor local`` and once with ``--executor ray`` (same settings; ``--epochs`` to shorten both),
reading each run's wall time, whether the two seeds' trainings overlapped (``run.json`` start/end times), and
whether the two summaries' metric columns are equal. Target (issue 25): ray wall <= 0.75x local.

The 1-minute load average before and after each run is printed with the figures.

    python benchmarks/bench_executors.py --part overhead --chain 10 --rounds 3
    python benchmarks/bench_executors.py --part demo --epochs 5 --out tmp/bench-executors
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from auto_quantize_model.pipeline import run_pipeline
from auto_quantize_model.runs.executors import LOCAL_EXECUTION, ray_session
from auto_quantize_model.runs.plan import StageSpec
from auto_quantize_model.runs.run_root import RunRoot
from auto_quantize_model.runs.stage_runner import load_run_state
from auto_quantize_model.utils.ultralytics_env import project_root

REPO = project_root()
RUNNER = REPO / "scripts" / "cv-models" / "run_yolov10m_scratch_fp16_vs_w4a16_qat.sh"
WRITE = "import sys; from pathlib import Path; Path(sys.argv[1]).write_text('x')"
METRICS = ("variant", "seed", "weights_format", "mAP50_95", "mAP50", "val_mAP50_95_best", "onnx_bytes")


def load() -> float:
    return os.getloadavg()[0]


def chain(root: Path, length: int) -> list[StageSpec]:
    stages, previous = [], ()
    for index in range(length):
        out = root / f"out-{index}.txt"
        stages.append(StageSpec(f"step-{index}", (sys.executable, "-c", WRITE, str(out)), (out,), previous))
        previous = (f"step-{index}",)
    return stages


def time_chain(root: Path, length: int, executor: str) -> float:
    run_root = RunRoot(root)
    run_root.root.mkdir(parents=True)
    start = time.perf_counter()
    run_pipeline(run_root, chain(run_root.root, length), config={**LOCAL_EXECUTION, "executor": executor}, say=str)
    return time.perf_counter() - start


def part_overhead(out: Path, length: int, rounds: int) -> dict:
    start = time.perf_counter()
    with ray_session(None):  # started once, outside the timed runs; the executor reuses it
        ray_start_s = time.perf_counter() - start
        local, ray = [], []
        for index in range(rounds):
            local.append(time_chain(out / f"local-{index}", length, "local"))
            ray.append(time_chain(out / f"ray-{index}", length, "ray"))
    per_stage = [(r - loc) / length for r, loc in zip(ray, local)]
    return {
        "chain": length,
        "local_s": local,
        "ray_s": ray,
        "ray_overhead_per_stage_s": {
            "median": statistics.median(per_stage),
            "min": min(per_stage),
            "max": max(per_stage),
        },
        "ray_start_s": ray_start_s,
    }


def run_demo(root: Path, executor: str, epochs: int) -> dict:
    argv = ["bash", str(RUNNER), "--profile", "demo", "--seeds", "0,1", "--epochs", str(epochs)]
    argv += ["--set", "stage_threads=1", "--executor", executor, "--run-root", str(root)]
    before = load()
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{executor} run failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    records = load_run_state(RunRoot(root))["stages"]
    spans = [
        (name, *(datetime.fromisoformat(record[key]) for key in ("started_at", "ended_at")))
        for name, record in records.items()
        if "-train-" in name
    ]
    overlapping = [(a[0], b[0]) for i, a in enumerate(spans) for b in spans[i + 1 :] if a[1] < b[2] and b[1] < a[2]]
    return {"wall_s": wall, "load_before": before, "load_after": load(), "overlapping_trainings": overlapping}


def metric_rows(root: Path) -> list[tuple[str, ...]]:
    with (root / "summary.csv").open() as handle:
        return sorted(tuple(row[key] for key in METRICS) for row in csv.DictReader(handle))


def part_demo(out: Path, epochs: int) -> dict:
    # Run roots with names of one length: the ONNX metadata holds the dataset path, so onnx_bytes follows it.
    local = run_demo(out / "run-local", "local", epochs)
    ray = run_demo(out / "run-ray--", "ray", epochs)
    return {
        "epochs": epochs,
        "local": local,
        "ray": ray,
        "ray_over_local": ray["wall_s"] / local["wall_s"],
        "target": 0.75,
        "same_metrics": metric_rows(out / "run-local") == metric_rows(out / "run-ray--"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("overhead", "demo"), required=True)
    parser.add_argument("--chain", type=int, default=10, help="stand-in stages in the chain (overhead part)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved local/ray rounds (overhead part)")
    parser.add_argument("--epochs", type=int, default=30, help="epochs of each demo training (demo part)")
    parser.add_argument("--out", type=Path, default=REPO / "tmp" / "bench-executors")
    args = parser.parse_args()
    out = args.out / f"{args.part}-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True)
    result = part_overhead(out, args.chain, args.rounds) if args.part == "overhead" else part_demo(out, args.epochs)
    result["cpus"] = os.cpu_count()
    (out / "result.json").write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
