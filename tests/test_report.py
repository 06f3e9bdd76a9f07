"""The summary stage on run roots holding real evaluator-shaped outputs (no training involved).

The val set is a generated synthetic COCO split; each model's ``detections.json`` is its ground
truth with box noise (more for the "quantized" model), scored by pycocotools exactly as the
evaluator scores, so the headline table, the bootstrap CI and ``summary.csv`` can be checked
against numbers computed independently here.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from auto_quantize_model.evaluation.stats import accumulate_map, image_evals, load_ground_truth
from auto_quantize_model.report import write_summary
from auto_quantize_model.runs import latency_keys as lk
from auto_quantize_model.runs import metrics_keys as mk
from auto_quantize_model.runs import summary_schema as ss
from auto_quantize_model.runs.config import resolve_run_config, save_or_check_run_config
from auto_quantize_model.runs.plan import plan_stages
from auto_quantize_model.runs.run_root import RunRoot, export_metadata_path
from auto_quantize_model.runs.stage_runner import update_stage_record
from auto_quantize_model.utils.io import sha256_file, write_json_atomic

REPO = Path(__file__).resolve().parents[1]
SUMMARY_CLI = REPO / "scripts" / "cv-models" / "write_yolov10m_scratch_train_summary.py"
RESULTS_HEADER = "epoch,time,metrics/mAP50(B),metrics/mAP50-95(B),train/box_loss"
# box jitter, px
# ptq-w8a8-ft: fp16's jitter (the same rng stream, so fp16's very detections): compared with fp16 by mistake it would
# read ratio 1 and a CI of exactly 0.
NOISE = {
    "fp16": 1.0,
    "fp16-ft": 0.5,
    "qat-w4a16": 4.0,
    "qat-w4a16-ft": 2.0,
    "ptq-w4a16": 3.0,
    "ptq-w8a8": 2.5,
    "ptq-w8a8-ft": 1.0,
}
FORMATS = {  # else qcdq, int4
    "fp16": ("float32", "float16"),
    "fp16-ft": ("float32", "float16"),
    "ptq-w8a8": ("qdq",),
    "ptq-w8a8-ft": ("qdq",),
}
SIZES = {"float32": 9_000_000, "float16": 4_500_000, "qcdq": 2_400_000, "int4": 1_300_000, "qdq": 2_300_000}
LATENCY_MS = {"float32": 20.0, "float16": 24.0, "qcdq": 19.0, "int4": 18.0, "qdq": 12.0}  # latency medians, seed 0
EVAL_LATENCY_MS = 999.25  # what metrics.json says: must never reach the summary


@pytest.fixture(scope="module")
def val_annotations(tmp_path_factory) -> Path:
    from auto_quantize_model.data.synthetic import generate_synthetic_coco

    source = generate_synthetic_coco(tmp_path_factory.mktemp("src") / "coco", 2, 24, imgsz=96, seed=3).root
    return source / "annotations" / "instances_val2017.json"


def noisy_detections(ann_file: Path, jitter: float, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    gt = json.loads(ann_file.read_text())
    detections = []
    for ann in gt["annotations"]:
        x, y, w, h = ann["bbox"]
        dx, dy = rng.normal(0, jitter, 2)
        detections.append(
            {
                "image_id": ann["image_id"],
                "category_id": ann["category_id"],
                "bbox": [x + dx, y + dy, w, h],
                "score": float(rng.uniform(0.3, 1.0)),
            }
        )
    return detections


def coco_map(ann_file: Path, detections: list[dict], image_ids: list[int]) -> float:
    evals = image_evals(load_ground_truth(ann_file), detections, image_ids)
    return float(accumulate_map(evals, np.ones((1, len(image_ids)), dtype=np.int64))["mAP50_95"][0])


def write_training(run_root: RunRoot, seed: int, variant: str, amp: bool, finished: bool = True) -> None:
    """A finished training folder: results.csv (best epoch 2, last 3), both checkpoints, their recorded epochs."""
    paths = run_root.seed(seed).train_run(variant)
    paths.weights_dir.mkdir(parents=True)
    if variant.startswith("ptq-"):  # PTQ writes only the checkpoint the policy names: last.pt under "last"
        paths.last.write_bytes(b"ptq")
        return
    paths.results_csv.write_text(RESULTS_HEADER + "\n1,1,0.2,0.1,1.5\n2,2,0.5,0.3,1.2\n3,3,0.4,0.25,1.1\n")
    device = "cuda:0" if amp else "cpu"
    checkpoints = {"last": {"epoch": 3}, "best": {"epoch": 2, "chosen_on": "val"}}
    metadata = {"status": "finished", "precision": {"amp": amp, "device": device}, "checkpoints": checkpoints}
    write_json_atomic(paths.metadata_json, metadata)
    if finished:
        paths.best.write_bytes(b"best")
        paths.last.write_bytes(b"last")


def write_cell(run_root: RunRoot, ann_file: Path, seed: int, variant: str, fmt: str) -> float:
    """ONNX file, export metadata, detections.json and metrics.json of one (seed, variant, format)."""
    seed_root = run_root.seed(seed)
    onnx = seed_root.onnx_model("yolov10n", variant, fmt)
    onnx.parent.mkdir(parents=True, exist_ok=True)
    onnx.write_bytes(b"\0" * SIZES[fmt])
    write_json_atomic(export_metadata_path(onnx), {"weights_format": fmt})
    detections = noisy_detections(ann_file, NOISE[variant], seed)
    image_ids = sorted(img["id"] for img in json.loads(ann_file.read_text())["images"])
    value = coco_map(ann_file, detections, image_ids)
    out = seed_root.eval_dir(variant, fmt)
    out.mkdir(parents=True, exist_ok=True)
    (out / mk.DETECTIONS_FILE).write_text(json.dumps(detections))
    metrics = {
        mk.MAP50_95: value,
        mk.MAP50: min(1.0, value + 0.2),
        mk.IMAGE_IDS: image_ids,
        mk.ANNOTATIONS: {mk.PATH: str(ann_file), mk.SHA256: sha256_file(ann_file)},
        mk.LATENCY_MS: {mk.LATENCY_PER_IMAGE: {mk.LATENCY_STAT_P50: EVAL_LATENCY_MS}},
        mk.PROVIDERS: ["CPUExecutionProvider"],
        mk.SESSION: {"fold_weights": True},
        mk.PER_CLASS: {"circle": {"AP50_95": value}},
        mk.AT_CONF_PROD: {"conf": 0.25, "precision": 0.9, "recall": 0.8, "f1": 0.85},
    }
    write_json_atomic(out / mk.METRICS_FILE, metrics)
    return value


def write_latency(run_root: RunRoot, seed: int, variants: tuple[str, ...]) -> None:
    """A seed's latency.json as the latency stage writes it (seed k runs 1 + k/10 times slower)."""
    files = {}
    for variant in variants:
        for fmt in FORMATS.get(variant, ("qcdq", "int4")):
            median = LATENCY_MS[fmt] * (1 + seed / 10)
            files[f"{variant}-{fmt}"] = {
                lk.MEDIAN_MS: median,
                lk.P25_MS: median - 0.5,
                lk.P75_MS: median + 0.75,
                lk.MIN_MS: median - 1,
                lk.MAX_MS: median + 3,
                lk.PROVIDERS: ["CPUExecutionProvider"],
            }
    load = {lk.LOAD_MIN: 1.25, lk.LOAD_MEDIAN: 1.5, lk.LOAD_MAX: 1.75}
    report = {lk.FILES: files, lk.ROUNDS: 30, lk.WARMUP_RUNS: 3, lk.THREADS: 1, lk.CPUS: 2, lk.LOAD_AVG_1MIN: load}
    write_json_atomic(run_root.seed(seed).latency_json, report)


