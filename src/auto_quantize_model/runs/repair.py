"""Rebuild ``run.json`` from the stage logs after it was torn or lost (the runner's ``--repair``).

Every attempt writes its record into its stage's log (:mod:`auto_quantize_model.runs.stage_runner`):
one ``##### record {json}`` line when it starts (command, inputs' sha256) and one when it ends
(status, exit code, outputs' sha256). Replaying those lines in order gives each stage's last record.
An attempt that started but has no end line was killed: it is rebuilt as failed, so it reruns.
Nothing is trusted blindly: the next run still checks every rebuilt ``done`` record's outputs and
inputs against the files, as for any record.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auto_quantize_model.runs.provenance import utc_now
from auto_quantize_model.runs.run_root import RunRoot
from auto_quantize_model.runs.stage_runner import LOG_RECORD_PREFIX, RUN_JSON_SCHEMA_VERSION
from auto_quantize_model.utils.io import write_json_atomic


@dataclass
class RepairReport:
    """What :func:`rebuild_run_state` found."""

    run_json: Path
    set_aside: Path | None  # where the unreadable run.json went
    done: list[str] = field(default_factory=list)
    not_done: list[str] = field(default_factory=list)  # failed or killed attempts: they rerun
    without_records: list[str] = field(default_factory=list)  # logs of an older version: those stages rerun


def rebuild_run_state(run_root: RunRoot) -> RepairReport:
    """Set the current ``run.json`` aside (``set-aside/run.json.corrupt-<time>``); write one rebuilt from ``logs/``."""
    stamp = utc_now().replace(":", "").replace("+00:00", "Z")
    moved = None
    if run_root.run_json.exists():
        moved = run_root.set_aside_path(run_root.run_json, f"corrupt-{stamp}")
        moved.parent.mkdir(parents=True, exist_ok=True)
        os.replace(run_root.run_json, moved)
    report = RepairReport(run_root.run_json, moved)
    stages = {}
    for log in sorted(run_root.logs_dir.glob("*.log")):
        record = record_from_log(log)
        if record is None:
            report.without_records.append(log.stem)
            continue
        stages[log.stem] = record
        (report.done if record["status"] == "done" else report.not_done).append(log.stem)
    now = utc_now()
    state = {
        "schema_version": RUN_JSON_SCHEMA_VERSION,
        "run_root": str(run_root.root),
        "created_at": now,
        "updated_at": now,
        "rebuilt_from_logs_at": now,
        "stages": stages,
    }
    write_json_atomic(run_root.run_json, state)
    return report


def record_from_log(log: Path) -> dict[str, Any] | None:
    """The stage's last record replayed from its log's record lines, or ``None`` when it has none."""
    record: dict[str, Any] | None = None
    with open(log, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if not line.startswith(LOG_RECORD_PREFIX):
                continue
            try:
                fields = json.loads(line[len(LOG_RECORD_PREFIX) :])
            except json.JSONDecodeError:  # a line torn by the same crash: the attempt stays unfinished
                continue
            fields.pop("stage", None)
            record = fields if fields.get("status") == "running" or record is None else {**record, **fields}
    if record is not None and record.get("status") == "running":
        record.update(status="failed", error="killed during this attempt (no end record in its log)")
    return record
