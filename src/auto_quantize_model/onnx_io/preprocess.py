"""Letterbox preprocessing that reproduces Ultralytics pixel for pixel, and its inverse for boxes.

Ultralytics 8.4.190 prepares a fixed-size input in two slightly different ways:

``mode="predict"`` -- ``YOLO.predict`` / export checks: ``LetterBox(new_shape, auto=False, scaleup=True)``
    (``ultralytics/data/augment.py``). Ratio ``r = min(H/h0, W/w0)``, resized size ``round(side * r)``
    (at least 1), gray padding split ``round(d/2 - 0.1)`` before and ``round(d/2 + 0.1)`` after.
    Boxes go back with ``scale_boxes(..., ratio_pad=None)`` (``ultralytics/utils/ops.py``), whose gains are
    the per-axis ratios of the resized size to the original size.

``mode="val"`` -- the validator's dataset as ``YOLO(onnx).val()`` builds it for a fixed-size model:
    ``BaseDataset.load_image`` first resizes the long side to ``max(H, W)`` with ``ceil`` (not ``round``)
    per side, then ``LetterBox(new_shape, scaleup=False)`` pads it to the square input. Boxes go back with
    the ``ratio_pad`` the dataset records: gains ``(h1/h0 * r2, w1/w0 * r2)`` with ``r2`` the (usually 1.0)
    second LetterBox ratio, and pads ``(left, top)``.

Both use ``cv2.INTER_LINEAR`` and pad with 114. The two modes differ by at most one resized pixel per
side; the evaluator uses ``"val"``, so its inputs equal those of ``YOLO(onnx).val()``. In-training
validation is different again: it pads rectangular batches (``rect=True``), so a PyTorch model validated
during training sees other input sizes than the fixed-size ONNX model does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from auto_quantize_model.onnx_io.contract import PAD_VALUE

LetterboxMode = Literal["predict", "val"]
_MODES = ("predict", "val")


@dataclass(frozen=True)
class LetterboxInfo:
    """How one image was mapped into the network input.

    ``orig_shape`` and ``input_shape`` are ``(height, width)``; ``gain`` is ``(gain_x, gain_y)`` in input
    pixels per original pixel; ``pad`` is ``(left, top)`` in input pixels. Input coordinates map back with
    ``x0 = (x - pad_left) / gain_x`` and ``y0 = (y - pad_top) / gain_y``.
    """

    orig_shape: tuple[int, int]
    input_shape: tuple[int, int]
    gain: tuple[float, float]
    pad: tuple[int, int]


def as_hw(new_shape: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """Return ``(height, width)`` from an int (square) or a ``(height, width)`` pair; reject non-positive sizes."""
    hw = (
        (int(new_shape), int(new_shape))
        if isinstance(new_shape, (int, np.integer))
        else tuple(int(v) for v in new_shape)
    )
    if len(hw) != 2 or min(hw) < 1:
        raise ValueError(f"input size must be an int or (height, width) of positive ints, got {new_shape!r}")
    return hw  # type: ignore[return-value]


def ensure_bgr(image: np.ndarray) -> np.ndarray:
    """Return a 3-channel uint8 BGR view of ``image`` (grayscale and BGRA are converted, others rejected)."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 numpy image, got {type(image).__name__} {getattr(image, 'dtype', '')}")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise ValueError(f"expected an HxW, HxWx1, HxWx3 or HxWx4 image, got shape {image.shape}")


def _letterbox_pad(
    image: np.ndarray, new_hw: tuple[int, int], scaleup: bool
) -> tuple[np.ndarray, float, tuple[int, int], tuple[int, int]]:
    """Ultralytics ``LetterBox`` (auto=False, center=True): resize keeping ratio, pad gray.

    Returns the padded image, the ratio ``r``, the resized ``(w, h)`` and the ``(left, top)`` padding.
    """
    h, w = image.shape[:2]
    r = min(new_hw[0] / h, new_hw[1] / w)
    if not scaleup:
        r = min(r, 1.0)
    new_unpad = max(round(w * r), 1), max(round(h * r), 1)  # (w, h); thin images keep one pixel
    dw, dh = (new_hw[1] - new_unpad[0]) / 2, (new_hw[0] - new_unpad[1]) / 2
    if (w, h) != new_unpad:
        image = cv2.resize(image, new_unpad, interpolation=cv2.INTER_LINEAR)
    # The -0.1/+0.1 split is Ultralytics': an odd padding puts the extra pixel after the image.
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    padded = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    return padded, r, new_unpad, (left, top)


