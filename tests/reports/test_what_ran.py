"""The summary's "What ran" row of a baseline tool variant names the tool and its settings, not a training."""

from __future__ import annotations

from pathlib import Path

from auto_quantize_model.reports.summary_sections import _weights_description, precision_label
from auto_quantize_model.reports.summary_view import Cell
from auto_quantize_model.runs.variants import parse_variant


def test_baseline_tools_are_named_with_their_qdq_settings() -> None:
    ortq, nncf = parse_variant("ortq-w8a8"), parse_variant("nncf-w8a8")
    assert precision_label(None, ortq).startswith("ONNX Runtime quantize_static")
    assert precision_label(None, nncf).startswith("NNCF post-training quantization")
    assert precision_label(None, parse_variant("fp16")).startswith("unknown")  # a training without metadata
    export = {"kind": "ortq-w8a8", "quantization": {"settings": {"quant_format": "QDQ", "per_channel": True}}}
    cell = Cell(0, ortq, "qdq", Path("m.onnx"), export=export)
    assert _weights_description(cell) == "QDQ by the tool: quant_format QDQ, per_channel True"
