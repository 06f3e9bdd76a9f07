"""QuantScheme: validation, dict/JSON round trips, named schemes and their resolution on yolov10n."""

from __future__ import annotations

import json

import pytest
from ultralytics.nn.tasks import DetectionModel

import auto_quantize_model  # noqa: F401  (before ultralytics: offline environment)
from auto_quantize_model.quant.scheme import SCHEME_NAMES, QuantScheme, named_scheme
from auto_quantize_model.quant.yolov10 import ROLES, layer_bit_widths, resolve_selector

HEAD = "model.23"
# Per named scheme on yolov10n (108 convs: 107 quantizable + DFL): convs per bit width.
EXPECTED_COUNTS = {
    "w4a16": {"4": 107, "float": 1},
    "w4a16-fl8": {"4": 94, "8": 13, "float": 1},
    "w4a16-flfp": {"4": 94, "float": 14},
    "w8a16": {"8": 107, "float": 1},
    "w4a16-mse": {"4": 107, "float": 1},
    "w4a16-lsq": {"4": 107, "float": 1},
    "w4a16-fl8-mse": {"4": 94, "8": 13, "float": 1},
    "w4a16-fl8-lsq": {"4": 94, "8": 13, "float": 1},
}
SPECIAL_LAYER_BITS = {
    "w4a16": 4,
    "w4a16-fl8": 8,
    "w4a16-flfp": None,
    "w8a16": 8,
    "w4a16-mse": 4,
    "w4a16-lsq": 4,
    "w4a16-fl8-mse": 8,
    "w4a16-fl8-lsq": 8,
}


@pytest.fixture(scope="module")
def yolov10n() -> DetectionModel:
    return DetectionModel("yolov10n.yaml", nc=4, verbose=False)


def _counts(bits: dict[str, int | None]) -> dict[str, int]:
    tally: dict[str, int] = {}
    for value in bits.values():
        key = "float" if value is None else str(value)
        tally[key] = tally.get(key, 0) + 1
    return tally


def test_scheme_names_cover_the_named_schemes() -> None:
    assert SCHEME_NAMES == (
        "w4a16",
        "w4a16-fl8",
        "w4a16-flfp",
        "w8a16",
        "w4a16-mse",
        "w4a16-lsq",
        "w4a16-fl8-mse",
        "w4a16-fl8-lsq",
    )
    assert {named_scheme(n).scaling for n in SCHEME_NAMES} == {"absmax", "mse", "lsq"}
    assert named_scheme("w4a16-fl8-lsq").layer_overrides == named_scheme("w4a16-fl8").layer_overrides
    for name in SCHEME_NAMES:
        assert named_scheme(name).name == name
    with pytest.raises(ValueError, match="unknown scheme"):
        named_scheme("w3a16")


@pytest.mark.parametrize("name", SCHEME_NAMES)
def test_dict_and_json_round_trip(name: str, tmp_path) -> None:
    scheme = named_scheme(name)
    assert QuantScheme.from_dict(scheme.to_dict()) == scheme
    path = scheme.save(tmp_path / "sub" / "quant_scheme.json")
    assert json.loads(path.read_text()) == scheme.to_dict()  # plain JSON, no pickled objects
    assert QuantScheme.load(path) == scheme
    assert not list(path.parent.glob(".*.tmp*"))  # atomic write left no temporary behind


def test_json_lists_are_normalised_to_hashable_tuples() -> None:
    data = {"name": "x", "layer_overrides": [["head_pred", 8], ["model.0.*", None]], "keep_float": ["dfl"]}
    scheme = QuantScheme.from_dict(data)
    assert scheme.layer_overrides == (("head_pred", 8), ("model.0.*", None))
    assert hash(scheme) == hash(QuantScheme.from_dict(scheme.to_dict()))


def test_unknown_and_missing_keys_are_rejected() -> None:
    data = named_scheme("w4a16").to_dict()
    with pytest.raises(ValueError, match="unknown QuantScheme keys \\['act_bit_width'\\]"):
        QuantScheme.from_dict({**data, "act_bit_width": 16})
    with pytest.raises(ValueError, match="lacks 'name'"):
        QuantScheme.from_dict({key: value for key, value in data.items() if key != "name"})


