"""Brevitas weight-only fake quantization (W4A16) of Ultralytics YOLOv10 detection models.

Three parts (the scheme itself, plain data, is :mod:`auto_quantize_model.quant.scheme`):

* Roles (``first_conv``, ``head_pred``, ``dfl``) and glob selectors of a
  :class:`~auto_quantize_model.quant.scheme.QuantScheme` resolved to the convs of one model.
* :class:`WeightQuantConv2d` - a real ``brevitas.nn.QuantConv2d`` (signed narrow-range integer
  weights, float activations, float bias) that pickles itself as "constructor arguments + weight +
  bias", so Ultralytics' ``torch.save``/deepcopy/EMA/cloudpickle paths work, and whose training
  forward computes Brevitas' abs-max fake quantization in one autograd node (same values and
  gradients as Brevitas' own quantizer, far fewer kernels and no ``QuantTensor`` per call).
* :func:`quantize_model` - swaps every ``nn.Conv2d`` of a float ``DetectionModel`` in place and
  turns the model into a :class:`QuantDetectionModel`, whose ``fuse()`` leaves out the BN folds and
  branch merges that would change the fake-quantized outputs.
"""

from __future__ import annotations

import fnmatch
import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

import torch
from brevitas.inject.enum import ScalingImplType
from brevitas.nn import QuantConv2d
from brevitas.quant import Int8WeightPerChannelFloat, Int8WeightPerTensorFloat
from brevitas.quant_tensor import QuantTensor
from torch import nn
from ultralytics.nn.modules import DFL, Conv, Conv2, Detect, RepConv, RepVGGDW
from ultralytics.nn.tasks import DetectionModel

from auto_quantize_model.quant.scheme import ROLE_NAMES, QuantScheme, check_quant_settings, named_scheme

# A layer whose scale is an explicit, fixed number: the result of folding BN into a quantized conv's scale and sign
# (QuantDetectionModel.fuse). Not a scheme option; the same storage and forward as ``mse``.
FIXED_SCALING = "fixed"
# Scalings whose scale is stored (Brevitas ParameterScaling, ScalingImplType.PARAMETER) instead of computed.
STORED_SCALINGS = ("mse", "lsq", FIXED_SCALING)
# Brevitas' Int8WeightPerChannelFloatMSE searches 20 thresholds from max|w|/20 to max|w| (mse_iters = 20).
MSE_GRID_POINTS = 20


# ----------------------------------------------------------------------------------------------
# Roles: names in a scheme, resolved to module names of one model
# ----------------------------------------------------------------------------------------------
# Prediction branches of a (v10)Detect head; the last module of each per-level Sequential is the
# plain nn.Conv2d that outputs box distributions (cv2) or class logits (cv3).
HEAD_BRANCHES = ("cv2", "cv3", "one2one_cv2", "one2one_cv3")


def _head(model: nn.Module) -> Detect:
    head = model.model[-1]
    if not isinstance(head, Detect):
        raise ValueError(f"last layer is {type(head).__name__}, not a Detect head")
    return head


def _first_conv(model: nn.Module) -> list[nn.Module]:
    return [next(m for m in model.modules() if isinstance(m, nn.Conv2d))]


def _head_prediction_convs(model: nn.Module) -> list[nn.Module]:
    head = _head(model)
    branches = (getattr(head, name, None) for name in HEAD_BRANCHES)
    return [level[-1] for branch in branches if branch is not None for level in branch]


def _dfl_convs(model: nn.Module) -> list[nn.Module]:
    dfl = getattr(_head(model), "dfl", None)
    return [dfl.conv] if isinstance(dfl, DFL) else []  # reg_max=1 heads use nn.Identity


ROLES: dict[str, Callable[[nn.Module], list[nn.Module]]] = {
    "first_conv": _first_conv,
    "head_pred": _head_prediction_convs,
    "dfl": _dfl_convs,
}
assert tuple(ROLES) == ROLE_NAMES, "quant.scheme.ROLE_NAMES must name exactly these roles"