def make_run_root(
    tmp_path: Path,
    ann_file: Path,
    seeds=(0, 1),
    skip: tuple = (),
    variants=("fp16", "qat-w4a16"),
    latency: bool = True,
    **overrides,
) -> tuple[RunRoot, dict]:
    run_root = RunRoot(tmp_path / "run")
    config = resolve_run_config("demo", {"seeds": ",".join(map(str, seeds)), "variants": list(variants), **overrides})
    save_or_check_run_config(run_root, config)
    run_root.val_annotations.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(ann_file, run_root.val_annotations)
    write_json_atomic(run_root.dataset_provenance, {"source_root": "/src", "splits": {"val": {"images": 24}}})
    values = {}
    for seed in seeds:
        for variant in variants:
            write_training(run_root, seed, variant, amp=False)
            for fmt in FORMATS.get(variant, ("qcdq", "int4")):
                if (seed, variant, fmt) not in skip:
                    values[(seed, variant, fmt)] = write_cell(run_root, ann_file, seed, variant, fmt)
        if latency:
            write_latency(run_root, seed, variants)
    for stage in plan_stages(run_root, config):
        if stage.name != "summary":
            update_stage_record(run_root, stage.name, status="done", attempts=1, duration_s=1.0, exit_code=0)
    return run_root, values


