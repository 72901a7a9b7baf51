"""Dataclass configs from YAML with command-line overrides: defaults < YAML < command line."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import ConfigError

T = TypeVar("T")


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML ({err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option: value at the top level")
    return data


def build_config(cls: type[T], yaml_path: str | Path | None, overrides: dict[str, Any]) -> T:
    """`cls` from its defaults, then the YAML file, then the non-None `overrides`."""
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    if yaml_path:
        data = load_yaml(yaml_path)
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"{yaml_path}: unknown option(s) {', '.join(unknown)}; "
                              f"known: {', '.join(sorted(names))}")
        values.update(data)
    values.update({k: v for k, v in overrides.items() if v is not None and k in names})
    try:
        return cls(**values)
    except TypeError as err:
        raise ConfigError(f"invalid configuration: {err}") from None
