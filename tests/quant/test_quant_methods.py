"""Scale methods (abs-max, MSE, LSQ) against independent references; exact BN folds; learned scales in training.

References: Brevitas' own quantizers (``Int8WeightPerChannelFloatMSE``; ``ParameterScaling`` for a stored scale,
whose autograd graph gives the LSQ gradient without its gradient scaling) and plain torch formulas.
"""

from __future__ import annotations

import copy
import io
import math
import pickle

import pytest
import torch
from brevitas.nn import QuantConv2d
from brevitas.quant import Int8WeightPerChannelFloatMSE
from torch import nn
from ultralytics.nn.modules import Conv
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils.torch_utils import ModelEMA

import auto_quantize_model  # noqa: F401  (before ultralytics: offline environment)
from auto_quantize_model.quant.scheme import QuantScheme, named_scheme
from auto_quantize_model.quant.yolov10 import (
    WeightQuantConv2d,
    copy_stored_scales,
    fold_batchnorm_exactly,
    learned_scales,
    quant_scheme_of,
    quantize_model,
    quantized_layers,
    stored_scales,
    weight_quantizer,
)

NC = 4
IMGSZ = 64


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def step(layer: WeightQuantConv2d) -> torch.Tensor:
    """The quantization step the layer uses (Brevitas stores the threshold ``7 * step``)."""
    return layer.int_weight_and_scale()[1]


def make_layer(scaling: str, granularity: str = "per_channel", bit_width: int = 4, seed: int = 0) -> WeightQuantConv2d:
    torch.manual_seed(seed)
    return WeightQuantConv2d.from_float(nn.Conv2d(16, 24, 3, padding=1), bit_width, granularity, scaling)


def brevitas_parameter_twin(layer: WeightQuantConv2d) -> QuantConv2d:
    """A stock Brevitas QuantConv2d with a PARAMETER scale holding ``layer``'s scale and weights (a separate copy)."""
    twin = QuantConv2d(
        16,
        24,
        3,
        padding=1,
        weight_quant=weight_quantizer(layer.bit_width, layer.granularity, "lsq"),
        input_quant=None,
        output_quant=None,
        bias_quant=None,
        return_quant_tensor=False,
    )
    with torch.no_grad():
        twin.weight.copy_(layer.weight)
        twin.bias.copy_(layer.bias)
        twin.weight_quant.tensor_quant.scaling_impl.value.copy_(layer.scale_parameter)
    return twin


def float_yolov10n(seed: int = 0) -> DetectionModel:
    torch.manual_seed(seed)
    model = DetectionModel("yolov10n.yaml", nc=NC, verbose=False)
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():  # non-trivial BN: folds really rescale (and sometimes flip) channels
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.2)
            m.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
            sign = torch.where(torch.rand(n, generator=gen) < 0.1, -1.0, 1.0)
            m.weight.data.copy_((torch.rand(n, generator=gen) + 0.5) * sign)
            m.bias.data.copy_(torch.randn(n, generator=gen) * 0.2)
    return model