def row(text: str, first_cell: str) -> list[str]:
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no table row {first_cell!r}")


def section(text: str, heading: str) -> str:
    """The markdown from ``heading`` up to the next ``## `` heading."""
    return heading + text.split(heading, 1)[1].split("\n## ", 1)[0]


def test_headline_has_per_seed_values_mean_std_ratio_and_a_ci_that_excludes_zero(tmp_path, val_annotations) -> None:
    run_root, values = make_run_root(tmp_path, val_annotations)
    result = write_summary(run_root)
    assert result.complete, result.missing
    text = run_root.summary_md.read_text()
    fp = [values[(s, "fp16", "float32")] for s in (0, 1)]
    quant = [values[(s, "qat-w4a16", "qcdq")] for s in (0, 1)]
    cells = row(text, "qat-w4a16 (qcdq)")
    assert cells[1] == "fp16"  # its baseline
    assert cells[2:4] == [f"{quant[0]:.4f} (epoch 3)", f"{quant[1]:.4f} (epoch 3)"]  # policy last: last.pt's epoch
    assert cells[4].startswith(f"{np.mean(quant):.4f} ± {np.std(quant, ddof=1):.4f}")
    assert cells[5] == f"{np.mean(quant) / np.mean(fp):.3f}"
    low, high = (float(x) for x in cells[6].strip("[]").split(","))
    assert low < high < 0  # 4 px jitter against 1 px on every box: a real loss, the CI must say so
    assert cells[8] == f"{SIZES['qcdq'] / SIZES['float32']:.3f}"
    assert cells[9] == f"{LATENCY_MS['qcdq'] / LATENCY_MS['float32']:.2f}"  # both seeds scale alike
    assert "qat-w4a16 mAP50-95 is" in text and "excludes 0" in text
    assert "**Checkpoint policy: last.** Every number is from `last.pt`" in text


