"""Scheme JSON files: every validation error names the key and the file; selectors that match nothing are found
when the scheme meets a model, and that error names the selector and the file too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ultralytics.nn.tasks import DetectionModel

import auto_quantize_model  # noqa: F401  (before ultralytics: offline environment)
from auto_quantize_model.quant.scheme import QuantScheme, named_scheme, resolve_scheme
from auto_quantize_model.quant.yolov10 import layer_bit_widths, quantize_model
from auto_quantize_model.runs.variants import parse_variant


def _write(tmp_path: Path, data: object, name: str = "my_scheme.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


@pytest.fixture(scope="module")
def yolov10n() -> DetectionModel:
    return DetectionModel("yolov10n.yaml", nc=4, verbose=False)


@pytest.mark.parametrize(
    ("changes", "key", "detail"),
    [
        ({"act_bit_width": 16}, "act_bit_width", "unknown QuantScheme keys"),
        ({"weight_bit_width": 9}, "weight_bit_width", "outside [2, 8]"),
        ({"weight_bit_width": 1}, "weight_bit_width", "outside [2, 8]"),
        ({"weight_bit_width": "4"}, "weight_bit_width", "must be an int"),
        ({"scaling": "percentile"}, "scaling", "not one of"),
        ({"granularity": "per_group"}, "granularity", "not one of"),
        ({"layer_overrides": [["model.23.*", 9]]}, "layer_overrides[0]", "outside [2, 8]"),
        ({"layer_overrides": [["head_pred", 8], ["model.0.*"]]}, "layer_overrides[1]", "(selector, bit_width"),
        ({"layer_overrides": [["head_pred", 8], "model.0.*"]}, "layer_overrides[1]", "(selector, bit_width"),
        ({"layer_overrides": [[7, 8]]}, "layer_overrides[0]", "(selector, bit_width"),
        ({"layer_overrides": "head_pred"}, "layer_overrides", "must be a list"),
        ({"keep_float": "dfl"}, "keep_float", "must be a list"),
        ({"keep_float": []}, "keep_float", "'dfl'"),
        ({"name": ""}, "name", "non-empty"),
    ],
)
def test_invalid_scheme_file_errors_name_the_key_and_the_file(tmp_path, changes, key, detail) -> None:
    path = _write(tmp_path, {**named_scheme("w4a16").to_dict(), **changes})
    with pytest.raises(ValueError) as caught:
        resolve_scheme(path)
    message = str(caught.value)
    assert str(path) in message
    assert key in message
    assert detail in message


def test_a_file_that_is_not_a_scheme_object_is_named(tmp_path) -> None:
    listing = _write(tmp_path, [["head_pred", 8]])
    with pytest.raises(ValueError, match=f"{listing}.*JSON object"):
        resolve_scheme(listing)
    broken = tmp_path / "broken.json"
    broken.write_text('{"name": "x",')
    with pytest.raises(ValueError, match=f"{broken}.*not valid JSON"):
        resolve_scheme(broken)
    with pytest.raises(ValueError, match="missing.json not found"):
        resolve_scheme(tmp_path / "missing.json")


def test_a_valid_file_loads_equal_to_its_scheme_and_remembers_only_its_source(tmp_path) -> None:
    scheme = QuantScheme("w4-head8", layer_overrides=(("model.23.one2one_cv3.*", 8),))
    path = scheme.save(tmp_path / "w4-head8.json")
    loaded = resolve_scheme(path)
    assert loaded == scheme and hash(loaded) == hash(scheme)
    assert loaded.source == str(path)
    assert "source" not in loaded.to_dict()  # the file name is not part of the scheme
    with pytest.raises(ValueError, match="unknown QuantScheme keys \\['source'\\]"):
        QuantScheme.from_dict({**scheme.to_dict(), "source": "x.json"})
    assert parse_variant(f"ptq-{path}").name == "ptq-w4-head8"
    assert parse_variant(f"qat-{path}").scheme == scheme


@pytest.mark.parametrize("key", ["layer_overrides", "keep_float"])
def test_a_selector_matching_no_conv_names_the_selector_and_the_file(tmp_path, yolov10n, key) -> None:
    data = named_scheme("w4a16").to_dict()
    if key == "layer_overrides":
        data["layer_overrides"] = [["head_pred", 8], ["model.99.*", 8]]
        where = "layer_overrides[1]"
    else:
        data["keep_float"] = ["dfl", "model.23.one2one_cv9.*"]
        where = "keep_float[1]"
    path = _write(tmp_path, data)
    scheme = resolve_scheme(path)  # the file itself is valid: the typo shows only on a model
    with pytest.raises(ValueError) as caught:
        quantize_model(DetectionModel("yolov10n.yaml", nc=4, verbose=False), scheme)
    message = str(caught.value)
    assert str(path) in message and where in message and "matches no conv" in message
    assert repr(data[key][1] if key == "keep_float" else data[key][1][0]) in message
    with pytest.raises(ValueError, match=str(path)):
        layer_bit_widths(yolov10n, scheme)


def test_a_scheme_built_in_code_is_named_by_its_name(yolov10n) -> None:
    scheme = QuantScheme("typo-scheme", layer_overrides=(("model.99.*", 8),))
    with pytest.raises(ValueError, match="quant scheme 'typo-scheme': layer_overrides\\[0\\]: selector 'model.99.\\*'"):
        layer_bit_widths(yolov10n, scheme)
