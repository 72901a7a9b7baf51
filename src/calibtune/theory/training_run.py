"""The fine-tuned model measured on its own training items: the inputs of the regime rule R2."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ..integrity import json_ready
from ..metrics.validation import MetricInputError, check_inputs, normalised, top_label
from .regime import proportion_var

TRAIN_KEYS = ("accuracy", "confidence", "n", "confidences", "correct", "accuracy_before",
              "n_before", "heldout_accuracy_before", "same_distribution", "item_sets")


@dataclass(frozen=True)
class TrainingRun:
    """The fine-tuned model measured on its own training items (A_T, C_T of docs/theory.md §3).

    `confidences` / `correct` (per training item) are optional; with them Proposition 7 is also
    evaluated. `from_scores` fills everything from the training items' scores.

    The regime test needs `n` (A_T's sampling error enters the floor with weight 2) and a
    baseline for the gap the item sets had before fine-tuning: either measured
    (`accuracy_before` on `n_before` training items and `heldout_accuracy_before` on the same
    held-out items, both by the model before fine-tuning: G₀ = their difference) or
    `same_distribution=True` (training and held-out items are exchangeable: G₀ = 0 assumed).
    `item_sets` says in words how the two sets were drawn (shown in the verdict).
    """

    accuracy: float
    confidence: float | None = None
    n: int | None = None
    confidences: np.ndarray | None = field(default=None, repr=False, compare=False)
    correct: np.ndarray | None = field(default=None, repr=False, compare=False)
    accuracy_before: float | None = None
    n_before: int | None = None
    heldout_accuracy_before: float | None = None
    same_distribution: bool | None = None
    item_sets: str | None = None

    def __post_init__(self) -> None:
        for name in ("accuracy", "confidence", "accuracy_before", "heldout_accuracy_before"):
            v = getattr(self, name)
            if v is None and name != "accuracy":
                continue
            if not isinstance(v, (int, float, np.integer, np.floating)) or not 0 <= float(v) <= 1:
                raise MetricInputError(f"train {name} must be a number in [0, 1], got {v!r}")
        for name in ("n", "n_before"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, (int, np.integer)) or v < 1):
                raise MetricInputError(f"train {name} must be a positive integer, got {v!r}")
        if (self.accuracy_before is None) != (self.heldout_accuracy_before is None) or (
                self.accuracy_before is not None and self.n_before is None):
            raise MetricInputError("the gap before fine-tuning needs accuracy_before, n_before "
                                   "and heldout_accuracy_before together")
        if (self.confidences is None) != (self.correct is None):
            raise MetricInputError("train confidences and correct must be given together")
        if self.confidences is not None and len(self.confidences) != len(self.correct):
            raise MetricInputError("train confidences and correct must have the same length")

    @classmethod
    def from_scores(cls, probs: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None, *,
                    from_logits: bool = False) -> TrainingRun:
        p, y, m = check_inputs(probs, labels, mask, from_logits=from_logits)
        conf, correct = top_label(normalised(p, m), y)
        return cls(float(correct.mean()), float(conf.mean()), len(y), conf, correct)

    @classmethod
    def coerce(cls, train) -> TrainingRun:
        if isinstance(train, TrainingRun):
            return train
        if isinstance(train, Mapping):
            unknown = set(train) - set(TRAIN_KEYS)
            if "accuracy" not in train or unknown:
                raise MetricInputError(f"train needs 'accuracy' and may have {TRAIN_KEYS[1:]}; "
                                       f"got {sorted(train)}")
            return cls(**train)
        raise MetricInputError(f"train must be a TrainingRun or a mapping, got {type(train).__name__}")

    def baseline(self, n_heldout: int) -> tuple[float, float] | None:
        """(G₀, its variance) when measured, (0, 0) when the sets are exchangeable, else None."""
        if self.accuracy_before is not None:
            return (self.accuracy_before - self.heldout_accuracy_before,
                    proportion_var(self.accuracy_before, int(self.n_before))
                    + proportion_var(self.heldout_accuracy_before, n_heldout))
        return (0.0, 0.0) if self.same_distribution else None

    def to_dict(self) -> dict:
        return json_ready({"accuracy": self.accuracy, "confidence": self.confidence, "n": self.n,
                           "per_item": self.confidences is not None,
                           "accuracy_before": self.accuracy_before, "n_before": self.n_before,
                           "heldout_accuracy_before": self.heldout_accuracy_before,
                           "same_distribution": self.same_distribution,
                           "item_sets": self.item_sets})