def test_fine_tunes_are_compared_with_fp16_ft_and_every_row_names_its_baseline(tmp_path, val_annotations) -> None:
    variants = ("fp16", "fp16-ft", "qat-w4a16-ft", "ptq-w4a16")
    run_root, values = make_run_root(tmp_path, val_annotations, variants=variants)
    result = write_summary(run_root)
    assert result.complete, result.missing
    text = run_root.summary_md.read_text()
    mean = {
        v: np.mean([values[(s, v, "float32" if v.startswith("fp16") else "qcdq")] for s in (0, 1)]) for v in variants
    }
    ft = row(text, "qat-w4a16-ft (qcdq)")
    assert ft[1] == "fp16-ft" and ft[5] == f"{mean['qat-w4a16-ft'] / mean['fp16-ft']:.3f}"
    assert ft[5] != f"{mean['qat-w4a16-ft'] / mean['fp16']:.3f}"  # the matched ratio, not the one against fp16
    assert row(text, "fp16-ft (float32)")[1] == "fp16" and row(text, "ptq-w4a16 (qcdq)")[1] == "fp16"
    assert row(text, "fp16 (float32)")[1] == "— (the baseline)"
    assert "**qat-w4a16-ft vs fp16-ft:** qat-w4a16-ft mAP50-95 is" in text and "Warning" not in text
    with run_root.summary_csv.open() as handle:
        rows = {(int(r[ss.SEED]), r[ss.VARIANT], r[ss.WEIGHTS_FORMAT]): r for r in csv.DictReader(handle)}
    assert rows[(0, "qat-w4a16-ft", "int4")][ss.BASELINE] == "fp16-ft"
    assert rows[(1, "fp16", "float16")][ss.BASELINE] == ""
    assert {r[ss.CHECKPOINT_POLICY] for r in rows.values()} == {"last"}
    # A PTQ checkpoint is the fp16 last.pt quantized: it carries fp16's epoch.
    assert rows[(1, "ptq-w4a16", "qcdq")][ss.CHECKPOINT_EPOCH] == "3"


def test_ptq_of_fp16_ft_is_compared_with_fp16_ft_at_its_epoch_and_has_no_training(tmp_path, val_annotations) -> None:
    variants = ("fp16", "fp16-ft", "ptq-w8a8-ft")
    run_root, values = make_run_root(tmp_path, val_annotations, variants=variants, eval_runtimes="onnxruntime")
    for seed in (0, 1):  # fp16-ft's last.pt is from its epoch 2 (fp16's from epoch 3): PTQ of it carries epoch 2
        paths = run_root.seed(seed).train_run("fp16-ft")
        metadata = json.loads(paths.metadata_json.read_text())
        metadata["checkpoints"]["last"]["epoch"] = 2
        write_json_atomic(paths.metadata_json, metadata)
    result = write_summary(run_root)
    assert result.complete, result.missing
    text = run_root.summary_md.read_text()
    ptq = [values[(s, "ptq-w8a8-ft", "qdq")] for s in (0, 1)]
    ft = [values[(s, "fp16-ft", "float32")] for s in (0, 1)]
    cells = row(text, "ptq-w8a8-ft (qdq)")
    assert cells[1] == "fp16-ft" and cells[5] == f"{np.mean(ptq) / np.mean(ft):.3f}" != "1.000"
    assert cells[2:4] == [f"{ptq[0]:.4f} (epoch 2)", f"{ptq[1]:.4f} (epoch 2)"]
    low, high = (float(x) for x in cells[6].strip("[]").split(","))
    assert low < high < 0  # paired with fp16-ft's detections (against fp16's own it would be [0, 0])
    assert "**ptq-w8a8-ft vs fp16-ft:** ptq-w8a8-ft mAP50-95 is" in text and "Warning" not in text
    what_ran = dict(zip(["variant", "precision", "recipe"], row(section(text, "## What ran"), "ptq-w8a8-ft")))
    assert what_ran["precision"] == "post-training quantization of the fp16-ft checkpoint (no training)"
    assert what_ran["recipe"] == "—"
    assert "| ptq-w8a8-ft |" not in section(text, "## In-training validation")
    with run_root.summary_csv.open() as handle:
        rows = {(int(r[ss.SEED]), r[ss.VARIANT], r[ss.WEIGHTS_FORMAT]): r for r in csv.DictReader(handle)}
    assert (rows[(1, "ptq-w8a8-ft", "qdq")][ss.BASELINE], rows[(1, "ptq-w8a8-ft", "qdq")][ss.CHECKPOINT_EPOCH]) == (
        "fp16-ft",
        "2",
    )


def test_a_fine_tune_without_fp16_ft_gets_a_warning_not_a_silent_comparison(tmp_path, val_annotations) -> None:
    run_root, _ = make_run_root(tmp_path, val_annotations, variants=("fp16", "qat-w4a16-ft"))
    write_summary(run_root)
    text = run_root.summary_md.read_text()
    assert row(text, "qat-w4a16-ft (qcdq)")[1] == "fp16 (not matched: no fp16-ft in this run)"
    assert "**Warning: qat-w4a16-ft is not compared with its matched baseline.**" in text


