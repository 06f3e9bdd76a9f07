"""Activation quantization (W8A8, W4A8): scheme settings, placement on yolov10n, calibration, pickling.

Real Brevitas quantizers on a real Ultralytics yolov10n (random weights, BN statistics set on random images so
activations depend on the input), 64 px images.
"""

from __future__ import annotations

import copy
import io
import json

import pytest
import torch
from torch.overrides import TorchFunctionMode
from ultralytics.nn.tasks import DetectionModel

import auto_quantize_model  # noqa: F401  (before ultralytics: offline environment)
from auto_quantize_model.ptq import recalibrate_batchnorm
from auto_quantize_model.quant.activations import (
    ActQuantizer,
    QuantizeInput,
    QuantizeOutput,
    activation_quantizers,
    copy_activation_scales,
)
from auto_quantize_model.quant.calibration import calibrate_activations
from auto_quantize_model.quant.scheme import QuantScheme, named_scheme
from auto_quantize_model.quant.yolov10 import quantize_model, quantized_layers

IMGSZ = 64


def _images(count: int, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(1, 3, IMGSZ, IMGSZ, generator=generator) for _ in range(count)]


def _float_model() -> DetectionModel:
    torch.manual_seed(0)
    model = DetectionModel("yolov10n.yaml", nc=4, verbose=False)
    recalibrate_batchnorm(model, _images(2, seed=1), 2)  # BN stats from images: outputs depend on the input
    return model.eval()


@pytest.fixture(scope="module")
def w8a8() -> tuple[DetectionModel, object]:
    """A yolov10n with the w8a8 scheme, calibrated on 2 images."""
    model = _float_model()
    report = quantize_model(model, "w8a8")
    calibrate_activations(model, _images(2, seed=2))
    return model, report


# ---------------------------------------------------------------------------------------------- scheme
def test_weight_only_schemes_serialize_as_before() -> None:
    """No activation keys in a weight-only scheme's dict: old files and checkpoints are unchanged."""
    assert not {"act_bit_width", "act_signed", "act_overrides"} & set(named_scheme("w4a16").to_dict())
    old = {"name": "w4a16", "weight_bit_width": 4, "granularity": "per_channel", "scaling": "absmax"}
    assert QuantScheme.from_dict({**old, "layer_overrides": [], "keep_float": ["dfl"]}) == named_scheme("w4a16")
    assert not named_scheme("w4a16").quantizes_activations


@pytest.mark.parametrize(("name", "weights", "acts"), [("w8a8", 8, 8), ("w4a8", 4, 8)])
def test_activation_schemes_round_trip_through_json(tmp_path, name, weights, acts) -> None:
    scheme = named_scheme(name)
    assert (scheme.weight_bit_width, scheme.act_bit_width, scheme.act_signed) == (weights, acts, True)
    path = scheme.save(tmp_path / "scheme.json")
    assert json.loads(path.read_text())["act_bit_width"] == acts
    assert QuantScheme.load(path) == scheme


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"act_bit_width": 9}, r"act_bit_width: bit width 9 outside \[2, 8\]"),
        ({"act_bit_width": 1}, r"act_bit_width: bit width 1 outside"),
        ({"act_bit_width": 8.0}, r"act_bit_width: bit width must be an int"),
        ({"act_overrides": [["model.0.*", 16]]}, r"act_overrides\[0\] \('model.0.\*'\): bit width 16 outside"),
        ({"act_overrides": [["heads", 8]]}, r"act_overrides\[0\]: 'heads' is no role"),
        ({"act_overrides": [["head_pred"]]}, r"act_overrides\[0\]: expected \[selector, bit_width or None\]"),
        ({"act_overrides": "head_pred"}, r"act_overrides must be a list"),
        ({"act_signed": "yes"}, r"act_signed: expected true or false"),
    ],
)
def test_bad_activation_settings_name_the_key(tmp_path, changes, match) -> None:
    with pytest.raises(ValueError, match=match):
        QuantScheme(**{"name": "bad", "act_bit_width": 8, **changes})
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"name": "bad", "act_bit_width": 8, **changes}))
    with pytest.raises(ValueError, match=f"quant scheme file {path}: "):
        QuantScheme.load(path)


