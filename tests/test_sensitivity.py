"""Sensitivity sweep stage: tiny real sweeps of weights and of activations (files, placement, calibration split,
resume, refusal of other settings, an old settings file) and requests refused before any model is loaded. The units
and the mixed schemes are tested in tests/quant/test_sensitivity_units.py."""

from __future__ import annotations

import csv
import json

import pytest
from ultralytics.nn.tasks import DetectionModel

import auto_quantize_model  # noqa: F401  (before ultralytics: offline environment)
from auto_quantize_model.quant.scheme import resolve_scheme
from auto_quantize_model.quant.sensitivity import (
    CSV_COLUMNS,
    LEGACY_SETTINGS,
    SweepInputError,
    enumerate_units,
    low_bit_param_share,
)
from auto_quantize_model.sensitivity import (
    ACTIVATION_FILES,
    MIXED_SCHEME_JSON,
    SENSITIVITY_CSV,
    SENSITIVITY_PNG,
    SETTINGS_JSON,
    SweepRequest,
    run_sweep,
)


def _cli():
    """The sweep's CLI script as a module."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "sweep_cli", Path(__file__).parents[1] / "scripts" / "cv-models" / "sweep_layer_sensitivity.py"
    )
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    return cli


@pytest.fixture(scope="module")
def tiny_sweep(fp16_run, prepared_dataset, tmp_path_factory):
    """The CLI run once on the tiny FP checkpoint: block units, 4 val images."""
    cli = _cli()
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


# ----------------------------------------------------------------------------------------------
# Back compatibility: a weights sweep written before the activations sweep existed
# ----------------------------------------------------------------------------------------------
def _as_before_activation_sweeps(out) -> None:
    """Strip what the activations sweep added: its settings keys and the csv's ``swept`` column."""
    settings = json.loads((out / SETTINGS_JSON).read_text())
    for key in LEGACY_SETTINGS:
        settings.pop(key)
    settings.pop("calib_split")
    (out / SETTINGS_JSON).write_text(json.dumps(settings))
    with open(out / SENSITIVITY_CSV, newline="") as handle:
        rows = list(csv.DictReader(handle))
    old = [",".join(CSV_COLUMNS[:-1])] + [",".join(row[c] for c in CSV_COLUMNS[:-1]) for row in rows]
    (out / SENSITIVITY_CSV).write_text("\n".join(old) + "\n")


@pytest.mark.slow
def test_an_old_weights_sweep_resumes_as_a_weights_sweep_and_refuses_activations(
    tiny_sweep, fp16_run, prepared_dataset, tmp_path
) -> None:
    import shutil

    out, _ = tiny_sweep
    old = tmp_path / "old"
    shutil.copytree(out, old)
    _as_before_activation_sweeps(old)
    lines = (old / SENSITIVITY_CSV).read_text().splitlines()
    (old / SENSITIVITY_CSV).write_text("\n".join(lines[:-2]) + "\n")  # killed two units before the end
    result = run_sweep(_request(fp16_run, prepared_dataset, old), log=lambda line: None)
    assert result.measured_now == 2 and {row.swept for row in result.rows} == {"weights"}
    assert (old / SENSITIVITY_CSV).read_text() == (out / SENSITIVITY_CSV).read_text()  # same rows, column added
    assert "sweep" not in json.loads((old / SETTINGS_JSON).read_text())  # a resume does not rewrite the settings
    request = _request(fp16_run, prepared_dataset, old, sweep="activations", calib_images=8)
    with pytest.raises(SweepInputError, match="sweep: 'weights' then, 'activations' now"):
        run_sweep(request, log=lambda line: None)


# ----------------------------------------------------------------------------------------------
# The activations sweep
# ----------------------------------------------------------------------------------------------
ACT_BITS, CALIB_IMAGES = 4, 8


@pytest.fixture(scope="module")
def tiny_act_sweep(fp16_run, prepared_dataset, tmp_path_factory):
    """The CLI's activations sweep once on the tiny FP checkpoint: block units, 4-bit inputs, 8 train images."""
    out = tmp_path_factory.mktemp("act-sweep") / "sensitivity"
    argv = [
        "--weights",
        str(fp16_run.paths.best),
        "--data",
        str(prepared_dataset.dataset_yaml),
        "--out",
        str(out),
        "--sweep",
        "activations",
        "--act-bits",
        str(ACT_BITS),
        "--calib-images",
        str(CALIB_IMAGES),
        "--max-val-images",
        "4",
        "--batch",
        "4",
        "--low-bit-fraction",
        "0.8",
    ]
    assert _cli().main(argv) == 0
    return out