def _named_convs(model: nn.Module) -> dict[str, nn.Conv2d]:
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def resolve_selector(model: nn.Module, selector: str) -> tuple[str, ...]:
    """Module names of the convs a role name or glob pattern selects in ``model``.

    A pattern that matches nothing is an error (a typo would otherwise silently change nothing).
    """
    convs = _named_convs(model)
    if selector in ROLES:
        names = {id(m): name for name, m in convs.items()}
        return tuple(names[id(m)] for m in ROLES[selector](model) if isinstance(m, nn.Conv2d))
    matched = tuple(name for name in convs if fnmatch.fnmatchcase(name, selector))
    if not matched:
        raise ValueError(f"selector {selector!r} is no role {tuple(ROLES)} and matches no conv")
    return matched


def layer_bit_widths(model: nn.Module, scheme: QuantScheme) -> dict[str, int | None]:
    """Resolve ``scheme`` on ``model``: conv module name -> bit width, ``None`` for float."""
    bits: dict[str, int | None] = dict.fromkeys(_named_convs(model), scheme.weight_bit_width)
    for index, (selector, bit_width) in enumerate(scheme.layer_overrides):
        selected = _resolve_scheme_selector(model, scheme, selector, f"layer_overrides[{index}]")
        bits.update(dict.fromkeys(selected, bit_width))
    for index, selector in enumerate(scheme.keep_float):
        bits.update(dict.fromkeys(_resolve_scheme_selector(model, scheme, selector, f"keep_float[{index}]"), None))
    return bits


def _resolve_scheme_selector(model: nn.Module, scheme: QuantScheme, selector: str, key: str) -> tuple[str, ...]:
    """:func:`resolve_selector`, its error naming the scheme's key and file (a typo found only on the model)."""
    try:
        return resolve_selector(model, selector)
    except ValueError as error:
        where = f"quant scheme file {scheme.source}" if scheme.source else f"quant scheme {scheme.name!r}"
        raise ValueError(f"{where}: {key}: {error}; selectors match module names such as 'model.3.*'") from None


# ----------------------------------------------------------------------------------------------
# The quantized conv
# ----------------------------------------------------------------------------------------------
@cache
def weight_quantizer(bit_width: int, granularity: str, scaling: str = "absmax") -> type:
    """Brevitas injector: signed, narrow-range ints with float scales (per channel or tensor).

    ``absmax`` scales are Brevitas' stats (max|w| per forward); stored scales (mse, lsq, fixed) are Brevitas'
    ``ParameterScaling`` (``ScalingImplType.PARAMETER``), whose ``value`` Parameter holds the scale, so Brevitas'
    own proxy and QCDQ export read the very scale the fast training path uses.
    """
    base = Int8WeightPerChannelFloat if granularity == "per_channel" else Int8WeightPerTensorFloat
    if scaling == "absmax":
        return base.let(bit_width=bit_width)
    return base.let(bit_width=bit_width, scaling_impl_type=ScalingImplType.PARAMETER, scaling_init=1.0)


def absmax_scale(weight: torch.Tensor, max_code: float, min_scale: float, per_channel: bool) -> torch.Tensor:
    """``max(max|w|, min_scale) / max_code`` per output channel (shape ``[C, 1, 1, 1]``) or per tensor (``[]``)."""
    rows = weight.detach().float().reshape(weight.shape[0] if per_channel else 1, -1)
    scale = rows.abs().amax(dim=1).clamp_min(min_scale) / max_code
    return scale.view(-1, 1, 1, 1) if per_channel else scale.reshape(())


def mse_scale(weight: torch.Tensor, max_code: float, min_scale: float, per_channel: bool) -> torch.Tensor:
    """The scale minimising ``sum((q(w) - w)^2)`` per channel (or tensor), like ``Int8WeightPerChannelFloatMSE``.

    Brevitas' grid: thresholds ``t = lo + (hi - lo) * k / (n - 1)`` from ``lo = max|w| / n`` to ``hi = max|w|``
    (``n = MSE_GRID_POINTS``), scale ``t / max_code``, the first minimum wins. Done here in one vectorised pass per
    layer instead of Brevitas' proxy calls; tests compare the two.
    """
    rows = weight.detach().float().reshape(weight.shape[0] if per_channel else 1, -1)
    high = rows.abs().amax(dim=1, keepdim=True)
    low = high / MSE_GRID_POINTS
    best_scale = (low.clamp_min(min_scale) / max_code).clone()
    best_loss = _quant_mse(rows, best_scale, max_code)
    for step in torch.linspace(1.0 / (MSE_GRID_POINTS - 1), 1.0, MSE_GRID_POINTS - 1):
        scale = (low + (high - low) * step).clamp_min(min_scale) / max_code
        loss = _quant_mse(rows, scale, max_code)
        better = loss < best_loss
        best_scale = torch.where(better, scale, best_scale)
        best_loss = torch.minimum(loss, best_loss)
    return best_scale.view(-1, 1, 1, 1) if per_channel else best_scale.reshape(())