def test_an_act_override_matching_no_conv_names_key_and_scheme() -> None:
    scheme = QuantScheme("typo", act_bit_width=8, act_overrides=(("model.99.*", 4),))
    with pytest.raises(ValueError, match=r"quant scheme 'typo': act_overrides\[0\]: selector 'model.99.\*'"):
        quantize_model(_float_model(), scheme)


# ---------------------------------------------------------------------------------------------- placement
def test_every_quantized_conv_input_is_quantized_once_and_dfl_is_float(w8a8) -> None:
    model, report = w8a8
    sources = dict(report.activations.conv_inputs)
    assert report.activations.counts() == {"a8": 107, "float": 1}
    assert sources["model.23.dfl.conv"].startswith("float: float weights")
    assert sources["model.0.conv"] == "model.0.in_quant"  # the image: unsigned, fixed step 1/255
    image = model.get_submodule("model.0.in_quant")
    assert (image.signed, image.kind, float(image.scale())) == (False, "image", pytest.approx(1 / 255))
    quantizers = dict(activation_quantizers(model))
    assert all(quantizers[name].signed for name in quantizers if name != "model.0.in_quant")
    assert report.activations.to_dict()["float_operations"]  # what stays float is listed with its reason


def test_concat_inputs_and_their_readers_share_one_quantizer(w8a8) -> None:
    """The neck's Concats join layer outputs into groups; each group is one quantizer hooked on every producer."""
    model, report = w8a8
    by_name = {q["name"]: q for q in report.activations.quantizers}
    p4 = by_name["model.12.join_quant"]  # Concat 12 (upsampled P5 + backbone P4) and Concat 21 (P4 + P5)
    assert p4["sites"] == ["output of model.6", "output of model.10", "output of model.11", "output of model.20"]
    c2f = by_name["model.4.join_quant"]  # C2f: cv1 output and every bottleneck output feed one torch.cat
    assert c2f["sites"][0] == "output of model.4.cv1" and "output of model.4.m.1" in c2f["sites"]
    # SPPF: the MaxPools keep the scale (their outputs requantized by the same quantizer: an identity on codes)
    assert by_name["model.9.join_quant"]["sites"] == ["output of model.9.cv1", "output of model.9.m"]


