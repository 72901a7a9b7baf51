"""Calibration-aware fine-tuning: SFT, CFT, RCFT (EM-based ECE regulariser), label smoothing.

`train(model, items, config)` fine-tunes an in-memory model and returns it with plain results;
nothing is written unless an output folder is given. The loss terms are plain functions in
`objective`. Only `config` is imported eagerly (no torch), so the CLI starts fast; the other
names load their module on first use.
"""
from importlib import import_module
from typing import Any

from .config import METHODS, TrainConfig

_LAZY = {
    "train": "finetune", "TrainOutcome": "finetune",
    "completion_loss": "losses", "ece_regulariser": "losses", "full_sequence_loss": "losses",
    "smoothed_completion_loss": "losses",
    "EStepResult": "targets", "estep_targets": "targets", "rank_preserving_targets": "targets",
    "LossTerms": "objective", "loss_terms": "objective", "total_loss": "objective",
}

__all__ = ["METHODS", "TrainConfig", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_LAZY))
