"""Provenance inside a quantized ONNX file's ``metadata_props``: a file copied out of its run root still says how it
was quantized, by which code, from which checkpoint.

The exporter writes these keys on every QCDQ and INT4 file (string values, JSON where structured):

``aqm_quant_scheme``     the full quantization scheme (``QuantScheme.to_dict()``)
``aqm_package_version``  the auto_quantize_model version that exported it
``aqm_git_commit``       the exporting code's commit, ``-dirty`` appended when its tree had uncommitted changes
``aqm_export``           the source checkpoint's sha256 and the export request: imgsz, output_format, dynamic_batch,
                         weights_format, validated

The ``.json`` sidecar beside the file says all that and more; these keys are what survives without it. The
evaluator records them in ``metrics.json`` and the exporter's rerun check (``onnx_io.verify``) rebuilds the sidecar
from them when it is missing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auto_quantize_model.onnx_io.settings import KIND_QCDQ, METADATA_SCHEMA_VERSION, ExportSettings

QUANT_SCHEME_KEY = "aqm_quant_scheme"
PACKAGE_VERSION_KEY = "aqm_package_version"
GIT_COMMIT_KEY = "aqm_git_commit"
EXPORT_KEY = "aqm_export"
PROVENANCE_KEYS = (QUANT_SCHEME_KEY, PACKAGE_VERSION_KEY, GIT_COMMIT_KEY, EXPORT_KEY)


@dataclass(frozen=True)
class EmbeddedProvenance:
    """What a quantized ONNX file says about itself (``None`` for a key it does not carry)."""

    quant_scheme: dict[str, Any] | None
    package_version: str | None
    git_commit: str | None
    export: dict[str, Any] | None


def commit_label(commit: str | None, dirty: bool | None) -> str | None:
    """``<commit>``, or ``<commit>-dirty`` for a tree with uncommitted changes (git describe's spelling)."""
    return f"{commit}-dirty" if commit and dirty else commit


def git_commit_label() -> str | None:
    """:func:`commit_label` of the running code (``None`` outside git)."""
    from auto_quantize_model.utils.version import git_state

    state = git_state()
    return commit_label(state["commit"], state["dirty"])  # type: ignore[arg-type]


def provenance_props(
    scheme: Mapping[str, Any], source_sha256: str, settings: ExportSettings, validated: bool
) -> dict[str, str]:
    """The ``metadata_props`` entries of a quantized export."""
    from auto_quantize_model.utils.version import package_version

    export = {
        "source_sha256": source_sha256,
        "imgsz": list(settings.imgsz),
        "output_format": settings.output_format,
        "dynamic_batch": settings.dynamic_batch,
        "weights_format": settings.weights_format,
        "validated": validated,
    }
    props = {
        QUANT_SCHEME_KEY: json.dumps(dict(scheme), sort_keys=True),
        PACKAGE_VERSION_KEY: package_version(),
        EXPORT_KEY: json.dumps(export, sort_keys=True),
    }
    commit = git_commit_label()
    if commit:
        props[GIT_COMMIT_KEY] = commit
    return props


def parse_provenance(props: Mapping[str, str]) -> EmbeddedProvenance | None:
    """Read the provenance keys of a file's ``metadata_props``; ``None`` when it carries none of them."""
    if not any(key in props for key in PROVENANCE_KEYS):
        return None
    return EmbeddedProvenance(
        quant_scheme=_json_or_none(props.get(QUANT_SCHEME_KEY)),
        package_version=props.get(PACKAGE_VERSION_KEY),
        git_commit=props.get(GIT_COMMIT_KEY),
        export=_json_or_none(props.get(EXPORT_KEY)),
    )


def _json_or_none(text: str | None) -> dict[str, Any] | None:
    try:
        value = json.loads(text) if text else None
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def read_provenance(path: str | os.PathLike) -> EmbeddedProvenance | None:
    """:func:`parse_provenance` of the ONNX file at ``path`` (weights stay on disk if stored externally)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return parse_provenance({prop.key: prop.value for prop in proto.metadata_props})


def restored_export_record(path: Path, embedded: EmbeddedProvenance) -> dict[str, Any]:
    """The sidecar record that the rerun check compares, rebuilt from the file and its embedded provenance.

    Sizes, opset and weight storage are read from the file; what only the lost sidecar held (graph counts, the
    validation report, versions of every package) is not invented: ``restored_from`` says so.
    """
    from auto_quantize_model.onnx_io.size import WEIGHTS_FORMAT_TEXT, weight_storage
    from auto_quantize_model.utils.io import sha256_file

    export = embedded.export or {}
    storage = weight_storage(path)
    validated = {"passed": True, "checks": [], "restored": "passed at export; the report was in the lost sidecar"}
    return {
        "schema_version": METADATA_SCHEMA_VERSION,
        "restored_from": f"{path.name} metadata_props (the export's .json was missing)",
        "kind": KIND_QCDQ,
        "onnx": {
            "path": str(path.resolve()),
            "size_bytes": storage.size_bytes,
            "sha256": sha256_file(path),
            "opset": storage.opset,
            "precision": WEIGHTS_FORMAT_TEXT[storage.weights_format],
        },
        "source": {"sha256": export.get("source_sha256")},
        "quant_scheme": embedded.quant_scheme,
        "input": {"imgsz": export.get("imgsz"), "dynamic_batch": export.get("dynamic_batch")},
        "output": {"format": export.get("output_format")},
        "weights_format": storage.weights_format,
        "package_version": embedded.package_version,
        "git": {"commit": embedded.git_commit},
        "validation": validated if export.get("validated") else None,
    }
