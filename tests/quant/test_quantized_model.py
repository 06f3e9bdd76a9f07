"""WeightQuantConv2d and quantize_model on a real yolov10n: codes, gradients, AMP, pickling, EMA, fuse."""

from __future__ import annotations

import copy
import importlib.util
import io
import pickle

import pytest
import torch
from brevitas.nn import QuantConv2d
from torch import nn
from ultralytics.cfg import get_cfg
from ultralytics.nn.modules import RepVGGDW
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils.torch_utils import ModelEMA

import auto_quantize_model  # noqa: F401  (before ultralytics: offline environment)
from auto_quantize_model.quant.scheme import SCHEME_NAMES, QuantScheme, named_scheme
from auto_quantize_model.quant.yolov10 import (
    QuantDetectionModel,
    WeightQuantConv2d,
    is_quantized,
    quant_scheme_of,
    quantize_model,
    quantized_layers,
)

NC = 4
IMGSZ = 64
DFL = "model.23.dfl.conv"
EXPECTED_COUNTS = {
    "w4a16": {"4": 107, "float": 1},
    "w4a16-fl8": {"4": 94, "8": 13, "float": 1},
    "w4a16-flfp": {"4": 94, "float": 14},
    "w8a16": {"8": 107, "float": 1},
    "w4a16-mse": {"4": 107, "float": 1},
    "w4a16-lsq": {"4": 107, "float": 1},
    "w4a16-fl8-mse": {"4": 94, "8": 13, "float": 1},
    "w4a16-fl8-lsq": {"4": 94, "8": 13, "float": 1},
    "w8a8": {"8": 107, "float": 1},  # weights; the conv inputs are tests/quant/test_activations.py's
    "w4a8": {"4": 107, "float": 1},
}
PER_TENSOR = QuantScheme("w4a16-per-tensor", granularity="per_tensor")


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Run these tiny models on one thread: faster on 2 shared cores, and immune to oversubscription."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def randomize_batchnorm(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics, so BN folding really rescales channels (fresh BN is identity)."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.2)
            m.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
            m.weight.data.copy_(
                (torch.rand(n, generator=gen) + 0.5) * torch.where(torch.rand(n, generator=gen) < 0.1, -1.0, 1.0)
            )
            m.bias.data.copy_(torch.randn(n, generator=gen) * 0.2)


def float_yolov10n(seed: int = 0) -> DetectionModel:
    torch.manual_seed(seed)
    model = DetectionModel("yolov10n.yaml", nc=NC, verbose=False)
    randomize_batchnorm(model, seed)
    return model


def quantized_yolov10n(scheme: QuantScheme | str, seed: int = 0) -> DetectionModel:
    model = float_yolov10n(seed)
    quantize_model(model, scheme)
    return model