def _quant_mse(rows: torch.Tensor, scale: torch.Tensor, max_code: float) -> torch.Tensor:
    quantized = (rows / scale).round_().clamp_(-max_code, max_code).mul_(scale)
    return quantized.sub_(rows).square_().sum(dim=1, keepdim=True)


SCALE_INITS: dict[str, Callable[..., torch.Tensor]] = {"absmax": absmax_scale, "mse": mse_scale}


class _AbsMaxFakeQuant(torch.autograd.Function):
    """Brevitas' abs-max weight fake quantization as one autograd node.

    Forward: ``scale = max(absmax, min_scale) / max_code``, ``out = round(w / scale) * scale`` with
    the same operations as Brevitas (``StatsFromParameterScaling`` + ``IntQuant``), so values are
    bit-identical. Backward reproduces Brevitas' gradient: round and clamp are straight-through, and
    the scale path adds ``sum(g * (code - w / scale)) / max_code * sign(w)`` at the abs-max element
    (spread over ties for the per-tensor ``torch.max``). Brevitas builds ~20 autograd nodes and a
    ``QuantTensor`` per call for this; here it is a handful of in-place kernels.
    """

    @staticmethod
    def forward(ctx, weight: torch.Tensor, max_code: float, min_scale: float, per_channel: bool) -> torch.Tensor:
        rows = weight.reshape(weight.shape[0] if per_channel else 1, -1)
        absmax, index = rows.abs().max(dim=1, keepdim=True)
        clamped = absmax.clamp_min(min_scale)
        scale = clamped / max_code
        # Brevitas clamps the codes to [-max_code, max_code]; with abs-max scales that is a no-op
        # (|w| / scale <= max_code up to one ulp, which rounds to max_code), so one pass is saved.
        out = (rows / scale).round_().mul_(scale).view(weight.shape)
        ctx.save_for_backward(weight, out, clamped, absmax, index)
        ctx.per_channel = per_channel
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:
        weight, out, clamped, absmax, index = ctx.saved_tensors
        n_rows = clamped.shape[0]
        g, w = grad.reshape(n_rows, -1), weight.reshape(n_rows, -1)
        # d out / d scale = code - w / scale (round/clamp straight-through) = (out - w) / scale, and
        # d scale / d absmax = 1 / max_code (Brevitas' min-clamp is straight-through too), so
        # d out / d absmax = (out - w) / (scale * max_code) = (out - w) / clamped.
        grad_absmax = (out.reshape(n_rows, -1) - w).mul_(g).sum(dim=1, keepdim=True).div_(clamped)
        grad_w = g.clone()
        if ctx.per_channel:  # torch.max(dim) sends the gradient to the one returned index
            grad_w.scatter_add_(1, index, grad_absmax * w.gather(1, index).sign())
        else:  # the full torch.max reduction spreads it evenly over tied maxima
            ties = w.abs() == absmax
            grad_w.add_(ties * w.sign() * (grad_absmax / ties.sum()))
        return grad_w.view(weight.shape), None, None, None


