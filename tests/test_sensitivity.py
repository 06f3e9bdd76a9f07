"""Sensitivity sweep stage: a tiny real sweep (files, resume, refusal of other settings) and requests refused before
any model is loaded. The units and the mixed scheme are tested in tests/quant/test_sensitivity_units.py."""

from __future__ import annotations

import csv
import json

import pytest
from ultralytics.nn.tasks import DetectionModel

import auto_quantize_model  # noqa: F401  (before ultralytics: offline environment)
from auto_quantize_model.quant.scheme import resolve_scheme
from auto_quantize_model.quant.sensitivity import CSV_COLUMNS, SweepInputError, enumerate_units, low_bit_param_share
from auto_quantize_model.sensitivity import MIXED_SCHEME_JSON, SENSITIVITY_CSV, SENSITIVITY_PNG, SweepRequest, run_sweep


@pytest.fixture(scope="module")
def tiny_sweep(fp16_run, prepared_dataset, tmp_path_factory):
    """The CLI run once on the tiny FP checkpoint: block units, 4 val images."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "sweep_cli", Path(__file__).parents[1] / "scripts" / "cv-models" / "sweep_layer_sensitivity.py"
    )
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    out = tmp_path_factory.mktemp("sweep") / "sensitivity"
    argv = [
        "--weights",
        str(fp16_run.paths.best),
        "--data",
        str(prepared_dataset.dataset_yaml),
        "--out",
        str(out),
        "--granularity",
        "block",
        "--max-val-images",
        "4",
        "--batch",
        "4",
        "--w4-param-fraction",
        "0.8",
    ]
    assert cli.main(argv) == 0
    return out, argv


def _request(fp16_run, prepared_dataset, out, **changes) -> SweepRequest:
    settings = {
        "weights": fp16_run.paths.best,
        "data": prepared_dataset.dataset_yaml,
        "out": out,
        "batch": 4,
        "granularity": "block",
        "max_val_images": 4,
        "low_bit_param_fraction": 0.8,
    }
    return SweepRequest(**{**settings, **changes})


@pytest.mark.slow
def test_tiny_sweep_writes_csv_plot_and_a_loadable_mixed_scheme(tiny_sweep, fp16_run) -> None:
    out, _ = tiny_sweep
    with open(out / SENSITIVITY_CSV, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [row["unit"] for row in rows[:2]] == ["fp", "all"]
    fp = float(rows[0]["mAP50_95"])
    model = DetectionModel("yolov10n.yaml", nc=4, verbose=False)
    units = enumerate_units(model, "block")
    assert [row["unit"] for row in rows[2:]] == [unit.name for unit in units]
    for row in rows:
        assert float(row["drop"]) == pytest.approx(fp - float(row["mAP50_95"]), abs=2e-6)
    # The one-to-many branches are never read by the NMS-free validator: quantizing them cannot change mAP.
    assert {float(row["drop"]) for row in rows if ".cv2." in row["unit"] or ".cv3." in row["unit"]} == {0.0}
    assert (out / SENSITIVITY_PNG).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plan = json.loads((out / "mixed_precision_plan.json").read_text())
    assert plan["requested_low_bit_param_fraction"] == 0.8 and plan["low_bit_param_fraction"] >= 0.8
    scheme = resolve_scheme(out / MIXED_SCHEME_JSON)
    assert low_bit_param_share(model, scheme, 4) >= 0.8
    settings = json.loads((out / "sensitivity_settings.json").read_text())
    assert settings["val_images"] == 4 and settings["granularity"] == "block"


@pytest.mark.slow
def test_tiny_sweep_rerun_measures_nothing_new(tiny_sweep, fp16_run, prepared_dataset) -> None:
    out, _ = tiny_sweep
    before = (out / SENSITIVITY_CSV).read_text()
    lines = []
    result = run_sweep(_request(fp16_run, prepared_dataset, out), log=lines.append)
    assert result.measured_now == 0 and result.skipped == len(result.rows)
    assert (out / SENSITIVITY_CSV).read_text() == before
    assert "0 to measure" in lines[0]


@pytest.mark.slow
def test_tiny_sweep_resumes_a_partial_csv(tiny_sweep, fp16_run, prepared_dataset, tmp_path) -> None:
    import shutil

    out, _ = tiny_sweep
    partial = tmp_path / "partial"
    shutil.copytree(out, partial)
    lines = (partial / SENSITIVITY_CSV).read_text().splitlines()
    (partial / SENSITIVITY_CSV).write_text("\n".join(lines[:-2]) + "\n")  # as if killed two units before the end
    result = run_sweep(_request(fp16_run, prepared_dataset, partial), log=lambda line: None)
    assert result.measured_now == 2
    assert (partial / SENSITIVITY_CSV).read_text() == (out / SENSITIVITY_CSV).read_text()  # same numbers again


@pytest.mark.slow
@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"bits": 3}, "bits: 4 then, 3 now"),
        ({"max_val_images": 2}, "max_val_images: 4 then, 2 now"),
        ({"granularity": "layer"}, "granularity: 'block' then, 'layer' now"),
        ({"scaling": "mse"}, "scaling"),
    ],
)
def test_tiny_sweep_refuses_other_settings_and_names_them(
    tiny_sweep, fp16_run, prepared_dataset, changes, named
) -> None:
    out, _ = tiny_sweep
    before = {path.name: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    with pytest.raises(SweepInputError, match="sensitivity_settings.json") as caught:
        run_sweep(_request(fp16_run, prepared_dataset, out, **changes), log=lambda line: None)
    assert named in str(caught.value)
    assert {path.name: path.read_bytes() for path in out.rglob("*") if path.is_file()} == before  # nothing rewritten


def test_bad_requests_fail_before_any_model_is_loaded(tmp_path) -> None:
    weights, data = tmp_path / "best.pt", tmp_path / "data.yaml"
    with pytest.raises(SweepInputError, match="checkpoint not found"):
        run_sweep(SweepRequest(weights, data, tmp_path / "out"))
    weights.write_bytes(b"not a checkpoint")
    data.write_text("val: images/val\n")
    for changes, match in [
        ({"bits": 8}, "--bits 8"),
        ({"scaling": "lsq"}, "absmax or mse"),
        ({"max_val_images": 0}, "--max-val-images"),
        ({"low_bit_param_fraction": 1.5}, "fraction"),
    ]:
        with pytest.raises(SweepInputError, match=match):
            run_sweep(SweepRequest(weights, data, tmp_path / "out", **changes))
    with pytest.raises(SweepInputError, match="not a loadable Ultralytics checkpoint"):
        run_sweep(SweepRequest(weights, data, tmp_path / "out"))
    assert not (tmp_path / "out").exists()
