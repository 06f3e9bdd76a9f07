"""PTQ of a trained FP checkpoint and BN re-estimation, on the session's tiny trained yolov10n runs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

import auto_quantize_model  # noqa: F401  (offline Ultralytics before anything imports it)
from auto_quantize_model.ptq import PTQInputError, PTQRequest, quantize_checkpoint, recalibrate_checkpoint

IMGSZ = 64
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "cv-models" / "ptq.py"


def _load(path: Path):
    from ultralytics.nn.tasks import load_checkpoint

    return load_checkpoint(str(path))[0].float().eval()


def _outputs(model, seed: int = 0) -> torch.Tensor:
    """The feature maps entering the detection head (top-k rows of a barely trained head reorder on ties)."""
    x = torch.rand(4, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(seed))
    features = []
    hook = model.model[-1].register_forward_hook(lambda _m, inputs, _out: features.extend(inputs[0]))
    try:
        with torch.no_grad():
            model(x)
    finally:
        hook.remove()
    return torch.cat([f.flatten() for f in features])


def _bn_stats(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "running_" in k}


def _learned_state(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "running_" not in k and "num_batches" not in k}


@pytest.fixture(scope="module")
def ptq_w8(fp16_run, prepared_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("ptq") / "ptq-w8a16" / "best.pt"
    return quantize_checkpoint(
        PTQRequest(fp16_run.paths.best, out, "w8a16", data=prepared_dataset.dataset_yaml, measure_val=True)
    )


@pytest.mark.slow
def test_ptq_w8a16_is_close_to_fp_and_reloads_with_yolo(ptq_w8, fp16_run):
    from ultralytics import YOLO

    from auto_quantize_model.quant.yolov10 import is_quantized, quant_scheme_of

    model = YOLO(str(ptq_w8.checkpoint)).model
    assert is_quantized(model) and quant_scheme_of(model).name == "w8a16"
    assert ptq_w8.layer_counts == {"8": 107, "float": 1}
    fp, q = _outputs(_load(fp16_run.paths.best)), _outputs(_load(ptq_w8.checkpoint))
    scale = float(fp.abs().max())
    assert float((q - fp).abs().max()) < 0.02 * scale  # 8-bit weights: a small, nonzero change
    assert not torch.equal(q, fp)
    meta = __import__("json").loads(ptq_w8.metadata_path.read_text())
    assert meta["quant_scheme"]["name"] == "w8a16" and meta["bn_recalib"] is None
    assert meta["val_mAP50_95"] == ptq_w8.val_mAP50_95 and 0.0 <= ptq_w8.val_mAP50_95 <= 1.0


@pytest.mark.slow
def test_ptq_checkpoint_exports_as_qcdq(ptq_w8, prepared_dataset, tmp_path):
    from auto_quantize_model import export as ex

    result = ex.export_onnx(
        ptq_w8.checkpoint,
        tmp_path / "ptq.onnx",
        imgsz=IMGSZ,
        validate=True,
        val_images=prepared_dataset.out_dir / "images" / "val",
    )
    assert result.kind == "qat-qcdq" and result.validation["passed"]


@pytest.mark.slow
def test_bn_recalibration_changes_running_stats_and_nothing_else(fp16_run, prepared_dataset, tmp_path):
    plain = quantize_checkpoint(PTQRequest(fp16_run.paths.best, tmp_path / "plain.pt", "w4a16-mse"))
    recal = quantize_checkpoint(
        PTQRequest(
            fp16_run.paths.best,
            tmp_path / "recal.pt",
            "w4a16-mse",
            data=prepared_dataset.dataset_yaml,
            bn_recalib_batches=2,
            batch=4,
        )
    )
    assert recal.bn_recalib.batches == 2 and recal.bn_recalib.images == 8
    before, after = _load(plain.checkpoint), _load(recal.checkpoint)
    stats_before, stats_after = _bn_stats(before), _bn_stats(after)
    changed = [k for k in stats_before if not torch.equal(stats_before[k], stats_after[k])]
    assert len(changed) > 0.9 * len(stats_before)
    learned_before, learned_after = _learned_state(before), _learned_state(after)
    assert learned_before.keys() == learned_after.keys()
    assert all(torch.equal(learned_before[k], learned_after[k]) for k in learned_before)  # weights, scales, BN affine


@pytest.mark.slow
def test_bn_recalibration_after_qat(qat_run, prepared_dataset, tmp_path):
    result = recalibrate_checkpoint(
        qat_run.paths.best, tmp_path / "qat-recal.pt", prepared_dataset.dataset_yaml, 2, batch=4
    )
    assert result.scheme == "w4a16" and result.bn_recalib.batches == 2
    original, recal = _bn_stats(_load(qat_run.paths.best)), _bn_stats(_load(result.checkpoint))
    assert any(not torch.equal(original[k], recal[k]) for k in original)


def test_ptq_refuses_missing_input_before_loading(tmp_path):
    with pytest.raises(PTQInputError, match="checkpoint not found"):
        quantize_checkpoint(PTQRequest(tmp_path / "missing.pt", tmp_path / "out.pt", "w8a16"))
    (tmp_path / "x.pt").write_bytes(b"")
    with pytest.raises(PTQInputError, match="--data is needed"):
        quantize_checkpoint(PTQRequest(tmp_path / "x.pt", tmp_path / "out.pt", "w8a16", bn_recalib_batches=4))


@pytest.mark.slow
def test_cli_refuses_a_qat_checkpoint_with_one_line(qat_run, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("ptq_cli", SCRIPT)
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    code = cli.main(["--weights", str(qat_run.paths.best), "--quant-scheme", "w4a16", "--out", str(tmp_path / "o.pt")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "already quantized" in err
    assert not (tmp_path / "o.pt").exists()
