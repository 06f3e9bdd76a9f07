"""YAML configs with CLI overrides: unknown keys are errors that name the file."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the file and the fix."""


def load_yaml_mapping(path: Path) -> dict[str, Any]:
    """Load a YAML file that must hold a mapping (an empty file is an empty mapping)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error})") from error
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of key: value, got {type(data).__name__}")
    return data


def check_keys(config: Mapping[str, Any], allowed: Iterable[str], source: str, forbidden: Iterable[str] = ()) -> None:
    """Raise :class:`ConfigError` for keys outside ``allowed`` or inside ``forbidden``."""
    allowed = set(allowed)
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown}; fix the spelling or remove them")
    owned = sorted(set(config) & set(forbidden))
    if owned:
        raise ConfigError(f"{source}: key(s) {owned} are set by the command line, not by this file; remove them")


def parse_overrides(pairs: Iterable[str]) -> dict[str, Any]:
    """Parse ``KEY=VALUE`` strings; values are read as YAML scalars (``0.01``, ``false``, ``[1,2]``)."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {pair!r}: expected KEY=VALUE")
        try:
            overrides[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError as error:
            raise ConfigError(f"override {pair!r}: value is not valid YAML ({error})") from error
    return overrides


def dump_yaml(data: Mapping[str, Any]) -> str:
    """Serialize a config mapping in file order."""
    return yaml.safe_dump(dict(data), sort_keys=False, default_flow_style=None)