def test_best_on_val_is_flagged_beside_every_number_with_the_epoch_it_chose(tmp_path, val_annotations) -> None:
    run_root, values = make_run_root(tmp_path, val_annotations, checkpoint_policy="best-on-val")
    result = write_summary(run_root)
    assert result.complete, result.missing
    text = run_root.summary_md.read_text()
    flagged = f"{values[(1, 'qat-w4a16', 'qcdq')]:.4f} (epoch 2; checkpoint selected on the scored images)"
    assert row(text, "qat-w4a16 (qcdq)")[3] == flagged
    assert row(text, "fp16 (float32)")[2].endswith("(epoch 2; checkpoint selected on the scored images)")
    assert "**Checkpoint policy: best-on-val, checkpoint selected on the scored images.**" in text
    verdicts = [line for line in text.splitlines() if line.startswith("- **qat-w4a16 vs fp16:**")]
    assert verdicts and verdicts[0].endswith("(checkpoint selected on the scored images)")
    with run_root.summary_csv.open() as handle:
        rows = list(csv.DictReader(handle))
    assert {(r[ss.CHECKPOINT_POLICY], r[ss.CHECKPOINT_EPOCH]) for r in rows} == {("best-on-val", "2")}


def test_artifact_table_has_the_provider_and_the_latency_stage_figures_with_spread_and_load(
    tmp_path, val_annotations
) -> None:
    run_root, _ = make_run_root(tmp_path, val_annotations)
    write_summary(run_root)
    text = run_root.summary_md.read_text()
    artifacts = section(text, "## ONNX artifacts")
    header = row(artifacts, "variant")
    assert "eval provider" in header and "latency median ms" in header and "IQR ms" in header
    cells = dict(zip(header, row(artifacts, "qat-w4a16")))  # its first qat-w4a16 row: qcdq
    assert cells["weights"] == "qcdq" and cells["eval provider"] == "CPUExecutionProvider"
    assert cells["latency median ms"] == "19.00" and cells["IQR ms"] == "18.50-19.75"
    assert cells["min-max ms"] == "18.00-22.00" and cells["latency provider"] == "CPUExecutionProvider"
    assert "30 interleaved rounds" in text and "load average 1.25-1.75 (median 1.50)" in text
    assert f"{EVAL_LATENCY_MS:.2f}" not in text  # an evaluation's own timing is never shown
    with run_root.summary_csv.open() as handle:
        by_key = {(r[ss.SEED], r[ss.VARIANT], r[ss.WEIGHTS_FORMAT]): r for r in csv.DictReader(handle)}
    assert float(by_key[("1", "qat-w4a16", "int4")][ss.LATENCY_MS_P50]) == pytest.approx(LATENCY_MS["int4"] * 1.1)


def test_without_a_latency_stage_there_is_no_latency_column_and_the_root_is_incomplete(
    tmp_path, val_annotations
) -> None:
    run_root, _ = make_run_root(tmp_path, val_annotations, seeds=(0,), latency=False)
    result = write_summary(run_root)
    text = run_root.summary_md.read_text()
    assert "latency median ratio" not in row(text, "variant (ONNX scored)")
    assert not any("latency" in cell for cell in row(section(text, "## ONNX artifacts"), "variant"))
    assert "No latency columns: `seed-0/latency.json` is missing (stage s0-latency)" in text
    assert f"{EVAL_LATENCY_MS:.2f}" not in text
    assert result.missing == ["seed 0: no seed-0/latency.json (stage s0-latency)"]


