"""ONNX export of FP and W4A16 QAT checkpoints: contract, QCDQ graph pattern, metadata, validation, refusals.

Exports run at imgsz 64 from the session's tiny trained yolov10n runs (``fp16_run``/``qat_run``), so
``output0`` is ``(1, 84, 6)`` end-to-end (84 anchors < 300) and ``(1, 4 + nc, 84)`` raw.
"""

from __future__ import annotations

import copy
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import auto_quantize_model  # noqa: F401  (offline Ultralytics before anything imports it)
from auto_quantize_model import export as ex
from auto_quantize_model.onnx_io import validation as ev
from auto_quantize_model.utils.io import sha256_file

IMGSZ = 64
ANCHORS = (64 // 8) ** 2 + (64 // 16) ** 2 + (64 // 32) ** 2  # 84
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "cv-models" / "export_onnx.py"


# --- helpers ------------------------------------------------------------------------------------
def _run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["output0"], {"images": x})[0]


def _blank(batch: int = 1) -> np.ndarray:
    return np.full((batch, 3, IMGSZ, IMGSZ), 114 / 255, dtype=np.float32)


def _weight_chains(path: Path) -> list[tuple[int, int]]:
    """(clip low, clip high) of every ``int8 initializer -> Clip -> DequantizeLinear`` chain, walked by hand."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    chains = []
    for node in graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        clip = producer[node.input[0]]
        assert clip.op_type == "Clip", f"DequantizeLinear fed by {clip.op_type}, not Clip"
        codes = inits[clip.input[0]]
        assert codes.dtype == np.int8 and codes.ndim == 4, "weights must be 4-D int8 initializers"
        low, high = int(inits[clip.input[1]]), int(inits[clip.input[2]])
        assert codes.min() >= low and codes.max() <= high
        chains.append((low, high))
    return chains


def _prepared_quant_bits(weights: Path, end2end: bool) -> Counter:
    """Bit widths of the quantized convs left after the export preparation (fuse drops one head branch)."""
    from auto_quantize_model.quant.yolov10 import WeightQuantConv2d

    model, _ = ex.load_detection_checkpoint(weights)
    model = ex.prepare_for_export(model, (IMGSZ, IMGSZ), end2end, dynamic=False)
    return Counter(m.bit_width for m in model.modules() if isinstance(m, WeightQuantConv2d))


def _val_dir(prepared_dataset) -> Path:
    return prepared_dataset.out_dir / "images" / "val"


def _signal_preserving_checkpoint(scheme: str, out: Path) -> Path:
    """A random yolov10n quantized with ``scheme``, saved like Ultralytics does (``ema`` in half precision).

    PyTorch's default conv init shrinks activations layer by layer, so an untrained (or 2-epoch) YOLO
    gives nearly the same output for every image and a broken weight barely shows. Kaiming-normal
    weights keep the signal alive, which lets the validation test below see a wrong scale.
    """
    import torch
    from torch import nn
    from ultralytics.nn.tasks import DetectionModel

    from auto_quantize_model.quant.yolov10 import quantize_model

    torch.manual_seed(0)
    model = DetectionModel("yolov10n.yaml", nc=3, verbose=False)
    dfl = model.model[-1].dfl.conv
    for conv in (m for m in model.modules() if isinstance(m, nn.Conv2d) and m is not dfl):
        nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
    model.names = {0: "a", 1: "b", 2: "c"}
    quantize_model(model, scheme)
    torch.save({"ema": copy.deepcopy(model).half(), "model": None, "train_args": {"imgsz": IMGSZ}}, out)
    return out


def _scale_first_weight_dequantizer(src: Path, dst: Path, bits_high: int, factor: float) -> None:
    """Copy ``src`` with the scales of its first ``Clip(-bits_high, bits_high)`` weight chain multiplied."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(src))
    inits = {i.name: i for i in proto.graph.initializer}
    producer = {o: n for n in proto.graph.node for o in n.output}
    for node in (n for n in proto.graph.node if n.op_type == "DequantizeLinear"):
        if int(numpy_helper.to_array(inits[producer[node.input[0]].input[2]])) == bits_high:
            scale = inits[node.input[1]]
            scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale) * np.float32(factor), scale.name))
            onnx.save(proto, str(dst))
            return
    raise AssertionError(f"no Clip(-{bits_high}, {bits_high}) chain in {src}")


