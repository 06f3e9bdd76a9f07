"""Activation calibration (PTQ, and the start of a QAT from scratch) with Brevitas' ``calibration_mode``.

The quantizers and their placement are :mod:`auto_quantize_model.quant.activations`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from auto_quantize_model.quant.activations import (
    IMAGE,
    ActQuantizer,
    QuantizeInput,
    QuantizeOutput,
    activation_quantizers,
)


@dataclass(frozen=True)
class CalibrationReport:
    """What :func:`calibrate_activations` did."""

    quantizers: int
    sites: int
    batches: int
    images: int
    bias_correction: bool


@contextlib.contextmanager
def _batch_norm_statistics(model: nn.Module, enabled: bool) -> Iterator[None]:
    """BatchNorm in train mode with momentum 0: it normalizes by batch statistics and keeps its running ones."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)] if enabled else []
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.train()
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
            m.eval()


def _hooks_by_quantizer(model: nn.Module) -> dict[int, list[QuantizeOutput | QuantizeInput]]:
    hooks: dict[int, list[QuantizeOutput | QuantizeInput]] = {}
    for module in model.modules():
        for hook in (*module._forward_hooks.values(), *module._forward_pre_hooks.values()):
            if isinstance(hook, (QuantizeOutput, QuantizeInput)):
                hooks.setdefault(id(hook.quantizer), []).append(hook)
    return hooks


def _check_every_site_observed(model: nn.Module, originals: list, seen: dict[int, int]) -> None:
    """A site the forward pass never reached would keep Brevitas' placeholder range (1.0): refuse that."""
    names = {id(q): name for name, q in activation_quantizers(model)}
    unseen = sorted({names.get(id(quantizer), "?") for _, quantizer, copy in originals if not seen[id(copy)]})
    if unseen:
        raise ValueError(
            f"activation calibration: the forward pass never reached the sites of {unseen}; their ranges would stay "
            "at the placeholder 1.0 (is that branch only run in training mode?)"
        )


@torch.no_grad()
def calibrate_activations(
    model: nn.Module, images: Iterable[torch.Tensor], bias_correction: bool = False, bn_batch_statistics: bool = False
) -> Any:
    """Set every activation scale from ``images`` (float batches on the model's device) with Brevitas' calibration.

    Inside ``brevitas.graph.calibrate.calibration_mode`` the quantizers only observe (the 99.999th percentile of
    |x| per batch, averaged over batches) while weights and activations run float. A quantizer shared by several
    sites (a join) would average statistics of different tensors, clipping the widest; so each site observes
    through its own temporary copy, and the shared quantizer takes the largest threshold of its sites. With
    ``bias_correction``, Brevitas' ``bias_correction_mode`` then runs the same images through the quantized model
    and moves each conv's bias by the mean difference between its float and its quantized-weight output.
    ``bn_batch_statistics`` normalizes with each batch's own statistics (running statistics untouched), as training
    does: a model about to be trained from scratch has meaningless running statistics.
    Returns a :class:`CalibrationReport`; the model is left in eval mode.
    """
    from brevitas.graph.calibrate import bias_correction_mode, calibration_mode, quantization_status_manager

    images = list(images)
    if not images:
        raise ValueError("activation calibration needs at least one batch of images")
    model.eval()
    hooks = _hooks_by_quantizer(model)
    shared = {id(q): q for _, q in activation_quantizers(model) if q.kind != IMAGE and id(q) in hooks}
    copies, originals = nn.ModuleList(), []
    for key, quantizer in shared.items():
        for hook in hooks[key]:
            copy = ActQuantizer(**quantizer.settings()).to(next(model.parameters()).device).eval()
            originals.append((hook, quantizer, copy))
            hook.quantizer = copy
            copies.append(copy)
    # calibration_mode is entered on the copies alone: on the whole model its exit would call every module's
    # ``init_scale`` (Brevitas' duck typing), which WeightQuantConv2d defines with another meaning. The weights
    # run float meanwhile, as calibration_mode would have them.
    weights_float = quantization_status_manager(
        model, disable_weight_quant=True, disable_bias_quant=True, is_training=False
    )
    seen = {id(copy): 0 for copy in copies}

    def count(module: nn.Module, args: Any, output: Any) -> None:
        seen[id(module)] += 1

    counters = [copy.register_forward_hook(count) for copy in copies]
    try:
        with weights_float, calibration_mode(copies), _batch_norm_statistics(model, bn_batch_statistics):
            for batch in images:
                model(batch)
    finally:
        for hook, quantizer, _ in originals:
            hook.quantizer = quantizer
        for counter in counters:
            counter.remove()
    _check_every_site_observed(model, originals, seen)
    for quantizer in shared.values():
        quantizer.set_threshold(max(copy.threshold() for _, q, copy in originals if q is quantizer))
    if bias_correction:
        with bias_correction_mode(model):
            for batch in images:
                model(batch)
    model.eval()
    count = sum(int(batch.shape[0]) for batch in images)
    return CalibrationReport(len(shared), len(originals), len(images), count, bias_correction)
