"""ONNX export of FP and Brevitas W4A16 QAT YOLOv10 checkpoints under one input/output contract.

Both kinds of Ultralytics ``.pt`` checkpoint become an ONNX model with input ``images``
``(N, 3, H, W)`` float32 RGB in [0, 1] (letterboxed, gray 114) and output ``output0``: end-to-end
``(N, K, 6)`` rows ``x1, y1, x2, y2, score, class`` (``K = min(300, anchors)``, the default) or raw
``(N, 4 + nc, anchors)``. The contract is written down in ``models/cv-models/yolov10m/README.md``.

* A float checkpoint goes through the Ultralytics exporter itself (``YOLO(pt).export``).
* A QAT checkpoint (it holds Brevitas layers, see :func:`~auto_quantize_model.quant.yolov10.is_quantized`)
  gets the model preparation the Ultralytics exporter does (:func:`prepare_for_export`) and is then written as
  Brevitas QCDQ: int8 weight initializers -> ``Clip`` to the signed narrow range of their bit width -> per-channel
  ``DequantizeLinear``, one chain per quantized conv. The Ultralytics ``metadata_props`` are added so ``YOLO(onnx)``
  loads it like an Ultralytics export, and the project's own (:mod:`auto_quantize_model.onnx_io.embedded`: the full
  scheme, package version, commit, source checkpoint and export request) so the file says how it was quantized
  without its sidecar.
* A checkpoint that also quantizes activations (W8A8, W4A8; kind ``qat-qdq``) is exported the same way, its
  activation quantizers becoming ``QuantizeLinear -> DequantizeLinear`` pairs; ``--weights-format qdq`` then folds
  the weight Clips into the codes and stores the activations as uint8 (:mod:`~auto_quantize_model.onnx_io.qdq`),
  which OpenVINO needs, and the metadata records which share of the conv MACs its CPU plugin runs in int8.

Every export writes ``<stem>.json`` beside the ``.onnx`` (source checkpoint and its sha256, scheme, opset, layout,
class names, preprocessing, sizes, versions, Q/DQ/Clip counts and, with ``validate=True``, the ONNX Runtime vs
PyTorch comparison on real images). Nothing is written under the final names until everything succeeded.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from auto_quantize_model.onnx_io import validation as checks
from auto_quantize_model.onnx_io.contract import INPUT_NAME, OUTPUT_FORMATS, OUTPUT_NAME, PAD_VALUE
from auto_quantize_model.onnx_io.embedded import provenance_props
from auto_quantize_model.onnx_io.graph import GraphSummary, expected_output_shape, inspect_onnx
from auto_quantize_model.onnx_io.model_prep import (
    _is_quantized,
    _scheme_dict,
    dynamic_axes,
    load_detection_checkpoint,
    prepare_for_export,
)
from auto_quantize_model.onnx_io.settings import (
    CUDA_INT4_NOTE,
    DEFAULT_VAL_MAX_IMAGES,
    KIND_FP,
    KIND_QCDQ,
    KIND_QDQ,
    MAX_IR_VERSION,
    METADATA_SCHEMA_VERSION,
    OUTPUT_LAYOUTS,
    PREPROCESSING,
    QUANT_KINDS,
    WEIGHTS_FORMATS,
    WEIGHTS_INT4,
    WEIGHTS_QCDQ,
    WEIGHTS_QDQ,
    ExportExistsError,
    ExportInputError,
    ExportResult,
    ExportSettings,
    ExportValidationError,
    describe_kind,
)
from auto_quantize_model.onnx_io.verify import check_out_name, existing_export
from auto_quantize_model.runs.env_check import require_single_onnxruntime
from auto_quantize_model.runs.provenance import command_line, git_state, package_versions, utc_now
from auto_quantize_model.runs.run_root import export_metadata_path
from auto_quantize_model.utils.io import atomic_output, sha256_file, write_json_atomic
from auto_quantize_model.utils.version import package_version

LOGGER = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------
def export_onnx(
    weights: str | os.PathLike,
    out: str | os.PathLike,
    *,
    imgsz: int | Sequence[int] = 640,
    output_format: str = "e2e",
    opset: int | None = None,
    dynamic_batch: bool = False,
    half: bool = False,
    validate: bool = False,
    val_images: str | os.PathLike | None = None,
    val_max_images: int = DEFAULT_VAL_MAX_IMAGES,
    overwrite: bool = False,
    weights_format: str = WEIGHTS_QCDQ,
) -> ExportResult:
    """Export an Ultralytics FP or Brevitas QAT checkpoint to ``out`` (+ ``out`` with ``.json``).

    ``validate`` compares ONNX Runtime with the PyTorch model on real images (``val_images``, else the
    validation images of the dataset the checkpoint was trained on) and raises
    :class:`ExportValidationError` without writing anything when a difference exceeds its tolerance.
    ``weights_format="int4"`` (QAT only) converts the QCDQ graph to native INT4 weights
    (:mod:`~auto_quantize_model.onnx_io.int4`).
    """

    weights, out = Path(weights), Path(out)
    if out.exists() and not overwrite and weights.is_file():  # published before; maybe its stage was never recorded
        request = {
            "imgsz": imgsz,
            "output_format": output_format,
            "opset": opset,
            "dynamic_batch": dynamic_batch,
            "half": half,
            "weights_format": weights_format,
            "validate": validate,
        }
        return existing_export(weights, out, request)
    _check_request(weights, out, output_format, overwrite, val_max_images)
    require_single_onnxruntime()  # before the export: its contract check and validation run onnxruntime
    model, ckpt = load_detection_checkpoint(weights)
    kind = _checkpoint_kind(model)
    check_out_name(out, kind)
    settings = _resolve_settings(model, imgsz, output_format, opset, dynamic_batch, half, kind)
    settings = replace(settings, weights_format=_check_weights_format(weights_format, kind, weights))
    scheme = _scheme_dict(model) if kind in QUANT_KINDS else None
    LOGGER.info("%s: %s", weights, describe_kind(kind, scheme))
    # Images are checked before the slow export.
    plan = checks.plan_validation(val_images, ckpt, weights, val_max_images, settings) if validate else None
    # The reference is the checkpoint's model as saved (unfused): the check then also covers the fuse step.
    reference = checks.reference_outputs(checks.unfused_reference_model(model, settings), plan) if plan else None
    props: dict[str, Any] = {}  # metadata_props of a QCDQ/INT4 file (the Ultralytics exporter writes the FP ones)
    if kind in QUANT_KINDS:
        model = prepare_for_export(model, settings.imgsz, settings.end2end, settings.dynamic_batch)
        props = {
            **ultralytics_metadata(model, settings, ckpt),
            **provenance_props(scheme, sha256_file(weights), settings, validate),
        }
    with tempfile.TemporaryDirectory(prefix=f".{out.stem}.export-", dir=_ensure_dir(out.parent)) as work:
        staged = Path(work) / out.name
        int4 = qdq = None
        if kind == KIND_FP:
            _export_fp(weights, staged, settings)
        elif settings.weights_format == WEIGHTS_INT4:
            int4 = _export_int4(model, staged, settings, props)
        elif settings.weights_format == WEIGHTS_QDQ:
            qdq = _export_qdq(model, staged, settings, props)
        else:
            _export_qcdq(model, staged, settings, props)
        graph = inspect_onnx(staged)
        want = expected_output_shape(settings, len(model.names), model.stride.tolist())
        output_shape = _check_contract(staged, graph, settings.imgsz, want)
        validation = checks.validate_export(staged, reference, plan, settings, kind) if plan else None
        if validation and not validation["passed"]:
            raise ExportValidationError(checks.failure_message(staged.name, validation), validation)
        metadata = _export_metadata(
            weights, out, staged, kind, scheme, settings, model, graph, output_shape, validation
        )
        storage = _add_weights_metadata(metadata, staged, int4)
        if kind == KIND_QDQ:
            _add_integer_runtime_metadata(metadata, staged, qdq)
        return replace(_publish(staged, out, metadata, kind, scheme, validation), weights_format=storage)


# ----------------------------------------------------------------------------------------------
def _check_request(weights: Path, out: Path, output_format: str, overwrite: bool, val_max_images: int) -> None:
    """Reject bad arguments before any work; an existing ONNX is never replaced without ``overwrite``."""
    if output_format not in OUTPUT_FORMATS:
        raise ExportInputError(f"output format {output_format!r} is not one of {OUTPUT_FORMATS}")
    if not weights.is_file():
        raise ExportInputError(f"{weights}: checkpoint not found; pass --weights with a trained best.pt or last.pt")
    if weights.suffix != ".pt":
        raise ExportInputError(f"{weights}: expected an Ultralytics .pt checkpoint (e.g. weights/best.pt)")
    if out.suffix != ".onnx":
        raise ExportInputError(f"{out}: the output must end in .onnx (its metadata goes beside it as .json)")
    if val_max_images < 1:
        raise ExportInputError(f"val_max_images must be >= 1, got {val_max_images}")
    if out.exists() and not overwrite:
        raise ExportExistsError(f"{out}: already exists; pass --overwrite to replace it or choose another --out")


def _ensure_dir(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _resolve_settings(
    model: Any, imgsz: Any, output_format: str, opset: int | None, dynamic_batch: bool, half: bool, kind: str
) -> ExportSettings:
    """Image size as the Ultralytics exporter checks it (multiple of the stride) and its default opset."""
    import onnx
    from ultralytics.utils.checks import check_imgsz
    from ultralytics.utils.export.engine import best_onnx_opset

    if half and kind in QUANT_KINDS:
        raise ExportInputError(
            "--half is for float checkpoints only: the QCDQ graph keeps float32 scales and activations "
            "(W4A16 means 16-bit activations on the target runtime, not an fp16 ONNX); drop --half"
        )
    size = check_imgsz(imgsz, stride=model.stride, min_dim=2)
    chosen = opset if opset is not None else best_onnx_opset(onnx)
    if chosen < 13:  # per-channel DequantizeLinear (axis) and the exporter's own minimum for Detect
        raise ExportInputError(f"opset {chosen} is too old; use --opset 13 or newer")
    return ExportSettings((int(size[0]), int(size[1])), output_format, int(chosen), bool(dynamic_batch), bool(half))


# ----------------------------------------------------------------------------------------------
def _export_fp(weights: Path, staged: Path, settings: ExportSettings) -> None:
    """Float checkpoint: the Ultralytics exporter itself, writing into the staging folder.

    The exporter writes ``<pt_path>.onnx`` beside the checkpoint; pointing ``pt_path`` into the staging
    folder keeps the checkpoint's folder untouched. ``nms=False`` selects the one-to-one (end-to-end)
    branch, ``nms=None`` the raw one-to-many layout (``engine/exporter.py``: ``model.end2end = nms is False``).
    """
    from ultralytics import YOLO

    yolo = YOLO(str(weights), task="detect")
    yolo.model.pt_path = str(staged.with_suffix(".pt"))
    written = yolo.export(
        format="onnx",
        imgsz=list(settings.imgsz),
        nms=False if settings.end2end else None,
        simplify=False,
        opset=settings.opset,
        dynamic=settings.dynamic_batch,
        quantize=16 if settings.half else None,
        batch=1,
        device="cpu",
    )
    if Path(written).resolve() != staged.resolve():
        raise RuntimeError(f"Ultralytics wrote {written}, expected {staged}")


def _export_qcdq(model: Any, staged: Path, settings: ExportSettings, props: dict[str, Any]) -> None:
    """QAT checkpoint, already through :func:`prepare_for_export`: Brevitas QCDQ via the TorchScript exporter,
    then ``props`` added to the file's ``metadata_props``.

    ``dynamo=False``: the dynamo path stores float weights -> Q -> Clip -> DQ (4x larger), lists
    initializers as inputs and leaves a ``.onnx.data`` file. ``keep_initializers_as_inputs=False``
    (Brevitas defaults it to True) keeps ``images`` the only graph input.
    """
    import onnx
    import torch
    from brevitas.export import export_onnx_qcdq

    sample = torch.zeros(1, 3, *settings.imgsz)
    model(sample)  # dry run, as the Ultralytics exporter does: builds the anchors and checks the graph runs
    export_onnx_qcdq(
        model,
        args=sample,
        export_path=str(staged),
        opset_version=settings.opset,
        dynamo=False,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_axes=dynamic_axes(settings.dynamic_batch),
        keep_initializers_as_inputs=False,
    )
    proto = onnx.load(str(staged))
    proto.ir_version = min(proto.ir_version, MAX_IR_VERSION)
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, str(value)
    onnx.save(proto, str(staged))


def _checkpoint_kind(model: Any) -> str:
    """``fp``, ``qat-qcdq`` (quantized weights) or ``qat-qdq`` (quantized weights and activations)."""
    from auto_quantize_model.quant.activations import has_activation_quantizers

    if not _is_quantized(model):
        return KIND_FP
    return KIND_QDQ if has_activation_quantizers(model) else KIND_QCDQ


def _check_weights_format(weights_format: str, kind: str, weights: Path) -> str:
    if weights_format not in WEIGHTS_FORMATS:
        raise ExportInputError(f"weights format {weights_format!r} is not one of {WEIGHTS_FORMATS}")
    if weights_format == WEIGHTS_QDQ and kind != KIND_QDQ:
        raise ExportInputError(
            f"{weights}: --weights-format qdq is for checkpoints with quantized activations (w8a8, w4a8); this one "
            "quantizes weights only (or nothing): use --weights-format qcdq or int4"
        )
    if weights_format == WEIGHTS_INT4 and kind == KIND_FP:
        raise ExportInputError(
            f"{weights}: --weights-format int4 needs a QAT checkpoint (integer weight codes); this is a float "
            "checkpoint: drop --weights-format (float32) or add --half for the FP16 baseline"
        )
    return weights_format


def _export_qdq(model: Any, staged: Path, settings: ExportSettings, props: dict[str, Any]) -> Any:
    """Brevitas QCDQ export beside ``staged``, then its weight Clips folded into the codes (checked) onto ``staged``."""
    from auto_quantize_model.onnx_io.qdq import integer_runtime_qdq_file

    qcdq = staged.with_name(f"{staged.stem}.qcdq.onnx")
    _export_qcdq(model, qcdq, settings, props)
    check = np.random.default_rng(0).random((1, 3, *settings.imgsz), dtype=np.float32)
    try:
        return integer_runtime_qdq_file(qcdq, staged, check)
    finally:
        qcdq.unlink(missing_ok=True)  # the contract check wants one file in the staging folder


def _add_integer_runtime_metadata(metadata: dict[str, Any], staged: Path, qdq: Any) -> None:
    """The QDQ conversion record and OpenVINO's CPU runtime precision of every convolution (int8 MAC share)."""
    from auto_quantize_model.onnx_io.qdq import openvino_int8_report
    from auto_quantize_model.utils.errors import first_line

    if qdq is not None:
        packed = f", {qdq.int4_weights} 4-bit weights packed as INT4" if qdq.int4_weights else ""
        metadata["onnx"]["exporter"] += f", then onnx_io.qdq (weight Clips folded{packed}, activations as uint8)"
        metadata["qdq_conversion"] = {**asdict(qdq), "source": "Brevitas QCDQ export of source.checkpoint (staged)"}
    try:
        report = openvino_int8_report(staged).to_dict()
    except Exception as error:  # noqa: BLE001  (OpenVINO raises its own many types; the export itself stands)
        report = {"error": f"{type(error).__name__}: {first_line(error)}"}
        LOGGER.warning("%s: OpenVINO could not compile it (%s)", staged.name, report["error"])
    metadata["openvino"] = report
    metadata["runtimes"]["openvino_cpu"] = (
        f"OpenVINO {report['openvino_version']} CPU: {report['int8_mac_share']:.1%} of conv MACs in int8"
        if "error" not in report
        else f"OpenVINO CPU: does not compile ({report['error']})"
    )


