"""The sensitivity sweep's model side: unit enumeration, the mixed-precision scheme, copies that leave the FP model
alone (auto_quantize_model.quant.sensitivity)."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import torch
from ultralytics.nn.tasks import DetectionModel

import auto_quantize_model  # noqa: F401  (before ultralytics: offline environment)
from auto_quantize_model.quant.scheme import QuantScheme, resolve_scheme
from auto_quantize_model.quant.sensitivity import (
    GRANULARITIES,
    SweepInputError,
    enumerate_units,
    low_bit_param_share,
    mixed_precision_scheme,
    parameter_weighted_bits,
    quantized_copy,
    unit_scheme,
)
from auto_quantize_model.quant.yolov10 import layer_bit_widths, quantized_layers, resolve_selector
from auto_quantize_model.sensitivity import MIXED_SCHEME_JSON

HEAD = "model.23"
DFL = f"{HEAD}.dfl.conv"


@pytest.fixture(scope="module")
def yolov10n() -> DetectionModel:
    return DetectionModel("yolov10n.yaml", nc=4, verbose=False).eval()


def _all_convs(model) -> set[str]:
    return {name for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_every_quantizable_conv_is_in_exactly_one_unit_and_dfl_in_none(yolov10n, granularity) -> None:
    units = enumerate_units(yolov10n, granularity)
    membership = Counter(conv for unit in units for conv in unit.convs)
    assert set(membership) == _all_convs(yolov10n) - {DFL}
    assert set(membership.values()) == {1}
    assert DFL not in membership
    for unit in units:  # the selector written into a mixed scheme picks exactly the unit's convs
        assert set(resolve_selector(yolov10n, unit.selector)) == set(unit.convs)
        assert unit.params == sum(yolov10n.get_submodule(conv).weight.numel() for conv in unit.convs)


def test_block_units_are_top_level_modules_and_head_branch_levels(yolov10n) -> None:
    names = [unit.name for unit in enumerate_units(yolov10n, "block")]
    head_units = {
        f"{HEAD}.{branch}.{level}" for branch in ("cv2", "cv3", "one2one_cv2", "one2one_cv3") for level in range(3)
    }
    assert {name for name in names if name.startswith(f"{HEAD}.")} == head_units
    backbone = [name for name in names if not name.startswith(f"{HEAD}.")]
    # Upsample and Concat hold no conv; every other top-level module is one unit.
    with_convs = [
        f"model.{i}"
        for i, m in enumerate(yolov10n.model[:-1])
        if any(isinstance(c, torch.nn.Conv2d) for c in m.modules())
    ]
    assert backbone == with_convs
    assert len(enumerate_units(yolov10n, "layer")) == 107  # 108 convs minus DFL


def test_a_unit_copy_quantizes_only_the_unit_and_leaves_the_fp_model_alone(yolov10n) -> None:
    before = {key: value.clone() for key, value in yolov10n.state_dict().items()}
    unit = next(u for u in enumerate_units(yolov10n, "block") if u.name == "model.2")
    quantized = quantized_copy(yolov10n, unit_scheme(unit, 4, "absmax"))
    assert {name for name, _ in quantized_layers(quantized)} == set(unit.convs)
    assert not any(True for _ in quantized_layers(yolov10n))
    assert type(yolov10n) is DetectionModel
    after = yolov10n.state_dict()
    assert all(torch.equal(before[key], after[key]) for key in before)


@pytest.mark.parametrize("fraction", [0.5, 0.8, 0.9, 0.97, 1.0])
def test_mixed_scheme_keeps_at_least_the_requested_share_at_4_bits(yolov10n, tmp_path, fraction) -> None:
    units = enumerate_units(yolov10n, "block")
    rng = random.Random(0)
    drops = {unit.name: rng.uniform(-0.01, 0.05) for unit in units}
    plan = mixed_precision_scheme(units, drops, 4, "absmax", fraction)
    share = low_bit_param_share(yolov10n, plan.scheme, 4)  # resolved on the model, not taken from the plan
    assert share >= fraction
    assert share == pytest.approx(plan.low_bit_param_fraction)
    assert set(layer_bit_widths(yolov10n, plan.scheme).values()) <= {4, 8, None}
    assert all(drops[name] > 0 for name in plan.high_bit_units)  # an insensitive unit gains nothing from 8 bits
    noisy = mixed_precision_scheme(units, drops, 4, "absmax", fraction, min_drop=0.03)
    assert all(drops[name] > 0.03 for name in noisy.high_bit_units)
    assert 4 <= parameter_weighted_bits(yolov10n, plan.scheme) <= 4 + 4 * (1 - fraction) + 1e-9
    loaded = resolve_scheme(plan.scheme.save(tmp_path / MIXED_SCHEME_JSON))
    assert loaded == plan.scheme
    assert low_bit_param_share(yolov10n, loaded, 4) == share


def test_mixed_scheme_promotes_the_most_sensitive_unit_that_fits_first(yolov10n) -> None:
    units = enumerate_units(yolov10n, "block")
    by_name = {unit.name: unit for unit in units}
    small, large = f"{HEAD}.one2one_cv3.0", "model.8"
    drops = dict.fromkeys(by_name, 0.0) | {large: 0.05, small: 0.02, "model.0": -0.01}
    total = sum(unit.params for unit in units)
    # A budget that fits the small unit but not the large one: the large one is passed over, the small one kept.
    fraction = 1 - (by_name[small].params + 1) / total
    plan = mixed_precision_scheme(units, drops, 4, "absmax", fraction)
    assert plan.high_bit_units == (small,)
    roomy = mixed_precision_scheme(units, drops, 4, "absmax", 0.5)
    assert roomy.high_bit_units == (large, small)  # module order; model.0 (negative drop) stays at 4 bits
    with pytest.raises(SweepInputError, match="w4-param-fraction"):
        mixed_precision_scheme(units, drops, 4, "absmax", 0.0)


def test_unit_scheme_is_a_valid_scheme_file(tmp_path, yolov10n) -> None:
    unit = enumerate_units(yolov10n, "layer")[0]
    scheme = resolve_scheme(unit_scheme(unit, 4, "absmax").save(tmp_path / "unit.json"))
    bits = layer_bit_widths(yolov10n, scheme)
    assert {name for name, width in bits.items() if width is not None} == {unit.name}
    assert isinstance(scheme, QuantScheme)


@pytest.mark.parametrize(("act_bits", "kept"), [(4, 8), (8, None)])
def test_mixed_activation_scheme_keeps_sensitive_inputs_high_within_the_input_budget(yolov10n, act_bits, kept) -> None:
    """Resolved on the model: >= the requested share of the conv input elements at act_bits, the kept units' inputs
    at 8 bits (float when the sweep was at 8), every conv's weights at 8 bits."""
    from auto_quantize_model.quant.activations import activation_bit_widths
    from auto_quantize_model.quant.sensitivity import conv_input_elements, mixed_activation_scheme

    units = enumerate_units(yolov10n, "block")
    elements = conv_input_elements(yolov10n, 64)
    sizes = {unit.name: sum(elements[conv] for conv in unit.convs) for unit in units}
    rng = random.Random(1)
    drops = {unit.name: rng.uniform(-0.01, 0.05) for unit in units}
    plan = mixed_activation_scheme(units, drops, sizes, act_bits, "absmax", 0.8)
    weights = layer_bit_widths(yolov10n, plan.scheme)
    assert set(weights.values()) == {8, None}  # None: DFL
    inputs = activation_bit_widths(yolov10n, plan.scheme, weights, resolve_selector)
    kept_convs = {conv for unit in units if unit.name in plan.high_bit_units for conv in unit.convs}
    assert plan.high_bit_units and all(drops[name] > 0 for name in plan.high_bit_units)
    assert {inputs[conv] for conv in kept_convs} == {kept}
    low = sum(elements[conv] for conv, bits in inputs.items() if bits == act_bits)
    assert low / sum(elements.values()) >= 0.8
    assert low / sum(elements.values()) == pytest.approx(plan.low_bit_param_fraction)
