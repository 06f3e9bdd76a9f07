"""Post-training quantization (PTQ) of a trained FP checkpoint, activation calibration and BN re-estimation.

:func:`quantize_checkpoint` loads an Ultralytics FP ``best.pt``, quantizes its convs with the project's quantizer
(:func:`~auto_quantize_model.quant.yolov10.quantize_model`, any scheme: abs-max, mse, lsq-initialised scales),
optionally re-estimates the BatchNorm running statistics with the quantized weights on N batches of Ultralytics'
train loader, and writes an Ultralytics-format checkpoint (``YOLO(out)`` loads it, ``export_onnx`` exports it as
QCDQ) plus ``<out stem>.json`` with what was done. With ``measure_val`` it also runs Ultralytics' validator on the
written file and records ``val_mAP50_95``.

A scheme that quantizes activations (``w8a8``, ``w4a8``) needs ``calib_images``: that many *train* images (never
val), letterboxed as the evaluator feeds them and without augmentation, set the activation ranges through Brevitas'
calibration (:func:`~auto_quantize_model.quant.calibration.calibrate_activations`), optionally followed by Brevitas'
bias correction.

:func:`recalibrate_batchnorm` is the BN re-estimation itself (Nagel et al., ICML 2022: 4-bit weights shift the
pre-BN activation statistics the float model's running stats were measured on); :func:`recalibrate_checkpoint`
applies it to a finished QAT checkpoint (``best.pt``) and writes a new checkpoint the same way.

Checkpoints are written in float32 (Ultralytics writes fp16): nothing is trained here, and float32 keeps the
MSE scales and re-estimated statistics exactly as validated. The latent weights of an fp16 FP checkpoint are
fp16 values either way.
"""

from __future__ import annotations

import contextlib
import copy
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from auto_quantize_model.runs.provenance import command_line, git_state, package_versions, utc_now
from auto_quantize_model.utils.io import atomic_output, sha256_file, write_json_atomic


class PTQInputError(ValueError):
    """Bad PTQ input; the message names the file or argument and the fix (one line)."""


@dataclass(frozen=True)
class PTQRequest:
    """One PTQ (or post-QAT BN re-estimation) run."""

    weights: Path
    out: Path
    quant_scheme: str | None = "w8a16"  # name or JSON path; None: the checkpoint is already quantized (QAT)
    data: Path | None = None  # dataset YAML: needed for BN re-estimation and val
    bn_recalib_batches: int = 0
    calib_images: int = 0  # train images that calibrate activation ranges (schemes with activation quantization)
    bias_correction: bool = False  # Brevitas bias correction after the activation calibration
    imgsz: int | None = None  # default: the checkpoint's training imgsz
    batch: int = 16
    device: str = "cpu"
    workers: int = 0
    measure_val: bool = False
    overwrite: bool = False


@dataclass(frozen=True)
class BNRecalibReport:
    """What :func:`recalibrate_batchnorm` did."""

    batchnorm_layers: int
    batches: int
    images: int
    seconds: float


@dataclass(frozen=True)
class PTQResult:
    """What :func:`quantize_checkpoint` wrote."""

    checkpoint: Path
    metadata_path: Path
    scheme: str
    layer_counts: dict[str, int]
    bn_recalib: BNRecalibReport | None
    val_mAP50_95: float | None
    activation_calibration: dict[str, Any] | None = None


# ----------------------------------------------------------------------------------------------
# BN re-estimation
# ----------------------------------------------------------------------------------------------
def recalibrate_batchnorm(model: Any, images: Iterable[Any], num_batches: int) -> BNRecalibReport:
    """Recompute every BatchNorm's running mean/var as the plain average over ``num_batches`` batches.

    ``images`` yields float image tensors (``[B, 3, H, W]``, 0..1, on the model's device). BN layers run in train
    mode with ``momentum=None`` (cumulative average, so every batch counts equally), everything without
    gradients; weights, biases and quantizer scales are untouched. Afterwards the model is in eval mode and
    the BN momenta are restored.
    """
    import torch
    from torch import nn

    if num_batches < 1:
        raise PTQInputError(f"BN re-estimation needs at least 1 batch, got {num_batches}")
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        raise PTQInputError("model has no BatchNorm layers (was it fused?); re-estimate BN on the unfused checkpoint")
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    start, seen, count = time.perf_counter(), 0, 0
    model.eval()
    for m in norms:
        m.train()
    try:
        with torch.no_grad():
            for batch in images:
                model(batch)
                seen, count = seen + 1, count + int(batch.shape[0])
                if seen == num_batches:
                    break
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.eval()
    if seen < num_batches:
        raise PTQInputError(f"the train loader gave only {seen} batches, fewer than the {num_batches} asked for")
    return BNRecalibReport(len(norms), seen, count, round(time.perf_counter() - start, 3))