class _ScaleFakeQuant(torch.autograd.Function):
    """Fake quantization with a given scale (mse, lsq, fixed) as one autograd node, Brevitas' ``IntQuant`` values.

    The stored value is Brevitas' ``ParameterScaling`` threshold ``t``; the step is ``s = max(|t|, min_scale) /
    max_code`` (Brevitas divides by the integer threshold ``2**(b-1) - 1``). Forward:
    ``code = clamp(round(w / s), -max_code, max_code)``, ``out = code * s``; rounding then clamping equals clipping
    then rounding here, because ``max_code`` is an integer. The backward differs in the half-step band
    ``max_code < |w / s| < max_code + 0.5``:

    * ``clip_then_round`` (LSQ as published, Esser et al. 2020, eq. 3; used for learned scales): a weight is inside
      while ``|w / s| < max_code``. Inside, ``d out / d w = 1`` and ``d out / d s = code - w / s``; outside, 0 and
      ``code`` (= +-max_code). In the band the weight gets 0 and the step +-max_code.
    * otherwise (Brevitas' ``IntQuant``: round, then a non-straight-through ``TensorClamp``; mse and fixed scales,
      which get no step gradient): inside while ``|round(w / s)| <= max_code``, so the band counts as inside.

    The step's gradient is summed over the weights one step serves and scaled by ``grad_scale``
    (LSQ: 1 / sqrt(numel * max_code)). It is handed to ``t`` as ``max_code * sign(t) * that``, so that an SGD step
    on ``t`` moves ``s = t / max_code`` exactly as LSQ's SGD step on ``s`` would (Brevitas' own gradient of ``t``
    is ``d L / d s / max_code``, without the scaling: ``max_code**2 * grad_scale`` times smaller).
    """

    @staticmethod
    def forward(
        ctx,
        weight: torch.Tensor,
        threshold: torch.Tensor,
        max_code: float,
        min_scale: float,
        grad_scale: float,
        clip_then_round: bool,
    ):
        s = threshold.abs().clamp_min(min_scale) / max_code
        ratio = weight / s
        code = ratio.round()
        inside = ratio.abs() < max_code if clip_then_round else code.abs() <= max_code
        code.clamp_(-max_code, max_code)
        ctx.save_for_backward(ratio, code, inside, threshold)
        ctx.grad_scale, ctx.scale_shape, ctx.max_code = grad_scale, threshold.shape, max_code
        return code * s

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        ratio, code, inside, threshold = ctx.saved_tensors
        grad_w = grad * inside if ctx.needs_input_grad[0] else None
        grad_s = None
        if ctx.needs_input_grad[1]:
            per_element = grad * torch.where(inside, code - ratio, code)
            dims = tuple(range(1, grad.dim())) if len(ctx.scale_shape) else tuple(range(grad.dim()))
            grad_s = per_element.sum(dim=dims, keepdim=bool(len(ctx.scale_shape))).mul_(ctx.grad_scale * ctx.max_code)
            grad_s = (grad_s.reshape(ctx.scale_shape) * torch.where(threshold < 0, -1.0, 1.0)).to(threshold.dtype)
        return grad_w, grad_s, None, None, None, None