# --- module-scoped exports shared by the tests ----------------------------------------------------
@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(scope="module")
def fp_e2e(fp16_run, export_dir):
    """FP end-to-end export, validated on the dataset recorded in the checkpoint (no --val-images)."""
    return ex.export_onnx(fp16_run.paths.best, export_dir / "fp-e2e.onnx", imgsz=IMGSZ, validate=True)


@pytest.fixture(scope="module")
def qat_e2e(qat_run, export_dir, prepared_dataset):
    """W4A16 QCDQ end-to-end export with a dynamic batch, validated at batch 1 and 4."""
    return ex.export_onnx(
        qat_run.paths.best,
        export_dir / "qat-e2e-qcdq.onnx",
        imgsz=IMGSZ,
        dynamic_batch=True,
        validate=True,
        val_images=_val_dir(prepared_dataset),
    )


# --- FP ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_fp_end_to_end_export_keeps_the_contract(fp_e2e, fp16_run):
    assert fp_e2e.kind == "fp" and fp_e2e.scheme_name is None
    assert fp_e2e.onnx_path.is_file() and fp_e2e.size_bytes == fp_e2e.onnx_path.stat().st_size
    graph = ex.inspect_onnx(fp_e2e.onnx_path)
    assert graph.inputs == {"images": [1, 3, IMGSZ, IMGSZ]}
    assert _run_onnx(fp_e2e.onnx_path, _blank()).shape == (1, ANCHORS, 6)
    assert graph.op_counts.get("DequantizeLinear", 0) == 0
    assert graph.metadata_props["end2end"] == "True"
    # Nothing was written beside the checkpoint (the Ultralytics exporter writes next to pt_path).
    assert not list(fp16_run.paths.weights_dir.glob("*.onnx*"))


@pytest.mark.slow
def test_fp_validation_uses_the_checkpoint_dataset_and_passes(fp_e2e, prepared_dataset):
    report = fp_e2e.validation
    assert report["passed"] and str(_val_dir(prepared_dataset)) in report["image_source"]
    (check,) = report["checks"]  # static batch: batch 1 only, CPU only on this machine
    assert check["providers_used"][0] == "CPUExecutionProvider" and check["batch"] == 1
    assert len(check["images"]) == len(list(_val_dir(prepared_dataset).iterdir()))
    assert check["max_abs_diff_boxes"] <= check["box_limit"] and check["max_abs_diff_scores"] <= check["score_limit"]
    assert check["unpaired_not_at_cutoff"] == 0


@pytest.mark.slow
def test_fp_raw_export_layout_and_overwrite_refusal(fp16_run, export_dir, prepared_dataset):
    out = export_dir / "fp-raw.onnx"
    result = ex.export_onnx(fp16_run.paths.best, out, imgsz=IMGSZ, output_format="raw")
    nc = len(prepared_dataset.names)
    assert _run_onnx(out, _blank()).shape == (1, 4 + nc, ANCHORS)
    assert json.loads(result.metadata_path.read_text())["output"]["shape"] == [1, 4 + nc, ANCHORS]
    before = sha256_file(out)
    same = ex.export_onnx(fp16_run.paths.best, out, imgsz=IMGSZ, output_format="raw")  # a rerun: verified, kept
    assert same.already_exported and sha256_file(out) == before
    with pytest.raises(ex.ExportExistsError, match=r"other settings \(format\).*--overwrite"):
        ex.export_onnx(fp16_run.paths.best, out, imgsz=IMGSZ, output_format="e2e")
    assert sha256_file(out) == before
    again = ex.export_onnx(fp16_run.paths.best, out, imgsz=IMGSZ, output_format="e2e", overwrite=True)
    assert _run_onnx(again.onnx_path, _blank()).shape == (1, ANCHORS, 6)
    assert json.loads(again.metadata_path.read_text())["output"]["format"] == "e2e"
    assert sorted(p.name for p in export_dir.glob("fp-raw*")) == ["fp-raw.json", "fp-raw.onnx"]


