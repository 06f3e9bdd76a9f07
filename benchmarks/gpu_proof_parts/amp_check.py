"""Part ``amp``: AMP works with every quantized layer of every scheme in the registry.

For each scheme (``SCHEME_NAMES`` on a GPU, one per quantizer code path in ``--tiny``; activation schemes join
automatically) the float model is quantized as ``QATDetectionTrainer.get_model`` does (:func:`quantize_model`),
then under fp16 and under bf16 autocast:

* one forward + Ultralytics loss + backward: no dtype error, a finite loss, finite gradients (LSQ scales included),
  and every quantized conv's output in the autocast dtype (on a CPU bf16 only: see ``CPU_TRAIN_DTYPES``);
* one layer (the largest quantized conv) against CPU references: its fake-quantized weight under autocast equals
  the float32 CPU one code for code (the quantizer runs in float32 outside autocast), and its output matches
  (a) the CPU float32 conv of the operands rounded to the autocast dtype within ``4 eps`` of the output range
  (what autocast itself computes, up to output rounding) and (b) the plain float32 CPU output within ``32 eps``;
* fp16 validation as Ultralytics runs it under CUDA AMP (``model.half()``, eval): finite outputs (on a CPU, where
  Ultralytics never validates in half, only for the first scheme: it keeps the code path exercised).
"""

from __future__ import annotations

import copy
import math
import time
from collections import Counter
from typing import Any

import torch
import torch.nn.functional as F
from ultralytics.cfg import get_cfg
from ultralytics.nn.tasks import DetectionModel

from auto_quantize_model.quant.scheme import named_scheme
from auto_quantize_model.quant.yolov10 import WeightQuantConv2d, learned_scales, quantize_model, quantized_layers
from auto_quantize_model.runs.env_check import synthetic_train_batch
from gpu_proof_parts.budget import Part
from gpu_proof_parts.settings import AMP_DTYPES, ProofSettings, scheme_label

# Output of one layer vs references, relative to the reference's largest |value|, in units of the dtype's eps.
ROUNDED_OPERANDS_TOLERANCE_EPS = 4.0
FLOAT32_TOLERANCE_EPS = 32.0
SECONDS_PER_SCHEME_GPU, SECONDS_PER_SCHEME_CPU = 4.0, 2.0  # rough cost of one scheme, to stop before the budget


def run(settings: ProofSettings, part: Part) -> None:
    device = torch.device(settings.torch_device)
    base = DetectionModel(settings.model, nc=80, verbose=False).to(device)
    base.args = get_cfg()  # the box/cls/dfl gains the criterion reads
    batch = synthetic_train_batch(settings.amp_batch, settings.imgsz, device)
    estimate = SECONDS_PER_SCHEME_GPU if settings.cuda else SECONDS_PER_SCHEME_CPU
    rows = part.data.setdefault("rows", [])
    part.data["what"] = f"{settings.model} batch {settings.amp_batch} at {settings.imgsz} px on {device}"
    durations: list[float] = []
    for index, name in enumerate(settings.amp_schemes):
        if not part.allows_another(estimate, durations):
            part.skip(f"scheme {name}", f"budget {part.budget_s:.0f} s reached")
            continue
        began = time.monotonic()
        scheme = named_scheme(name)
        model = copy.deepcopy(base)
        quantize_model(model, scheme)
        for dtype_name in AMP_DTYPES:
            dtype = getattr(torch, dtype_name)
            row = {"scheme": name, "label": scheme_label(scheme), "dtype": dtype_name}
            if dtype_name in settings.train_dtypes:
                row.update(train_step(model, batch, dtype))
            row["layer"] = layer_against_cpu(model, dtype)
            rows.append(row)
            _record_checks(part, row)
        durations.append(time.monotonic() - began)  # the CPU's one-off half validation below is not typical
        if settings.cuda or index == 0:
            finite = half_validation(model, batch["img"])
            part.check(f"{name} fp16 validation", finite, f"model.half() eval outputs finite: {finite}")
        del model
    if device.type == "cuda":
        torch.cuda.empty_cache()


def train_step(model: DetectionModel, batch: dict, dtype: torch.dtype) -> dict[str, Any]:
    """Forward, Ultralytics loss and backward under autocast; the output dtypes every quantized conv produced."""
    seen: Counter[str] = Counter()
    called: set[str] = set()
    hooks = [
        layer.register_forward_hook(_dtype_recorder(name, seen, called)) for name, layer in quantized_layers(model)
    ]
    model.train()
    model.zero_grad(set_to_none=True)
    try:
        with torch.autocast(batch["img"].device.type, dtype=dtype):
            loss, _ = model.loss(batch)
            loss = loss.sum()
        loss.backward()
    finally:
        for hook in hooks:
            hook.remove()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    scale_grads = [s.grad for s in learned_scales(model) if s.grad is not None]
    return {
        "loss": float(loss.detach()),
        "grads_finite": all(bool(torch.isfinite(g).all()) for g in grads),
        "params_with_grad": len(grads),
        "learned_scales": len(learned_scales(model)),
        "learned_scales_with_finite_grad": sum(bool(torch.isfinite(g).all()) for g in scale_grads),
        "quantized_layers": sum(1 for _ in quantized_layers(model)),
        "quantized_layers_called": len(called),
        "layer_output_dtypes": dict(seen),
    }