def _act_request(fp16_run, prepared_dataset, out, **changes) -> SweepRequest:
    settings = {"sweep": "activations", "act_bits": ACT_BITS, "calib_images": CALIB_IMAGES}
    return _request(fp16_run, prepared_dataset, out, **{**settings, **changes})


@pytest.mark.slow
def test_activation_unit_schemes_quantize_exactly_the_tensors_the_units_convs_read(tiny_act_sweep, fp16_run) -> None:
    """Each unit's scheme places one quantizer per tensor its convs read (no more: the others stay float); the convs
    outside the unit that read them are those sharing the tensor, as the sweep recorded for every unit."""
    from auto_quantize_model.quant.activations import activation_quantizers, plan_activation_quantizers
    from auto_quantize_model.quant.sensitivity import activation_unit_scheme, quantized_copy_with_report
    from auto_quantize_model.sensitivity import load_fp_model

    recorded = json.loads((tiny_act_sweep / ACTIVATION_FILES.placement).read_text())
    model, _ = load_fp_model(fp16_run.paths.best)
    names = {id(m): name for name, m in model.named_modules()}
    points = [[names[id(conv)] for conv in point.consumers] for point in plan_activation_quantizers(model)]
    units = enumerate_units(model, "block")
    assert set(recorded) == {unit.name for unit in units}
    for unit in units:  # what the sweep placed, against the placement plan of the float model
        expected = [readers for readers in points if set(readers) & set(unit.convs)]
        shared = {conv for readers in expected for conv in readers} - set(unit.convs)
        assert len(recorded[unit.name]["quantizers"]) == len(expected), unit.name
        assert recorded[unit.name]["unit_convs_quantized"] == len(unit.convs)
        assert set(recorded[unit.name]["other_convs_reading_them"]) == shared, unit.name
    # A unit reading tensors of its own, one sharing a Concat group, a head branch sharing its level's input:
    # quantized for real, the quantizers counted on the model.
    for unit in (u for u in units if u.name in ("model.2", "model.5", "model.23.one2one_cv3.1")):
        clone, report = quantized_copy_with_report(model, activation_unit_scheme(unit, ACT_BITS, "absmax"))
        placed = dict(activation_quantizers(clone))
        assert len(placed) == len(recorded[unit.name]["quantizers"])
        assert {quantizer.bit_width for quantizer in placed.values()} == {ACT_BITS}
        quantized = {conv for conv, source in report.activations.conv_inputs if source in placed}
        assert quantized == set(unit.convs) | set(recorded[unit.name]["other_convs_reading_them"])
        assert len(quantized) < len(report.activations.conv_inputs) // 4  # everything else reads float
    assert recorded["model.2"]["other_convs_reading_them"] == []
    assert all(recorded[name]["other_convs_reading_them"] for name in ("model.5", "model.23.one2one_cv3.1"))


@pytest.mark.slow
def test_activation_sweep_calibrates_on_train_images_never_val(tiny_act_sweep, prepared_dataset) -> None:
    from pathlib import Path

    from auto_quantize_model.ultralytics_ext.calibration import CalibrationSet
    from auto_quantize_model.ultralytics_ext.validation import val_image_files

    files = (tiny_act_sweep / ACTIVATION_FILES.calibration).read_text().splitlines()
    assert len(files) == len(set(files)) == CALIB_IMAGES
    train_dir = (prepared_dataset.out_dir / "images" / "train").resolve()
    assert all(Path(file).parent.resolve() == train_dir for file in files)  # (the images link to the source)
    assert not {Path(f).name for f in files} & {Path(f).name for f in val_image_files(prepared_dataset.dataset_yaml)[1]}
    settings = json.loads((tiny_act_sweep / ACTIVATION_FILES.settings).read_text())
    assert (settings["calib_split"], settings["calib_images"]) == ("train", CALIB_IMAGES)
    assert settings["calib_images_sha256"] == CalibrationSet(tuple(files), []).sha256()


