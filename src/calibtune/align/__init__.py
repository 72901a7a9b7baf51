"""Preference alignment (DPO / IPO through TRL) and how much of it a calibration fine-tune keeps.

`AlignConfig` imports nothing heavy (the CLI builds its options from it); the pairs, the
trainer and the retention measures load torch, TRL and PEFT on first use.
"""
from __future__ import annotations

import importlib

from .config import LOSSES, AlignConfig

_LAZY = {name: "pairs" for name in (
    "PreferenceLoadResult", "PreferencePair", "load_preferences", "pair_from_item",
    "pair_from_row", "pairs_from_items", "pairs_to_jsonl", "split_pairs", "wrong_option")}

__all__ = ["LOSSES", "AlignConfig", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