class WeightQuantConv2d(QuantConv2d):
    """``brevitas.nn.QuantConv2d`` with integer weights only (W4A16/W8A16), made to live in Ultralytics.

    * Weights: signed narrow-range ``bit_width`` codes (4 bits: [-7, 7]) times float scales, per output channel
      or per tensor. ``scaling``: ``absmax`` (recomputed every forward), ``mse`` (searched once at
      :meth:`from_float`, then fixed: no gradient), ``lsq`` (learned, LSQ gradient scaling) or ``fixed`` (a BN-folded
      layer made by :meth:`QuantDetectionModel.fuse`). Stored scales live in Brevitas' ``ParameterScaling``
      (state_dict key ``weight_quant.tensor_quant.scaling_impl.value``). Input, output and bias are not quantized.
    * Pickling carries constructor arguments, quantizer settings, weight, bias, stored scale and train mode, never
      Brevitas' runtime injector classes (which pickle cannot find by name). Hooks are not carried. A stored scale
      stays float32 through ``.half()`` (:meth:`_apply`), so fp16 checkpoints hold the scale that was validated.
    * Forward uses :meth:`fake_quant_weight` (float32 even under autocast); export mode, disabled
      quantization and ``QuantTensor`` inputs go through Brevitas' own ``forward``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        *,
        bit_width: int = 4,
        granularity: str = "per_channel",
        scaling: str = "absmax",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        check_quant_settings(bit_width, granularity, "absmax" if scaling == FIXED_SCALING else scaling)
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            padding_mode=padding_mode,
            bias=bias,
            device=device,
            dtype=dtype,
            weight_quant=weight_quantizer(bit_width, granularity, scaling),
            input_quant=None,
            output_quant=None,
            bias_quant=None,
            return_quant_tensor=False,
        )
        self.bit_width, self.granularity, self.scaling = bit_width, granularity, scaling
        # Looked up once here instead of through the proxy/injector on every forward.
        self._max_code = float(2 ** (bit_width - 1) - 1)  # narrow signed range: [-max_code, max_code]
        self._min_scale = float(self.weight_quant.quant_injector.scaling_min_val)
        self._per_channel = granularity == "per_channel"
        # LSQ: the step-size gradient is scaled by 1 / sqrt(weights per scale * max_code).
        per_scale = self.weight[0].numel() if self._per_channel else self.weight.numel()
        self._grad_scale = 1.0 / math.sqrt(per_scale * self._max_code) if scaling == "lsq" else 0.0

    @classmethod
    def from_float(
        cls,
        conv: nn.Conv2d,
        bit_width: int,
        granularity: str = "per_channel",
        scaling: str = "absmax",
        lsq_init: str = "mse",
    ) -> WeightQuantConv2d:
        """Quantized twin of ``conv`` sharing its weight and bias Parameters (values unchanged).

        A stored scale is initialised from the weights: ``mse`` by the MSE search, ``lsq`` by ``lsq_init``.
        """
        layer = cls(
            **_conv_geometry(conv),
            bit_width=bit_width,
            granularity=granularity,
            scaling=scaling,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
        )
        _adopt_parameters(layer, conv.weight, conv.bias)
        if scaling in ("mse", "lsq"):
            layer.init_scale("mse" if scaling == "mse" else lsq_init)
        return layer.train(conv.training)

    @property
    def scale_parameter(self) -> nn.Parameter | None:
        """The stored scale as Brevitas keeps it (``ParameterScaling.value``): the threshold ``max_code * scale``.

        ``None`` for abs-max layers. The step itself is :meth:`int_weight_and_scale`'s second value.
        """
        return self.weight_quant.tensor_quant.scaling_impl.value if self.scaling in STORED_SCALINGS else None

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> WeightQuantConv2d:
        """``nn.Module._apply`` (``to``, ``half``, ``cuda``, ...), except that a float32 stored scale stays float32
        when the layer is cast to a 16-bit float type (it still follows device moves).

        Ultralytics saves ``deepcopy(ema).half()``: an fp16 scale is off by up to 4.9e-4 relative from the float32
        EMA scale in-training validation used, so the exported model would not be the validated one. The forward
        computes in float32 anyway (:meth:`fake_quant_weight`); the scale is one number per channel.
        """
        scale = self.scale_parameter
        kept = scale.detach() if scale is not None and scale.dtype == torch.float32 else None
        super()._apply(fn, recurse)
        scale = self.scale_parameter
        if kept is not None and scale.dtype in (torch.float16, torch.bfloat16):
            scale.data = kept.to(scale.device)
            if scale.grad is not None:
                scale.grad = scale.grad.float()
        return self

    @torch.no_grad()
    def init_scale(self, method: str) -> None:
        """Set the stored scale from the current weights: ``absmax`` or ``mse`` (see :data:`SCALE_INITS`)."""
        target = self.scale_parameter
        if target is None:
            raise ValueError(f"{self.scaling!r} layers compute their scale; there is no stored scale to initialise")
        scale = SCALE_INITS[method](self.weight, self._max_code, self._min_scale, self._per_channel)
        target.copy_((scale * self._max_code).reshape(target.shape))

    @torch.no_grad()
    def int_weight_and_scale(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Integer codes (float32, weight-shaped) and their scale, with the forward's exact float32 arithmetic."""
        weight = self.weight.float()
        stored = self.scale_parameter
        if stored is None:
            scale = absmax_scale(weight, self._max_code, self._min_scale, self._per_channel)
            return (weight / scale).round(), scale
        scale = stored.float().abs().clamp_min(self._min_scale) / self._max_code
        return (weight / scale).round().clamp(-self._max_code, self._max_code), scale

    def quant_settings(self) -> dict[str, Any]:
        """The weight quantizer's settings, as carried through pickling."""
        return {"bit_width": self.bit_width, "granularity": self.granularity, "scaling": self.scaling}

    def fake_quant_weight(self) -> torch.Tensor:
        """Fake-quantized weight, computed in float32 (outside autocast), cast back to the weight dtype.

        Under autocast the float32 result is returned; the conv's own autocast casts it.
        """
        weight = self.weight
        if torch.is_autocast_enabled(weight.device.type):
            with torch.autocast(weight.device.type, enabled=False):
                return self._fake_quant(weight.float())
        if weight.dtype in (torch.float16, torch.bfloat16):  # e.g. Ultralytics' half() validation
            return self._fake_quant(weight.float()).to(weight.dtype)
        return self._fake_quant(weight)

    def _fake_quant(self, weight: torch.Tensor) -> torch.Tensor:
        stored = self.scale_parameter
        if stored is None:
            return _AbsMaxFakeQuant.apply(weight, self._max_code, self._min_scale, self._per_channel)
        # Only LSQ learns its scale, with LSQ's backward; mse and fixed scales get no gradient (detached), so no
        # optimizer moves them, and their weights get Brevitas' gradient.
        lsq = self.scaling == "lsq"
        scale = stored.to(weight.dtype) if lsq else stored.detach().to(weight.dtype)
        return _ScaleFakeQuant.apply(weight, scale, self._max_code, self._min_scale, self._grad_scale, lsq)

    def forward(self, x: torch.Tensor | QuantTensor) -> torch.Tensor | QuantTensor:
        """Conv with fake-quantized weights; Brevitas' generic path where the fast one does not apply."""
        proxy = self.weight_quant
        if isinstance(x, QuantTensor) or self.export_mode or proxy.export_mode or not proxy.is_quant_enabled:
            return super().forward(x)
        return self._conv_forward(x, self.fake_quant_weight(), self.bias)

    def __reduce_ex__(self, protocol: int) -> tuple[Any, ...]:
        """Pickle as settings + tensors; Brevitas' quantizer is rebuilt from the settings on load."""
        kwargs = {**_conv_geometry(self), **self.quant_settings()}
        state = {"weight": self.weight, "bias": self.bias, "training": self.training, "scale": self.scale_parameter}
        return _rebuild_weight_quant_conv, (type(self), kwargs, state)