@pytest.mark.slow
def test_activation_sweep_writes_rows_settings_and_a_mixed_scheme_and_resumes(
    tiny_act_sweep, fp16_run, prepared_dataset, tmp_path
) -> None:
    import shutil

    out = tiny_act_sweep
    with open(out / ACTIVATION_FILES.csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [row["unit"] for row in rows[:3]] == ["fp", "base", "all"]
    assert {row["swept"] for row in rows} == {"activations"}
    assert [row["bits"] for row in rows[:3]] == ["", "", str(ACT_BITS)]
    assert {row["bits"] for row in rows[3:]} == {str(ACT_BITS)}
    settings = json.loads((out / ACTIVATION_FILES.settings).read_text())
    assert (settings["sweep"], settings["act_bits"], settings["bits"]) == ("activations", ACT_BITS, 8)
    scheme = resolve_scheme(out / ACTIVATION_FILES.scheme)
    plan = json.loads((out / ACTIVATION_FILES.plan).read_text())
    assert (scheme.weight_bit_width, scheme.act_bit_width) == (8, ACT_BITS)
    assert {bits for _, bits in scheme.act_overrides} <= {8} and plan["low_bit_param_fraction"] >= 0.8
    assert not (out / MIXED_SCHEME_JSON).exists()  # the weights sweep's file name is not reused
    assert (out / ACTIVATION_FILES.png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = (out / ACTIVATION_FILES.csv).read_text()
    assert run_sweep(_act_request(fp16_run, prepared_dataset, out), log=lambda line: None).measured_now == 0
    assert (out / ACTIVATION_FILES.csv).read_text() == before
    # Killed two units before the end: a rerun measures those two (calibrating each on its own fresh copy) only.
    partial = tmp_path / "partial"
    shutil.copytree(out, partial)
    (partial / ACTIVATION_FILES.csv).write_text("\n".join(before.splitlines()[:-2]) + "\n")
    result = run_sweep(_act_request(fp16_run, prepared_dataset, partial), log=lambda line: None)
    assert result.measured_now == 2
    assert (partial / ACTIVATION_FILES.csv).read_text() == before


@pytest.mark.slow
@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"act_bits": 3}, "act_bits: 4 then, 3 now"),
        ({"calib_images": 6}, "calib_images: 8 then, 6 now"),
        ({"sweep": "weights", "act_bits": None, "calib_images": None}, "sweep: 'activations' then, 'weights' now"),
    ],
)
def test_activation_sweep_refuses_other_settings_and_names_them(
    tiny_act_sweep, fp16_run, prepared_dataset, changes, named
) -> None:
    out = tiny_act_sweep
    before = {path.name: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    with pytest.raises(SweepInputError, match="sensitivity_settings.json") as caught:
        run_sweep(_act_request(fp16_run, prepared_dataset, out, **changes), log=lambda line: None)
    assert named in str(caught.value)
    assert {path.name: path.read_bytes() for path in out.rglob("*") if path.is_file()} == before


@pytest.mark.slow
def test_more_calibration_images_than_the_train_split_holds_is_refused_naming_the_flag(
    fp16_run, prepared_dataset, tmp_path
) -> None:
    request = _act_request(fp16_run, prepared_dataset, tmp_path / "out", calib_images=1000)
    with pytest.raises(
        SweepInputError, match=r"--calib-images: calib_images=1000 but the train split .* has 24 images"
    ):
        run_sweep(request, log=lambda line: None)
    assert not (tmp_path / "out" / ACTIVATION_FILES.settings).exists()


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--sweep", "activations", "--act-bits", "9"], "--act-bits 9: must be in [2, 8]"),
        (["--sweep", "activations", "--act-bits", "1"], "--act-bits 1: must be in [2, 8]"),
        (["--act-bits", "4"], "--act-bits belongs to the activations sweep; pass --sweep activations"),
        (["--calib-images", "8"], "--calib-images belongs to the activations sweep"),
        (["--sweep", "activations", "--bits", "4"], "--bits 4: an activations sweep puts the unit's weights at 8 bits"),
        (["--sweep", "activations", "--calib-images", "0"], "--calib-images 0"),
    ],
)
def test_bad_activation_flags_are_refused_before_any_model_is_loaded(tmp_path, capsys, flags, named) -> None:
    weights, data = tmp_path / "best.pt", tmp_path / "data.yaml"
    weights.write_bytes(b"not a checkpoint")  # loading it would fail with another message
    data.write_text("val: images/val\n")
    argv = ["--weights", str(weights), "--data", str(data), "--out", str(tmp_path / "out"), *flags]
    assert _cli().main(argv) == 2
    assert named in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