@torch.no_grad()
def eval_output(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The inference tensor ``[B, 4 + nc, anchors]`` of an eval-mode detector."""
    training = model.training
    out = model.eval()(x)[0]
    model.train(training)
    return out


def sample_input(batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(seed))


def synthetic_batch(batch: int = 2) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(2)
    n = 3 * batch
    return {
        "img": sample_input(batch),
        "cls": torch.randint(0, NC, (n, 1), generator=gen).float(),
        # Centred boxes of 0.2 to 0.9 of the image: every pyramid level (stride 32 too) gets positives.
        "bboxes": torch.cat(
            [torch.rand(n, 2, generator=gen) * 0.2 + 0.4, torch.rand(n, 2, generator=gen) * 0.7 + 0.2], 1
        ),
        "batch_idx": torch.arange(batch).repeat_interleave(3).float(),
    }


def quant_codes(layer: WeightQuantConv2d, weight: torch.Tensor) -> torch.Tensor:
    """Integer codes of a fake-quantized weight, using Brevitas' own scale for the layer."""
    scale = layer.quant_weight().scale.float()
    return weight.float() / scale


def make_layer(bit_width: int, granularity: str, seed: int = 0) -> WeightQuantConv2d:
    torch.manual_seed(seed)
    return WeightQuantConv2d.from_float(nn.Conv2d(16, 24, 3, padding=1), bit_width, granularity)


def module_flags(model: nn.Module) -> list[tuple[str, str, bool]]:
    return [(name, type(m).__name__, m.training) for name, m in model.named_modules()]


# ---------------------------------------------------------------------------------------------
# one layer
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("granularity", ["per_channel", "per_tensor"])
@pytest.mark.parametrize("bit_width", [4, 8])
def test_layer_weights_take_few_values_and_match_brevitas(bit_width: int, granularity: str) -> None:
    layer = make_layer(bit_width, granularity)
    assert isinstance(layer, QuantConv2d)
    weight = layer.fake_quant_weight()
    reference = layer.quant_weight()  # Brevitas' proxy path: IntQuantTensor
    assert torch.equal(weight, reference.value)  # bit-identical to Brevitas
    assert reference.bit_width.item() == bit_width and reference.signed
    max_code = 2 ** (bit_width - 1) - 1
    for row in weight.reshape(weight.shape[0], -1):
        assert row.unique().numel() <= 2 * max_code + 1  # 15 at 4 bits, 255 at 8 bits
    codes = quant_codes(layer, weight)
    assert torch.allclose(codes, codes.round(), atol=1e-4)
    assert codes.round().abs().max().item() == max_code  # narrow range, abs-max hits the top code
    if granularity == "per_tensor":
        assert weight.unique().numel() <= 2 * max_code + 1


@pytest.mark.parametrize("granularity", ["per_channel", "per_tensor"])
def test_edge_channels_match_brevitas(granularity: str) -> None:
    """Zero, below-min-scale, huge, one-hot and negative-max channels: same values and gradients."""
    layer = make_layer(4, granularity)
    with torch.no_grad():
        w = layer.weight
        w[0].zero_()
        w[1].mul_(1e-12)  # abs-max below Brevitas' scaling_min_val (1e-10)
        w[2].mul_(1e6)
        w[3].zero_()
        w[3, 0, 1, 1] = -0.3
        w[4] = -w[4].abs() * 0.5
        w[4, 2, 0, 0] = -1.0  # the extreme value is negative
        w[5] = torch.linspace(-1.0, 1.0, w[5].numel()).view_as(w[5]) * 0.07  # many .5 boundaries
    upstream = torch.randn_like(w)
    reference = layer.weight_quant.tensor_quant(w)[0]
    (reference * upstream).sum().backward()
    reference_grad = w.grad.clone()
    w.grad = None
    ours = layer.fake_quant_weight()
    (ours * upstream).sum().backward()
    assert torch.equal(ours, reference)
    assert torch.allclose(w.grad, reference_grad, rtol=1e-5, atol=1e-5)


def test_layer_forward_matches_brevitas_forward_and_falls_back() -> None:
    layer = make_layer(4, "per_channel")
    x = torch.randn(2, 16, 9, 9)
    expected = nn.functional.conv2d(x, layer.quant_weight().value, layer.bias, padding=1)
    assert torch.equal(layer(x), expected)
    assert torch.equal(QuantConv2d.forward(layer, x), expected)  # Brevitas' stock path agrees
    layer.weight_quant.disable_quant = True  # Brevitas' switch still works through our forward
    assert torch.equal(layer(x), nn.functional.conv2d(x, layer.weight, layer.bias, padding=1))


@pytest.mark.parametrize("granularity", ["per_channel", "per_tensor"])
def test_gradients_are_brevitas_ste_gradients(granularity: str) -> None:
    layer = make_layer(4, granularity)
    upstream = torch.randn_like(layer.weight)
    (layer.weight_quant.tensor_quant(layer.weight)[0] * upstream).sum().backward()  # Brevitas' graph
    reference = layer.weight.grad.clone()
    layer.weight.grad = None
    (layer.fake_quant_weight() * upstream).sum().backward()
    grad = layer.weight.grad
    assert torch.allclose(grad, reference, rtol=1e-5, atol=1e-5)
    # Straight-through: every element but the abs-max one(s) gets the upstream gradient unchanged.
    rows = layer.weight.detach().reshape(layer.weight.shape[0] if granularity == "per_channel" else 1, -1).abs()
    not_max = (rows < rows.max(dim=1, keepdim=True).values).reshape(grad.shape)
    assert torch.equal(grad[not_max], upstream[not_max])
    assert not torch.equal(grad[~not_max], upstream[~not_max])  # the scale path adds to the maxima


def test_autocast_quantizes_in_float32() -> None:
    layer = make_layer(4, "per_channel")
    x = torch.randn(2, 16, 9, 9)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        weight = layer.fake_quant_weight()
        out = layer(x)
    assert weight.dtype == torch.float32
    assert torch.equal(weight, layer.quant_weight().value)
    scale = layer.quant_weight().scale
    codes = (weight / scale).round()
    assert torch.equal(codes * scale, weight)  # weight is exactly integer codes times the scale
    assert codes.abs().max().item() == 7
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    assert torch.allclose(out.float(), layer(x), atol=0.1, rtol=0.05)


# ---------------------------------------------------------------------------------------------
# whole model
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_fl8() -> DetectionModel:
    """yolov10n with mixed 4/8-bit and float convs; tests copy it before changing it."""
    return quantized_yolov10n("w4a16-fl8")


@pytest.mark.parametrize("name", SCHEME_NAMES)
def test_quantize_model_counts_and_layers(name: str) -> None:
    model = float_yolov10n()
    float_keys = list(model.state_dict())
    params = {name: p for name, p in model.named_parameters()}
    report = quantize_model(model, named_scheme(name))
    assert report.counts() == EXPECTED_COUNTS[name]
    assert report.quantized_count == sum(1 for _ in quantized_layers(model))
    assert report.quantized_count + report.float_count == 108
    assert type(model.get_submodule(DFL)) is nn.Conv2d  # DFL stays a plain float conv
    for layer_name, bits in report.layer_bits:
        layer = model.get_submodule(layer_name)
        assert (bits is None) == (not isinstance(layer, WeightQuantConv2d))
        if bits is not None:
            assert layer.bit_width == bits and layer.granularity == "per_channel"
            assert layer.weight is params[f"{layer_name}.weight"]  # float weights kept as they were
            # Effective weights are integer codes in [-(2^(b-1)-1), 2^(b-1)-1] times a per-channel scale.
            scale = layer.quant_weight().scale
            weight = layer.fake_quant_weight().detach()
            codes = (weight / scale).round()
            assert torch.equal(codes * scale, weight) and codes.abs().max() <= 2 ** (bits - 1) - 1
    # Checkpoints keep the float layout; stored (mse/lsq) scales add one Brevitas key per quantized conv (activation
    # thresholds add theirs once calibrated: Brevitas leaves an uncalibrated one out of the state_dict).
    extra = [key for key in model.state_dict() if key not in float_keys]
    assert [key for key in model.state_dict() if key in float_keys] == float_keys
    stored = named_scheme(name).scaling != "absmax"
    assert len(extra) == (report.quantized_count if stored else 0)
    assert all(key.endswith("weight_quant.tensor_quant.scaling_impl.value") for key in extra)
    assert isinstance(model, QuantDetectionModel) and is_quantized(model)
    assert quant_scheme_of(model) == named_scheme(name)
    with pytest.raises(ValueError, match="already quantized"):
        quantize_model(model, name)


def test_float_model_is_not_quantized() -> None:
    model = float_yolov10n()
    assert not is_quantized(model) and quant_scheme_of(model) is None


def _torch_save_load(model: nn.Module) -> nn.Module:
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def _cloudpickle_round_trip(model: nn.Module) -> nn.Module:
    cloudpickle = pytest.importorskip("cloudpickle")
    return cloudpickle.loads(cloudpickle.dumps(model))


ROUND_TRIPS = {
    "pickle": lambda m: pickle.loads(pickle.dumps(m)),
    "deepcopy": copy.deepcopy,
    "torch_save": _torch_save_load,
    "cloudpickle": _cloudpickle_round_trip,
}


@pytest.mark.parametrize("how", list(ROUND_TRIPS))
def test_round_trips_keep_outputs_settings_and_flags(model_fl8: DetectionModel, how: str) -> None:
    if how == "cloudpickle" and importlib.util.find_spec("cloudpickle") is None:
        pytest.skip("cloudpickle is not installed; the pickle case covers __reduce_ex__")
    model = copy.deepcopy(model_fl8).train()
    model.model[0].eval()  # mixed train/eval flags must survive as they are
    model.get_submodule("model.0.conv").weight.requires_grad_(False)
    x = sample_input()
    expected = eval_output(model, x)
    clone = ROUND_TRIPS[how](model)
    assert type(clone) is QuantDetectionModel
    assert module_flags(clone) == module_flags(model)
    assert [(n, p.requires_grad) for n, p in clone.named_parameters()] == [
        (n, p.requires_grad) for n, p in model.named_parameters()
    ]
    assert [(n, m.quant_settings()) for n, m in quantized_layers(clone)] == [
        (n, m.quant_settings()) for n, m in quantized_layers(model)
    ]
    assert clone.quant_scheme == model.quant_scheme
    assert torch.equal(eval_output(clone, x), expected)


def test_plain_brevitas_layer_does_not_pickle() -> None:
    """Why __reduce_ex__ exists: a stock QuantConv2d with the same quantizer fails to pickle."""
    layer = QuantConv2d(4, 4, 3, weight_quant=make_layer(4, "per_channel").weight_quant.quant_injector)
    with pytest.raises((pickle.PicklingError, TypeError, AttributeError)):
        pickle.dumps(layer)


def test_ema_update_keeps_quantized_layers(model_fl8: DetectionModel) -> None:
    model = copy.deepcopy(model_fl8)
    ema = ModelEMA(model)
    x = sample_input()
    assert torch.equal(eval_output(ema.ema, x), eval_output(model, x))
    old = {k: v.clone() for k, v in ema.ema.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    ema.update(model)
    decay = ema.decay(ema.updates)
    new = model.state_dict()
    for key, value in ema.ema.state_dict().items():
        if value.dtype.is_floating_point:
            assert torch.allclose(value, old[key] * decay + new[key] * (1 - decay), atol=1e-6), key
    assert [(n, m.quant_settings()) for n, m in quantized_layers(ema.ema)] == [
        (n, m.quant_settings()) for n, m in quantized_layers(model)
    ]
    twin = copy.deepcopy(model)
    twin.load_state_dict(ema.ema.state_dict())
    assert torch.equal(eval_output(ema.ema, x), eval_output(twin, x))


def test_half_then_float_round_trip(model_fl8: DetectionModel) -> None:
    model = copy.deepcopy(model_fl8)
    rounded = copy.deepcopy(model_fl8)
    with torch.no_grad():
        for tensor in [*rounded.parameters(), *rounded.buffers()]:
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())
    model.half()
    layer = model.get_submodule("model.2.cv1.conv")
    assert layer.weight.dtype == torch.float16 and layer.fake_quant_weight().dtype == torch.float16
    # Ultralytics' save_model: torch.save(deepcopy(ema).half()); loading then calls .float().
    loaded = _torch_save_load(copy.deepcopy(model)).float()
    model.float()
    assert type(layer) is WeightQuantConv2d and layer.weight.dtype == torch.float32
    x = sample_input()
    expected = eval_output(rounded, x)
    assert torch.equal(eval_output(model, x), expected)
    assert torch.equal(eval_output(loaded, x), expected)


def feature_maps(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Outputs of every backbone/neck layer and every RepVGGDW block, then the detections.

    A random-init head shrinks feature differences, so the layers are compared one by one.
    """
    taps = [*model.model[:-1], *(m for m in model.modules() if isinstance(m, RepVGGDW))]
    outputs: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: outputs.append(out)) for m in taps]
    try:
        outputs.append(eval_output(model, x))
    finally:
        for hook in hooks:
            hook.remove()
    return outputs


def max_relative_change(after: list[torch.Tensor], before: list[torch.Tensor]) -> float:
    """Largest per-map max-abs difference, relative to that map's value range."""
    assert len(after) == len(before)
    return max(((a - b).abs().max() / (b.max() - b.min())).item() for a, b in zip(after, before))


@pytest.mark.parametrize("scheme", [*SCHEME_NAMES, PER_TENSOR], ids=lambda s: getattr(s, "name", s))
def test_fuse_keeps_outputs(scheme: QuantScheme | str) -> None:
    model = quantized_yolov10n(scheme).eval()
    x = sample_input()
    expected = feature_maps(model, x)
    naive = copy.deepcopy(model)
    model.fuse(verbose=False)
    assert model.is_fused() and is_quantized(model)
    assert max_relative_change(feature_maps(model, x), expected) < 1e-4
    model.fuse(verbose=False)  # a second fuse changes nothing
    assert max_relative_change(feature_maps(model, x), expected) < 1e-4
    # Ultralytics' own fuse moves the same maps (RepVGGDW merge; per-tensor BN folds): the test can fail.
    DetectionModel.fuse(naive, verbose=False)
    if quant_scheme_of(naive).weight_bit_width == 4:  # at 8 bits the merge moves outputs less than this bound
        assert max_relative_change(feature_maps(naive, x), expected) > 1e-2


def test_rebuild_from_scheme_alone(model_fl8: DetectionModel, tmp_path) -> None:
    model = copy.deepcopy(model_fl8)
    path = quant_scheme_of(model).save(tmp_path / "quant_scheme.json")
    rebuilt = DetectionModel(copy.deepcopy(model.yaml), nc=NC, verbose=False)
    report = quantize_model(rebuilt, QuantScheme.load(path))
    assert report.counts() == EXPECTED_COUNTS["w4a16-fl8"]
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    x = sample_input()
    assert torch.equal(eval_output(rebuilt, x), eval_output(model, x))


def test_training_gradients_reach_latent_float_weights(model_fl8: DetectionModel) -> None:
    model = copy.deepcopy(model_fl8).train()
    model.args = get_cfg()
    loss, _ = model.loss(synthetic_batch())
    loss.sum().backward()
    layers = dict(quantized_layers(model))
    assert len(layers) == 107
    for name, layer in layers.items():
        grad = layer.weight.grad
        assert grad is not None and torch.isfinite(grad).all(), name
        # Box branches (cv2) only learn from anchors the assigner made positive, which a tiny
        # random batch need not give every pyramid level; everything else must get a gradient.
        if ".cv2." not in name and ".one2one_cv2." not in name:
            assert grad.abs().sum() > 0, name
    assert model.get_submodule(DFL).weight.grad is None  # DFL is frozen and float


def test_model_forward_under_autocast(model_fl8: DetectionModel) -> None:
    model = copy.deepcopy(model_fl8).eval()
    x = sample_input()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)[0]
    reference = eval_output(model, x)
    assert torch.isfinite(out).all()
    assert (out.float() - reference).abs().max() < 0.05 * (reference.max() - reference.min())


def test_quantize_model_rejects_other_models() -> None:
    with pytest.raises(TypeError, match="DetectionModel"):
        quantize_model(nn.Sequential(nn.Conv2d(3, 3, 1)), "w4a16")