def _export_int4(model: Any, staged: Path, settings: ExportSettings, props: dict[str, Any]) -> Any:
    """Brevitas QCDQ export beside ``staged``, then the checked QCDQ -> INT4 rewrite onto ``staged``."""
    from auto_quantize_model.onnx_io.int4 import INT4_OPSET, convert_qcdq_file_to_int4

    qcdq = staged.with_name(f"{staged.stem}.qcdq.onnx")
    _export_qcdq(model, qcdq, settings, props)
    check = np.random.default_rng(0).random((1, 3, *settings.imgsz), dtype=np.float32)
    try:
        return convert_qcdq_file_to_int4(qcdq, staged, opset=max(INT4_OPSET, settings.opset), check_inputs=check)
    finally:
        qcdq.unlink(missing_ok=True)  # the contract check wants one file in the staging folder


def _add_weights_metadata(metadata: dict[str, Any], staged: Path, int4: Any) -> str:
    """``weights_format`` read from the file itself, the runtimes that can run it and the INT4 conversion record."""
    import onnxruntime as ort

    from auto_quantize_model.onnx_io.size import WEIGHTS_FORMAT_TEXT, weight_storage

    storage = weight_storage(staged)
    metadata["weights_format"] = storage.weights_format
    metadata["onnx"]["precision"] = WEIGHTS_FORMAT_TEXT[storage.weights_format]
    metadata["graph"]["weight_dequantizers_by_storage"] = storage.weight_dequantizers
    metadata["runtimes"] = {
        "onnxruntime_cpu": f"onnxruntime {ort.__version__} CPUExecutionProvider: ran the file at export",
        "onnxruntime_cuda": CUDA_INT4_NOTE if storage.weights_format == WEIGHTS_INT4 else "untested here (no GPU)",
    }
    if int4 is not None:
        metadata["onnx"]["exporter"] += ", then auto_quantize_model.onnx_io.int4 (QCDQ -> native INT4, checked)"
        # The QCDQ intermediate lived in the staging folder; name what it was rather than its deleted path.
        qcdq_source = "Brevitas QCDQ export of source.checkpoint (staged, not kept)"
        metadata["int4_conversion"] = {**asdict(int4), "source": qcdq_source}
    return storage.weights_format


