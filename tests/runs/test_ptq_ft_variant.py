"""ptq-<scheme>-ft: PTQ of the seed's fp16-ft checkpoint, the equal-training-budget control of qat-<scheme>-ft.

Its grammar, baseline and refusals, the stage that quantizes fp16-ft's checkpoint, the config check that it
calibrates, the epoch it is scored at and its "What ran" label (no training, no model built).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from auto_quantize_model.reports.summary_sections import precision_label, recipe_label
from auto_quantize_model.reports.summary_view import Training
from auto_quantize_model.runs.checkpoint_policy import scored_epoch
from auto_quantize_model.runs.config import ConfigError, resolve_run_config
from auto_quantize_model.runs.plan import plan_stages
from auto_quantize_model.runs.run_root import RunRoot
from auto_quantize_model.runs.variants import GRAMMAR, Baseline, VariantError, parse_variant, parse_variants
from auto_quantize_model.utils.io import write_json_atomic

VARIANTS = "fp16,fp16-ft,ptq-w8a8,ptq-w8a8-ft,ptq-w4a16-ft"


def _flag(argv: tuple[str, ...], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def _stages(**overrides) -> dict:
    config = resolve_run_config("demo", {"variants": VARIANTS, **overrides})
    return {stage.name: stage for stage in plan_stages(RunRoot("/r"), config)}


def test_ptq_scheme_ft_parses_to_its_own_kind_and_its_name_round_trips() -> None:
    variant = parse_variant("ptq-w8a8-ft")
    assert (variant.kind, variant.scheme.name, variant.name) == ("ptq-ft", "w8a8", "ptq-w8a8-ft")
    assert (variant.post_training, variant.ptq_source, variant.trains, variant.fine_tunes) == (
        True,
        "fp16-ft",
        False,
        False,
    )
    assert (parse_variant("ptq-w8a8").ptq_source, parse_variant("qat-w8a8-ft").ptq_source) == ("fp16", None)
    for name in ("ptq-w4a16-ft", "ptq-w4a16-fl8-mse-ft", "ptq-w8a8", "qat-w8a8-ft"):
        assert parse_variant(parse_variant(name).name).name == name
    assert "ptq-<scheme>-ft" in GRAMMAR
    with pytest.raises(VariantError, match=r"unknown scheme 'w8a9'"):
        parse_variant("ptq-w8a9-ft")


def test_a_scheme_whose_own_name_ends_in_ft_stays_whole(tmp_path: Path) -> None:
    # A scheme file without the .json suffix, its path ending in "-ft": ptq-<it> is plain PTQ, ptq-<it>-ft of fp16-ft.
    path = tmp_path / "late-ft"
    path.write_text(json.dumps({"name": "late-ft", "weight_bit_width": 8}))
    whole, fine_tuned = parse_variant(f"ptq-{path}"), parse_variant(f"ptq-{path}-ft")
    assert (whole.kind, whole.scheme_spec, whole.name) == ("ptq", str(path), "ptq-late-ft")
    assert (fine_tuned.kind, fine_tuned.scheme_spec, fine_tuned.name) == ("ptq-ft", str(path), "ptq-late-ft-ft")


def test_ptq_scheme_ft_has_the_formats_of_ptq_and_is_compared_with_fp16_ft() -> None:
    for scheme in ("w8a8", "w4a16", "w4a8"):
        ptq, ptq_ft = parse_variant(f"ptq-{scheme}"), parse_variant(f"ptq-{scheme}-ft")
        assert (ptq_ft.weight_formats, ptq_ft.headline_format) == (ptq.weight_formats, ptq.headline_format)
        assert ptq_ft.integer_weights_and_activations == ptq.integer_weights_and_activations
    assert parse_variant("ptq-w4a16-ft").weight_formats == ("qcdq", "int4")
    assert parse_variant("ptq-w8a8-ft").weight_formats == ("qdq",)
    names = ["fp16", "fp16-ft", "ptq-w8a8", "ptq-w8a8-ft"]
    assert parse_variant("ptq-w8a8-ft").baseline(names) == Baseline("fp16-ft", True)
    assert parse_variant("ptq-w8a8").baseline(names) == Baseline("fp16", True)  # plain PTQ keeps fp16


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        (["fp16", "ptq-w8a8-ft"], r"variant ptq-w8a8-ft quantizes the same seed's fp16-ft checkpoint.*add fp16-ft"),
        (["ptq-w8a8-ft"], r"variant ptq-w8a8-ft quantizes the same seed's fp16-ft checkpoint.*add fp16-ft"),
        (["fp16-ft", "ptq-w8a8-ft"], r"start from the same seed's fp16 checkpoint.*add fp16$"),
    ],
)
def test_ptq_scheme_ft_without_fp16_ft_is_refused_naming_it(texts, message) -> None:
    with pytest.raises(VariantError, match=message):
        parse_variants(texts)


def test_ptq_scheme_ft_quantizes_fp16_ft_s_checkpoint_after_its_training() -> None:
    stages = _stages()
    ptq, ptq_ft = stages["s0-quantize-ptq-w8a8"], stages["s0-quantize-ptq-w8a8-ft"]
    assert Path(ptq_ft.argv[1]).name == "ptq.py" and ptq_ft.kind == "quantize"
    assert _flag(ptq_ft.argv, "--weights") == "/r/seed-0/fp16-ft/weights/last.pt"  # checkpoint_policy: last
    assert _flag(ptq.argv, "--weights") == "/r/seed-0/fp16/weights/last.pt"
    assert "s0-train-fp16-ft" in ptq_ft.needs and "s0-train-fp16" not in ptq_ft.needs
    assert ptq_ft.outputs == (Path("/r/seed-0/ptq-w8a8-ft/weights/last.pt"),)
    # Everything else as ptq-w8a8: the same calibration images, BN re-estimation and scheme.
    for flag in ("--quant-scheme", "--data", "--bn-recalib-batches", "--calib-images", "--imgsz", "--batch"):
        assert _flag(ptq_ft.argv, flag) == _flag(ptq.argv, flag), flag
    names = list(stages)
    assert names.index("s0-train-fp16-ft") < names.index("s0-quantize-ptq-w8a8-ft")
    assert _flag(stages["s0-export-ptq-w8a8-ft-qdq"].argv, "--weights") == "/r/seed-0/ptq-w8a8-ft/weights/last.pt"
    assert {"s0-eval-ptq-w8a8-ft-qdq-openvino", "s0-export-ptq-w4a16-ft-int4"} <= set(stages)
    assert "--calib-images" not in stages["s0-quantize-ptq-w4a16-ft"].argv  # weight-only: nothing to calibrate


def test_ptq_scheme_ft_follows_the_checkpoint_policy_and_bias_correction() -> None:
    stages = _stages(checkpoint_policy="best-on-selection", selection_images=16, ptq_bias_correction=True)
    argv = stages["s0-quantize-ptq-w8a8-ft"].argv
    assert _flag(argv, "--weights") == "/r/seed-0/fp16-ft/weights/best.pt" and "--bias-correction" in argv


def test_ptq_scheme_ft_counts_among_the_variants_that_calibrate() -> None:
    with pytest.raises(ConfigError, match=r"ptq_calib_images: variants \['ptq-w8a8-ft'\] calibrate") as caught:
        resolve_run_config("demo", {"variants": "fp16,fp16-ft,ptq-w8a8-ft", "ptq_calib_images": 0})
    assert "demo.yaml" in str(caught.value)


def test_ptq_scheme_ft_is_scored_at_fp16_ft_s_epoch_and_says_what_it_quantized(tmp_path: Path) -> None:
    seed_root = RunRoot(tmp_path).seed(0)
    for trained, last_epoch in (("fp16", 30), ("fp16-ft", 10)):
        paths = seed_root.train_run(trained)
        write_json_atomic(paths.metadata_json, {"checkpoints": {"last": {"epoch": last_epoch}}})
    ptq, ptq_ft = parse_variant("ptq-w8a8"), parse_variant("ptq-w8a8-ft")
    assert (scored_epoch(seed_root, ptq, "last"), scored_epoch(seed_root, ptq_ft, "last")) == (30, 10)
    training = Training(0, ptq_ft, seed_root.train_run(ptq_ft.name))
    assert precision_label(training, ptq_ft) == "post-training quantization of the fp16-ft checkpoint (no training)"
    assert precision_label(None, ptq) == "post-training quantization of the fp16 checkpoint (no training)"
    assert recipe_label(training) == "—"