def test_conv_inputs_and_concat_inputs_lie_on_their_quantizer_grid(w8a8) -> None:
    """After calibration: each quantized conv reads codes of its own quantizer; each torch.cat joins one grid."""
    model, report = w8a8
    quantizers = dict(activation_quantizers(model))
    scales = {name: float(q.scale()) for name, q in quantizers.items()}
    sources = dict(report.activations.conv_inputs)
    names = {id(m): name for name, m in model.named_modules()}
    off_grid = []

    def on_grid(x: torch.Tensor, scale: float) -> bool:
        codes = x.double() / scale
        return bool((codes - codes.round()).abs().max() < 1e-3)

    def check_conv(module, args):
        source = sources[names[id(module)]]
        if source in scales and not on_grid(args[0], scales[source]):
            off_grid.append(names[id(module)])

    class CatCheck(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func is torch.cat and args[0][0].dim() == 4:  # the backbone/neck joins, not the head's outputs
                if not any(all(on_grid(t, scale) for t in args[0]) for scale in scales.values()):
                    off_grid.append(f"cat of {[tuple(t.shape) for t in args[0]]}")
            return func(*args, **(kwargs or {}))

    hooks = [m.register_forward_pre_hook(check_conv) for _, m in quantized_layers(model)]
    try:
        with torch.no_grad(), CatCheck():
            model(_images(1, seed=3)[0])
    finally:
        for hook in hooks:
            hook.remove()
    assert off_grid == []


def test_calibration_takes_the_widest_site_of_a_shared_quantizer(w8a8) -> None:
    """A join's threshold is the largest of its sites' (99.999th percentile of |x| averaged over the batches).

    Brevitas alone would average the statistics of every call of a shared quantizer, clipping the widest input.
    """
    model, _ = w8a8
    reference = _float_model()  # the same float weights; calibration observes the float model
    sites: dict[int, list[torch.Tensor]] = {6: [], 10: [], 20: []}
    for layer, outputs in sites.items():
        reference.model[layer].register_forward_hook(lambda m, a, out, outputs=outputs: outputs.append(out))
    with torch.no_grad():
        for batch in _images(2, seed=2):  # the calibration images of the fixture
            reference(batch)
    percentiles = {
        layer: sum(float(torch.quantile(out.abs().flatten(), 0.99999)) for out in outs) / len(outs)
        for layer, outs in sites.items()
    }
    threshold = float(model.get_submodule("model.12.join_quant").threshold())
    assert threshold == pytest.approx(max(percentiles.values()), rel=0.02)
    assert threshold > min(percentiles.values()) * 1.05, percentiles


def test_weight_only_schemes_place_no_activation_quantizer() -> None:
    model = _float_model()
    report = quantize_model(model, "w4a16")
    assert report.activations is None and "activations" not in report.to_dict()
    assert not list(activation_quantizers(model))


def test_act_overrides_leave_named_inputs_float_with_the_reason() -> None:
    model = _float_model()
    scheme = QuantScheme("w8a8-headfp", weight_bit_width=8, act_bit_width=8, act_overrides=(("head_pred", None),))
    report = quantize_model(model, scheme)
    sources = dict(report.activations.conv_inputs)
    assert sources["model.23.cv2.0.2"] == "float: the scheme leaves this input float (act_bit_width / act_overrides)"
    assert report.activations.counts() == {"a8": 95, "float": 13}
    assert not hasattr(model.get_submodule("model.23.cv2.0.1"), "out_quant")


# ---------------------------------------------------------------------------------------------- pickling
def test_checkpoint_round_trip_keeps_scales_outputs_and_shared_quantizers(w8a8) -> None:
    """Ultralytics saves deepcopy(ema).half(); the reloaded model has the same scales, hooks and outputs."""
    model, _ = w8a8
    saved = copy.deepcopy(model).half()
    buffer = io.BytesIO()
    torch.save({"ema": saved}, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)["ema"].float().eval()
    x = _images(1, seed=4)[0]
    with torch.no_grad():  # fp16 storage rounds weights and scales; the file itself round-trips exactly
        assert torch.equal(saved.float().eval()(x)[0], loaded(x)[0])
    for (name, original), (_, reloaded) in zip(activation_quantizers(model), activation_quantizers(loaded)):
        assert reloaded.is_initialized and torch.isclose(original.scale(), reloaded.scale(), rtol=1e-3), name
    registered = {id(q) for _, q in activation_quantizers(loaded)}
    hooked = {
        id(hook.quantizer)
        for m in loaded.modules()
        for hook in (*m._forward_hooks.values(), *m._forward_pre_hooks.values())
        if isinstance(hook, (QuantizeOutput, QuantizeInput))
    }
    assert hooked == registered  # the hooks call the registered quantizers, not private copies


def test_scales_copy_into_a_freshly_quantized_model(w8a8) -> None:
    """What QAT fine-tuning from a PTQ checkpoint does: same scheme, same quantizer names, its scales."""
    model, _ = w8a8
    target = _float_model()
    quantize_model(target, "w8a8")
    assert copy_activation_scales(target, model) == sum(q.kind != "image" for _, q in activation_quantizers(model))
    for (name, source), (_, copied) in zip(activation_quantizers(model), activation_quantizers(target)):
        assert torch.isclose(source.scale(), copied.scale()), name
    assert isinstance(target.get_submodule("model.12.join_quant"), ActQuantizer)
