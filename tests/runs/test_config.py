"""Run profiles: every key checked before any work, errors that name key, value and file, saved config rules."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from auto_quantize_model.runs.config import (
    PROFILE_SCHEMA,
    ConfigError,
    RunConfigMismatch,
    parse_overrides,
    resolve_run_config,
    save_or_check_run_config,
)
from auto_quantize_model.runs.run_root import RunRoot

REPO = Path(__file__).resolve().parents[2]
RUN_PIPELINE = REPO / "scripts" / "cv-models" / "run_pipeline.py"


def write_profile(directory: Path, name: str, **changes) -> Path:
    data = yaml.safe_load((REPO / "conf/cv-models/yolov10m/profiles/demo.yaml").read_text())
    data.update(changes)
    for key in [k for k, v in changes.items() if v == "DELETE"]:
        del data[key]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_shipped_profiles_resolve_with_their_documented_values(tmp_path: Path) -> None:
    coco_root = tmp_path / "coco"
    for name in ("train2017", "val2017", "annotations"):
        (coco_root / name).mkdir(parents=True)
    coco = resolve_run_config("coco2017", {"source_root": str(coco_root)})
    assert (coco["model"], coco["epochs"], coco["imgsz"], coco["batch"], coco["device"]) == (
        "yolov10m.yaml",
        300,
        640,
        32,
        "0",
    )
    assert coco["eval_providers"] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    demo = resolve_run_config("demo")
    assert (demo["model"], demo["device"], demo["data_source"], demo["seeds"]) == (
        "yolov10n.yaml",
        "cpu",
        "synthetic",
        [0],
    )
    for config in (coco, demo):
        assert list(config) == ["profile", "recipe_sha256", *PROFILE_SCHEMA]
        assert config["variants"][:2] == ["fp16", "qat-w4a16"]  # the spec's two runs come first
        assert set(config["recipe_sha256"]) == {"hyp", "ft_hyp"}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"variants": "fp16,qat-w4a61"}, r"variants: variant 'qat-w4a61': unknown scheme 'w4a61'; known: .*w4a16"),
        ({"variants": "fp16,int4"}, r"variant 'int4' is not one of fp16 \| fp16-ft \| qat-<scheme>"),
        ({"variants": "ptq-w4a16"}, r"start from the same seed's fp16 checkpoint, but fp16 is not among"),
        ({"variants": "fp16-ft"}, r"variants \['fp16-ft'\] start from the same seed's fp16 checkpoint"),
        ({"checkpoint_policy": "best"}, r"checkpoint_policy: expected one of last, best-on-selection, best-on-val"),
        ({"checkpoint_policy": "best-on-selection"}, r"best-on-selection needs selection_images"),
        ({"selection_images": 16}, r"selection_images 16: only checkpoint_policy best-on-selection uses"),
        (
            {"checkpoint_policy": "best-on-selection", "selection_images": 128},
            r"selection_images 128: carved out of 128 train images, it must leave some",
        ),
        ({"ft_train_overrides": "warmup_epochs"}, r"ft_train_overrides: expected a list of 'KEY=VALUE' strings"),
        ({"variants": "fp16,qat-w4a16,qat-w4a16"}, r"\['qat-w4a16'\] listed more than once"),
        ({"export_opset": 9}, r"export_opset: must be >= 13, got 9"),
        ({"export_opset": 99}, r"export_opset: opset 99 is newer than this onnx"),
        ({"seeds": "0,0"}, r"seeds: seeds \[0, 0\] repeat a value"),
        ({"seeds": "-1"}, r"seeds: expected a non-empty list of integers"),
        ({"epochs": 0}, r"epochs: must be >= 1"),
        ({"epochs": True}, r"epochs: expected an integer"),
        ({"imgsz": 150}, r"imgsz: must be a multiple of 32 \(the model stride\), got 150; use 128 or 160"),
        ({"fraction": 1.5}, r"fraction: expected a number in \(0, 1\]"),
        ({"model": "yolov10x9.yaml"}, r"model: 'yolov10x9.yaml' is neither a YAML file nor a model config"),
        ({"device": "gpu0"}, r"device: 'gpu0' is not of the form"),
        ({"hyp": "conf/nope.yaml"}, r"hyp: recipe file conf/nope.yaml not found"),
        ({"export_format": "tflite"}, r"export_format: expected one of e2e, raw"),
        ({"eval_batch": 4}, r"eval_batch > 1 needs export_dynamic_batch: true"),
        ({"data_source": "coco"}, r"data_source coco needs source_root"),
        (
            {"data_source": "coco", "source_root": "/nonexistent/coco"},
            r"source_root /nonexistent/coco: missing train2017",
        ),
        ({"epochz": 3}, r"--set epochz: not profile keys"),
        ({"latency_rounds": 5}, r"latency_rounds: must be >= 20, got 5"),
        ({"latency_threads": -1}, r"latency_threads: must be >= 0"),
        ({"train_overrides": ["close_mosiac=10"]}, r"close_mosiac is not an Ultralytics argument.*close_mosaic\?"),
        ({"train_overrides": ["data=x.yaml"]}, r"data is set by the train CLI"),
    ],
)
def test_invalid_values_are_refused_with_the_key_and_the_file(overrides, message) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        resolve_run_config("demo", overrides)
    assert "demo.yaml" in str(caught.value)


def test_unknown_and_missing_profile_keys_name_the_file(tmp_path: Path) -> None:
    write_profile(tmp_path, "typo", epoch=3)
    with pytest.raises(ConfigError, match=r"typo\.yaml: unknown key\(s\) \['epoch'\]"):
        resolve_run_config("typo", profiles_dir=tmp_path)
    write_profile(tmp_path, "short", eval_batch="DELETE")
    with pytest.raises(ConfigError, match=r"short\.yaml: missing key\(s\) eval_batch"):
        resolve_run_config("short", profiles_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"profile not found: .*nope\.yaml \(known profiles: short, typo\)"):
        resolve_run_config("nope", profiles_dir=tmp_path)


def test_overrides_parse_yaml_and_lists_from_words() -> None:
    parsed = parse_overrides(["eval_max_images=50", "eval_providers=[A, B]", "source_root=", "device=cpu"])
    assert parsed == {"eval_max_images": 50, "eval_providers": ["A", "B"], "source_root": None, "device": "cpu"}
    config = resolve_run_config("demo", {"seeds": "0,1,2", "variants": "fp16 ptq-w4a16", "device": 0})
    assert (config["seeds"], config["variants"], config["device"]) == ([0, 1, 2], ["fp16", "ptq-w4a16"], "0")
    with pytest.raises(ConfigError, match="--set 'eval_max_images': expected KEY=VALUE"):
        parse_overrides(["eval_max_images"])


def test_a_scheme_json_file_is_a_valid_variant(tmp_path: Path) -> None:
    from auto_quantize_model.quant.scheme import QuantScheme

    path = QuantScheme("mixed", layer_overrides=(("first_conv", 8),)).save(tmp_path / "mixed.json")
    config = resolve_run_config("demo", {"variants": f"fp16,qat-{path},qat-{path}-ft"})
    from auto_quantize_model.runs.variants import parse_variants

    assert [v.name for v in parse_variants(config["variants"])] == ["fp16", "qat-mixed", "qat-mixed-ft"]


def test_rerun_with_same_config_passes_more_seeds_are_added_and_a_change_is_refused(tmp_path: Path) -> None:
    run_root = RunRoot(tmp_path / "run")
    assert save_or_check_run_config(run_root, resolve_run_config("demo", {"epochs": 2})).created is True
    saved_bytes = run_root.run_config.read_bytes()
    assert save_or_check_run_config(run_root, resolve_run_config("demo", {"epochs": 2})).created is False
    changed = resolve_run_config("demo", {"epochs": 5, "batch": 8})
    with pytest.raises(RunConfigMismatch) as caught:
        save_or_check_run_config(run_root, changed)
    assert caught.value.differences == {"epochs": (2, 5), "batch": (4, 8)}
    assert run_root.run_config.read_bytes() == saved_bytes  # a refused config is never written
    save_or_check_run_config(run_root, resolve_run_config("demo", {"epochs": 2, "seeds": "0,1"}))
    assert yaml.safe_load(run_root.run_config.read_text())["seeds"] == [0, 1]
    with pytest.raises(RunConfigMismatch, match="seeds"):  # dropping a seed is a different experiment
        save_or_check_run_config(run_root, resolve_run_config("demo", {"epochs": 2, "seeds": "1"}))


def test_a_changed_config_replaces_the_saved_one_while_nothing_was_built(tmp_path: Path) -> None:
    run_root = RunRoot(tmp_path / "run")
    save_or_check_run_config(run_root, resolve_run_config("demo", {"epochs": 2}))
    changed = resolve_run_config("demo", {"epochs": 3})
    with pytest.raises(RunConfigMismatch):
        save_or_check_run_config(run_root, changed, nothing_built=lambda: False)
    save_or_check_run_config(run_root, changed, nothing_built=lambda: True)
    assert yaml.safe_load(run_root.run_config.read_text())["epochs"] == 3


def test_an_edited_recipe_is_refused_with_the_key_named(tmp_path: Path) -> None:
    recipe = tmp_path / "hyp.yaml"
    recipe.write_text((REPO / "conf/cv-models/yolov10m/hyp.scratch.yaml").read_text())
    run_root = RunRoot(tmp_path / "run")
    save_or_check_run_config(run_root, resolve_run_config("demo", {"hyp": str(recipe)}))
    recipe.write_text(recipe.read_text().replace("lr0: 0.01 ", "lr0: 0.05 "))
    with pytest.raises(RunConfigMismatch, match=r"recipe_sha256"):
        save_or_check_run_config(run_root, resolve_run_config("demo", {"hyp": str(recipe)}))


def _save_in_process(args) -> bool:
    root, epochs, start = args
    while time.time() < start:
        pass
    try:
        return save_or_check_run_config(RunRoot(root), resolve_run_config("demo", {"epochs": epochs})).created
    except RunConfigMismatch:
        return False


def test_concurrent_first_runs_create_the_config_once(tmp_path: Path) -> None:
    start = time.time() + 1.0
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        created = pool.map(_save_in_process, [(tmp_path / "r", 2 + i % 2, start) for i in range(4)])
    assert created.count(True) == 1


@pytest.mark.parametrize(
    "args",
    [["--variants", "fp16,qat-w4a61"], ["--set", "export_opset=9"], ["--variants", "fp16,bogus"], ["--seeds", "x"]],
)
def test_runner_cli_refuses_bad_config_in_seconds_and_writes_nothing(tmp_path: Path, args) -> None:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(RUN_PIPELINE), "--profile", "demo", "--run-root", str(tmp_path / "r"), *args],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and done.stderr.startswith("error: ") and "demo.yaml" in done.stderr
    assert time.monotonic() - started < 10
    assert not (tmp_path / "r").exists()
