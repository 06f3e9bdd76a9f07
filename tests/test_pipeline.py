"""The stage plan of a run config, and running it: order, skip, resume, added seeds, missing artifacts, --redo.

Running is checked with each stage's command replaced by a small Python call that writes the
stage's declared outputs (and records that it ran), so these tests exercise the pipeline logic
alone; tests/test_runner_e2e.py runs the real CLIs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from runner_stand_ins import ran, stand_in

from auto_quantize_model.pipeline import PipelineError, run_pipeline
from auto_quantize_model.runs.config import resolve_run_config
from auto_quantize_model.runs.plan import plan_stages
from auto_quantize_model.runs.run_root import RunRoot
from auto_quantize_model.runs.stage_runner import load_run_state

VARIANTS = "fp16,qat-w4a16,ptq-w4a16,qat-w4a16-ft"


def names(stages) -> list[str]:
    return [stage.name for stage in stages]


def test_plan_orders_stages_per_seed_and_variant_with_the_fp_model_first() -> None:
    config = resolve_run_config("demo", {"variants": "qat-w4a16-ft,ptq-w4a16,fp16", "seeds": "0,1"})
    stages = plan_stages(RunRoot("/r"), config)
    got = names(stages)
    assert got[:3] == ["make-synthetic-data", "prepare-data", "s0-train-fp16"]
    assert got[-1] == "summary" and "check-env" not in got  # a CPU profile needs no GPU preflight
    for seed in (0, 1):
        assert got.index(f"s{seed}-train-fp16") < got.index(f"s{seed}-quantize-ptq-w4a16")
        assert got.index(f"s{seed}-train-fp16") < got.index(f"s{seed}-train-qat-w4a16-ft")
        assert {f"s{seed}-eval-ptq-w4a16-qcdq", f"s{seed}-eval-ptq-w4a16-int4", f"s{seed}-eval-fp16-float16"} <= set(
            got
        )
    by_name = {stage.name: stage for stage in stages}
    ft = by_name["s1-train-qat-w4a16-ft"]
    assert ft.argv[ft.argv.index("--init-from") + 1] == "/r/seed-1/fp16/weights/last.pt"  # policy last
    assert ft.argv[ft.argv.index("--epochs") + 1] == str(config["ft_epochs"])
    assert ft.argv[ft.argv.index("--hyp") + 1] == config["ft_hyp"]
    assert "s1-train-fp16" in ft.needs
    assert by_name["s0-export-ptq-w4a16-int4"].argv[-2:] == ("--weights-format", "int4")
    assert "--half" in by_name["s0-export-fp16-float16"].argv
    assert by_name["s0-eval-ptq-w4a16-int4"].outputs == (Path("/r/seed-0/eval/ptq-w4a16-int4/metrics.json"),)
    assert "--fold-weights" in by_name["s0-eval-fp16-float32"].argv


def test_one_latency_stage_per_seed_times_every_onnx_file_of_that_seed() -> None:
    config = resolve_run_config("demo", {"variants": "fp16,qat-w4a16,ptq-w4a16", "seeds": "0,1"})
    stages = plan_stages(RunRoot("/r"), config)
    got, by_name = names(stages), {stage.name: stage for stage in stages}
    for seed in (0, 1):
        latency = by_name[f"s{seed}-latency"]
        exports = [s for s in stages if s.name.startswith(f"s{seed}-export-")]
        assert set(latency.needs) == {s.name for s in exports} and len(exports) == 6
        assert max(got.index(s.name) for s in stages if s.name.startswith(f"s{seed}-")) == got.index(latency.name)
        labelled = {arg.split("=", 1)[1] for arg in latency.argv if arg.startswith("--onnx=")}
        assert labelled == {f"{s.name.split('-export-')[1]}={s.outputs[0]}" for s in exports}
        assert latency.outputs == (Path(f"/r/seed-{seed}/latency.json"),)
        argv = latency.argv
        assert argv[argv.index("--rounds") + 1] == str(config["latency_rounds"])
        assert argv[argv.index("--threads") + 1] == str(config["latency_threads"])
        assert "--fold-weights" in argv and argv[-2:] == ("--providers", "CPUExecutionProvider")
        assert latency.name in by_name["summary"].needs


def flag_values(stage, flag: str) -> list[str]:
    return [stage.argv[i + 1] for i, word in enumerate(stage.argv) if word == flag]


def test_fine_tunes_follow_their_own_recipe_and_fp16_ft_is_the_matched_control() -> None:
    overrides = {
        "variants": "fp16,qat-w4a16,qat-w4a16-ft,fp16-ft",
        "train_overrides": ["nbs=4", "warmup_epochs=1"],
        "ft_train_overrides": ["nbs=4", "close_mosaic=2"],
    }
    config = resolve_run_config("demo", overrides)
    by_name = {stage.name: stage for stage in plan_stages(RunRoot("/r"), config)}
    scratch, qat_ft, fp_ft = (
        by_name["s0-train-qat-w4a16"],
        by_name["s0-train-qat-w4a16-ft"],
        by_name["s0-train-fp16-ft"],
    )
    assert flag_values(scratch, "--train-arg") == ["nbs=4", "warmup_epochs=1"]
    # The profile-wide warm-up does not reach a fine-tune: it gets ft_train_overrides alone.
    assert flag_values(qat_ft, "--train-arg") == flag_values(fp_ft, "--train-arg") == ["nbs=4", "close_mosaic=2"]
    # fp16-ft is trained exactly as qat-*-ft, minus the quantizer.
    for flag in ("--init-from", "--hyp", "--epochs", "--data", "--batch", "--imgsz"):
        assert flag_values(fp_ft, flag) == flag_values(qat_ft, flag), flag
    assert fp_ft.argv[2] == "fp16" and "--quant-scheme" not in fp_ft.argv
    assert "s0-train-fp16" in fp_ft.needs
    assert {"s0-export-fp16-ft-float32", "s0-eval-fp16-ft-float16"} <= set(by_name)


@pytest.mark.parametrize(
    ("policy", "checkpoint", "train_data"),
    [
        ("last", "last.pt", "dataset.yaml"),
        ("best-on-val", "best.pt", "dataset.yaml"),
        ("best-on-selection", "best.pt", "dataset-selection.yaml"),
    ],
)
def test_the_checkpoint_policy_picks_what_is_exported_quantized_and_fine_tuned(policy, checkpoint, train_data) -> None:
    selection = 16 if policy == "best-on-selection" else None
    overrides = {"variants": VARIANTS, "checkpoint_policy": policy, "selection_images": selection}
    by_name = {stage.name: stage for stage in plan_stages(RunRoot("/r"), resolve_run_config("demo", overrides))}
    fp = f"/r/seed-0/fp16/weights/{checkpoint}"
    assert flag_values(by_name["s0-quantize-ptq-w4a16"], "--weights") == [fp]
    assert flag_values(by_name["s0-train-qat-w4a16-ft"], "--init-from") == [fp]
    for variant in ("fp16", "qat-w4a16", "ptq-w4a16", "qat-w4a16-ft"):
        train = by_name[f"s0-{'quantize' if variant.startswith('ptq') else 'train'}-{variant}"]
        want = Path(f"/r/seed-0/{variant}/weights/{checkpoint}")
        assert train.outputs == (want,)
        assert flag_values(
            by_name[f"s0-export-{variant}-{'float32' if variant == 'fp16' else 'qcdq'}"], "--weights"
        ) == [str(want)]
    # Trainings validate (choose best.pt) on the selection split only under best-on-selection; the
    # evaluator scores val whatever the policy.
    assert flag_values(by_name["s0-train-fp16"], "--data") == [f"/r/dataset/{train_data}"]
    assert flag_values(by_name["s0-eval-fp16-float32"], "--images-dir") == ["/r/dataset/images/val"]
    assert flag_values(by_name["prepare-data"], "--selection-images") == ([str(selection)] if selection else [])


def test_a_gpu_profile_starts_with_the_preflight(tmp_path: Path) -> None:
    config = resolve_run_config("demo", {"device": "0"})
    stages = plan_stages(RunRoot(tmp_path), config)
    assert stages[0].name == "check-env" and stages[0].argv[-4:] == (
        "--device",
        "0",
        "--providers",
        "CPUExecutionProvider",
    )


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------
@pytest.fixture()
def demo_run(tmp_path: Path):
    run_root = RunRoot(tmp_path / "run")
    config = resolve_run_config("demo", {"variants": VARIANTS})
    calls = tmp_path / "calls.txt"
    return run_root, config, calls


def test_a_failure_blocks_only_its_dependents_and_a_rerun_resumes_there(demo_run, monkeypatch, capsys) -> None:
    run_root, config, calls = demo_run
    stages = stand_in(plan_stages(run_root, config), calls)
    monkeypatch.setenv("FAIL_STAGE", "s0-quantize-ptq-w4a16")
    with pytest.raises(
        PipelineError,
        match=r"1 stage\(s\) failed:\n  s0-quantize-ptq-w4a16: exit code 3.*log: .*s0-quantize-ptq-w4a16.log",
    ) as failure:
        run_pipeline(run_root, stages)
    assert "Not run because of them: s0-export-ptq-w4a16-qcdq" in str(failure.value)
    after = ran(calls)[ran(calls).index("s0-quantize-ptq-w4a16") + 1 :]
    assert "s0-train-qat-w4a16-ft" in after and "s0-eval-qat-w4a16-ft-int4" in after  # independent chains ran on
    assert not any("ptq-w4a16" in name for name in after) and "summary" not in after  # its dependents did not
    monkeypatch.delenv("FAIL_STAGE")
    calls.unlink()
    outcome = run_pipeline(run_root, stages)
    assert ran(calls)[0] == "s0-quantize-ptq-w4a16" and ran(calls)[-1] == "summary"
    assert "s0-train-fp16" in outcome.skipped
    calls.unlink()
    assert run_pipeline(run_root, stages).ran == [] and not calls.exists()


def test_a_deleted_artifact_is_rebuilt_and_its_dependents_follow_only_if_it_differs(
    demo_run, capsys, monkeypatch
) -> None:
    run_root, config, calls = demo_run
    stages = stand_in(plan_stages(run_root, config), calls)
    run_pipeline(run_root, stages)
    onnx = run_root.seed(0).onnx_model("yolov10n", "qat-w4a16", "qcdq")
    onnx.unlink()
    calls.unlink()
    outcome = run_pipeline(run_root, stages)
    assert ran(calls) == outcome.redone == ["s0-export-qat-w4a16-qcdq"]  # rebuilt the same: its eval still holds
    assert "output missing" in capsys.readouterr().out

    onnx.unlink()
    calls.unlink()
    monkeypatch.setenv("STAND_IN_VERSION", "2")  # this time the rebuilt file differs
    outcome = run_pipeline(run_root, stages)
    rebuilt_and_dependents = ["s0-export-qat-w4a16-qcdq", "s0-eval-qat-w4a16-qcdq", "s0-latency", "summary"]
    assert ran(calls) == outcome.redone == rebuilt_and_dependents
    assert "its input s0-export-qat-w4a16-qcdq changed since it ran" in capsys.readouterr().out


def test_a_replaced_artifact_is_noticed_by_its_sha256(demo_run) -> None:
    run_root, config, calls = demo_run
    stages = stand_in(plan_stages(run_root, config), calls)
    run_pipeline(run_root, stages)
    metrics = run_root.seed(0).eval_metrics("fp16", "float16")
    original = metrics.read_text()
    metrics.write_text("edited by hand")
    calls.unlink()
    run_pipeline(run_root, stages)
    assert ran(calls) == ["s0-eval-fp16-float16"]  # the summary was built from the original, rebuilt identical
    assert metrics.read_text() == original


def test_redo_reruns_a_stage_and_its_dependents_and_sets_the_old_work_aside(demo_run) -> None:
    run_root, config, calls = demo_run
    stages = stand_in(plan_stages(run_root, config), calls)
    run_pipeline(run_root, stages)
    calls.unlink()
    run_pipeline(run_root, stages, redo=["s0-train-fp16"])
    redone = ran(calls)
    assert redone[0] == "s0-train-fp16" and "s0-quantize-ptq-w4a16" in redone and "s0-train-qat-w4a16-ft" in redone
    assert "s0-train-qat-w4a16" not in redone  # QAT from scratch does not depend on the FP model
    assert list((run_root.set_aside_dir / "seed-0").glob("fp16.stale-*"))
    with pytest.raises(PipelineError, match="--redo s9-train-fp16: not a stage of this run"):
        run_pipeline(run_root, stages, redo=["s9-train-fp16"])


def test_adding_seeds_runs_only_the_new_seed(demo_run) -> None:
    run_root, config, calls = demo_run
    run_pipeline(run_root, stand_in(plan_stages(run_root, config), calls))
    calls.unlink()
    more = resolve_run_config("demo", {"variants": VARIANTS, "seeds": "0,1"})
    run_pipeline(run_root, stand_in(plan_stages(run_root, more), calls))
    assert all(name.startswith("s1-") for name in ran(calls)[:-1]) and ran(calls)[-1] == "summary"
    records = load_run_state(run_root)["stages"]
    assert records["s0-train-fp16"]["attempts"] == 1


def test_stop_after_stops_there_and_names_unknown_stages(demo_run) -> None:
    run_root, config, calls = demo_run
    stages = stand_in(plan_stages(run_root, config), calls)
    outcome = run_pipeline(run_root, stages, stop_after="prepare-data")
    assert outcome.stopped_after == "prepare-data" and ran(calls) == ["make-synthetic-data", "prepare-data"]
    with pytest.raises(PipelineError, match="--stop-after nope: not a stage"):
        run_pipeline(run_root, stages, stop_after="nope")
    state = json.loads(run_root.run_json.read_text())
    assert set(state["stages"]) == {"make-synthetic-data", "prepare-data"}
