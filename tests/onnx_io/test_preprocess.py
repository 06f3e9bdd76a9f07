"""Letterbox parity with Ultralytics 8.4.190, pixel for pixel, and the box mapping round trip."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

import auto_quantize_model  # noqa: F401  (pins Ultralytics offline before it is imported)
from auto_quantize_model.onnx_io.preprocess import (
    boxes_to_input,
    boxes_to_original,
    letterbox,
    letterbox_image,
)

# (image h, w, channels or None for 2-D grayscale), target (h, w): square, wide, tall, grayscale, upscaling,
# non-square targets, and 333x500 where ceil and round of the resized side differ.
CASES = [
    ((480, 640, 3), (640, 640)),
    ((640, 480, 3), (320, 320)),
    ((300, 300, 3), (320, 320)),
    ((90, 200, None), (128, 128)),
    ((17, 45, 3), (64, 64)),
    ((500, 333, 3), (320, 320)),
    ((375, 500, 3), (256, 384)),
    ((200, 90, None), (160, 96)),
]


def _image(shape, seed=0):
    h, w, c = shape
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w) if c is None else (h, w, c), dtype=np.uint8)


@pytest.mark.parametrize(("shape", "target"), CASES)
def test_predict_mode_matches_ultralytics_letterbox(shape, target):
    """mode='predict' equals ``LetterBox(new_shape, auto=False)`` and its boxes invert like ``scale_boxes``."""
    from ultralytics.data.augment import LetterBox
    from ultralytics.utils.ops import scale_boxes

    image = _image(shape)
    bgr = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    expected = LetterBox(new_shape=target, auto=False)(image=bgr.copy())
    ours, info = letterbox_image(image, target, mode="predict")
    assert ours.shape == expected.shape and np.array_equal(ours, expected)

    boxes = np.array([[3.5, 7.25, target[1] - 4.0, target[0] - 9.5], [-5.0, 10.0, 50.0, target[0] + 8.0]])
    reference = scale_boxes(target, torch.tensor(boxes, dtype=torch.float64), bgr.shape).numpy()
    np.testing.assert_allclose(boxes_to_original(boxes, info), reference, atol=1e-9)


def _ultralytics_val_items(tmp_path, images, imgsz):
    """The validator's dataset (``build_yolo_dataset`` in val mode) over the given images: (img CHW RGB, ratio_pad)."""
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_yolo_dataset

    folder = tmp_path / "images" / "val"
    folder.mkdir(parents=True)
    for i, image in enumerate(images):
        cv2.imwrite(str(folder / f"{i}.png"), image)
    cfg = get_cfg(overrides={"imgsz": list(imgsz)})
    data = {"names": {0: "a"}, "nc": 1, "channels": 3}
    dataset = build_yolo_dataset(cfg, str(folder), 1, data, mode="val", stride=32)
    items = sorted((dataset[i] for i in range(len(dataset))), key=lambda d: d["im_file"])
    return [(item["img"].numpy(), item["ratio_pad"]) for item in items]


@pytest.mark.parametrize("target", [(320, 320), (256, 384)])
def test_val_mode_matches_ultralytics_validator_dataset(tmp_path, target):
    """mode='val' reproduces the DetectionValidator input (ceil long-side resize, then LetterBox) and ratio_pad."""
    images = [_image(shape, seed=i) for i, (shape, _) in enumerate(CASES)]
    reference = _ultralytics_val_items(tmp_path, images, target)
    for image, (img_chw, ((gain_h, gain_w), (pad_w, pad_h))) in zip(images, reference):
        ours, info = letterbox(image, target, mode="val")
        expected = img_chw.astype(np.float32) / 255  # the validator's preprocess: float() / 255
        assert ours.dtype == np.float32 and ours.shape == expected.shape
        assert np.array_equal(ours, expected), f"pixels differ for image {image.shape}"
        assert info.gain == (gain_w, gain_h) and info.pad == (pad_w, pad_h)


def test_modes_differ_where_ceil_and_round_differ():
    """500x333 at 320: the validator resizes to 214 px wide (ceil), predict to 213 (round)."""
    image = _image((500, 333, 3))
    _, val_info = letterbox_image(image, 320, mode="val")
    _, predict_info = letterbox_image(image, 320, mode="predict")
    assert val_info.gain[0] * 333 == pytest.approx(214) and predict_info.gain[0] * 333 == pytest.approx(213)
    assert val_info.pad == (53, 0) and predict_info.pad == (53, 0)


def test_tensor_layout_is_rgb_chw_float():
    """BGR pixel (10, 20, 30) lands as RGB channels (30, 20, 10) / 255 in float32; padding is 114 / 255."""
    image = np.zeros((50, 100, 3), np.uint8)
    image[:] = (10, 20, 30)
    tensor, info = letterbox(image, 100)
    assert tensor.shape == (3, 100, 100) and tensor.dtype == np.float32
    assert info.pad == (0, 25)
    np.testing.assert_array_equal(tensor[:, 50, 50], np.array([30, 20, 10], np.float32) / np.float32(255))
    np.testing.assert_array_equal(tensor[:, 0, 0], np.full(3, 114, np.float32) / np.float32(255))


@pytest.mark.parametrize("mode", ["predict", "val"])
@pytest.mark.parametrize(("shape", "target"), CASES)
def test_boxes_round_trip_and_clip(shape, target, mode):
    """boxes_to_original inverts boxes_to_input inside the image, and clips what falls outside it."""
    _, info = letterbox_image(_image(shape), target, mode=mode)
    h, w = shape[:2]
    boxes = np.array([[0.0, 0.0, w, h], [0.1 * w, 0.2 * h, 0.7 * w, 0.9 * h]])
    np.testing.assert_allclose(boxes_to_original(boxes_to_input(boxes, info), info), boxes, atol=1e-9)
    outside = boxes_to_input(np.array([[-10.0, -10.0, w + 10.0, h + 10.0]]), info)
    np.testing.assert_allclose(boxes_to_original(outside, info), [[0, 0, w, h]], atol=1e-9)


def test_bad_images_are_rejected():
    """Float images, 2-channel images and unknown modes are errors, not silent conversions."""
    with pytest.raises(ValueError, match="uint8"):
        letterbox(np.zeros((10, 10, 3), np.float32), 32)
    with pytest.raises(ValueError, match="shape"):
        letterbox(np.zeros((10, 10, 2), np.uint8), 32)
    with pytest.raises(ValueError, match="mode"):
        letterbox(np.zeros((10, 10, 3), np.uint8), 32, mode="train")
