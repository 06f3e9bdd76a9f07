"""Export idempotence: an ONNX that was published but whose stage was never recorded is verified, not redone.

``export_onnx`` moves the ONNX into place last (after its metadata JSON). A process killed between
that rename and the stage's ``run.json`` record leaves a finished export that a plain rerun (no
``--overwrite``) used to refuse forever. :func:`existing_export` accepts it when it is exactly what
the rerun would write: the metadata records the same input checkpoint sha256 and the same settings,
the file's sha256 matches the metadata and ONNX Runtime loads it. Anything else is still refused
with the reason, unless ``--overwrite``.

A quantized file whose ``.json`` sidecar is missing (copied out of its run root, or the sidecar deleted) is
checked against the provenance it carries in its own ``metadata_props`` (:mod:`auto_quantize_model.onnx_io.embedded`:
source checkpoint sha256, export request, scheme); when it matches, the sidecar is rebuilt from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from auto_quantize_model.onnx_io.embedded import read_provenance, restored_export_record
from auto_quantize_model.onnx_io.settings import (
    KIND_FP,
    WEIGHTS_INT4,
    WEIGHTS_QDQ,
    ExportExistsError,
    ExportInputError,
    ExportResult,
)
from auto_quantize_model.runs.run_root import export_metadata_path
from auto_quantize_model.utils.io import read_json, sha256_file, write_json_atomic

# Output names that promise integer weights (RunRoot.onnx_model spells them); a float checkpoint must not get one.
QAT_NAME_TOKENS = ("qcdq", "int4", "qdq")


def read_export_metadata(onnx_path: Path) -> dict[str, Any] | None:
    """The export metadata JSON beside ``onnx_path`` (the one reader of that file); ``None`` when there is none."""
    path = export_metadata_path(onnx_path)
    return read_json(path) if path.is_file() else None


def check_out_name(out: Path, kind: str) -> None:
    """Refuse to write a float checkpoint under a QAT file name (``...-qcdq.onnx``, ``...-int4.onnx``)."""
    tokens = set(Path(out).stem.lower().split("-"))
    if kind == KIND_FP and tokens & set(QAT_NAME_TOKENS):
        raise ExportInputError(
            f"{out}: the name says {'/'.join(sorted(tokens & set(QAT_NAME_TOKENS)))} (a QAT export) but the checkpoint "
            "is float (no quantized layers); pass the QAT stage's best.pt or a float name such as <model>-fp16.onnx"
        )


def existing_export(weights: Path, out: Path, request: dict[str, Any]) -> ExportResult:
    """``out`` exists and ``--overwrite`` was not given: return it if verified, else raise :class:`ExportExistsError`.

    ``request`` holds the export's settings as passed: imgsz, output_format, opset, dynamic_batch, half,
    weights_format, validate.
    """
    meta_path = export_metadata_path(out)
    metadata, reason = _recorded_export(out)
    if metadata is not None:
        source = meta_path.name if meta_path.is_file() else f"{out.name}'s own metadata"
        reason = _mismatch(weights, out, request, metadata, source)
    if reason or metadata is None:
        raise ExportExistsError(
            f"{out}: already exists and {reason}; pass --overwrite to replace it or choose another --out"
        )
    if not meta_path.is_file():  # verified against the file's own provenance: give it its sidecar back
        write_json_atomic(meta_path, metadata)
    return ExportResult(
        onnx_path=out,
        metadata_path=meta_path,
        kind=metadata.get("kind", "?"),
        scheme_name=(metadata.get("quant_scheme") or {}).get("name"),
        size_bytes=out.stat().st_size,
        validation=metadata.get("validation"),
        weights_format=metadata.get("weights_format", request.get("weights_format")),
        already_exported=True,
    )


def _recorded_export(out: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The export's record: its sidecar JSON, else one rebuilt from the file's embedded provenance; or why none."""
    meta_path = export_metadata_path(out)
    try:
        metadata = read_export_metadata(out)
    except ValueError:
        return None, f"its metadata {meta_path.name} is not valid JSON"
    if metadata is not None:
        return metadata, None
    problem = _onnx_error(out)
    if problem:
        return None, problem
    embedded = read_provenance(out)
    if embedded is None or embedded.export is None:
        return None, f"has no metadata {meta_path.name} (nor an export record in its own metadata) to verify it against"
    return restored_export_record(out, embedded), None


def _mismatch(weights: Path, out: Path, request: dict[str, Any], metadata: dict[str, Any], source: str) -> str | None:
    """Why the existing ``out`` is not what this request would write, or ``None`` when it is (``source`` names
    where ``metadata`` came from)."""
    recorded_source = (metadata.get("source") or {}).get("sha256")
    if recorded_source != sha256_file(weights):
        return f"was exported from another checkpoint (sha256 in {source} differs from {weights})"
    differing = [key for key, (want, have) in _settings(metadata, request).items() if want != have]
    if differing:
        return f"was exported with other settings ({', '.join(differing)})"
    if (metadata.get("onnx") or {}).get("sha256") != sha256_file(out):
        return "its content differs from the sha256 in its metadata (torn or edited)"
    return _onnx_error(out)


def _settings(metadata: dict[str, Any], request: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Setting name -> (requested, recorded), for the settings that decide the file's content."""
    onnx_record, input_record = metadata.get("onnx") or {}, metadata.get("input") or {}
    imgsz = request["imgsz"]
    size = [int(imgsz), int(imgsz)] if isinstance(imgsz, int) else [int(v) for v in imgsz]
    recorded_half = metadata.get("weights_format") == "float16" or str(onnx_record.get("precision", "")).startswith(
        "fp16"
    )
    settings = {
        "imgsz": (size, input_record.get("imgsz")),
        "format": (request["output_format"], (metadata.get("output") or {}).get("format")),
        "dynamic_batch": (bool(request["dynamic_batch"]), input_record.get("dynamic_batch")),
        "half": (bool(request["half"]), recorded_half),
        "int4": (request["weights_format"] == WEIGHTS_INT4, metadata.get("weights_format") == WEIGHTS_INT4),
        "qdq": (request["weights_format"] == WEIGHTS_QDQ, metadata.get("weights_format") == WEIGHTS_QDQ),
    }
    if request.get("opset") is not None:
        settings["opset"] = (int(request["opset"]), onnx_record.get("opset"))
    if request.get("validate"):  # a published export passed its validation; one made without cannot count as one
        settings["validate"] = (True, metadata.get("validation") is not None)
    return settings


def _onnx_error(out: Path) -> str | None:
    """Load ``out`` the way the evaluator does: an ONNX Runtime CPU session (graph, types and shapes resolved).

    Not ``onnx.checker.check_model``: it rejects the float16 file of Ultralytics' own exporter ("Nodes in a
    graph must be topologically sorted": the input Cast is listed after its users), which ONNX Runtime
    sorts, loads and runs, so a finished float16 export could never be accepted on a rerun.
    """
    import onnxruntime as ort

    from auto_quantize_model.utils.errors import first_line

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    try:
        ort.InferenceSession(str(out), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # noqa: BLE001  (protobuf and onnxruntime raise many types)
        return f"does not load in ONNX Runtime ({type(error).__name__}: {first_line(error)[:200]})"
    return None
