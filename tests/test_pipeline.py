"""Run profiles, saved-config checks, stage tracking (run.json + logs) and the shell runner's logic.

The runner test swaps the dataset/train/export/eval CLIs for stand-ins (via
``YOLOV10M_PIPELINE_TOOLS_DIR``) so it checks ordering, arguments, skip/resume and failure
handling in seconds; ``test_runner_e2e.py`` runs the real CLIs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from auto_quantize_model.pipeline import (
    PROFILE_SCHEMA,
    RunConfigError,
    RunConfigMismatch,
    parse_set_overrides,
    pipeline_stages,
    resolve_run_config,
    save_or_check_run_config,
    shell_assignments,
)
from auto_quantize_model.run_root import RunRoot
from auto_quantize_model.stages import load_run_state

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts" / "cv-models"
RUNNER = SCRIPTS / "run_yolov10m_scratch_fp16_vs_w4a16_qat.sh"
PY = sys.executable


# --------------------------------------------------------------------------------------------
# Profiles and overrides
# --------------------------------------------------------------------------------------------
def test_shipped_profiles_resolve_with_their_documented_values() -> None:
    coco = resolve_run_config("coco2017")
    assert (coco["model"], coco["epochs"], coco["imgsz"], coco["batch"], coco["device"]) == (
        "yolov10m.yaml",
        300,
        640,
        32,
        "0",
    )
    assert coco["source_root"] == "datasets/coco2017/source-data" and coco["max_val_images"] is None
    assert coco["eval_max_images"] is None
    assert coco["eval_providers"] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    dry = resolve_run_config("dry-run")
    assert (dry["epochs"], dry["max_train_images"], dry["max_val_images"]) == (1, 1000, 200)
    demo = resolve_run_config("demo")
    assert (demo["model"], demo["device"], demo["workers"], demo["data_source"]) == (
        "yolov10n.yaml",
        "cpu",
        0,
        "synthetic",
    )
    assert demo["eval_providers"] == ["CPUExecutionProvider"]
    for config in (coco, dry, demo):
        assert list(config) == ["profile", *PROFILE_SCHEMA]
        assert (config["hyp"], config["quant_scheme"], config["export_format"]) == (
            "conf/cv-models/yolov10m/hyp.scratch.yaml", "w4a16", "e2e")  # fmt: skip


def test_overrides_apply_and_none_is_ignored() -> None:
    config = resolve_run_config(
        "demo", {"epochs": 2, "imgsz": 64, "device": 0, "batch": None, "quant_scheme": "w4a16-fl8"}
    )
    assert (config["epochs"], config["imgsz"], config["device"], config["batch"]) == (2, 64, "0", 16)
    assert pipeline_stages(config)[-4:] == ["export-qat-w4a16-fl8", "eval-fp16", "eval-qat-w4a16-fl8", "summary"]


def write_profile(directory: Path, name: str, **changes) -> Path:
    data = yaml.safe_load((REPO / "conf/cv-models/yolov10m/profiles/demo.yaml").read_text())
    data.update(changes)
    for key in [k for k, v in changes.items() if v == "DELETE"]:
        del data[key]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_unknown_profile_key_names_the_file_and_key(tmp_path: Path) -> None:
    path = write_profile(tmp_path, "typo", epoch=3)
    with pytest.raises(RunConfigError, match=r"typo\.yaml: unknown key\(s\) epoch;"):
        resolve_run_config("typo", profiles_dir=tmp_path)
    with pytest.raises(RunConfigError, match=r"typo\.yaml: unknown key"):
        resolve_run_config(str(path))  # given as a path


def test_missing_profile_key_and_missing_profile(tmp_path: Path) -> None:
    write_profile(tmp_path, "short", eval_batch="DELETE")
    with pytest.raises(RunConfigError, match=r"short\.yaml: missing key\(s\) eval_batch"):
        resolve_run_config("short", profiles_dir=tmp_path)
    with pytest.raises(RunConfigError, match=r"profile not found: .*nope\.yaml \(known profiles: short\)"):
        resolve_run_config("nope", profiles_dir=tmp_path)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"epochs": 0}, r"epochs: must be >= 1"),
        ({"epochs": True}, r"epochs: expected an integer"),
        ({"imgsz": 100}, r"imgsz: must be a multiple of 32"),
        ({"fraction": 1.5}, r"fraction: expected a number in \(0, 1\]"),
        ({"model": "yolov10n.pt"}, r"model: expected a \.yaml file"),
        ({"quant_scheme": "w4 a16"}, r"quant_scheme: 'w4 a16' does not match"),
        ({"export_format": "tflite"}, r"export_format: expected one of e2e, raw"),
        ({"eval_batch": 4}, r"eval_batch > 1 needs export_dynamic_batch: true"),
        ({"data_source": "coco"}, r"data_source coco needs source_root"),
        ({"eval_providers": []}, r"eval_providers: expected a non-empty list"),
        ({"epochz": 3}, r"override\(s\) epochz are not profile keys"),
    ],
)
def test_invalid_values_are_rejected_with_the_key(overrides, message) -> None:
    with pytest.raises(RunConfigError, match=message):
        resolve_run_config("demo", overrides)


def test_set_overrides_parse_yaml_values() -> None:
    parsed = parse_set_overrides(["eval_max_images=50", "eval_providers=[A, B]", "source_root=", "device=cpu"])
    assert parsed == {"eval_max_images": 50, "eval_providers": ["A", "B"], "source_root": None, "device": "cpu"}
    assert resolve_run_config("demo", {"eval_providers": "A B"})["eval_providers"] == ["A", "B"]
    with pytest.raises(RunConfigError, match="expected KEY=VALUE"):
        parse_set_overrides(["eval_max_images"])


# --------------------------------------------------------------------------------------------
# Saved run config
# --------------------------------------------------------------------------------------------
def test_rerun_with_same_config_passes_and_different_config_is_refused(tmp_path: Path) -> None:
    run_root = RunRoot(tmp_path / "run")
    config = resolve_run_config("demo", {"epochs": 2})
    assert save_or_check_run_config(run_root, config).created is True
    saved_bytes = run_root.run_config.read_bytes()
    assert save_or_check_run_config(run_root, resolve_run_config("demo", {"epochs": 2})).created is False

    changed = resolve_run_config("demo", {"epochs": 5, "batch": 8})
    with pytest.raises(RunConfigMismatch) as caught:
        save_or_check_run_config(run_root, changed)
    assert caught.value.differences == {"epochs": (2, 5), "batch": (16, 8)}
    assert "Differing keys (epochs, batch)" in str(caught.value) and "epochs: saved 2, now 5" in str(caught.value)
    assert run_root.run_config.read_bytes() == saved_bytes  # the saved config is never rewritten


def test_shell_assignments_survive_eval_with_awkward_paths(tmp_path: Path) -> None:
    run_root = RunRoot(tmp_path / "it's a $run root")
    config = resolve_run_config("demo", {"eval_providers": ["A B", "C;rm -rf x"]})
    script = "\n".join(shell_assignments(run_root, config))
    check = 'eval "$1"; printf "%s\\n" "$ART_RUN_ROOT" "${CFG_EVAL_PROVIDERS[1]}" "${STAGE_LOGS[train-qat-w4a16]}" "[$CFG_SOURCE_ROOT]" "${PIPELINE_STAGES[0]}"'
    out = subprocess.run(
        ["bash", "-c", check, "_", script], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out == [
        str(run_root.root),
        "C;rm -rf x",
        str(run_root.stage_log("train-qat-w4a16")),
        "[]",
        "make-synthetic-data",
    ]


def test_resolve_cli_saves_then_refuses_a_changed_config(tmp_path: Path) -> None:
    cli = [PY, str(SCRIPTS / "resolve_run_config.py"), "--profile", "demo", "--run-root", str(tmp_path / "r")]
    first = subprocess.run([*cli, "--epochs", "2", "--set", "eval_max_images=4"], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert "CFG_EPOCHS=2" in first.stdout.splitlines() and "CFG_EVAL_MAX_IMAGES=4" in first.stdout.splitlines()
    again = subprocess.run([*cli, "--epochs", "3", "--set", "eval_max_images=4"], capture_output=True, text=True)
    assert again.returncode == 2 and again.stdout == ""
    assert "Differing keys (epochs)" in again.stderr and "epochs: saved 2, now 3" in again.stderr


# --------------------------------------------------------------------------------------------
# The shell runner, with stand-in CLIs
# --------------------------------------------------------------------------------------------
STUB = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    from auto_quantize_model.run_root import RunRoot

    tool, argv = Path(__file__).stem, sys.argv[1:]
    with open(os.environ["STUB_CALLS"], "a") as calls:
        calls.write(json.dumps([tool, argv]) + "\\n")
    print(f"stub {tool} on stdout", flush=True)
    print(f"stub {tool} on stderr", file=sys.stderr, flush=True)
    if os.environ.get("STUB_FAIL") == tool:
        sys.exit(3)
    opt = lambda name: argv[argv.index(name) + 1]
    if tool == "make_synthetic_coco":
        Path(opt("--out")).mkdir(parents=True)
    elif tool == "prepare_coco_dataset":
        out = Path(opt("--out-dir"))
        (out / "images" / "val").mkdir(parents=True)
        (out / "dataset.yaml").write_text("path: .")
        (out / "instances_val.json").write_text("{}")
        (out / "provenance.json").write_text(json.dumps({"source": opt("--source-root"), "splits": {"train": {"images": 4}}}))
    elif tool.startswith("train_"):
        stage = "fp16" if argv[0] == "fp16" else "qat-" + opt("--quant-scheme")
        run = RunRoot(opt("--run-root")).train_run(stage)
        run.weights_dir.mkdir(parents=True, exist_ok=True)
        run.best.write_bytes(b"pt")
    elif tool == "export_onnx":
        Path(opt("--out")).parent.mkdir(parents=True, exist_ok=True)
        Path(opt("--out")).write_bytes(b"onnx")
    elif tool.startswith("eval_"):
        Path(opt("--out-dir")).mkdir(parents=True, exist_ok=True)
        (Path(opt("--out-dir")) / "metrics.json").write_text(json.dumps({"mAP50-95": 0.1}))
    """)