@pytest.mark.slow
def test_failed_validation_writes_nothing(fp16_run, export_dir, monkeypatch):
    # A negative tolerance cannot be met: the export must stop before publishing anything.
    monkeypatch.setitem(ev.TOLERANCES, ("fp", False), ev.Tolerance(box_rel=-1.0, score_abs=-1.0))
    out = export_dir / "never.onnx"
    with pytest.raises(ex.ExportValidationError, match="nothing was written") as caught:
        ex.export_onnx(fp16_run.paths.best, out, imgsz=IMGSZ, output_format="raw", validate=True)
    assert caught.value.report["passed"] is False
    assert not list(export_dir.glob("never*")) and not list(export_dir.glob(".never*"))


# --- QAT -> QCDQ ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_qcdq_weights_are_int8_clip_dequantize_chains_one_per_quantized_conv(qat_e2e, qat_run):
    assert qat_e2e.kind == "qat-qcdq" and qat_e2e.scheme_name == "w4a16"
    chains = _weight_chains(qat_e2e.onnx_path)
    expected = _prepared_quant_bits(qat_run.paths.best, end2end=True)
    assert expected == Counter({4: 83})  # 107 quantized convs minus the fused-away one-to-many branch
    assert Counter(chains) == Counter({(-7, 7): 83})
    graph = ex.inspect_onnx(qat_e2e.onnx_path)
    assert graph.op_counts.get("QuantizeLinear", 0) == 0  # weights are stored as integers, not quantized at run time
    assert graph.op_counts["Clip"] == graph.op_counts["DequantizeLinear"] == 83
    assert list(graph.inputs) == ["images"]  # initializers are not listed as graph inputs


@pytest.mark.slow
def test_qcdq_file_is_self_contained_and_small(qat_e2e, fp_e2e, export_dir, qat_run):
    leftovers = [
        p
        for folder in (export_dir, qat_run.paths.weights_dir)
        for p in folder.iterdir()
        if p.name.endswith(".data") or p.name.startswith(".")
    ]
    assert leftovers == []
    assert ex.inspect_onnx(qat_e2e.onnx_path).external_data is False
    ratio = qat_e2e.size_bytes / fp_e2e.size_bytes
    assert ratio < 0.5, f"QCDQ/FP size ratio {ratio:.2f}"  # measured 0.28 for yolov10n


@pytest.mark.slow
def test_qcdq_dynamic_batch_and_validation(qat_e2e, prepared_dataset):
    assert _run_onnx(qat_e2e.onnx_path, _blank(3)).shape == (3, ANCHORS, 6)
    report = qat_e2e.validation
    assert report["passed"] and report["kind"] == "qat-qcdq"
    assert {c["batch"] for c in report["checks"]} == {1, 4}
    for check in report["checks"]:
        assert check["providers_used"][0] == "CPUExecutionProvider"
        assert check["max_abs_diff_boxes"] <= check["box_limit"]
        assert check["max_abs_diff_scores"] <= check["score_limit"]


@pytest.mark.slow
def test_qcdq_metadata_json(qat_e2e, qat_run, prepared_dataset):
    from auto_quantize_model.quant.scheme import QuantScheme, named_scheme

    meta = json.loads(qat_e2e.metadata_path.read_text())
    assert qat_e2e.metadata_path == qat_e2e.onnx_path.with_suffix(".json")
    assert meta["kind"] == "qat-qcdq"
    assert meta["source"]["checkpoint"] == str(qat_run.paths.best.resolve())
    assert meta["source"]["sha256"] == sha256_file(qat_run.paths.best)
    assert QuantScheme.from_dict(meta["quant_scheme"]) == named_scheme("w4a16")
    assert meta["onnx"]["opset"] == ex.inspect_onnx(qat_e2e.onnx_path).opset
    assert meta["onnx"]["sha256"] == sha256_file(qat_e2e.onnx_path)
    assert meta["input"] == {
        "name": "images",
        "shape": ["batch", 3, "height", "width"],
        "imgsz": [IMGSZ, IMGSZ],
        "dynamic_batch": True,
        "dtype": "float32",
    }
    assert meta["output"]["shape"] == [1, ANCHORS, 6] and meta["output"]["format"] == "e2e"
    assert list(meta["class_names"].values()) == list(prepared_dataset.names)
    assert meta["graph"]["DequantizeLinear"] == meta["graph"]["Clip"] == 83 and meta["graph"]["QuantizeLinear"] == 0
    assert meta["graph"]["weight_qdq_by_bit_width"] == {"4": 83}
    assert {"torch", "ultralytics", "brevitas", "onnx", "onnxruntime"} <= set(meta["versions"])
    assert meta["validation"] == qat_e2e.validation
    assert meta["preprocessing"]["pad_value"] == 114