def _conv_geometry(conv: nn.Conv2d) -> dict[str, Any]:
    """Constructor arguments that define a conv's shape (not its parameters)."""
    return {
        "in_channels": conv.in_channels,
        "out_channels": conv.out_channels,
        "kernel_size": conv.kernel_size,
        "stride": conv.stride,
        "padding": conv.padding,
        "dilation": conv.dilation,
        "groups": conv.groups,
        "bias": conv.bias is not None,
        "padding_mode": conv.padding_mode,
    }


def _adopt_parameters(layer: WeightQuantConv2d, weight: nn.Parameter, bias: nn.Parameter | None) -> None:
    """Install existing Parameters (same objects: values, requires_grad and dtype are kept).

    ``nn.Module.register_parameter`` is called directly, skipping Brevitas' hook that rebuilds the
    weight quantizer on every (re)registration: half the construction time, and not needed here
    because the abs-max quantizer reads the weight it is given and holds no reference to the old
    one (the layer was built with the same shape, device and dtype).
    """
    if weight.shape != layer.weight.shape or (bias is None) != (layer.bias is None):
        raise ValueError(f"parameters {tuple(weight.shape)} do not fit layer {layer}")
    nn.Module.register_parameter(layer, "weight", weight)
    if bias is not None:
        nn.Module.register_parameter(layer, "bias", bias)


def _rebuild_weight_quant_conv(cls: type, kwargs: dict[str, Any], state: dict[str, Any]) -> WeightQuantConv2d:
    """Unpickling target of :meth:`WeightQuantConv2d.__reduce_ex__`."""
    weight = state["weight"]
    layer = cls(**kwargs, device=weight.device)
    layer.to(dtype=weight.dtype)  # Brevitas' helper buffers follow the weight, as after .half()
    _adopt_parameters(layer, weight, state["bias"])
    if state.get("scale") is not None:  # the stored Parameter itself: values, dtype and requires_grad kept
        layer.weight_quant.tensor_quant.scaling_impl.value = state["scale"]
    return layer.train(state["training"])