def train_loader_images(
    data: Path, imgsz: int, batch: int, device: str, workers: int, train_args: dict
) -> Iterator[Any]:
    """Float image batches from Ultralytics' own train dataloader (training augmentation of ``train_args``)."""
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_dataloader, build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset
    from ultralytics.utils.torch_utils import select_device

    known = {k: v for k, v in (train_args or {}).items() if k in get_cfg().__dict__}
    cfg = get_cfg(overrides={**known, "data": str(data), "imgsz": imgsz, "batch": batch, "workers": workers})
    spec = check_det_dataset(str(data))
    dataset = build_yolo_dataset(cfg, spec["train"], batch, spec, mode="train", rect=False, stride=32)
    loader = build_dataloader(dataset, batch, workers, shuffle=True, rank=-1)
    target = select_device(device, verbose=False)
    for item in loader:
        yield item["img"].to(target).float() / 255


# ----------------------------------------------------------------------------------------------
# Checkpoint in, checkpoint out
# ----------------------------------------------------------------------------------------------
def _check_request(request: PTQRequest) -> None:
    """Everything that can be checked before loading a model."""
    if not request.weights.is_file():
        raise PTQInputError(
            f"{request.weights}: checkpoint not found; pass --weights with the FP run's weights/best.pt"
        )
    if request.out.suffix != ".pt":
        raise PTQInputError(f"{request.out}: the output must end in .pt (its metadata goes beside it as .json)")
    if request.out.exists() and not request.overwrite:
        raise PTQInputError(f"{request.out}: already exists; remove it or choose another --out")
    needs_data = request.bn_recalib_batches > 0 or request.measure_val or request.calib_images > 0
    if needs_data and (request.data is None or not Path(request.data).is_file()):
        raise PTQInputError(
            f"dataset YAML {request.data} not found; --data is needed for --calib-images/--bn-recalib-batches/--val"
        )
    if request.bn_recalib_batches < 0 or request.calib_images < 0:
        raise PTQInputError(
            f"--bn-recalib-batches and --calib-images must be >= 0, got {request.bn_recalib_batches}, "
            f"{request.calib_images}"
        )


def _check_activation_request(request: PTQRequest, scheme: Any) -> None:
    """Activation schemes need calibration images; weight-only schemes (and BN re-estimation of a QAT checkpoint,
    ``scheme`` None) must not silently ignore them."""
    activations = scheme is not None and scheme.quantizes_activations
    if activations and request.calib_images < 1:
        raise PTQInputError(
            f"scheme {scheme.name} quantizes activations: pass --calib-images N (train images that set the "
            "activation ranges, profile key ptq_calib_images)"
        )
    if request.calib_images and not activations:
        what = f"scheme {scheme.name} is weight-only" if scheme is not None else "without --quant-scheme"
        raise PTQInputError(
            f"--calib-images sets activation ranges; {what}, so there are none: drop --calib-images or pass an "
            "activation scheme such as w8a8"
        )
    if request.bias_correction and not activations:
        raise PTQInputError("--bias-correction runs after activation calibration; it needs a scheme such as w8a8")


def _float_activations(model: Any) -> Any:
    """BN re-estimation runs before the activation ranges are calibrated: an uncalibrated activation quantizer
    clips to Brevitas' placeholder range (1.0), so the BN statistics would be learned from clipped inputs. Brevitas'
    own switch turns those quantizers off for that pass (weights stay quantized)."""
    from brevitas.graph.calibrate import quantization_status_manager

    from auto_quantize_model.quant.activations import has_activation_quantizers

    if not has_activation_quantizers(model):
        return contextlib.nullcontext()
    return quantization_status_manager(model, disable_act_quant=True, is_training=False)


def _load(weights: Path) -> tuple[Any, dict[str, Any]]:
    """The exporter's checkpoint loader (one loader for the project), with this stage's error type."""
    from auto_quantize_model.onnx_io.model_prep import load_detection_checkpoint
    from auto_quantize_model.onnx_io.settings import ExportInputError

    try:
        model, ckpt = load_detection_checkpoint(weights)
    except ExportInputError as error:
        raise PTQInputError(str(error)) from error
    return model.float().eval(), ckpt


