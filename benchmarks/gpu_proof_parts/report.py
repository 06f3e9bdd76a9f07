"""The proof's report: ``gpu_proof.json`` (everything) and ``gpu_proof.md`` (the tables to read and to copy).

Targets (issue 22, for a GPU run of the default settings): the W4A16 AMP step <= 1.10x FP, W8A8 <= 1.30x FP, one
yolov10m epoch and both exports complete, the whole proof under 8 minutes. A ``--tiny`` or CPU run evaluates them
too but marks them as not applying (other conditions).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from auto_quantize_model.utils.io import write_json_atomic, write_text_atomic
from gpu_proof_parts.budget import Part
from gpu_proof_parts.settings import WHOLE_PROOF_TARGET_S, ProofSettings

STEP_TARGETS = {"W4A16": 1.10, "W8A8": 1.30}
JSON_NAME, MARKDOWN_NAME = "gpu_proof.json", "gpu_proof.md"


def targets(settings: ProofSettings, parts: dict[str, Part], wall_s: float) -> list[dict[str, Any]]:
    """Each target with its measured value and whether it was met (``None``: not measured)."""
    applies = settings.cuda and not settings.tiny
    rows = [_step_target(row) for row in parts["steps"].data.get("rows", []) if row.get("label") in STEP_TARGETS]
    rows = [row for row in rows if row is not None]
    timed_labels = {row.get("label") for row in parts["steps"].data.get("rows", [])}
    for label, limit in STEP_TARGETS.items():
        if label not in timed_labels:
            rows.append({"target": f"{label} AMP step <= {limit:.2f}x FP", "value": "not timed", "met": None})
    rows.append(_epoch_target(settings, parts["epoch"]))
    left_out = [name for name, part in parts.items() if not part.ran]
    rows.append(
        {
            "target": f"whole proof under {WHOLE_PROOF_TARGET_S / 60:.0f} minutes",
            "value": f"{wall_s:.0f} s" + (f" without part(s) {', '.join(left_out)}" if left_out else ""),
            "met": None if left_out else wall_s < WHOLE_PROOF_TARGET_S,
        }
    )
    return [{**row, "applies": applies} for row in rows]


def _step_target(row: dict[str, Any]) -> dict[str, Any] | None:
    if "vs_fp" not in row:
        return None
    limit = STEP_TARGETS[row["label"]]
    return {
        "target": f"{row['label']} ({row['model']}) {row['dtype']} AMP step <= {limit:.2f}x FP",
        "value": f"{row['vs_fp']:.3f}x ({row['median_ms']:.1f} ms, {row['steps']} steps)",
        "met": row["vs_fp"] <= limit,
    }


def _epoch_target(settings: ProofSettings, epoch: Part) -> dict[str, Any]:
    required = [s for s in epoch.data.get("stages", []) if s.get("required")]
    done = [s for s in required if s.get("status") in ("done", "skipped")]  # skipped: already done in this run root
    checks = epoch.data.get("onnx_vs_device", [])
    passed = [c for c in checks if c["passed"]]
    ran = bool(required)
    return {
        "target": f"one epoch of {Path(settings.model).stem} FP and W4A16 QAT, exports float32/QCDQ/INT4 complete",
        "value": f"{len(done)}/{len(required)} required stages done, {len(passed)}/{len(checks)} device checks passed",
        "met": (len(done) == len(required) and len(checks) == 3 and len(passed) == 3) if ran else None,
    }


def write_report(
    settings: ProofSettings, parts: dict[str, Part], header: dict[str, Any], wall_s: float
) -> tuple[Path, Path]:
    """Write both files atomically into ``settings.out``; return their paths."""
    report = {
        **header,
        "wall_s": round(wall_s, 1),
        "settings": settings.to_dict(),
        "parts": {name: part.to_dict() for name, part in parts.items()},
        "targets": targets(settings, parts, wall_s),
        "skipped": [f"{name}: {item}" for name, part in parts.items() for item in part.skipped],
    }
    json_path = write_json_atomic(settings.out / JSON_NAME, report)
    md_path = write_text_atomic(settings.out / MARKDOWN_NAME, markdown(report))
    return json_path, md_path


# ----------------------------------------------------------------------------------------------
# Markdown
# ----------------------------------------------------------------------------------------------
def markdown(report: dict[str, Any]) -> str:
    parts = report["parts"]
    lines = [
        f"# GPU proof ({report['settings']['mode']}), {report['started_at']}",
        "",
        f"Command: `{' '.join(report['command'])}`  ",
        f"Wall time: {report['wall_s']:.0f} s. Parts: "
        + ", ".join(
            f"{name} {part['status']} ({part['seconds']:.0f} s of {part['budget_s']:.0f}, CPU {part['cpu_s']:.0f} s)"
            for name, part in parts.items()
        ),
        "",
        *_targets_md(report["targets"]),
        *_env_md(parts["env"]),
        *_steps_md(parts["steps"]),
        *_amp_md(parts["amp"]),
        *_epoch_md(parts["epoch"]),
        "## Skipped",
        "",
        *([f"- {item}" for item in report["skipped"]] or ["- nothing"]),
        "",
        "## Failed checks and errors",
        "",
        *(_failures_md(parts) or ["- none"]),
        "",
    ]
    return "\n".join(lines)


def targets_section(markdown_text: str) -> str:
    """The "## Targets" section of a report, to print at the end of a run."""
    start = markdown_text.index("## Targets")
    return markdown_text[start : markdown_text.index("\n## ", start + 1)].strip()


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows] + [""]


def _met(value: bool | None) -> str:
    return {True: "met", False: "**missed**", None: "not measured"}[value]


def _targets_md(rows: list[dict[str, Any]]) -> list[str]:
    note = (
        []
        if all(r["applies"] for r in rows)
        else ["(not the GPU run of the default settings: targets do not apply)", ""]
    )
    return [
        "## Targets",
        "",
        *note,
        *_table(["target", "measured", "verdict"], [[r["target"], r["value"], _met(r["met"])] for r in rows]),
    ]


def _env_md(env: dict[str, Any]) -> list[str]:
    data = env["data"]
    rows = [
        ["python", data.get("python")],
        ["versions", data.get("versions")],
        ["imported from", data.get("imported_from")],
    ]
    rows += [
        ["CUDA build / cuDNN", f"{data.get('torch_cuda_build')} / {data.get('cudnn')}"],
        ["load average", data.get("load_average")],
    ]
    rows += [[f"gpu {key}", value] for key, value in (data.get("gpu") or {}).items()]
    return ["## Environment", "", *_table(["", "value"], rows)]


def _steps_md(steps: dict[str, Any]) -> list[str]:
    data = steps["data"]
    header = ["model", "scheme", "AMP", "steps", "median ms", "p10-p90 ms", "vs FP", "peak MiB (all)", "step MiB"]
    rows = [
        [
            r["model"],
            r["label"],
            r["dtype"],
            r["steps"],
            f"{r['median_ms']:.1f}" if "median_ms" in r else "-",
            f"{r['p10_ms']:.1f}-{r['p90_ms']:.1f}" if "median_ms" in r else "-",
            f"{r['vs_fp']:.3f}x" if "vs_fp" in r else "-",
            r.get("peak_mib") if r.get("peak_mib") is not None else "-",
            r.get("step_peak_mib") if r.get("step_peak_mib") is not None else "-",
        ]
        for r in data.get("rows", [])
    ]
    intro = [f"{data.get('what', '')}; {data.get('interleaving', '')}.", ""]
    return ["## Training step time", "", *intro, *_table(header, rows)]


def _amp_md(amp: dict[str, Any]) -> list[str]:
    header = [
        "scheme",
        "AMP",
        "loss",
        "conv outputs",
        "grads finite",
        "layer",
        "codes ≠ CPU",
        "vs rounded (eps)",
        "vs fp32 (eps)",
    ]
    rows = []
    for r in amp["data"].get("rows", []):
        layer, eps = r["layer"], r["layer"]["eps"]
        trained = "loss" in r
        rows.append(
            [
                r["scheme"],
                r["dtype"],
                f"{r['loss']:.4g}" if trained else "no step (CPU: bf16 only)",
                r.get("layer_output_dtypes", "-"),
                r.get("grads_finite", "-"),
                layer["layer"],
                layer["code_mismatches"],
                f"{layer['rel_diff_vs_rounded_operands'] / eps:.2f}",
                f"{layer['rel_diff_vs_float32'] / eps:.2f}",
            ]
        )
    return ["## AMP with the quantized layers", "", f"{amp['data'].get('what', '')}.", "", *_table(header, rows)]


def _epoch_md(epoch: dict[str, Any]) -> list[str]:
    data = epoch["data"]
    stages = [
        [s["stage"], s["status"], f"{s['seconds']:.0f}" if s.get("seconds") else "-", s.get("why", "")]
        for s in data.get("stages", [])
    ]
    trainings = [[variant, facts] for variant, facts in (data.get("trainings") or {}).items()]
    checks = [
        [
            c["onnx"],
            f"{c['max_abs_diff_boxes']:.3g} / {c['box_limit']:.3g}",
            f"{c['max_abs_diff_scores']:.3g} / {c['score_limit']:.3g}",
            c["passed"],
        ]
        for c in data.get("onnx_vs_device", [])
    ]
    return [
        "## One epoch and the exports (the runner's stages)",
        "",
        f"{data.get('profile', '')}. Run root: `{data.get('run_root', '')}`.",
        "",
        *_table(["stage", "status", "s", "why skipped"], stages),
        *_table(["variant", "train_metadata.json"], trainings),
        "ONNX Runtime CPU vs the checkpoint's PyTorch model on the device:",
        "",
        *_table(["file", "boxes diff / limit (px)", "scores diff / limit", "passed"], checks),
        f"Extra stages: {data['extra_stages']}" if "extra_stages" in data else "",
        "",
    ]


def _failures_md(parts: dict[str, Any]) -> list[str]:
    lines = []
    for name, part in parts.items():
        if part["error"]:
            lines.append(f"- {name}: {part['error']}")
        lines += [f"- {name}: {c['name']}: {c['detail']}" for c in part["checks"] if not c["ok"]]
    return lines