def ultralytics_metadata(model: Any, settings: ExportSettings, ckpt: dict[str, Any]) -> dict[str, Any]:
    """The ``metadata_props`` the Ultralytics ONNX exporter writes; ``AutoBackend`` reads them back."""
    from ultralytics import __version__

    data = (ckpt.get("train_args") or {}).get("data") or ""
    pretty = Path(model.yaml.get("yaml_file", "model")).stem.replace("yolo", "YOLO")
    scheme = _scheme_dict(model) or {}
    return {
        "description": f"Ultralytics {pretty} model{f' trained on {data}' if data else ''}, "
        f"Brevitas {scheme.get('name', 'QAT')} QCDQ",
        "author": "auto-quantize-model (Brevitas QCDQ export)",
        "date": utc_now(),
        "version": __version__,
        "license": "AGPL-3.0 License (https://ultralytics.com/license)",
        "docs": "https://docs.ultralytics.com",
        "stride": int(max(model.stride)),
        "task": model.task,
        "head": type(model.model[-1]).__name__,
        "batch": 1,
        "imgsz": list(settings.imgsz),
        "names": model.names,
        "args": {
            "batch": 1,
            "quantize": None,
            "nms": False if settings.end2end else None,
            "dynamic": settings.dynamic_batch,
            "simplify": False,
            "opset": settings.opset,
        },
        "channels": model.yaml.get("channels", 3),
        "end2end": settings.end2end,
    }


