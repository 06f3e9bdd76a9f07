"""Activation quantization (W8A8, W4A8) of a weight-quantized YOLOv10: where the quantizers go, and their layer.

The rule (:func:`place_activation_quantizers`): the input of every weight-quantized conv is quantized, each tensor
exactly once, by a Brevitas ``QuantIdentity`` (:class:`ActQuantizer`, per-tensor scale). Quantizers sit on the
*producers* of those tensors (a forward hook on the Ultralytics block whose output it is), so every conv that reads
a tensor reads the same codes, and:

* tensors that meet at a Concat or an Add get one shared quantizer (one per join): the join needs no
  requantization, and TensorRT's explicit-quantization rule (equal scales on Concat inputs) holds;
* MaxPool (SPPF) and Upsample keep their input's scale: their outputs go through the same quantizer again (an
  identity on codes), so the exported graph has explicit Q/DQ around them, as TensorRT wants (ONNX Runtime would
  otherwise insert them itself, and at opset 21 its inserted QuantizeLinear is malformed); chunk/split and
  reshape pass codes on untouched;
* the image (the model input, ``pixel / 255`` by the I/O contract) is quantized unsigned with the fixed step
  ``1 / (2**bits - 1)``: at 8 bits it is lossless.

The placement is written per Ultralytics block type (:data:`_BLOCK_PLANS`); an unknown block type is an error
rather than a silently float layer. What stays float, and why, is listed in the :class:`ActivationReport`.

Which bit width a quantizer gets follows the scheme (``act_bit_width``, ``act_overrides``) of the convs that read
its tensor: the widest of them; a tensor read only by float-input convs is not quantized.

Quantizers are registered once, on the block that owns them (``join_quant`` on the block holding a join,
``out_quant`` / ``in_quant`` on the block whose output / input they quantize), so ``state_dict``, ``.to()``,
``half()`` and Ultralytics' EMA see each scale once; the hooks hold references to them, which pickle and deepcopy
keep shared.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import torch
from brevitas.inject.enum import ScalingImplType
from brevitas.nn import QuantIdentity
from brevitas.quant import Int8ActPerTensorFloat, Uint8ActPerTensorFloat
from torch import nn
from ultralytics.nn.modules import (
    CIB,
    PSA,
    SPPF,
    Attention,
    Bottleneck,
    C2f,
    Concat,
    Conv,
    Detect,
    RepVGGDW,
    SCDown,
)

from auto_quantize_model.quant.scheme import QuantScheme

SelectorResolver = Callable[[nn.Module, str], tuple[str, ...]]
IMAGE = "image"  # the model input's quantizer kind: unsigned, fixed step (pixel / 255 by the I/O contract)
RUNTIME = "runtime"  # a scale from runtime statistics (calibration or the first training steps), then learned
# Smallest threshold (scale * max code) a learned scale may take: a real activation range is far above it, and an
# fp16 checkpoint (Ultralytics saves the EMA in half) would flush a tinier one to 0, a division by zero.
MIN_THRESHOLD = 1e-4

# Operations the placement leaves float on purpose, with the reason (reported with every activation scheme).
FLOAT_OPERATIONS = {
    "Attention q @ k, softmax, attn @ v": "matmuls and softmax, not convs; their inputs q, k, v are quantized "
    "(the qkv conv's output) but the products stay float",
    "DFL softmax and conv": "fixed 0..15 decoding of box distributions (keep_float: dfl)",
    "head decoding (anchors, strides, sigmoid, top-k)": "post-processing of the prediction convs' float outputs",
    "conv outputs (BN, SiLU, residual sums)": "computed in float after each conv; quantized again where a conv reads "
    "them",
}


# ----------------------------------------------------------------------------------------------
# The quantizer layer
# ----------------------------------------------------------------------------------------------
@cache
def activation_quantizer(bit_width: int, signed: bool, kind: str = RUNTIME) -> type:
    """Brevitas injector: per-tensor scale, zero point 0; signed (symmetric) or unsigned codes.

    ``runtime``: Brevitas' ``ParameterFromRuntimeStatsScaling`` (99.999th percentile of |x|, averaged; then a
    learned threshold, clamped at :data:`MIN_THRESHOLD`). ``image``: a constant threshold of 1.0, so the step is
    ``1 / (2**bits - 1)``.
    """
    if kind == IMAGE:
        const = {"scaling_impl_type": ScalingImplType.CONST, "scaling_init": 1.0}
        return Uint8ActPerTensorFloat.let(bit_width=bit_width, **const)
    base = Int8ActPerTensorFloat if signed else Uint8ActPerTensorFloat
    return base.let(bit_width=bit_width, scaling_min_val=MIN_THRESHOLD)


class ActQuantizer(QuantIdentity):
    """``brevitas.nn.QuantIdentity`` (float in, fake-quantized float out) that pickles as settings + scale.

    Brevitas' injector classes cannot be pickled by name, so :meth:`__reduce_ex__` carries the settings, the
    scale ``Parameter`` (Brevitas' ``ParameterFromRuntimeStatsScaling.value``), its statistics buffer and
    counter, and the train mode; Ultralytics' ``torch.save``, deepcopy and EMA then work as for the convs.
    """

    def __init__(self, bit_width: int, signed: bool = True, kind: str = RUNTIME) -> None:
        super().__init__(act_quant=activation_quantizer(bit_width, signed, kind), return_quant_tensor=False)
        self.bit_width, self.signed, self.kind = bit_width, signed, kind

    @property
    def scaling_impl(self) -> nn.Module:
        return self.act_quant.fused_activation_quant_proxy.tensor_quant.scaling_impl

    @property
    def is_initialized(self) -> bool:
        """True when the scale is fixed or learned (no longer collecting statistics)."""
        impl = self.scaling_impl
        return self.kind == IMAGE or impl.counter > impl.collect_stats_steps

    @torch.no_grad()
    def set_threshold(self, threshold: float | torch.Tensor) -> None:
        """Set the learned threshold (``scale * max code``) and end statistics collection."""
        impl = self.scaling_impl
        impl.value.copy_(torch.as_tensor(threshold, dtype=impl.value.dtype))
        impl.counter = impl.collect_stats_steps + 1

    def threshold(self) -> torch.Tensor:
        """The current threshold; the scale is ``threshold / max code`` (Brevitas ``IntScaling``)."""
        impl = self.scaling_impl
        if self.kind == IMAGE:
            return torch.tensor(1.0)
        return (impl.value if self.is_initialized else impl.buffer).detach().abs().reshape(())

    def scale(self) -> torch.Tensor:
        """The quantization step of the codes."""
        return self.act_quant.scale().detach().reshape(())

    def settings(self) -> dict[str, Any]:
        return {"bit_width": self.bit_width, "signed": self.signed, "kind": self.kind}

    def __reduce_ex__(self, protocol: int) -> tuple[Any, ...]:
        state: dict[str, Any] = {"training": self.training}
        if self.kind != IMAGE:
            impl = self.scaling_impl
            state.update(value=impl.value, buffer=impl.buffer, counter=impl.counter)
        return _rebuild_act_quantizer, (type(self), self.settings(), state)


def _rebuild_act_quantizer(cls: type, settings: dict[str, Any], state: dict[str, Any]) -> ActQuantizer:
    """Unpickling target of :meth:`ActQuantizer.__reduce_ex__`."""
    layer = cls(**settings)
    if "value" in state:
        impl = layer.scaling_impl
        impl.value = state["value"]  # the Parameter itself: dtype, device and requires_grad kept
        impl.buffer = state["buffer"]
        impl.counter = state["counter"]
    return layer.train(state["training"])


class QuantizeOutput:
    """Forward hook: the module's output through an :class:`ActQuantizer` (pickles as a reference to it)."""

    def __init__(self, quantizer: ActQuantizer) -> None:
        self.quantizer = quantizer

    def __call__(self, module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        return self.quantizer(output)


class QuantizeInput:
    """Forward pre-hook: the module's first input through an :class:`ActQuantizer`."""

    def __init__(self, quantizer: ActQuantizer) -> None:
        self.quantizer = quantizer

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (self.quantizer(args[0]), *args[1:])


# ----------------------------------------------------------------------------------------------
# Per-conv activation bit widths from the scheme
# ----------------------------------------------------------------------------------------------
def activation_bit_widths(
    model: nn.Module, scheme: QuantScheme, weight_bits: dict[str, int | None], resolve_selector: SelectorResolver
) -> dict[str, int | None]:
    """Conv name -> bit width of its input (``None``: float), for the convs whose weights are quantized.

    Float-weight convs get ``None``: an integer conv needs both operands in integer. ``act_overrides`` apply in
    order (later wins), each selector resolved by ``resolve_selector`` (``quant.yolov10.resolve_selector``, passed
    in because that module calls this one); one that matches no conv is an error naming the key and the scheme.
    """
    bits = {name: (scheme.act_bit_width if weight is not None else None) for name, weight in weight_bits.items()}
    for index, (selector, bit_width) in enumerate(scheme.act_overrides):
        try:
            selected = resolve_selector(model, selector)
        except ValueError as error:
            where = f"quant scheme file {scheme.source}" if scheme.source else f"quant scheme {scheme.name!r}"
            raise ValueError(f"{where}: act_overrides[{index}]: {error}") from None
        bits.update({name: bit_width for name in selected if weight_bits.get(name) is not None})
    return bits


# ----------------------------------------------------------------------------------------------
# Placement plan: quantization points, each with the modules it hooks and the convs that read its tensor
# ----------------------------------------------------------------------------------------------
@dataclass
class QuantPoint:
    """One quantizer: registered as ``owner.<attr>``, applied at ``sites``, read by ``consumers`` (conv modules)."""

    owner: nn.Module
    attr: str
    what: str  # one line: which tensor(s) it quantizes
    sites: list[tuple[nn.Module, str]] = field(default_factory=list)  # (module, "output" | "input")
    consumers: list[nn.Module] = field(default_factory=list)
    kind: str = RUNTIME


def entry_convs(block: nn.Module) -> list[nn.Module]:
    """The convs that read ``block``'s input tensor directly."""
    if isinstance(block, nn.Conv2d):
        return [block]
    if isinstance(block, Conv):
        return entry_convs(block.conv)
    if isinstance(block, RepVGGDW):
        return entry_convs(block.conv) + entry_convs(block.conv1)
    if isinstance(block, CIB):
        return entry_convs(block.cv1[0])
    if isinstance(block, (C2f, SCDown, SPPF, PSA, Bottleneck)):
        return entry_convs(block.cv1)
    if isinstance(block, nn.Sequential):
        return entry_convs(block[0])
    if isinstance(block, Attention):
        return entry_convs(block.qkv)
    raise NotImplementedError(f"activation placement does not know which convs read the input of {type(block)}")


class _Planner:
    def __init__(self) -> None:
        self.points: list[QuantPoint] = []

    def point(self, owner: nn.Module, attr: str, what: str, sites=(), consumers=(), kind: str = RUNTIME) -> QuantPoint:
        point = QuantPoint(owner, attr, what, list(sites), list(consumers), kind)
        self.points.append(point)
        return point

    def output(self, module: nn.Module, what: str, readers: Iterable[nn.Module]) -> QuantPoint:
        """A quantizer on ``module``'s output, owned by it, read by the entry convs of ``readers``."""
        consumers = [conv for reader in readers for conv in entry_convs(reader)]
        return self.point(module, "out_quant", what, [(module, "output")], consumers)

    def chain(self, blocks: list[nn.Module], what: str) -> None:
        """A sequential chain: each block's output quantized for the next one."""
        for block, following in zip(blocks, blocks[1:]):
            self.output(block, f"{what}: output of {type(block).__name__}", [following])


def _leaves(sequence: nn.Module) -> list[nn.Module]:
    """Flatten nested ``nn.Sequential`` into its blocks (a head branch level)."""
    if isinstance(sequence, nn.Sequential):
        return [leaf for child in sequence for leaf in _leaves(child)]
    return [sequence]


def _plan_c2f(block: C2f, plan: _Planner) -> None:
    join = plan.point(block, "join_quant", "C2f concat join: cv1 output (both chunks), every inner block output")
    join.sites += [(block.cv1, "output")] + [(inner, "output") for inner in block.m]
    join.consumers += entry_convs(block.cv2) + [conv for inner in block.m for conv in entry_convs(inner)]
    for inner in block.m:
        _BLOCK_PLANS[type(inner)](inner, plan, join)


def _plan_bottleneck(block: Bottleneck, plan: _Planner, join: QuantPoint | None = None) -> None:
    plan.output(block.cv1, "Bottleneck cv1 -> cv2", [block.cv2])
    if block.add and join is not None:  # x + cv2(...): both Add inputs on the join's scale
        join.sites.append((block.cv2, "output"))


def _plan_cib(block: CIB, plan: _Planner, join: QuantPoint | None = None) -> None:
    plan.chain(list(block.cv1), "CIB")
    if block.add and join is not None:  # x + cv1(x): both Add inputs on the join's scale
        join.sites.append((block.cv1[-1], "output"))


def _plan_scdown(block: SCDown, plan: _Planner) -> None:
    plan.output(block.cv1, "SCDown pointwise -> depthwise", [block.cv2])


def _plan_sppf(block: SPPF, plan: _Planner) -> None:
    # cv1's output, its MaxPools (same codes, same scale) and their concat: one quantizer.
    join = plan.point(block, "join_quant", "SPPF: cv1 output, MaxPool outputs (same scale) and their concat")
    join.sites += [(block.cv1, "output"), (block.m, "output")]
    join.consumers += entry_convs(block.cv2)


def _plan_psa(block: PSA, plan: _Planner) -> None:
    # a, b = split(cv1(x)); b = b + attn(b); b = b + ffn(b); cv2(cat(a, b)): one shared scale for cv1's output, the
    # attn and ffn outputs, ffn's input (the first sum) and cv2's input (the concat). The second residual Add reads
    # the first sum unquantized (only the copy ffn receives is), so that Add stays float; what cv2 reads is int8.
    join = plan.point(block, "join_quant", "PSA: cv1 output, attn and ffn outputs, both residual sums, the concat")
    join.sites += [(block.cv1, "output"), (block.attn, "output"), (block.ffn, "input")]
    join.sites += [(block.ffn[-1], "output"), (block.cv2, "input")]
    join.consumers += entry_convs(block.attn) + entry_convs(block.ffn) + entry_convs(block.cv2)
    attention = block.attn
    plan.output(attention.qkv, "Attention qkv output (q, k, v; v feeds pe)", [attention.pe])
    # (v @ attn) + pe(v): the matmul has no module seam; the sum is quantized where proj reads it.
    plan.point(attention.proj, "in_quant", "Attention (v @ attn) + pe(v), at proj's input", [(attention.proj, "input")])
    plan.points[-1].consumers += entry_convs(attention.proj)
    plan.chain(list(block.ffn), "PSA ffn")


def _plan_detect(block: Detect, plan: _Planner) -> None:
    for branch in ("cv2", "cv3", "one2one_cv2", "one2one_cv3"):
        for level in getattr(block, branch, None) or ():
            plan.chain(_leaves(level), f"head {branch}")


def _plan_nothing(block: nn.Module, plan: _Planner, join: QuantPoint | None = None) -> None:
    """Blocks whose convs read only the block's input (a Conv; RepVGGDW's two branches read the same tensor)."""


_BLOCK_PLANS: dict[type, Callable[..., None]] = {
    Conv: _plan_nothing,
    RepVGGDW: _plan_nothing,
    Bottleneck: _plan_bottleneck,
    CIB: _plan_cib,
    SCDown: _plan_scdown,
    SPPF: _plan_sppf,
    PSA: _plan_psa,
}


def _plan_block(block: nn.Module, plan: _Planner) -> None:
    if isinstance(block, C2f):  # C2f and C2fCIB
        return _plan_c2f(block, plan)
    if isinstance(block, Detect):
        return _plan_detect(block, plan)
    for block_type, plan_block in _BLOCK_PLANS.items():
        if type(block) is block_type:
            return plan_block(block, plan)
    raise NotImplementedError(f"no activation placement for {type(block).__name__}; add it to quant.activations")


PASS_THROUGH = (nn.Upsample, Concat)  # model-level layers that pass their inputs' codes on


def _layer_inputs(layer: nn.Module) -> list[int]:
    sources = [layer.f] if isinstance(layer.f, int) else list(layer.f)
    return [layer.i - 1 if source == -1 else source for source in sources]


def _plan_model_level(layers: nn.Sequential, plan: _Planner) -> None:
    """Tensors between the model's top-level layers; Concat and Upsample join their inputs into one group.

    Tensor ``-1`` is the image. Each group of tensors gets one quantizer, applied at the output of every layer in
    it but the Concats (an Upsample's output is requantized with its input's scale); the image's own quantizer is
    a pre-hook on layer 0.
    """
    parent = list(range(-1, len(layers)))  # union-find over tensors -1 .. n-1 (index + 1)

    def find(tensor: int) -> int:
        while parent[tensor + 1] != tensor:
            tensor = parent[tensor + 1]
        return tensor

    for layer in layers:
        if isinstance(layer, PASS_THROUGH):
            for source in _layer_inputs(layer):
                parent[find(source) + 1] = find(layer.i)
    consumers: dict[int, list[nn.Module]] = {}
    for layer in layers:
        if isinstance(layer, PASS_THROUGH):
            continue
        for level, source in enumerate(_layer_inputs(layer)):
            readers = _detect_level_heads(layer, level) if isinstance(layer, Detect) else [layer]
            consumers.setdefault(find(source), []).extend(conv for r in readers for conv in entry_convs(r))
    for root, convs in consumers.items():
        members = [t for t in range(-1, len(layers)) if find(t) == root]
        producers = [t for t in members if t >= 0 and not isinstance(layers[t], Concat)]
        if members == [-1]:
            plan.point(layers[0], "in_quant", "the image (model input)", [(layers[0], "input")], convs, kind=IMAGE)
            continue
        joins = [t for t in members if isinstance(layers[t], Concat)]
        owner = layers[joins[0]] if joins else layers[producers[0]]
        what = f"outputs of layers {producers}" + (f" joined by Concat {joins}" if joins else "")
        sites = [(layers[t], "output") for t in producers] + ([(layers[0], "input")] if -1 in members else [])
        plan.point(owner, "join_quant" if joins else "out_quant", what, sites, convs)


def _detect_level_heads(head: Detect, level: int) -> list[nn.Module]:
    branches = (getattr(head, name, None) for name in ("cv2", "cv3", "one2one_cv2", "one2one_cv3"))
    return [branch[level] for branch in branches if branch is not None]


def plan_activation_quantizers(model: nn.Module) -> list[QuantPoint]:
    """Every candidate quantization point of a YOLOv10 ``DetectionModel`` (before bit widths are applied)."""
    plan = _Planner()
    _plan_model_level(model.model, plan)
    for layer in model.model:
        if not isinstance(layer, PASS_THROUGH):
            _plan_block(layer, plan)
    return plan.points


# ----------------------------------------------------------------------------------------------
# Installation and report
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ActivationReport:
    """Where activation quantizers were placed and which conv inputs stay float (with the reason)."""

    quantizers: tuple[dict[str, Any], ...]  # {name, bit_width, signed, kind, what, sites, consumers}
    conv_inputs: tuple[tuple[str, str], ...]  # (conv name, quantizer name or "float: <reason>")
    float_operations: tuple[tuple[str, str], ...] = tuple(FLOAT_OPERATIONS.items())

    def counts(self) -> dict[str, int]:
        """Conv inputs per bit width (``"a8"``) and ``"float"``."""
        by_name = {q["name"]: q["bit_width"] for q in self.quantizers}
        tally: dict[str, int] = {}
        for _, source in self.conv_inputs:
            key = f"a{by_name[source]}" if source in by_name else "float"
            tally[key] = tally.get(key, 0) + 1
        return dict(sorted(tally.items()))

    def to_dict(self) -> dict[str, Any]:
        return {
            "counts": self.counts(),
            "quantizers": list(self.quantizers),
            "conv_inputs": dict(self.conv_inputs),
            "float_operations": dict(self.float_operations),
        }


def place_activation_quantizers(
    model: nn.Module, scheme: QuantScheme, weight_bits: dict[str, int | None], resolve_selector: SelectorResolver
) -> ActivationReport:
    """Install the scheme's activation quantizers; ``quant.yolov10.quantize_model`` calls it after the convs."""
    act_bits = activation_bit_widths(model, scheme, weight_bits, resolve_selector)
    names = {id(m): name for name, m in model.named_modules()}
    quantizers, reads = [], {}
    for point in plan_activation_quantizers(model):
        wanted = [act_bits.get(names[id(conv)]) for conv in point.consumers]
        bits = max((b for b in wanted if b is not None), default=None)
        if bits is None:
            continue
        signed = scheme.act_signed and point.kind != IMAGE
        quantizer = ActQuantizer(bits, signed, point.kind).to(_device_of(model))
        point.owner.add_module(point.attr, quantizer)
        for module, where in point.sites:
            _install_hook(module, where, quantizer)
        name = f"{names[id(point.owner)]}.{point.attr}"
        reads.update({names[id(conv)]: name for conv in point.consumers})
        quantizers.append(_describe_point(name, quantizer, point, names))
    conv_inputs = tuple((conv, reads.get(conv) or _float_reason(weight_bits[conv])) for conv in weight_bits)
    return ActivationReport(tuple(quantizers), conv_inputs)


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _install_hook(module: nn.Module, where: str, quantizer: ActQuantizer) -> None:
    existing = module._forward_hooks if where == "output" else module._forward_pre_hooks
    if any(isinstance(hook, (QuantizeOutput, QuantizeInput)) for hook in existing.values()):
        raise RuntimeError(f"two activation quantizers on the {where} of {type(module).__name__}")
    if where == "output":
        module.register_forward_hook(QuantizeOutput(quantizer))
    else:
        module.register_forward_pre_hook(QuantizeInput(quantizer))


def _describe_point(name: str, quantizer: ActQuantizer, point: QuantPoint, names: dict[int, str]) -> dict[str, Any]:
    return {
        "name": name,
        **quantizer.settings(),
        "what": point.what,
        "sites": [f"{where} of {names[id(module)]}" for module, where in point.sites],
        "consumers": [names[id(conv)] for conv in point.consumers],
    }


def _float_reason(weight_bits: int | None) -> str:
    if weight_bits is None:
        return "float: float weights (keep_float or a float layer override); an integer conv needs both in integer"
    return "float: the scheme leaves this input float (act_bit_width / act_overrides)"


def activation_quantizers(model: nn.Module) -> Iterator[tuple[str, ActQuantizer]]:
    """``(name, quantizer)`` of every activation quantizer in ``model``, in module order."""
    return ((name, m) for name, m in model.named_modules() if isinstance(m, ActQuantizer))


def has_activation_quantizers(model: nn.Module) -> bool:
    return any(True for _ in activation_quantizers(model))


def activation_thresholds(model: nn.Module) -> list[nn.Parameter]:
    """The learned threshold Parameters (QAT trains them; like LSQ weight scales, they take no weight decay)."""
    return [q.scaling_impl.value for _, q in activation_quantizers(model) if q.kind != IMAGE]


def uninitialized_quantizers(model: nn.Module) -> list[str]:
    """Names of the quantizers still without a scale (never calibrated, copied or trained)."""
    return [name for name, q in activation_quantizers(model) if not q.is_initialized]


@torch.no_grad()
def copy_activation_scales(target: nn.Module, source: nn.Module) -> int:
    """Copy the initialized scales of ``source``'s quantizers into ``target``'s (same scheme, same names)."""
    source_quantizers = dict(activation_quantizers(source))
    count = 0
    for name, quantizer in activation_quantizers(target):
        other = source_quantizers.get(name)
        if other is None or other.settings() != quantizer.settings():
            raise ValueError(f"source model has no activation quantizer {name} like the target's; same scheme?")
        if other.kind != IMAGE and other.is_initialized:
            quantizer.set_threshold(other.threshold())
            count += 1
    return count
