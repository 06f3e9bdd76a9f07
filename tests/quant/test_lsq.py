"""LSQ as published (Esser et al. 2020) and stored scales that stay the validated float32 ones.

* The backward of a learned-scale layer equals an independent reference LSQ (the paper's own pseudo-code: gradient-
  scaled step, clip, then round with a straight-through estimator), also in the half-step band
  ``7 < |w / s| < 7.5`` where rounding first and clipping second would give other gradients.
* The learned scales' optimizer groups, built through the project's trainer and Ultralytics' real
  ``build_optimizer``, copy every setting of the group that holds their layers' weights (SGD, AdamW, MuSGD), except
  weight decay 0 and never a Muon group.
* Stored (mse, lsq, fixed) scales stay float32 through ``.half()``, the cast of Ultralytics' checkpoint save.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import auto_quantize_model  # noqa: F401  (before ultralytics: offline environment)
from auto_quantize_model.quant.scheme import named_scheme
from auto_quantize_model.quant.yolov10 import (
    WeightQuantConv2d,
    fold_batchnorm_exactly,
    quantized_layers,
    stored_scales,
)
from auto_quantize_model.ultralytics_ext.trainers import LEARNED_SCALE_GROUP

QMAX = 7  # 4-bit narrow signed range [-7, 7]


# ---------------------------------------------------------------------------------------------
# the backward: a reference LSQ, written from the paper, on values inside the half-step band
# ---------------------------------------------------------------------------------------------
def reference_lsq(w: torch.Tensor, s: torch.Tensor, per_channel: bool) -> torch.Tensor:
    """Esser et al. (2020), appendix pseudo-code: ``gradscale``, ``v / s``, clamp to [-Qn, Qp], ``roundpass``, ``* s``.

    The gradient scale is 1 / sqrt(N * Qp) with N the weights one step serves (all of them per tensor, as in the
    paper; one output channel's per channel).
    """
    n = w[0].numel() if per_channel else w.numel()
    g = 1.0 / math.sqrt(n * QMAX)
    s = (s - s * g).detach() + s * g  # gradscale: value s, gradient times g
    v = torch.clamp(w / s, -QMAX, QMAX)  # clip first ...
    v = (v.round() - v).detach() + v  # ... then round, straight through
    return v * s


def band_layer(granularity: str) -> tuple[WeightQuantConv2d, torch.Tensor]:
    """An lsq layer (MSE-initialised step) whose weights sit at chosen ``w / s``: 1/4 of them in the half-step band.

    Returns the layer and the boolean mask of band weights. Ratios keep away from 7 and from .5 ties, so clip,
    clamp-gradient and rounding boundaries are never hit exactly.
    """
    torch.manual_seed(0)
    layer = WeightQuantConv2d.from_float(nn.Conv2d(16, 24, 3), 4, granularity, "lsq", "mse")
    step = layer.int_weight_and_scale()[1]
    gen = torch.Generator().manual_seed(1)
    shape = layer.weight.shape
    sign = torch.where(torch.rand(shape, generator=gen) < 0.5, -1.0, 1.0)
    inner = torch.rand(shape, generator=gen) * 6.8  # inside: |w/s| < 6.8
    band = torch.rand(shape, generator=gen) * 0.4 + 7.05  # 7.05 .. 7.45
    beyond = torch.rand(shape, generator=gen) * 2 + 7.6  # clipped by either rule
    pick = torch.rand(shape, generator=gen)
    in_band = (pick >= 0.6) & (pick < 0.85)
    ratio = torch.where(pick < 0.6, inner, torch.where(in_band, band, beyond)) * sign
    inner_frac = (ratio - ratio.trunc()).abs()
    ratio = torch.where((inner_frac - 0.5).abs() < 0.01, ratio + 0.02 * sign, ratio)  # no near-ties
    with torch.no_grad():
        layer.weight.copy_(ratio * step)
    return layer, in_band


@pytest.mark.parametrize("granularity", ["per_channel", "per_tensor"])
def test_lsq_gradients_equal_reference_lsq_in_the_half_step_band(granularity: str) -> None:
    layer, in_band = band_layer(granularity)
    per_channel = granularity == "per_channel"
    upstream = torch.randn(layer.weight.shape, generator=torch.Generator().manual_seed(2))
    w = layer.weight.detach().clone().requires_grad_()
    s = (layer.scale_parameter.detach() / QMAX).clone().requires_grad_()  # the step; the layer stores t = 7 s
    expected = reference_lsq(w, s, per_channel)
    ours = layer.fake_quant_weight()
    assert torch.allclose(ours, expected, rtol=1e-6, atol=0)
    (ours * upstream).sum().backward()
    (expected * upstream).sum().backward()

    assert int(in_band.sum()) > 500
    assert torch.allclose(layer.weight.grad, w.grad, rtol=1e-6, atol=1e-7)
    assert (layer.weight.grad[in_band] == 0).all()  # clipped: no weight gradient in the band
    # An SGD step on the stored threshold t = 7 s moves s as LSQ's step on s: grad_t = 7 * grad_s.
    assert torch.allclose(layer.scale_parameter.grad, QMAX * s.grad, rtol=1e-5, atol=1e-9)

    # The test can fail for the band: round-then-test would count the band as inside, giving other step gradients.
    ratio = w.detach() / s.detach()
    rounded_inside = ratio.round().abs() <= QMAX
    code = ratio.round().clamp(-QMAX, QMAX)
    dims = (1, 2, 3) if per_channel else (0, 1, 2, 3)
    round_first = (upstream * torch.where(rounded_inside, code - ratio, code)).sum(dims)
    lsq = (upstream * torch.where(ratio.abs() < QMAX, code - ratio, code)).sum(dims)
    assert ((round_first - lsq).abs() > 1e-3 * lsq.abs()).all()


def test_mse_layers_keep_brevitas_weight_gradient_in_the_band() -> None:
    """mse scales are not learned: their weights keep Brevitas' IntQuant gradient (round, then clamp): 1 in the band."""
    layer, in_band = band_layer("per_channel")
    mse = WeightQuantConv2d.from_float(nn.Conv2d(16, 24, 3), 4, "per_channel", "mse")
    with torch.no_grad():
        mse.weight.copy_(layer.weight)
        mse.scale_parameter.copy_(layer.scale_parameter)
    (mse.fake_quant_weight() * 2.0).sum().backward()
    assert (mse.weight.grad[in_band] == 2.0).all()
    assert mse.scale_parameter.grad is None


# ---------------------------------------------------------------------------------------------
# optimizer groups, through the project's trainer and Ultralytics' build_optimizer
# ---------------------------------------------------------------------------------------------
LR0, MOMENTUM, DECAY = 0.01, 0.937, 5e-4


@pytest.fixture(scope="module")
def lsq_trainer_and_model(prepared_dataset, tmp_path_factory):
    from conftest import tiny_train_request

    from auto_quantize_model.train import resolve_train_args
    from auto_quantize_model.ultralytics_ext.trainers import QATDetectionTrainer

    request = tiny_train_request(
        tmp_path_factory.mktemp("lsq-optim"), prepared_dataset.dataset_yaml, quantized=True, quant_scheme="w4a16-lsq"
    )
    trainer = QATDetectionTrainer(overrides=resolve_train_args(request), quant_scheme=named_scheme("w4a16-lsq"))
    return trainer, trainer.get_model(cfg=trainer.args.model, verbose=False)


def _group_of(optimizer, parameter: torch.Tensor) -> dict:
    (group,) = [g for g in optimizer.param_groups if any(p is parameter for p in g["params"])]
    return group


@pytest.mark.parametrize("name", ["SGD", "AdamW", "MuSGD"])
def test_learned_scale_groups_copy_their_weight_groups(lsq_trainer_and_model, name: str) -> None:
    trainer, model = lsq_trainer_and_model
    optimizer = trainer.build_optimizer(model, name=name, lr=LR0, momentum=MOMENTUM, decay=DECAY)
    trainer.optimizer = optimizer
    trainer._setup_scheduler()  # Ultralytics' LambdaLR: sets every group's initial_lr, which the warm-up reads
    layers = [layer for _, layer in quantized_layers(model) if layer.scaling == "lsq"]
    assert len(layers) == 107
    scale_groups = [g for g in optimizer.param_groups if g.get("param_group") == LEARNED_SCALE_GROUP]
    assert sum(len(g["params"]) for g in scale_groups) == 107  # every scale in them, none anywhere else
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))
    lrs = set()
    for layer in layers:
        weights, scales = _group_of(optimizer, layer.weight), _group_of(optimizer, layer.scale_parameter)
        assert weights["weight_decay"] == DECAY and scales["weight_decay"] == 0.0
        assert weights["param_group"] == ("muon" if name == "MuSGD" else "weight")
        assert scales.get("use_muon", False) is False
        ignored = ("params", "weight_decay", "param_group", "use_muon")
        assert {k: v for k, v in scales.items() if k not in ignored} == {
            k: v for k, v in weights.items() if k not in ignored
        }
        lrs.add(scales["initial_lr"])
    if name == "AdamW":
        assert scale_groups[0]["betas"] == (MOMENTUM, 0.999)
    else:
        assert scale_groups[0]["momentum"] == MOMENTUM and scale_groups[0]["nesterov"] is True
    # MuSGD gives the class head's weights 3x lr; their scales follow them, the others stay at lr0.
    assert lrs == ({LR0, 3 * LR0} if name == "MuSGD" else {LR0})