# ----------------------------------------------------------------------------------------------
# Fuse-safe model
# ----------------------------------------------------------------------------------------------
@torch.no_grad()
def fold_batchnorm_exactly(layer: WeightQuantConv2d, bn: nn.BatchNorm2d) -> WeightQuantConv2d:
    """``bn(layer(x))`` as one conv whose integer codes are ``layer``'s own, times the sign of the BN factor.

    With ``f = gamma / sqrt(var + eps)`` per channel: codes' = sign(f) * codes, scale' = |f| * scale,
    bias' = (bias - mean) * f + beta, weight' = codes' * scale' (float32). The result is a ``fixed``-scale
    layer, per channel, so its codes ``round(weight' / scale')`` are ``codes'`` exactly (the ratio is within a few
    ulps of an integer <= 127), on any input dtype, ties included: folding never re-rounds a weight. Folding BN
    into the float weights first and re-quantizing (Ultralytics' ``fuse_conv_and_bn``) moves codes whose
    ``w / scale`` sits on a .5 boundary (fp16 latents make exact ties common).
    """
    codes, scale = layer.int_weight_and_scale()
    factor = bn.weight.float() / torch.sqrt(bn.running_var.float() + bn.eps)
    channels = codes.shape[0]
    scale = scale.expand(channels).reshape(-1, 1, 1, 1) if scale.dim() == 0 else scale.reshape(-1, 1, 1, 1)
    magnitude = factor.abs().view(-1, 1, 1, 1)
    dead = magnitude == 0  # gamma = 0: the channel is its bias; keep the scale so it stays a valid divisor
    new_codes = torch.where(dead, torch.zeros_like(codes), codes * torch.where(factor < 0, -1.0, 1.0).view(-1, 1, 1, 1))
    new_scale = torch.where(dead, scale, scale * magnitude)
    bias = layer.bias.float() if layer.bias is not None else torch.zeros(channels, device=codes.device)
    new_bias = (bias - bn.running_mean.float()) * factor + bn.bias.float()
    geometry = {**_conv_geometry(layer), "bias": True}
    fused = WeightQuantConv2d(
        **geometry,
        bit_width=layer.bit_width,
        granularity="per_channel",
        scaling=FIXED_SCALING,
        device=codes.device,
        dtype=torch.float32,
    )
    fused.weight.copy_(new_codes * new_scale)
    fused.bias.copy_(new_bias)
    fused.scale_parameter.copy_(new_scale * fused._max_code)
    fused.to(dtype=layer.weight.dtype).requires_grad_(False)
    return fused.train(layer.training)


class _BranchSum(nn.Module):
    """Sum of two parallel branches: a RepVGGDW whose quantized 7x7 and 3x3 kernels must stay apart."""

    def __init__(self, conv: nn.Module, conv1: nn.Module) -> None:
        super().__init__()
        self.conv, self.conv1 = conv, conv1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.conv1(x)


def _fold_quantized_batchnorms(model: nn.Module) -> None:
    """Pre-pass for ``BaseModel.fuse``: fold each quantized ``Conv``'s BN into scale and sign, keep branches apart.

    A ``Conv`` holding a :class:`WeightQuantConv2d` gets the exact fold of :func:`fold_batchnorm_exactly` and loses
    its ``bn``; a ``RepVGGDW`` holding quantized convs keeps both branches (``conv = _BranchSum(conv, conv1)``),
    whose ``Conv`` blocks are folded the same way. Both then look fused to Ultralytics, whose stock
    ``forward_fuse`` computes the same function as before; float convs are left to Ultralytics' own fold.
    """
    for m in list(model.modules()):
        if isinstance(m, Conv) and hasattr(m, "bn") and isinstance(m.conv, WeightQuantConv2d):
            m.conv = fold_batchnorm_exactly(m.conv, m.bn)
            del m.bn
            m.forward = m.forward_fuse
    for m in list(model.modules()):
        if isinstance(m, RepVGGDW) and hasattr(m, "conv1") and is_quantized(m):
            m.conv = _BranchSum(m.conv, m.conv1)
            del m.conv1


class QuantDetectionModel(DetectionModel):
    """A ``DetectionModel`` holding :class:`WeightQuantConv2d` layers; only ``fuse`` differs.

    :func:`quantize_model` swaps a model's class to this one, so it travels inside pickled
    Ultralytics checkpoints and validation/export fuse stays output-preserving.
    """

    def fuse(self, verbose: bool = True, imgsz: int | list[int] = 640) -> QuantDetectionModel:
        """``BaseModel.fuse`` with quantized BN folds done exactly (codes kept) and RepVGGDW branches kept apart."""
        if not self.is_fused():
            _fold_quantized_batchnorms(self)
        return super().fuse(verbose=verbose, imgsz=imgsz)