@torch.no_grad()
def eval_output(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model.eval()(x)[0]


def sample_input(seed: int = 1) -> torch.Tensor:
    return torch.rand(2, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------
# one layer: values, scales and gradients
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("granularity", ["per_channel", "per_tensor"])
def test_mse_scale_is_brevitas_mse_scale(granularity: str) -> None:
    layer = make_layer("mse", granularity)
    base = Int8WeightPerChannelFloatMSE
    if granularity == "per_tensor":
        from brevitas.quant import Int8WeightPerTensorFloatMSE as base
    reference = QuantConv2d(
        16,
        24,
        3,
        padding=1,
        weight_quant=base.let(bit_width=4),
        input_quant=None,
        output_quant=None,
        bias_quant=None,
        return_quant_tensor=False,
    )
    with torch.no_grad():
        reference.weight.copy_(layer.weight)
    expected = reference.quant_weight().scale.detach().reshape(step(layer).shape)
    assert torch.allclose(step(layer), expected, rtol=1e-6, atol=0)
    absmax = layer.weight.detach().abs().reshape(24 if granularity == "per_channel" else 1, -1).amax(1) / 7
    assert (step(layer).flatten() <= absmax * (1 + 1e-6)).all()  # clips, never widens
    assert (step(layer).flatten() < absmax * 0.999).any()  # and at 4 bits it does clip


def test_mse_scale_minimises_the_weight_mse_over_a_plain_grid() -> None:
    """Independent numpy-style search: no threshold on a fine grid beats the chosen one by more than grid resolution."""
    layer = make_layer("mse")
    w = layer.weight.detach().reshape(24, -1).double()
    chosen = step(layer).reshape(24, 1).double()

    def mse(scale: torch.Tensor) -> torch.Tensor:
        return ((w / scale).round().clamp(-7, 7) * scale - w).square().sum(1)

    absmax = w.abs().amax(1, keepdim=True)
    fine = torch.stack([mse(absmax * t / 7) for t in torch.linspace(0.05, 1.0, 400, dtype=torch.float64)])
    # Brevitas' grid steps by 5% of max|w|: within that resolution of the fine-grid optimum.
    assert (mse(chosen) <= fine.min(0).values * 1.15).all()
    # The grid ends at max|w|; the float32 search vs this float64 check may round one tie differently.
    assert (mse(chosen) <= mse(absmax / 7) * 1.02).all()


@pytest.mark.parametrize("scaling", ["mse", "lsq"])
@pytest.mark.parametrize("granularity", ["per_channel", "per_tensor"])
def test_stored_scale_forward_and_gradients_match_brevitas(scaling: str, granularity: str) -> None:
    """Values as Brevitas for both; gradients as Brevitas for mse, and for lsq outside the half-step band.

    In the band 7 < |w / s| < 7.5 LSQ as published (clip, then round) differs from Brevitas (round, then clamp);
    tests/test_lsq.py checks lsq there against a reference LSQ.
    """
    layer = make_layer(scaling, granularity)
    with torch.no_grad():  # some weights beyond the clipping range, so the clamp branch is exercised
        layer.scale_parameter.mul_(0.6)
    twin = brevitas_parameter_twin(layer)
    upstream = torch.randn_like(layer.weight)
    ours = layer.fake_quant_weight()
    reference = twin.quant_weight().value
    assert torch.equal(ours, reference)
    ratio = (layer.weight / step(layer)).detach().abs()
    if scaling == "lsq":  # the band is where the two rules differ: no gradient from it
        upstream = upstream * ((ratio <= 7) | (ratio >= 7.5))
    (ours * upstream).sum().backward()
    (reference * upstream).sum().backward()
    assert torch.allclose(layer.weight.grad, twin.weight.grad, rtol=1e-6, atol=1e-7)
    assert (layer.weight.grad == 0).any()  # weights clipped by the clamp get no gradient
    reference_scale_grad = twin.weight_quant.tensor_quant.scaling_impl.value.grad
    if scaling == "mse":
        assert layer.scale_parameter.grad is None  # fixed: no optimizer can move it
        assert ((ratio > 7) & (ratio < 7.5)).any()  # Brevitas' weight gradient held in the band too
    else:
        per_scale = layer.weight[0].numel() if granularity == "per_channel" else layer.weight.numel()
        grad_scale = 1 / math.sqrt(per_scale * 7)  # LSQ's gradient scaling, which Brevitas does not apply
        # Brevitas differentiates its threshold t = 7 s: d/dt = d/ds / 7.
        # Ours hands t 7 * g * d/ds (see _ScaleFakeQuant).
        expected = reference_scale_grad * 49 * grad_scale
        assert torch.allclose(layer.scale_parameter.grad, expected, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("lsq_init", ["absmax", "mse"])
def test_lsq_scales_start_from_their_init(lsq_init: str) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 24, 3)
    layer = WeightQuantConv2d.from_float(conv, 4, "per_channel", "lsq", lsq_init)
    reference = make_layer(lsq_init) if lsq_init == "mse" else None
    if lsq_init == "absmax":
        expected = conv.weight.detach().abs().amax((1, 2, 3), keepdim=True) / 7
    else:
        expected = step(reference)
    assert torch.allclose(step(layer), expected, rtol=1e-6, atol=0)
    assert layer.scale_parameter.requires_grad


# ---------------------------------------------------------------------------------------------
# exact BN folds: codes survive, fp16 latents (ties) included
# ---------------------------------------------------------------------------------------------
def _codes_and_bn(model: nn.Module) -> dict[Conv, tuple[torch.Tensor, torch.Tensor | None]]:
    """Per quantized ``Conv`` block: the layer's own codes and the sign of its BN factor (``None`` without BN)."""
    out = {}
    for m in model.modules():
        if isinstance(m, Conv) and isinstance(m.conv, WeightQuantConv2d):
            codes, _ = m.conv.int_weight_and_scale()
            sign = None
            if hasattr(m, "bn"):
                sign = torch.where(m.bn.weight.detach() / torch.sqrt(m.bn.running_var + m.bn.eps) < 0, -1.0, 1.0)
            out[m] = (codes, sign)
    return out


@pytest.mark.parametrize("scheme", ["w4a16", "w4a16-mse", "w4a16-fl8-lsq", "w8a16"])
def test_fuse_keeps_every_code_of_half_latents(scheme: str) -> None:
    model = float_yolov10n()
    quantize_model(model, scheme)
    model = pickle.loads(pickle.dumps(copy.deepcopy(model).half())).float().eval()  # Ultralytics' fp16 save/load
    before = _codes_and_bn(model)
    x = sample_input()
    expected = eval_output(model, x)
    fused = model.fuse(verbose=False)  # in place: the Conv blocks stay the same objects (RepVGGDW moves them)
    assert not any(hasattr(block, "bn") for block in before)
    flips = 0
    for block, (codes, sign) in before.items():
        new_codes, _ = block.conv.int_weight_and_scale()
        flips += int((new_codes != (codes if sign is None else codes * sign.view(-1, 1, 1, 1))).sum())
    assert flips == 0
    out = eval_output(fused, x)
    assert (out - expected).abs().max() <= 1e-4 * (expected.max() - expected.min())


def test_float_fold_then_requantize_flips_codes_of_half_latents() -> None:
    """Why the exact fold exists: Ultralytics' fold (BN into float weights, abs-max again) moves fp16-tie codes."""
    model = float_yolov10n()
    quantize_model(model, "w4a16")
    model = copy.deepcopy(model).half().float()
    flips = 0
    for block, (codes, sign) in _codes_and_bn(model).items():
        if sign is None:
            continue
        conv, bn = block.conv, block.bn
        factor = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().view(-1, 1, 1, 1)
        folded = conv.weight.detach() * factor
        requantized = (folded / (folded.abs().amax((1, 2, 3), keepdim=True) / 7)).round()
        flips += int((requantized != codes * sign.view(-1, 1, 1, 1)).sum())
    assert flips > 0


def test_fold_of_a_zero_gamma_channel_is_its_bias() -> None:
    layer = make_layer("lsq").eval()
    bn = nn.BatchNorm2d(24).eval()
    with torch.no_grad():
        bn.weight[3] = 0.0
        bn.bias.uniform_(-1, 1)
        bn.running_mean.uniform_(-0.5, 0.5)
    x = torch.randn(1, 16, 7, 7)
    fused = fold_batchnorm_exactly(layer, bn)
    with torch.no_grad():
        assert torch.allclose(fused(x), bn(layer(x)), atol=1e-5)
        assert torch.isfinite(fused.scale_parameter).all()


# ---------------------------------------------------------------------------------------------
# learned scales travel: pickle, deepcopy, torch.save, EMA, rebuild from the scheme
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lsq_model() -> DetectionModel:
    model = float_yolov10n()
    quantize_model(model, "w4a16-fl8-lsq")
    with torch.no_grad():  # learned scales that no init would reproduce
        for scale in learned_scales(model):
            scale.mul_(torch.empty_like(scale).uniform_(0.7, 1.1))
    return model


def _torch_round_trip(model: nn.Module) -> nn.Module:
    buffer = io.BytesIO()
    torch.save(copy.deepcopy(model).half(), buffer)  # as Ultralytics' save_model
    buffer.seek(0)
    return torch.load(buffer, weights_only=False).float()


@pytest.mark.parametrize("how", ["pickle", "deepcopy", "torch_save_half"])
def test_learned_scales_survive_round_trips(lsq_model: DetectionModel, how: str) -> None:
    clone = {
        "pickle": lambda m: pickle.loads(pickle.dumps(m)),
        "deepcopy": copy.deepcopy,
        "torch_save_half": _torch_round_trip,
    }[how](lsq_model)
    scales, cloned = stored_scales(lsq_model), stored_scales(clone)
    assert list(cloned) == list(scales) and len(scales) == 107
    for name, scale in scales.items():  # exact and float32 through the fp16 save too: the validated scales
        assert cloned[name].dtype == torch.float32 and torch.equal(cloned[name].detach(), scale.detach()), name
        assert cloned[name].requires_grad
    assert len(learned_scales(clone)) == 107
    if how != "torch_save_half":
        x = sample_input()
        assert torch.equal(eval_output(clone, x), eval_output(lsq_model, x))


def test_ema_averages_learned_scales(lsq_model: DetectionModel) -> None:
    model = copy.deepcopy(lsq_model)
    ema = ModelEMA(model)
    old = {name: s.detach().clone() for name, s in stored_scales(ema.ema).items()}
    with torch.no_grad():
        for scale in learned_scales(model):
            scale.mul_(1.5)
    ema.update(model)
    d = ema.decay(ema.updates)
    for name, scale in stored_scales(ema.ema).items():
        assert torch.allclose(scale, old[name] * d + old[name] * 1.5 * (1 - d), rtol=1e-6), name


def test_rebuild_from_scheme_json_and_state_dict(lsq_model: DetectionModel, tmp_path) -> None:
    path = quant_scheme_of(lsq_model).save(tmp_path / "quant_scheme.json")
    rebuilt = DetectionModel(copy.deepcopy(lsq_model.yaml), nc=NC, verbose=False)
    quantize_model(rebuilt, QuantScheme.load(path))
    rebuilt.load_state_dict(lsq_model.state_dict(), strict=True)
    x = sample_input()
    assert torch.equal(eval_output(rebuilt, x), eval_output(lsq_model, x))


def test_copy_stored_scales_restores_a_checkpoint_into_a_fresh_quantization(lsq_model: DetectionModel) -> None:
    """What QATDetectionTrainer.get_model does on resume: quantize the loaded float weights, then restore scales."""
    fresh = DetectionModel(copy.deepcopy(lsq_model.yaml), nc=NC, verbose=False)
    fresh.load_state_dict({k: v for k, v in lsq_model.state_dict().items() if "scaling_impl" not in k})
    quantize_model(fresh, named_scheme("w4a16-fl8-lsq"))
    x = sample_input()
    assert not torch.equal(eval_output(fresh, x), eval_output(lsq_model, x))  # re-initialised: not the same model
    assert copy_stored_scales(fresh, lsq_model) == 107
    assert torch.equal(eval_output(fresh, x), eval_output(lsq_model, x))
    absmax = float_yolov10n()
    quantize_model(absmax, "w4a16")
    with pytest.raises(ValueError, match="no stored scale"):
        copy_stored_scales(fresh, absmax)


def test_only_lsq_layers_have_learned_scales() -> None:
    for name, expected in (("w4a16", 0), ("w4a16-mse", 0), ("w4a16-lsq", 107)):
        model = float_yolov10n()
        quantize_model(model, name)
        assert len(learned_scales(model)) == expected
        assert all(layer.scaling == named_scheme(name).scaling for _, layer in quantized_layers(model))


# ---------------------------------------------------------------------------------------------
# learned scales in a real (tiny) Ultralytics training: optimizer group, save, resume
# ---------------------------------------------------------------------------------------------
class _Interrupt(Exception):
    pass


@pytest.mark.slow
def test_lsq_training_saves_learns_and_resumes_its_scales(prepared_dataset, tmp_path, monkeypatch):
    """SGD from scratch, 1 epoch, interrupted at its save, then resumed: the scales warm up like the weights, are
    saved as float32 equal to the EMA's (the validated model's), and resume from the checkpoint."""
    from conftest import tiny_train_request

    from auto_quantize_model.train import train_stage
    from auto_quantize_model.ultralytics_ext import callbacks as run_logging
    from auto_quantize_model.ultralytics_ext.trainers import LEARNED_SCALE_GROUP

    seen: dict[str, object] = {"schedule": []}
    log_batch = run_logging.RUN_CALLBACKS["on_train_batch_end"]

    def scale_group(trainer) -> dict:
        (group,) = [g for g in trainer.optimizer.param_groups if g.get("param_group") == LEARNED_SCALE_GROUP]
        return group

    def record_start(trainer) -> None:  # the model and optimizer the (resumed) loop really uses
        group = scale_group(trainer)
        seen["scale_group"] = (group["weight_decay"], len(group["params"]))
        seen["scales"] = {k: v.detach().clone() for k, v in stored_scales(trainer.model).items()}

    def record_batch(trainer) -> None:  # after Ultralytics' warm-up set this batch's lr and momentum
        log_batch(trainer)
        groups = {g["param_group"]: g for g in trainer.optimizer.param_groups}
        seen["schedule"].append(
            {name: (groups[name]["lr"], groups[name]["momentum"]) for name in ("weight", "bias", LEARNED_SCALE_GROUP)}
        )

    def record_save_and_interrupt(trainer) -> None:
        seen["ema_scales"] = {k: v.detach().clone() for k, v in stored_scales(trainer.ema.ema).items()}
        raise _Interrupt

    def record_epoch_end(trainer) -> None:
        seen["epoch_end_scales"] = {k: v.detach().clone() for k, v in stored_scales(trainer.model).items()}

    # nbs = batch: an optimizer step every batch (the default nbs 64 accumulates 8 batches, more than the run has).
    # SGD as the scratch recipe, whose bias warm-up starts at warmup_bias_lr: the scales must not warm up like that.
    overrides = {"plots": False, "nbs": 8, "optimizer": "SGD", "lr0": 0.01, "momentum": 0.937, "warmup_bias_lr": 0.1}
    request = tiny_train_request(
        tmp_path, prepared_dataset.dataset_yaml, quantized=True, quant_scheme="w4a16-lsq", overrides=overrides
    )
    monkeypatch.setitem(run_logging.RUN_CALLBACKS, "on_train_start", record_start)
    monkeypatch.setitem(run_logging.RUN_CALLBACKS, "on_train_batch_end", record_batch)
    monkeypatch.setitem(run_logging.RUN_CALLBACKS, "on_model_save", record_save_and_interrupt)
    monkeypatch.setitem(run_logging.RUN_CALLBACKS, "on_train_epoch_end", record_epoch_end)
    with pytest.raises(_Interrupt):
        train_stage(request)
    assert seen["scale_group"] == (0.0, 107)
    schedule = seen["schedule"]
    assert len(schedule) == 3  # 24 images, batch 8: all three batches are warm-up (min(3, epochs - 1) epochs)
    assert all(step[LEARNED_SCALE_GROUP] == step["weight"] for step in schedule)  # lr and momentum of the weights
    assert schedule[0]["weight"][0] == 0.0 and schedule[0]["bias"][0] > 0.05  # warm-up really tells them apart
    initial = seen.pop("scales")
    weights_dir = next(tmp_path.glob("**/qat-w4a16-lsq/weights"))
    saved = stored_scales(torch.load(weights_dir / "last.pt", weights_only=False)["ema"])
    assert all(v.dtype == torch.float32 for v in saved.values())
    assert all(torch.equal(saved[k], v) for k, v in seen["ema_scales"].items())  # saved = validated, exactly
    trained = seen["epoch_end_scales"]
    moved = [name for name in initial if not torch.equal(trained[name], initial[name])]
    assert len(moved) > 50  # the optimizer moved the learned scales (2 warm-up steps with lr > 0: by little)
    monkeypatch.delitem(run_logging.RUN_CALLBACKS, "on_model_save")
    resumed = train_stage(
        tiny_train_request(
            tmp_path,
            prepared_dataset.dataset_yaml,
            quantized=True,
            quant_scheme="w4a16-lsq",
            overrides=overrides,
            resume=True,
        )
    )
    assert resumed.status == "finished" and resumed.resumed
    assert seen["scale_group"] == (0.0, 107)
    assert all(torch.equal(seen["scales"][k], saved[k]) for k in saved)  # resumed from the checkpoint's scales
    best = torch.load(weights_dir / "best.pt", weights_only=False)
    best_model = best["model"] if best.get("model") is not None else best["ema"]
    assert len(learned_scales(best_model)) == 107
    assert all(s.dtype == torch.float32 for s in learned_scales(best_model))  # through strip_optimizer's .half() too