# ----------------------------------------------------------------------------------------------


def _check_contract(path: Path, graph: GraphSummary, imgsz: tuple[int, int], want: tuple[int, ...]) -> tuple[int, ...]:
    """Fail loudly if the graph breaks the contract; return the ``output0`` shape of one image.

    Checks names, a self-contained file (no external data, nothing else written) and, by running
    onnxruntime once on a gray image of the export size, the real output shape (declared dims may be
    symbolic: a dynamic export, like Ultralytics', leaves batch, height and width open).
    """
    import onnxruntime as ort

    stray = sorted(p.name for p in path.parent.iterdir() if p != path)
    problems = []
    if list(graph.inputs) != [INPUT_NAME] or list(graph.outputs) != [OUTPUT_NAME]:
        problems.append(f"inputs {list(graph.inputs)} / outputs {list(graph.outputs)}, expected [images] / [output0]")
    if graph.external_data or stray:
        problems.append(f"external data / extra files {stray}")
    shape: tuple[int, ...] = ()
    if not problems:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        blank = np.full((1, 3, *imgsz), PAD_VALUE / 255, dtype=np.float32)
        shape = tuple(session.run([OUTPUT_NAME], {INPUT_NAME: blank})[0].shape)
        if shape != want:
            problems.append(f"output0 shape {list(shape)} for one image, expected {list(want)}")
    if problems:
        raise RuntimeError(f"{path.name}: exported graph breaks the ONNX contract: {'; '.join(problems)}")
    return shape