def _dtype_recorder(name: str, seen: Counter, called: set):
    def hook(module, inputs, output) -> None:
        seen[str(output.dtype).removeprefix("torch.")] += 1
        called.add(name)

    return hook


def largest_quantized_layer(model: DetectionModel) -> tuple[str, WeightQuantConv2d]:
    return max(quantized_layers(model), key=lambda item: item[1].weight.numel())


@torch.no_grad()
def layer_against_cpu(model: DetectionModel, dtype: torch.dtype) -> dict[str, Any]:
    """One quantized conv on the device under autocast vs float32 CPU references (see the module docstring)."""
    name, layer = largest_quantized_layer(model)
    cpu_layer = copy.deepcopy(layer).cpu().float()
    x = torch.randn(2, layer.in_channels, 20, 20, generator=torch.Generator().manual_seed(0))
    with torch.autocast(layer.weight.device.type, dtype=dtype):
        weight = layer.fake_quant_weight()
        output = layer(x.to(layer.weight.device))
    cpu_codes, cpu_scale = cpu_layer.int_weight_and_scale()
    codes, _ = layer.int_weight_and_scale()
    cpu_weight = cpu_layer.fake_quant_weight()
    rounded = F.conv2d(
        x.to(dtype).float(),
        cpu_weight.to(dtype).float(),
        cpu_layer.bias.to(dtype).float() if cpu_layer.bias is not None else None,
        cpu_layer.stride,
        cpu_layer.padding,
        cpu_layer.dilation,
        cpu_layer.groups,
    )
    plain = cpu_layer(x)
    got = output.float().cpu()
    eps = torch.finfo(dtype).eps
    scale = float(plain.abs().max())
    return {
        "layer": name,
        "weights": layer.weight.numel(),
        "bit_width": layer.bit_width,
        "scaling": layer.scaling,
        "output_dtype": str(output.dtype).removeprefix("torch."),
        "fake_quant_weight_dtype": str(weight.dtype).removeprefix("torch."),
        "code_mismatches": int((codes.cpu() != cpu_codes).sum()),
        "weight_max_abs_diff": float((weight.float().cpu() - cpu_weight).abs().max()),
        "rel_diff_vs_rounded_operands": float((got - rounded).abs().max()) / scale,
        "rel_diff_vs_float32": float((got - plain).abs().max()) / scale,
        "eps": eps,
        "output_range": scale,
    }


@torch.no_grad()
def half_validation(model: DetectionModel, images: torch.Tensor) -> bool:
    """Ultralytics validates the EMA with ``.half()`` under AMP: the quantized model in fp16, eval mode, finite."""
    half = copy.deepcopy(model).eval().half()
    output = half(images.half())
    first = output[0] if isinstance(output, (tuple, list)) else output
    return bool(torch.isfinite(first).all())


def _record_checks(part: Part, row: dict[str, Any]) -> None:
    """Pass/fail of one (scheme, dtype): the train step (where one ran) and the one-layer comparison."""
    what = f"{row['scheme']} {row['dtype']}"
    if "loss" in row:
        dtypes = row["layer_output_dtypes"]
        step_ok = (
            row["grads_finite"]
            and math.isfinite(row["loss"])
            and set(dtypes) == {row["dtype"]}
            and row["learned_scales_with_finite_grad"] == row["learned_scales"]
        )
        part.check(
            f"{what} train step",
            step_ok,
            f"loss {row['loss']:.4g}, {row['params_with_grad']} finite grads: {row['grads_finite']}, "
            f"conv outputs {dtypes} ({row['quantized_layers_called']}/{row['quantized_layers']} layers called), "
            f"LSQ scales with finite grads {row['learned_scales_with_finite_grad']}/{row['learned_scales']}",
        )
    layer, eps = row["layer"], row["layer"]["eps"]
    layer_ok = (
        layer["output_dtype"] == row["dtype"]
        and layer["fake_quant_weight_dtype"] == "float32"
        and layer["code_mismatches"] == 0
        and layer["rel_diff_vs_rounded_operands"] <= ROUNDED_OPERANDS_TOLERANCE_EPS * eps
        and layer["rel_diff_vs_float32"] <= FLOAT32_TOLERANCE_EPS * eps
    )
    part.check(
        f"{what} layer {layer['layer']} vs CPU",
        layer_ok,
        f"output {layer['output_dtype']}, {layer['code_mismatches']} code mismatches, "
        f"diff vs rounded-operand reference {layer['rel_diff_vs_rounded_operands'] / eps:.2f} eps "
        f"(limit {ROUNDED_OPERANDS_TOLERANCE_EPS:g}), vs float32 {layer['rel_diff_vs_float32'] / eps:.2f} eps "
        f"(limit {FLOAT32_TOLERANCE_EPS:g})",
    )