# ----------------------------------------------------------------------------------------------
# Model conversion
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class QuantizationReport:
    """Resolved per-layer bit widths of a quantized model (``None`` = float)."""

    scheme: str
    layer_bits: tuple[tuple[str, int | None], ...]

    def counts(self) -> dict[str, int]:
        """Number of convs per bit width (``"4"``, ``"8"``) and ``"float"``."""
        tally = Counter("float" if bits is None else str(bits) for _, bits in self.layer_bits)
        return dict(sorted(tally.items()))

    @property
    def quantized_count(self) -> int:
        return sum(bits is not None for _, bits in self.layer_bits)

    @property
    def float_count(self) -> int:
        return len(self.layer_bits) - self.quantized_count

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary for run metadata."""
        return {"scheme": self.scheme, "counts": self.counts(), "layer_bits": dict(self.layer_bits)}


def _check_quantizable(model: nn.Module) -> None:
    if isinstance(model, QuantDetectionModel) or is_quantized(model):
        raise ValueError("model is already quantized")
    if type(model) is not DetectionModel:
        raise TypeError(f"expected an ultralytics DetectionModel, got {type(model).__name__}")
    merged = [type(m).__name__ for m in model.modules() if isinstance(m, (Conv2, RepConv))]
    if merged:  # their fuse merges parallel kernels, which 4-bit rounding does not commute with
        raise NotImplementedError(f"fuse-safe quantization of {sorted(set(merged))} is not implemented")


def _replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name), child, new)


def quantize_model(model: DetectionModel, scheme: QuantScheme | str) -> QuantizationReport:
    """Fake-quantize ``model``'s convs in place as ``scheme`` says; attach the scheme to the model.

    Each selected ``nn.Conv2d`` becomes a :class:`WeightQuantConv2d` that shares the original weight
    and bias Parameters; the model's class becomes :class:`QuantDetectionModel` and
    ``model.quant_scheme`` holds ``scheme.to_dict()`` (so it is saved in Ultralytics checkpoints).
    Call it before building the optimizer and EMA. The state_dict keys stay those of the float model.
    """
    scheme = named_scheme(scheme) if isinstance(scheme, str) else scheme
    _check_quantizable(model)
    bits = layer_bit_widths(model, scheme)
    for name, bit_width in bits.items():
        if bit_width is not None:
            conv = model.get_submodule(name)
            layer = WeightQuantConv2d.from_float(conv, bit_width, scheme.granularity, scheme.scaling, scheme.lsq_init)
            _replace_module(model, name, layer)
    model.__class__ = QuantDetectionModel
    model.quant_scheme = scheme.to_dict()
    return QuantizationReport(scheme.name, tuple(bits.items()))


def is_quantized(model: nn.Module) -> bool:
    """True when ``model`` holds at least one :class:`WeightQuantConv2d`."""
    return any(isinstance(m, WeightQuantConv2d) for m in model.modules())


def quant_scheme_of(model: nn.Module) -> QuantScheme | None:
    """The scheme :func:`quantize_model` attached to ``model`` (``None`` for a float model)."""
    data = getattr(model, "quant_scheme", None)
    return None if data is None else QuantScheme.from_dict(data)


def quantized_layers(model: nn.Module) -> Iterable[tuple[str, WeightQuantConv2d]]:
    """``(name, layer)`` for every quantized conv, in module order."""
    return ((name, m) for name, m in model.named_modules() if isinstance(m, WeightQuantConv2d))


def stored_scales(model: nn.Module) -> dict[str, nn.Parameter]:
    """``{layer name: stored scale Parameter}`` of every mse/lsq/fixed layer (learned ones: ``scaling == "lsq"``)."""
    return {name: m.scale_parameter for name, m in quantized_layers(model) if m.scale_parameter is not None}


def learned_scales(model: nn.Module) -> list[nn.Parameter]:
    """The LSQ scale Parameters of ``model`` (they need their own optimizer group without weight decay)."""
    return [m.scale_parameter for _, m in quantized_layers(model) if m.scaling == "lsq"]


@torch.no_grad()
def copy_stored_scales(target: nn.Module, source: nn.Module) -> int:
    """Copy the stored scales of ``source`` (a quantized checkpoint model) into ``target``; return how many.

    Ultralytics loads checkpoint weights into a float model (``DetectionModel.load`` keeps matching keys only),
    so a model quantized afterwards starts its mse/lsq scales from the weights; resuming or re-opening a run must
    restore the checkpoint's scales instead. Layers must match by name and shape (same scheme).
    """
    source_scales, target_scales = stored_scales(source), stored_scales(target)
    missing = sorted(set(target_scales) - set(source_scales))
    if missing:
        raise ValueError(f"source model has no stored scale for {len(missing)} layers, e.g. {missing[0]}; same scheme?")
    for name, scale in target_scales.items():
        scale.copy_(source_scales[name].reshape(scale.shape))
    return len(target_scales)