# ---------------------------------------------------------------------------------------------
# stored scales stay float32 through Ultralytics' fp16 save cast
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scaling", ["mse", "lsq", "fixed"])
def test_stored_scales_stay_float32_through_half(scaling: str) -> None:
    torch.manual_seed(0)
    layer = WeightQuantConv2d.from_float(
        nn.Conv2d(16, 24, 3), 4, "per_channel", "lsq" if scaling == "fixed" else scaling
    )
    if scaling == "fixed":
        bn = nn.BatchNorm2d(24).eval()
        with torch.no_grad():
            bn.weight.uniform_(0.5, 1.5)
        layer = fold_batchnorm_exactly(layer, bn)
    with torch.no_grad():  # a scale no fp16 number holds
        layer.scale_parameter.mul_(1 + 2**-20)
    expected = layer.scale_parameter.detach().clone()
    half = copy.deepcopy(layer).half()
    assert half.weight.dtype == torch.float16 and half.scale_parameter.dtype == torch.float32
    assert torch.equal(half.scale_parameter.detach(), expected)
    assert torch.equal(half.float().scale_parameter.detach(), expected)
    # The fp16 layer quantizes with the float32 scale: the same codes and step as its float32 twin.
    codes, step = half.int_weight_and_scale()
    twin = copy.deepcopy(layer)
    with torch.no_grad():
        twin.weight.copy_(half.weight.float())
    twin_codes, twin_step = twin.int_weight_and_scale()
    assert torch.equal(codes, twin_codes) and torch.equal(step, twin_step)


def test_stored_scales_of_a_model_stay_float32_through_half() -> None:
    from ultralytics.nn.tasks import DetectionModel

    from auto_quantize_model.quant.yolov10 import quantize_model

    torch.manual_seed(0)
    model = DetectionModel("yolov10n.yaml", nc=4, verbose=False)
    quantize_model(model, "w4a16-lsq")
    half = copy.deepcopy(model).half()
    scales = stored_scales(half)
    assert len(scales) == 107 and all(s.dtype == torch.float32 for s in scales.values())
    assert all(torch.equal(scales[k], v) for k, v in stored_scales(model).items())
    assert all(p.dtype == torch.float16 for n, p in half.named_parameters() if "scaling_impl" not in n)