@pytest.mark.slow
def test_qcdq_file_carries_its_scheme_and_is_verified_without_its_sidecar(qat_run, tmp_path):
    """The full scheme, package version, commit and export request live in the file; a rerun whose sidecar is gone
    is checked against them (other settings still refused) and gets its sidecar back."""
    from auto_quantize_model.onnx_io.embedded import read_provenance
    from auto_quantize_model.quant.scheme import QuantScheme, named_scheme
    from auto_quantize_model.utils.version import package_version

    out = tmp_path / "yolov10n-qat-w4a16-qcdq.onnx"
    first = ex.export_onnx(qat_run.paths.best, out, imgsz=IMGSZ)
    sidecar = json.loads(first.metadata_path.read_text())
    embedded = read_provenance(out)
    assert QuantScheme.from_dict(embedded.quant_scheme) == named_scheme("w4a16")
    assert embedded.quant_scheme == sidecar["quant_scheme"]
    assert embedded.package_version == package_version() == sidecar["package_version"]
    assert embedded.git_commit.split("-")[0] == sidecar["git"]["commit"]
    assert embedded.export["source_sha256"] == sha256_file(qat_run.paths.best)
    first.metadata_path.unlink()
    with pytest.raises(ex.ExportExistsError, match=r"other settings \(imgsz\)"):
        ex.export_onnx(qat_run.paths.best, out, imgsz=IMGSZ + 32)
    again = ex.export_onnx(qat_run.paths.best, out, imgsz=IMGSZ)
    assert again.already_exported and again.scheme_name == "w4a16"
    restored = json.loads(again.metadata_path.read_text())
    assert restored["quant_scheme"] == sidecar["quant_scheme"] and "restored_from" in restored
    assert restored["weights_format"] == "qcdq" and restored["onnx"]["sha256"] == sidecar["onnx"]["sha256"]


@pytest.mark.slow
def test_ultralytics_yolo_loads_and_runs_the_qcdq_model(qat_e2e, prepared_dataset):
    from ultralytics import YOLO

    model = YOLO(str(qat_e2e.onnx_path), task="detect")
    image = sorted(_val_dir(prepared_dataset).iterdir())[0]
    results = model.predict(str(image), imgsz=IMGSZ, conf=0.0, verbose=False)
    backend = model.predictor.model
    assert backend.end2end is True and backend.stride == 32
    assert list(backend.names.values()) == list(prepared_dataset.names)
    assert len(results[0].boxes) > 0


@pytest.mark.slow
def test_mixed_4_and_8_bit_scheme_and_validation_catches_a_wrong_scale(tmp_path, prepared_dataset):
    weights = _signal_preserving_checkpoint("w4a16-fl8", tmp_path / "fl8.pt")
    out = tmp_path / "fl8-raw.onnx"
    result = ex.export_onnx(
        weights,
        out,
        imgsz=IMGSZ,
        output_format="raw",
        validate=True,
        val_images=_val_dir(prepared_dataset),
        val_max_images=2,
    )
    assert result.scheme_name == "w4a16-fl8" and result.validation["passed"]
    expected = _prepared_quant_bits(weights, end2end=False)
    assert set(expected) == {4, 8}
    assert Counter(_weight_chains(out)) == Counter({(-7, 7): expected[4], (-127, 127): expected[8]})
    assert _run_onnx(out, _blank()).shape == (1, 4 + 3, ANCHORS)
    # The same comparison must fail once one 4-bit layer dequantizes with a 25% wrong scale.
    broken = tmp_path / "broken.onnx"
    _scale_first_weight_dequantizer(out, broken, bits_high=7, factor=1.25)
    settings = ex.ExportSettings((IMGSZ, IMGSZ), "raw", opset=18, dynamic_batch=False, half=False)
    model, ckpt = ex.load_detection_checkpoint(weights)
    plan = ev.plan_validation(_val_dir(prepared_dataset), ckpt, weights, 2, settings)
    reference = ev.reference_outputs(ex.prepare_for_export(model, settings.imgsz, False, False), plan)
    assert ev.validate_export(out, reference, plan, settings, "qat-qcdq")["passed"]
    report = ev.validate_export(broken, reference, plan, settings, "qat-qcdq")
    assert not report["passed"]
    assert report["checks"][0]["max_abs_diff_boxes"] > report["checks"][0]["box_limit"]


