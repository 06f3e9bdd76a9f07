"""The ONNX input/output contract every exported model keeps and the evaluator relies on (numpy only).

Input ``images`` ``(N, 3, H, W)`` float32 RGB in [0, 1], letterboxed with gray ``PAD_VALUE``; output
``output0``: end-to-end ``(N, K, 6)`` rows ``x1, y1, x2, y2, score, class`` or raw ``(N, 4 + nc, anchors)``.
Written down for users in ``models/cv-models/yolov10m/README.md``.
"""

from __future__ import annotations

from collections.abc import Sequence

INPUT_NAME, OUTPUT_NAME = "images", "output0"
OUTPUT_FORMATS = ("e2e", "raw")
PAD_VALUE = 114  # Ultralytics' letterbox gray


def anchor_count(imgsz: Sequence[int], strides: Sequence[float]) -> int:
    """Grid cells over every detection level: the raw layout's last axis and the e2e top-k bound."""
    height, width = imgsz
    return sum(int(height / stride) * int(width / stride) for stride in strides)