TOOLS = ("make_synthetic_coco", "prepare_coco_dataset", "train_yolov10m_scratch_fp16_vs_w4a16_qat_brevitas",
         "export_onnx", "eval_yolov10m_onnx_coco")  # fmt: skip


@pytest.fixture()
def stub_env(tmp_path: Path) -> dict[str, str]:
    tools = tmp_path / "tools"
    tools.mkdir()
    for tool in TOOLS:
        (tools / f"{tool}.py").write_text(STUB)
    env = {k: v for k, v in os.environ.items() if k != "RUN_ROOT"}
    env.update(YOLOV10M_PIPELINE_TOOLS_DIR=str(tools), STUB_CALLS=str(tmp_path / "calls.jsonl"))
    return env


def run_runner(
    env: dict[str, str], *args: str, fail: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    env = dict(env, **({"STUB_FAIL": fail} if fail else {}))
    return subprocess.run(["bash", str(RUNNER), *args], capture_output=True, text=True, env=env, timeout=300, cwd=cwd)


def calls(env: dict[str, str]) -> list[tuple[str, list[str]]]:
    path = Path(env["STUB_CALLS"])
    return [tuple(json.loads(line)) for line in path.read_text().splitlines()] if path.exists() else []


def test_runner_order_arguments_skip_and_resume(stub_env: dict[str, str], tmp_path: Path) -> None:
    root = tmp_path / "run root"
    args = ("--profile", "demo", "--run-root", str(root), "--epochs", "2", "--imgsz", "64")
    first = run_runner(stub_env, *args, fail="eval_yolov10m_onnx_coco")
    run_root = RunRoot(root)
    assert first.returncode == 3, first.stderr
    assert f"stage 'eval-fp16' failed (exit code 3). Log: {run_root.stage_log('eval-fp16')}" in first.stderr
    stages = load_run_state(run_root)["stages"]
    assert list(stages) == ["make-synthetic-data", "prepare-data", "train-fp16", "export-fp16",
                            "train-qat-w4a16", "export-qat-w4a16", "eval-fp16"]  # fmt: skip
    assert stages["eval-fp16"]["status"] == "failed" and stages["eval-fp16"]["exit_code"] == 3
    assert "stub eval_yolov10m_onnx_coco on stderr" in run_root.stage_log("eval-fp16").read_text()

    by_tool = {tool: argv for tool, argv in calls(stub_env)}
    train = [argv for tool, argv in calls(stub_env) if tool.startswith("train_")]
    assert [argv[0] for argv in train] == ["fp16", "qat-w4a16"]
    assert "--resume" in train[0] and train[1][-2:] == ["--quant-scheme", "w4a16"]
    assert train[0][train[0].index("--epochs") + 1] == "2" and train[0][train[0].index("--data") + 1] == str(
        run_root.dataset_yaml
    )
    evaluate = by_tool["eval_yolov10m_onnx_coco"]
    assert evaluate[evaluate.index("--images-dir") + 1] == str(run_root.dataset_dir / "images" / "val")
    assert evaluate[evaluate.index("--providers") + 1 :][:1] == ["CPUExecutionProvider"]
    assert by_tool["prepare_coco_dataset"][1] == str(run_root.synthetic_source_dir)
    assert "--overwrite" in by_tool["prepare_coco_dataset"] and "--overwrite" in by_tool["make_synthetic_coco"]

    # Resume: finished stages are skipped, the failed one runs again, the rest follow.
    count = len(calls(stub_env))
    second = run_runner(stub_env, *args)
    assert second.returncode == 0, second.stderr
    assert second.stdout.count("skip: stage") == 6
    assert [tool for tool, _ in calls(stub_env)[count:]] == ["eval_yolov10m_onnx_coco"] * 2
    state = load_run_state(run_root)["stages"]
    assert all(record["status"] == "done" for record in state.values()) and state["eval-fp16"]["attempts"] == 2
    assert run_root.summary_md.is_file()

    # A rerun of a finished run changes nothing.
    snapshot = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    third = run_runner(stub_env, *args)
    assert third.returncode == 0 and third.stdout.count("skip: stage") == 9
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == snapshot


def test_runner_refuses_changed_settings_and_bad_arguments(stub_env: dict[str, str], tmp_path: Path) -> None:
    root = tmp_path / "run"
    done = run_runner(
        stub_env, "--profile", "demo", "--run-root", str(root), "--epochs", "1", "--stop-after", "prepare-data"
    )
    assert done.returncode == 0, done.stderr
    assert "stopping after stage prepare-data" in done.stdout
    assert list(load_run_state(RunRoot(root))["stages"]) == ["make-synthetic-data", "prepare-data"]

    changed = run_runner(stub_env, "--profile", "demo", "--run-root", str(root), "--epochs", "4")
    assert changed.returncode == 2 and "epochs: saved 1, now 4" in changed.stderr
    assert list(load_run_state(RunRoot(root))["stages"]) == ["make-synthetic-data", "prepare-data"]

    bad_stage = run_runner(
        stub_env, "--profile", "demo", "--run-root", str(root), "--epochs", "1", "--stop-after", "train"
    )
    assert bad_stage.returncode == 2 and "--stop-after train: not a stage of this run" in bad_stage.stderr
    unknown = run_runner(stub_env, "--profile", "demo", "--bogus")
    assert unknown.returncode == 2 and "unknown argument: --bogus" in unknown.stderr


def test_runner_run_root_from_env_and_relative_to_the_callers_directory(
    stub_env: dict[str, str], tmp_path: Path
) -> None:
    env = dict(stub_env, RUN_ROOT="from-env")  # relative: to where the user typed it, not the repo
    done = run_runner(env, "--profile", "demo", "--epochs", "1", "--stop-after", "make-synthetic-data", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert RunRoot(tmp_path / "from-env").run_config.is_file()
    assert f"run root: {tmp_path / 'from-env'}" in done.stdout
    flag = run_runner(
        stub_env, "--profile", "demo", "--run-root", "rel/x", "--stop-after", "make-synthetic-data", cwd=tmp_path
    )
    assert flag.returncode == 0, flag.stderr
    assert RunRoot(tmp_path / "rel" / "x").stage_log("make-synthetic-data").is_file()