# ----------------------------------------------------------------------------------------------
def _export_metadata(
    weights: Path,
    out: Path,
    staged: Path,
    kind: str,
    scheme: dict[str, Any] | None,
    settings: ExportSettings,
    model: Any,
    graph: GraphSummary,
    output_shape: tuple[int, ...],
    validation: dict[str, Any] | None,
) -> dict[str, Any]:
    """The ``<stem>.json`` record (schema in ``models/cv-models/yolov10m/README.md``)."""
    return {
        "schema_version": METADATA_SCHEMA_VERSION,
        "created_at": utc_now(),
        "kind": kind,
        "onnx": {
            "path": str(out.resolve()),
            "size_bytes": staged.stat().st_size,
            "sha256": sha256_file(staged),
            "opset": graph.opset,
            "ir_version": graph.ir_version,
            "external_data": graph.external_data,
            "exporter": _exporter_name(kind),
            "precision": "fp16 weights, float32 I/O" if settings.half else "float32",
        },
        "source": {
            "checkpoint": str(weights.resolve()),
            "sha256": sha256_file(weights),
            "size_bytes": weights.stat().st_size,
            "model_yaml": model.yaml.get("yaml_file"),
        },
        "quant_scheme": scheme,
        "input": {
            "name": INPUT_NAME,
            "shape": graph.inputs[INPUT_NAME],
            "imgsz": list(settings.imgsz),
            "dynamic_batch": settings.dynamic_batch,
            "dtype": "float32",
        },
        "output": {
            "name": OUTPUT_NAME,
            "format": settings.output_format,
            "shape": list(output_shape),
            "declared_shape": graph.outputs[OUTPUT_NAME],
            "layout": OUTPUT_LAYOUTS[settings.output_format],
            "max_det": output_shape[1] if settings.end2end else None,
        },
        "class_names": {str(k): v for k, v in model.names.items()},
        "nc": len(model.names),
        "preprocessing": PREPROCESSING,
        "graph": {
            "op_counts": graph.op_counts,
            "QuantizeLinear": graph.op_counts.get("QuantizeLinear", 0),
            "DequantizeLinear": graph.op_counts.get("DequantizeLinear", 0),
            "Clip": graph.op_counts.get("Clip", 0),
            "weight_qdq_by_bit_width": graph.weight_qdq_bits,
        },
        "package_version": package_version(),
        "versions": package_versions(),
        "git": git_state(),
        "command": command_line(),
        "validation": validation,
    }


def _exporter_name(kind: str) -> str:
    if kind == KIND_QDQ:
        return "brevitas.export.export_onnx_qcdq (TorchScript-based, dynamo=False; activations as Q/DQ pairs)"
    if kind == KIND_FP:
        return "ultralytics Exporter (YOLO.export, format=onnx, TorchScript-based torch.onnx.export)"
    return "brevitas.export.export_onnx_qcdq (TorchScript-based, dynamo=False) after Ultralytics' export preparation"


def _publish(
    staged: Path,
    out: Path,
    metadata: dict[str, Any],
    kind: str,
    scheme: dict[str, Any] | None,
    validation: dict[str, Any] | None,
) -> ExportResult:
    """Move the staged ONNX onto ``out`` (atomic rename) after writing its JSON; the ONNX goes last.

    A crash in between leaves a JSON without an ONNX, which the next export (allowed because the
    ONNX is absent) replaces.
    """
    meta_path = write_json_atomic(export_metadata_path(out), metadata)
    with atomic_output(out) as tmp:
        os.replace(staged, tmp)
    return ExportResult(out, meta_path, kind, (scheme or {}).get("name"), out.stat().st_size, validation)
