"""Preference alignment (DPO / IPO through TRL) and how much of it a calibration fine-tune keeps.

TRL and PEFT are imported only when a function needs them.
"""
from .config import LOSSES, AlignConfig
from .pairs import (PreferenceLoadResult, PreferencePair, load_preferences, pair_from_item,
                    pair_from_row, pairs_from_items, pairs_to_jsonl, split_pairs, wrong_option)

__all__ = ["LOSSES", "AlignConfig", "PreferenceLoadResult", "PreferencePair", "load_preferences",
           "pair_from_item", "pair_from_row", "pairs_from_items", "pairs_to_jsonl", "split_pairs",
           "wrong_option"]