@pytest.mark.slow
def test_half_is_refused_for_qat(qat_run, tmp_path):
    with pytest.raises(ex.ExportInputError, match="--half"):
        ex.export_onnx(qat_run.paths.best, tmp_path / "half.onnx", imgsz=IMGSZ, half=True)
    assert not list(tmp_path.iterdir())


# --- bad input (fast) ---------------------------------------------------------------------------------
def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(ex.ExportInputError, match="checkpoint not found"):
        ex.export_onnx(tmp_path / "nope.pt", tmp_path / "x.onnx")


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "best.pt"
    bad.write_bytes(b"\x00this is not a checkpoint" * 10)
    with pytest.raises(ex.ExportInputError, match=r"best\.pt: not a loadable Ultralytics checkpoint"):
        ex.export_onnx(bad, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_non_ultralytics_checkpoint_is_a_clear_error(tmp_path):
    import torch

    plain = tmp_path / "state.pt"
    torch.save({"weight": torch.zeros(3)}, plain)
    with pytest.raises(ex.ExportInputError, match="Ultralytics"):
        ex.export_onnx(plain, tmp_path / "x.onnx")


def test_bad_arguments_are_refused_before_loading(tmp_path):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"x")
    with pytest.raises(ex.ExportInputError, match="output format"):
        ex.export_onnx(weights, tmp_path / "x.onnx", output_format="nms")
    with pytest.raises(ex.ExportInputError, match=r"\.onnx"):
        ex.export_onnx(weights, tmp_path / "x.engine")
    existing = tmp_path / "old.onnx"
    existing.write_bytes(b"keep")
    with pytest.raises(ex.ExportExistsError):
        ex.export_onnx(weights, existing)
    assert existing.read_bytes() == b"keep"


