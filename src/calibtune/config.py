"""Configuration dataclasses: each option declared once, loaded from YAML, overridden on the CLI.

A field made with `option(default, help, ...)` carries everything the other layers need: its
help text and command-line flag (the CLI builds its options from them), hidden aliases that keep
old commands working, and the transformers `TrainingArguments` name it maps to. Values resolve
as defaults < YAML file < command line.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

import yaml

from .errors import ConfigError

T = TypeVar("T")
_MISSING: Any = dataclasses.MISSING


def option(default: Any = _MISSING, help: str = "", *, flag: str | None = None,
           aliases: tuple[str, ...] = (), invert: bool = False, hf: str | None = None,
           factory: Callable[[], Any] | None = None, cli: bool = True,
           keys: tuple[str, ...] = (), argument: bool = False) -> Any:
    """A dataclass field with its one declaration of help text and command-line flag.

    A new option's default must be the behaviour before it existed: a checkpoint sealed by an
    older calibtune resumes while the option is left at its default (`faults.field_defaults`).

    `flag` defaults to ``--field-name``; `aliases` are older flags, accepted but hidden;
    `invert` makes a bool flag set the field to False (``--full-finetune`` → ``lora: false``);
    `hf` names the `TrainingArguments` (or TRL config) field it is copied to; `cli=False` keeps
    it YAML-only; `keys` are older YAML / config.yaml names, still read; `argument` makes it a
    positional argument of the command (a list: one or more).
    """
    metadata = {"help": help, "flag": flag, "aliases": tuple(aliases), "invert": invert,
                "hf": hf, "cli": cli, "keys": tuple(keys), "argument": argument}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclass(frozen=True)
class OptionSpec:
    """One command-line option of a config field, as the CLI declares it."""

    name: str
    type: type
    default: Any
    help: str
    flag: str
    aliases: tuple[str, ...]
    invert: bool
    argument: bool = False


def option_specs(cls: type) -> list[OptionSpec]:
    """The CLI options of `cls`'s fields: those declared in `cls` itself first, then inherited."""
    hints = typing.get_type_hints(cls)
    own = set(cls.__dict__.get("__annotations__", {}))
    fields = sorted(dataclasses.fields(cls), key=lambda f: f.name not in own)
    specs = []
    for f in fields:
        meta = f.metadata
        if "help" not in meta or not meta["cli"]:
            continue
        specs.append(OptionSpec(f.name, _plain_type(hints[f.name]), f.default, meta["help"],
                                meta["flag"] or "--" + f.name.replace("_", "-"),
                                meta["aliases"], meta["invert"], meta.get("argument", False)))
    return specs


def _plain_type(hint: Any) -> type:
    """int for `int | None`, list[int] for `list[int] | None`: the type a command-line value
    is parsed as."""
    if typing.get_origin(hint) is list:
        return hint
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def hf_arguments(config: Any, target: type | None = None) -> dict[str, Any]:
    """{TrainingArguments name: value} of every field declared with `hf=` (only the names
    `target`, a dataclass such as `TrainingArguments` or TRL's `DPOConfig`, has)."""
    accepted = None if target is None else {f.name for f in dataclasses.fields(target)}
    return {f.metadata["hf"]: getattr(config, f.name) for f in dataclasses.fields(config)
            if f.metadata.get("hf") and (accepted is None or f.metadata["hf"] in accepted)}


def renamed_keys(cls: type) -> dict[str, str]:
    """{old YAML key: field name} of `cls` (a config file with `bins:` sets `n_bins`)."""
    return {old: f.name for f in dataclasses.fields(cls) for old in f.metadata.get("keys", ())}


def current_keys(cls: type, data: dict) -> dict:
    """`data` with old keys renamed (a new key given too wins)."""
    renamed = renamed_keys(cls)
    out = {renamed.get(k, k): v for k, v in data.items() if k not in renamed}
    for old, new in renamed.items():
        if old in data:
            out.setdefault(new, data[old])
    return out


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
        data = current_keys(cls, load_yaml(yaml_path))
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