def test_summary_csv_has_one_row_per_variant_seed_and_format_and_json_says_complete(tmp_path, val_annotations) -> None:
    run_root, values = make_run_root(tmp_path, val_annotations)
    write_summary(run_root)
    with run_root.summary_csv.open() as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == ss.SUMMARY_COLUMNS and len(rows) == 8
    by_key = {(int(r[ss.SEED]), r[ss.VARIANT], r[ss.WEIGHTS_FORMAT]): r for r in rows}
    assert set(by_key) == set(values)
    cell = by_key[(1, "qat-w4a16", "int4")]
    assert float(cell[ss.MAP50_95]) == pytest.approx(values[(1, "qat-w4a16", "int4")])
    assert cell[ss.ONNX] == "seed-1/onnx/yolov10n-qat-w4a16-int4.onnx" and int(cell[ss.ONNX_BYTES]) == SIZES["int4"]
    assert float(cell[ss.VAL_MAP50_95_BEST]) == 0.3
    summary = json.loads(run_root.summary_json.read_text())
    assert summary["complete"] is True and summary["seeds"] == [0, 1] and summary["variants"] == ["fp16", "qat-w4a16"]


def test_precision_labels_say_what_ran(tmp_path, val_annotations) -> None:
    run_root, _ = make_run_root(tmp_path, val_annotations, seeds=(0,))
    write_training_path = run_root.seed(0).train_run("qat-w4a16").metadata_json
    write_json_atomic(write_training_path, {"status": "finished", "precision": {"amp": True, "device": "cuda:0"}})
    write_summary(run_root)
    text = run_root.summary_md.read_text()
    assert row(text, "fp16")[1] == "FP32 (AMP off: cpu)"
    assert row(text, "qat-w4a16")[1] == "FP16/AMP (cuda:0)"


def test_a_half_finished_root_names_what_is_missing_and_is_not_complete(tmp_path, val_annotations) -> None:
    run_root, _ = make_run_root(tmp_path, val_annotations, skip=((1, "qat-w4a16", "int4"),))
    run_root.seed(0).onnx_model("yolov10n", "fp16", "float16").unlink()
    update_stage_record(run_root, "s1-eval-qat-w4a16-int4", status="failed", exit_code=3, log="logs/x.log")
    result = write_summary(run_root)
    assert not result.complete
    assert "seed 1 qat-w4a16 int4: not evaluated" in result.missing
    assert any("seed 0 fp16 float16: no ONNX" in item for item in result.missing)
    assert any("stage s1-eval-qat-w4a16-int4 failed (exit code 3)" in item for item in result.missing)
    text = run_root.summary_md.read_text()
    assert "Incomplete: 4 item(s) missing" in text and "## Missing or not finished" in text
    assert json.loads(run_root.summary_json.read_text())["complete"] is False


def test_dataset_table_shows_the_image_counts_the_dataset_writer_recorded(tmp_path, val_annotations) -> None:
    from auto_quantize_model.data.coco_dataset import prepare_coco_dataset

    run_root = RunRoot(tmp_path / "run")
    source = val_annotations.parents[1]
    prepare_coco_dataset(source, run_root.dataset_dir)
    write_summary(run_root)
    text = run_root.summary_md.read_text()
    provenance = json.loads(run_root.dataset_provenance.read_text())
    for split, images in (("train", 2), ("val", 24)):
        boxes = provenance["splits"][split]["counts"]["boxes_written"]
        assert row(text, split)[1:4] == [str(images), str(boxes), f"instances_{split}2017.json"]


def test_the_summary_names_its_run_root_without_the_machine_path(tmp_path, val_annotations) -> None:
    run_root, _ = make_run_root(tmp_path, val_annotations, seeds=(0, 1))
    write_summary(run_root)
    text = run_root.summary_md.read_text()
    assert str(run_root.root) not in text
    assert "`run` (the folder holding this file)" in text
    assert "`tensorboard --logdir_spec seed-0:seed-0,seed-1:seed-1`" in text