def test_cli_exits_2_on_bad_input(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("export_cli", SCRIPT)
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    bad = tmp_path / "best.pt"
    bad.write_bytes(b"garbage")
    assert cli.main(["--weights", str(bad), "--out", str(tmp_path / "m.onnx")]) == 2
    assert "best.pt" in capsys.readouterr().err


# --- detection pairing and comparison (fast) -------------------------------------------------------
def _rows(*rows: tuple[float, ...]) -> np.ndarray:
    return np.array(rows, dtype=np.float32)


TOL = ev.Tolerance(box_rel=1e-4, score_abs=1e-4)


def test_tied_scores_in_another_order_pair_up_and_pass():
    expected = _rows((0, 0, 10, 10, 0.9, 0), (20, 20, 30, 30, 0.5, 1), (40, 40, 50, 50, 0.5, 2), (5, 5, 9, 9, 0.1, 0))
    actual = expected[[0, 2, 1, 3]].copy()
    actual[1, 4] += 2e-5  # last-bit noise on a tied score
    result = ev.compare_outputs(expected[None], actual[None], "e2e", TOL)
    assert (
        result["passed"]
        and result["paired_rows"] == 4
        and result["max_abs_diff_scores"] == pytest.approx(2e-5, rel=1e-2)
    )


def test_detection_moved_beyond_tolerance_fails():
    expected = _rows((0, 0, 10, 10, 0.9, 0), (20, 20, 30, 30, 0.5, 1))
    actual = expected.copy()
    actual[0, 2] += 0.5  # half a pixel on a box whose coordinates are at most 30: limit is 0.003
    result = ev.compare_outputs(expected[None], actual[None], "e2e", TOL)
    # The moved detection has no partner within tolerance, and it is far above the top-k cutoff.
    assert not result["passed"] and result["paired_rows"] == 1 and result["unpaired_not_at_cutoff"] == 2
    actual[0, 2] -= 0.5 - 0.002  # within the limit again
    assert ev.compare_outputs(expected[None], actual[None], "e2e", TOL)["passed"]


def test_swap_at_the_top_k_cutoff_is_allowed_but_not_above_it():
    expected = _rows((0, 0, 10, 10, 0.9, 0), (20, 20, 30, 30, 0.2, 1))
    at_cutoff = _rows((0, 0, 10, 10, 0.9, 0), (60, 60, 70, 70, 0.2, 2))  # near-tied candidate took the last slot
    assert ev.compare_outputs(expected[None], at_cutoff[None], "e2e", TOL)["passed"]
    above = _rows((60, 60, 70, 70, 0.9, 2), (20, 20, 30, 30, 0.2, 1))  # the best detection vanished
    result = ev.compare_outputs(expected[None], above[None], "e2e", TOL)
    assert not result["passed"] and result["unpaired_not_at_cutoff"] == 2


def test_class_change_is_not_paired():
    expected = _rows((0, 0, 10, 10, 0.9, 0), (20, 20, 30, 30, 0.2, 1))
    actual = _rows((0, 0, 10, 10, 0.9, 3), (20, 20, 30, 30, 0.2, 1))
    assert ev.pair_detections(expected, actual, box_limit=0.003, score_limit=1e-4) == [(1, 1)]
    assert not ev.compare_outputs(expected[None], actual[None], "e2e", TOL)["passed"]


def test_raw_comparison_is_elementwise_with_a_scale_aware_box_limit():
    rng = np.random.default_rng(0)
    expected = np.concatenate([rng.uniform(0, 640, (1, 4, 50)), rng.uniform(0, 1, (1, 3, 50))], 1).astype(np.float32)
    actual = expected.copy()
    actual[0, 0, 0] += 0.05  # 0.05 px on coordinates up to ~640: limit 0.064
    assert ev.compare_outputs(expected, actual, "raw", TOL)["passed"]
    actual[0, 5, 3] += 1e-3  # a score off by 1e-3
    assert not ev.compare_outputs(expected, actual, "raw", TOL)["passed"]
    assert not ev.compare_outputs(expected, actual[:, :, :40], "raw", TOL)["passed"]  # shape mismatch


def test_cli_help_names_the_contract():
    import subprocess

    proc = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "--dynamic-batch" in proc.stdout and "output0" in proc.stdout


# --- exact codes: every exported code is the checkpoint's own (issue 10 item 1) -------------------------------
# --- and every exported stored scale the validated float32 one (issue 21 item 6) -------------------------------
def _half_saved_checkpoint_with_bn(scheme: str, out: Path) -> tuple[Path, Any]:
    """A random yolov10n with non-trivial BN (some negative gammas), quantized and saved in fp16 like Ultralytics.

    Returns the checkpoint and the float32 model it was saved from (the EMA that in-training validation uses).
    """
    import torch
    from torch import nn
    from ultralytics.nn.tasks import DetectionModel

    from auto_quantize_model.quant.yolov10 import quantize_model

    torch.manual_seed(0)
    model = DetectionModel("yolov10n.yaml", nc=3, verbose=False)
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.2)
            m.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
            m.weight.data.copy_(
                (torch.rand(n, generator=gen) + 0.5) * torch.where(torch.rand(n, generator=gen) < 0.1, -1.0, 1.0)
            )
    model.names = {0: "a", 1: "b", 2: "c"}
    quantize_model(model, scheme)
    torch.save({"ema": copy.deepcopy(model).half(), "model": None, "train_args": {"imgsz": IMGSZ}}, out)
    return out, model