def quantize_checkpoint(request: PTQRequest) -> PTQResult:
    """PTQ of an FP checkpoint (``quant_scheme`` set) or BN re-estimation of a QAT one (``quant_scheme=None``)."""
    from auto_quantize_model.quant.scheme import resolve_scheme
    from auto_quantize_model.quant.yolov10 import is_quantized, quant_scheme_of, quantize_model

    _check_request(request)
    scheme = resolve_scheme(request.quant_scheme) if request.quant_scheme is not None else None
    _check_activation_request(request, scheme)
    model, ckpt = _load(request.weights)
    if scheme is not None and is_quantized(model):
        raise PTQInputError(
            f"{request.weights}: is already quantized (QAT, scheme {quant_scheme_of(model).name}); "
            "PTQ needs the FP run's best.pt"
        )
    if scheme is None and not is_quantized(model):
        raise PTQInputError(f"{request.weights}: is a float checkpoint; pass --quant-scheme to quantize it")
    report = quantize_model(model, scheme) if scheme is not None else None
    counts = report.counts() if report is not None else _bit_counts(model)
    scheme = scheme or quant_scheme_of(model)
    train_args = dict(ckpt.get("train_args") or {})
    imgsz = int(request.imgsz or train_args.get("imgsz") or 640)
    recalib = None
    if request.bn_recalib_batches:
        images = train_loader_images(request.data, imgsz, request.batch, request.device, request.workers, train_args)
        with _float_activations(model):
            recalib = recalibrate_batchnorm(model.to(_device(request.device)), images, request.bn_recalib_batches)
        model.cpu()
    calibration = _calibrate_activations(model, request, imgsz) if request.calib_images else None
    if calibration is not None:
        calibration["placement"] = report.activations.to_dict()
    _save_checkpoint(model, ckpt, request.out)
    val = _measure_val(request.out, request.data, imgsz, request.batch, request.device) if request.measure_val else None
    metadata = {
        "created_at": utc_now(),
        "kind": "ptq" if request.quant_scheme is not None else "bn-recalib",
        "source": {
            "checkpoint": str(request.weights.resolve()),
            "sha256": sha256_file(request.weights),  # what the summary checks the fp16 best.pt against
            "train_args_data": train_args.get("data"),
        },
        "checkpoint": str(request.out.resolve()),
        "quant_scheme": scheme.to_dict(),
        "layer_counts": counts,
        "bn_recalib": asdict(recalib) if recalib else None,
        "bn_recalib_batches": request.bn_recalib_batches,
        "activation_calibration": calibration,
        "imgsz": imgsz,
        "batch": request.batch,
        "data": str(request.data) if request.data else None,
        "val_mAP50_95": val,
        "val_settings": {"validator": "ultralytics DetectionValidator", "nms": False, "imgsz": imgsz}
        if val is not None
        else None,
        "dtype": "float32",
        "versions": package_versions(),
        "git": git_state(),
        "command": command_line(),
    }
    meta_path = write_json_atomic(request.out.with_suffix(".json"), metadata)
    return PTQResult(request.out, meta_path, scheme.name, counts, recalib, val, calibration)


def _calibrate_activations(model: Any, request: PTQRequest, imgsz: int) -> dict[str, Any]:
    """Activation ranges from ``calib_images`` train images (Brevitas calibration, optional bias correction)."""
    from auto_quantize_model.quant.calibration import calibrate_activations
    from auto_quantize_model.ultralytics_ext.calibration import calibration_images

    start = time.perf_counter()
    images = calibration_images(request.data, imgsz, request.batch, request.calib_images, request.device)
    report = calibrate_activations(model.to(_device(request.device)), images, request.bias_correction)
    model.cpu()
    return {
        **asdict(report),
        "split": "train",
        "preprocessing": "letterbox to imgsz, no augmentation (the evaluator's preprocessing)",
        "method": "brevitas.graph.calibrate.calibration_mode per site (99.999th percentile of |x|, batch mean); "
        "a shared quantizer takes its widest site"
        + ("; then brevitas bias_correction_mode" if request.bias_correction else ""),
        "seconds": round(time.perf_counter() - start, 3),
    }


def recalibrate_checkpoint(
    weights: str | os.PathLike, out: str | os.PathLike, data: str | os.PathLike, num_batches: int, **settings: Any
) -> PTQResult:
    """BN re-estimation after QAT: ``weights`` (a QAT best.pt) -> ``out`` with re-estimated running statistics."""
    request = PTQRequest(
        Path(weights), Path(out), quant_scheme=None, data=Path(data), bn_recalib_batches=num_batches, **settings
    )
    return quantize_checkpoint(request)


def _bit_counts(model: Any) -> dict[str, int]:
    from collections import Counter

    from auto_quantize_model.quant.yolov10 import quantized_layers

    return dict(sorted(Counter(str(layer.bit_width) for _, layer in quantized_layers(model)).items()))


def _device(device: str) -> Any:
    from ultralytics.utils.torch_utils import select_device

    return select_device(device, verbose=False)


def _save_checkpoint(model: Any, source_ckpt: dict[str, Any], out: Path) -> None:
    """An Ultralytics checkpoint (``ema`` holds the model, as after training) written atomically."""
    import torch
    from ultralytics import __version__

    ckpt = {
        "date": utc_now(),
        "version": __version__,
        "epoch": -1,  # finished: Ultralytics never treats it as resumable
        "best_fitness": None,
        "model": None,
        "ema": copy.deepcopy(model).float().eval(),
        "updates": None,
        "optimizer": None,
        "train_args": source_ckpt.get("train_args"),
        "train_metrics": None,
        "ptq_source_date": source_ckpt.get("date"),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(out) as tmp:
        torch.save(ckpt, tmp)


def _measure_val(checkpoint: Path, data: Path, imgsz: int, batch: int, device: str) -> float:
    """Ultralytics-validator mAP50-95 of the written checkpoint (NMS-free one-to-one head, as in training)."""
    from ultralytics import YOLO

    metrics = YOLO(str(checkpoint), task="detect").val(
        data=str(data),
        imgsz=imgsz,
        batch=batch,
        device=device,
        nms=False,
        plots=False,
        verbose=False,
        project=str(checkpoint.parent / ".ptq-val"),
        name=checkpoint.stem,
        exist_ok=True,
    )
    return float(metrics.box.map)
