"""fp16-ft, the matched control of qat-*-ft, run through the real CLIs the stage plan calls (slow: trains).

One fine-tune of the session's tiny fp16 model under ``checkpoint_policy: best-on-selection`` checks items
of issue 21 together: the fine-tune resolves exactly ``hyp.finetune.yaml`` plus ``ft_train_overrides`` (the
profile-wide warm-up does not reach it), train_metadata.json records the recipe it ran, and best.pt is
chosen on the selection split carved out of train, with the epoch of each checkpoint recorded.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import TINY_IMGSZ

from auto_quantize_model.runs.checkpoint_policy import scored_checkpoint, scored_epoch
from auto_quantize_model.runs.config import resolve_project_path, resolve_run_config
from auto_quantize_model.runs.plan import plan_stages
from auto_quantize_model.runs.run_root import RunRoot
from auto_quantize_model.runs.variants import parse_variant

pytestmark = pytest.mark.slow
FT_OVERRIDES = ["nbs=8", "plots=False"]


def run(stage) -> None:
    done = subprocess.run(list(stage.argv), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.fixture(scope="module")
def fine_tuned(fp16_run, synthetic_source, tmp_path_factory):
    """A run root whose seed-0 fp16 is the session's tiny fp16 run, fine-tuned 2 epochs as fp16-ft."""
    run_root = RunRoot(tmp_path_factory.mktemp("ft") / "run")
    overrides = {
        "variants": "fp16,fp16-ft",
        "imgsz": TINY_IMGSZ,
        "batch": 8,
        "ft_epochs": 2,
        "train_overrides": ["nbs=4", "warmup_epochs=1"],
        "ft_train_overrides": FT_OVERRIDES,
        "checkpoint_policy": "best-on-selection",
        "selection_images": 8,
    }
    config = resolve_run_config("demo", overrides)
    stages = {stage.name: stage for stage in plan_stages(run_root, config)}
    run_root.synthetic_source_dir.parent.mkdir(parents=True)
    run_root.synthetic_source_dir.symlink_to(synthetic_source)
    run_root.seed(0).dir.mkdir()
    run_root.seed(0).train_run("fp16").dir.symlink_to(fp16_run.paths.dir)
    run(stages["prepare-data"])
    run(stages["s0-train-fp16-ft"])
    return run_root, config


def test_a_fine_tune_resolves_its_recipe_plus_ft_train_overrides_and_records_it(fine_tuned) -> None:
    run_root, config = fine_tuned
    paths = run_root.seed(0).train_run("fp16-ft")
    metadata = json.loads(paths.metadata_json.read_text())
    assert metadata["stage"] == "fp16-ft" and metadata["quantized"] is False
    assert metadata["init_from"] == str(run_root.seed(0).train_run("fp16").best)
    expected = yaml.safe_load(resolve_project_path(config["ft_hyp"]).read_text())
    for pair in FT_OVERRIDES:
        expected.update(yaml.safe_load(pair.replace("=", ": ", 1)))
    resolved = metadata["config"]
    assert {key: resolved[key] for key in expected} == expected
    # What ran: no warm-up although the scratch trainings' train_overrides ask for one epoch of it.
    recipe = metadata["recipe"]
    assert (recipe["warmup_epochs"], recipe["warmup_iterations"]) == (0.0, 0)
    assert (recipe["optimizer"], recipe["lr0"], recipe["lrf"], recipe["mosaic"], recipe["nbs"]) == (
        "SGD",
        0.001,
        0.1,
        0.0,
        8,
    )


def test_best_on_selection_chooses_best_pt_on_the_selection_split_and_records_each_epoch(fine_tuned) -> None:
    run_root, config = fine_tuned
    paths = run_root.seed(0).train_run("fp16-ft")
    metadata = json.loads(paths.metadata_json.read_text())
    assert Path(metadata["config"]["data"]) == run_root.selection_dataset_yaml
    # Ultralytics writes best.pt at the last epoch of highest fitness (mAP50-95) on the split it validates on.
    fitness = pd.read_csv(paths.results_csv)["metrics/mAP50-95(B)"].tolist()
    best_epoch = max(epoch for epoch, value in enumerate(fitness, 1) if value == max(fitness))
    checkpoints = metadata["checkpoints"]
    assert checkpoints["last"] == {"epoch": 2}
    assert checkpoints["best"] == {"epoch": best_epoch, "chosen_on": "selection"}
    variant = parse_variant("fp16-ft")
    assert scored_checkpoint(paths, config["checkpoint_policy"]) == paths.best
    assert scored_epoch(run_root.seed(0), variant, config["checkpoint_policy"]) == best_epoch
    assert scored_epoch(run_root.seed(0), variant, "last") == 2


def test_fp16_ft_refuses_a_quantized_checkpoint_before_training(qat_run, prepared_dataset, tmp_path) -> None:
    from conftest import tiny_train_request

    from auto_quantize_model.runs.config import ConfigError
    from auto_quantize_model.train import train_stage

    request = tiny_train_request(tmp_path, prepared_dataset.dataset_yaml, init_from=qat_run.paths.best)
    assert request.stage == "fp16-ft"
    with pytest.raises(ConfigError, match=r"is quantized \(scheme w4a16\); fp16-ft fine-tunes a float model"):
        train_stage(request)
    assert not request.paths.dir.exists()