def _reference_codes_and_steps(checkpoint: Path, validated: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per quantized layer, in numpy: codes round(w / s) of the checkpoint's fp16 weights, times sign(gamma) when BN
    follows, and the step s times |BN factor| per output channel (what the exact fold hands the exported graph).

    ``s = max|w| / qmax`` per channel for abs-max layers; ``|t| / qmax`` for stored scales, with ``t`` taken from
    ``validated`` (the float32 model the checkpoint was saved from), not from the checkpoint: the export must use
    the very scale that was validated.
    """
    import torch
    from ultralytics.nn.modules import Conv

    from auto_quantize_model.quant.yolov10 import WeightQuantConv2d

    model = torch.load(checkpoint, weights_only=False)["ema"]
    bns = {f"{n}.conv": m.bn for n, m in model.named_modules() if isinstance(m, Conv) and hasattr(m, "bn")}
    references = []
    for name, layer in model.named_modules():
        if not isinstance(layer, WeightQuantConv2d):
            continue
        w = layer.weight.detach().numpy().astype(np.float32)
        qmax = np.float32(2 ** (layer.bit_width - 1) - 1)
        if layer.scale_parameter is None:
            s = np.abs(w).reshape(len(w), -1).max(1).reshape(-1, 1, 1, 1) / qmax
            c = np.round(w / s)
        else:
            t = validated.get_submodule(name).scale_parameter.detach().numpy()
            s = np.abs(t).reshape(-1, 1, 1, 1) / qmax
            c = np.clip(np.round(w / s), -qmax, qmax)
        bn = bns.get(name)
        if bn is not None:
            factor = bn.weight.detach().float().numpy() / np.sqrt(bn.running_var.float().numpy() + np.float32(bn.eps))
            c = c * np.where(factor < 0, -1.0, 1.0).reshape(-1, 1, 1, 1)
            s = s * np.abs(factor).reshape(-1, 1, 1, 1)
        references.append((c.astype(np.int8), s.reshape(-1).astype(np.float32)))
    return references


def _onnx_codes_and_steps(path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per weight DequantizeLinear: the integer codes behind its Clip and its scale initializer."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    return [
        (inits[producer[n.input[0]].input[0]], inits[n.input[1]].reshape(-1))
        for n in graph.node
        if n.op_type == "DequantizeLinear"
    ]


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["w4a16", "w4a16-fl8-lsq"])
def test_exported_codes_equal_the_half_saved_checkpoint_codes(scheme, tmp_path, prepared_dataset):
    """Zero flips, ties included: every QCDQ weight chain is one checkpoint layer's codes (BN by sign only), and its
    scale that layer's step times |BN factor|, stored (learned/MSE) steps being the validated float32 ones."""
    import torch

    from auto_quantize_model.quant.yolov10 import stored_scales

    checkpoint, validated = _half_saved_checkpoint_with_bn(scheme, tmp_path / "ckpt.pt")
    saved = stored_scales(torch.load(checkpoint, weights_only=False)["ema"])
    assert all(
        saved[k].dtype == torch.float32 and torch.equal(saved[k], v) for k, v in stored_scales(validated).items()
    )
    result = ex.export_onnx(
        checkpoint,
        tmp_path / "q.onnx",
        imgsz=IMGSZ,
        output_format="raw",
        validate=True,
        val_images=_val_dir(prepared_dataset),
    )
    assert result.validation["passed"] and "unfused" in result.validation["reference"]
    reference = _reference_codes_and_steps(checkpoint, validated)
    exported = _onnx_codes_and_steps(result.onnx_path)
    assert 0.7 * len(reference) < len(exported) <= len(reference)  # fuse drops the head branch the layout does not use
    unused = list(range(len(reference)))
    total_flips, worst_step_error = 0, 0.0
    for codes, steps in exported:  # pair each chain with the same-shaped reference layer it matches best
        candidates = [i for i in unused if reference[i][0].shape == codes.shape]
        flips = [int((reference[i][0] != codes).sum()) for i in candidates]
        best = candidates[int(np.argmin(flips))]
        total_flips += min(flips)
        worst_step_error = max(worst_step_error, float(np.abs(steps / reference[best][1] - 1).max()))
        unused.remove(best)
    assert total_flips == 0
    assert worst_step_error < 1e-6  # float32 rounding of the fold; an fp16-saved scale is off by up to 4.9e-4