def _resize_long_side(image: np.ndarray, target: int) -> np.ndarray:
    """``BaseDataset.load_image`` (rect_mode): long side to ``target``, each side ``min(ceil(side * r), target)``."""
    h0, w0 = image.shape[:2]
    r = target / max(h0, w0)
    if r == 1:
        return image
    size = (min(math.ceil(w0 * r), target), min(math.ceil(h0 * r), target))
    return cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)


def letterbox_image(
    image_bgr: np.ndarray, new_shape: int | tuple[int, int], *, mode: LetterboxMode = "predict"
) -> tuple[np.ndarray, LetterboxInfo]:
    """Letterbox a uint8 image to ``new_shape`` like Ultralytics; return the padded BGR uint8 image and its info.

    ``mode="predict"`` matches ``LetterBox`` + ``scale_boxes``; ``mode="val"`` matches the validator's dataset.
    """
    if mode not in _MODES:
        raise ValueError(f"letterbox mode must be one of {_MODES}, got {mode!r}")
    image = ensure_bgr(image_bgr)
    new_hw = as_hw(new_shape)
    h0, w0 = image.shape[:2]
    if mode == "predict":
        padded, _, (new_w, new_h), pad = _letterbox_pad(image, new_hw, scaleup=True)
        gain = (new_w / w0, new_h / h0)  # scale_boxes(ratio_pad=None) uses the real per-axis resize ratio
    else:
        resized = _resize_long_side(image, max(new_hw))
        padded, r2, _, pad = _letterbox_pad(resized, new_hw, scaleup=False)
        h1, w1 = resized.shape[:2]
        gain = (w1 / w0 * r2, h1 / h0 * r2)  # the ratio_pad the validator's dataset records
    info = LetterboxInfo(orig_shape=(h0, w0), input_shape=new_hw, gain=gain, pad=pad)
    return padded, info


def to_input_tensor(letterboxed_bgr: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """HWC BGR uint8 -> CHW RGB in [0, 1], computed as ``float32(x) / 255`` like Ultralytics (not ``x * (1/255)``)."""
    chw_rgb = np.ascontiguousarray(letterboxed_bgr.transpose(2, 0, 1)[::-1])
    return (chw_rgb.astype(np.float32) / np.float32(255.0)).astype(dtype, copy=False)


def letterbox(
    image_bgr: np.ndarray, new_shape: int | tuple[int, int], *, mode: LetterboxMode = "predict"
) -> tuple[np.ndarray, LetterboxInfo]:
    """Letterbox an image into a network input: ``(float32 CHW RGB in [0, 1], LetterboxInfo)``.

    Stack the returned arrays along a new axis 0 for an NCHW batch.
    """
    padded, info = letterbox_image(image_bgr, new_shape, mode=mode)
    return to_input_tensor(padded), info


def boxes_to_original(boxes_xyxy: np.ndarray, info: LetterboxInfo) -> np.ndarray:
    """Map xyxy boxes from network-input pixels back to the original image, clipped to it (a new float64 array)."""
    boxes = np.array(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    (gain_x, gain_y), (left, top) = info.gain, info.pad
    boxes[:, [0, 2]] = (boxes[:, [0, 2]] - left) / gain_x
    boxes[:, [1, 3]] = (boxes[:, [1, 3]] - top) / gain_y
    h0, w0 = info.orig_shape
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w0)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h0)
    return boxes


def boxes_to_input(boxes_xyxy: np.ndarray, info: LetterboxInfo) -> np.ndarray:
    """Map xyxy boxes from original-image pixels into network-input pixels (inverse of :func:`boxes_to_original`)."""
    boxes = np.array(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    (gain_x, gain_y), (left, top) = info.gain, info.pad
    boxes[:, [0, 2]] = boxes[:, [0, 2]] * gain_x + left
    boxes[:, [1, 3]] = boxes[:, [1, 3]] * gain_y + top
    return boxes


# The validator dataset's resize + square LetterBox: what YOLO(onnx).val() feeds a fixed-size model. In-training
# validation differs (rect batches), so its numbers are not this evaluator's.
LETTERBOX_MODE = "val"


def read_image(path: Path) -> np.ndarray | None:
    """Decode an image file as 3-channel BGR uint8 (grayscale files are expanded), ``None`` when unreadable."""
    try:
        data = np.fromfile(str(path), np.uint8)  # like Ultralytics' imread: also works for non-ASCII paths
    except OSError:
        return None
    if data.size == 0:
        return None
    return cv2.imdecode(data, cv2.IMREAD_COLOR)