def test_each_evaluated_onnx_reaches_tensorboard_once_after_the_summary(tmp_path, val_annotations) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_root, values = make_run_root(tmp_path, val_annotations, seeds=(0,))
    write_summary(run_root)
    write_summary(run_root)  # a rerun replaces the sessions, it does not add to them
    for (seed, variant, fmt), value in values.items():
        folder = run_root.seed(seed).eval_tensorboard_dir(variant, fmt)
        assert len(list(folder.glob("events.out.tfevents.*"))) == 1
        events = EventAccumulator(str(folder))
        events.Reload()
        (mean,) = events.Scalars("onnx/mAP50-95")
        (size,) = events.Scalars("onnx/size_MB")
        (latency,) = events.Scalars("onnx/latency_p50_ms")
        assert mean.value == pytest.approx(value) and size.value == pytest.approx(SIZES[fmt] / 1e6)
        assert latency.value == pytest.approx(LATENCY_MS[fmt])  # the latency stage's median, not the eval's
        assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")


def test_a_bare_run_root_gives_a_summary_not_a_crash(tmp_path) -> None:
    run_root = RunRoot(tmp_path / "bare")
    run_root.root.mkdir()
    result = write_summary(run_root)
    assert not result.complete and any("run config missing" in item for item in result.missing)


def test_summary_cli_strict_fails_on_an_incomplete_root(tmp_path) -> None:
    (tmp_path / "bare").mkdir()
    cli = [sys.executable, str(SUMMARY_CLI), "--run-root", str(tmp_path / "bare")]
    assert subprocess.run(cli, capture_output=True).returncode == 0
    strict = subprocess.run([*cli, "--strict"], capture_output=True, text=True)
    assert strict.returncode == 1 and "missing: run config missing" in strict.stdout


def test_an_artifact_built_from_a_changed_input_is_not_complete(tmp_path, val_annotations) -> None:
    run_root, _ = make_run_root(tmp_path, val_annotations, seeds=(0,))
    best = run_root.seed(0).train_run("fp16").last  # the checkpoint the demo's policy ("last") exports
    onnx = run_root.seed(0).onnx_model("yolov10n", "fp16", "float32")
    write_json_atomic(
        export_metadata_path(onnx), {"weights_format": "float32", "source": {"sha256": sha256_file(best)}}
    )
    update_stage_record(run_root, "s0-train-fp16", outputs_sha256={str(best): sha256_file(best)})
    update_stage_record(run_root, "s0-export-fp16-float32", inputs_sha256={"s0-train-fp16": sha256_file(best)})
    assert write_summary(run_root).complete

    best.write_bytes(b"retrained, and the redo of its dependents was cut short")  # e.g. --redo ... --stop-after
    update_stage_record(run_root, "s0-train-fp16", outputs_sha256={str(best): sha256_file(best)})
    result = write_summary(run_root)

    assert not result.complete
    assert any("seed 0 fp16 float32: exported from last.pt, whose bytes are changed since" in i for i in result.missing)
    assert "stage s0-export-fp16-float32 is stale: its input s0-train-fp16 changed since it ran" in "\n".join(
        result.missing
    )
    assert json.loads(run_root.summary_json.read_text())["complete"] is False


def test_a_partially_scored_val_set_is_marked_beside_its_numbers_and_not_complete(tmp_path, val_annotations) -> None:
    run_root, _ = make_run_root(tmp_path, val_annotations, seeds=(0,))
    metrics_path = run_root.seed(0).eval_metrics("qat-w4a16", "qcdq")
    metrics = json.loads(metrics_path.read_text())
    metrics.update({mk.NUM_IMAGES: 22, mk.NUM_IMAGES_REQUESTED: 24, mk.NUM_IMAGES_SKIPPED: 2})
    write_json_atomic(metrics_path, metrics)

    result = write_summary(run_root)

    text = run_root.summary_md.read_text()
    assert "22 of 24 val images" in row(text, "qat-w4a16 (qcdq)")[2]  # the headline's seed-0 cell
    assert any(
        line.startswith("| qat-w4a16 | qcdq |") and "(22 of 24 val images)" in line for line in text.splitlines()
    )
    assert not result.complete and any("scored on 22 of 24 val images" in item for item in result.missing)