@pytest.mark.parametrize(
    ("changes", "error", "match"),
    [
        ({"scaling": "learned"}, ValueError, "not one of"),
        ({"scaling": "lsq", "lsq_init": "percentile"}, ValueError, "lsq_init"),
        ({"scaling": "percentile"}, ValueError, "not one of"),
        ({"granularity": "per_group"}, ValueError, "not one of"),
        ({"weight_bit_width": 1}, ValueError, "outside"),
        ({"weight_bit_width": 16}, ValueError, "outside"),
        ({"weight_bit_width": True}, ValueError, "must be an int"),
        ({"weight_bit_width": 4.0}, ValueError, "must be an int"),
        ({"layer_overrides": (("head_pred", 3.5),)}, ValueError, "must be an int"),
        ({"layer_overrides": (("head_pred",),)}, ValueError, "selector, bit_width"),
        ({"keep_float": ()}, ValueError, "'dfl'"),
        ({"name": ""}, ValueError, "non-empty"),
    ],
)
def test_invalid_schemes_are_rejected(changes: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        QuantScheme(**{"name": "bad", **changes})


def test_roles_resolve_to_module_names(yolov10n: DetectionModel) -> None:
    assert set(ROLES) == {"first_conv", "head_pred", "dfl"}
    assert resolve_selector(yolov10n, "first_conv") == ("model.0.conv",)
    assert resolve_selector(yolov10n, "dfl") == (f"{HEAD}.dfl.conv",)
    head_pred = resolve_selector(yolov10n, "head_pred")
    expected = {
        f"{HEAD}.{branch}.{level}.2" for branch in ("cv2", "cv3", "one2one_cv2", "one2one_cv3") for level in range(3)
    }
    assert set(head_pred) == expected
    # Each is the last module of its branch and a plain conv, not a Conv block.
    assert all(type(yolov10n.get_submodule(name)).__name__ == "Conv2d" for name in head_pred)


def test_patterns_select_convs_and_typos_fail(yolov10n: DetectionModel) -> None:
    assert resolve_selector(yolov10n, f"{HEAD}.cv2.0.*") == tuple(
        f"{HEAD}.cv2.0.{i}" + s for i, s in ((0, ".conv"), (1, ".conv"), (2, ""))
    )
    with pytest.raises(ValueError, match="matches no conv"):
        resolve_selector(yolov10n, "model.99.*")


@pytest.mark.parametrize("name", SCHEME_NAMES)
def test_named_scheme_counts_on_yolov10n(yolov10n: DetectionModel, name: str) -> None:
    bits = layer_bit_widths(yolov10n, named_scheme(name))
    assert _counts(bits) == EXPECTED_COUNTS[name]
    assert bits[f"{HEAD}.dfl.conv"] is None
    special = {"model.0.conv", *resolve_selector(yolov10n, "head_pred")}
    expected_special = SPECIAL_LAYER_BITS[name]
    assert {bits[layer] for layer in special} == {expected_special}


def test_later_overrides_win_and_keep_float_is_last(yolov10n: DetectionModel) -> None:
    scheme = QuantScheme(
        "custom",
        layer_overrides=((f"{HEAD}.*", 8), ("head_pred", 6), (f"{HEAD}.dfl.conv", 8)),
    )
    bits = layer_bit_widths(yolov10n, scheme)
    assert bits[f"{HEAD}.cv2.0.0.conv"] == 8
    assert bits[f"{HEAD}.cv3.1.2"] == 6
    assert bits[f"{HEAD}.dfl.conv"] is None  # keep_float beats every override
    assert bits["model.0.conv"] == 4


def test_schemes_saved_before_lsq_init_existed_still_load() -> None:
    """quant_scheme.json files and checkpoints written before ``lsq_init`` was added equal today's schemes."""
    old = {key: value for key, value in named_scheme("w4a16").to_dict().items() if key != "lsq_init"}
    assert QuantScheme.from_dict(old) == named_scheme("w4a16")
