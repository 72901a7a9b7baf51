"""Held-out accuracy and ECE at the end of every epoch, for every method (not only RCFT)."""
from __future__ import annotations

import logging
from typing import Any, Callable

from transformers import TrainerCallback

from ..data.items import MCQItem
from ..metrics.calibration import ece
from ..metrics.proper import accuracy

log = logging.getLogger(__name__)


class EpochEvalCallback(TrainerCallback):
    """Scores a fixed held-out sample with the current model and adds it to the log history."""

    def __init__(self, items: list[MCQItem], scorer_for: Callable[[Any], Any], n_bins: int) -> None:
        self.items, self.scorer_for, self.n_bins = items, scorer_for, n_bins

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        was_training = model.training
        model.eval()
        scores = self.scorer_for(model).score(self.items)
        if was_training:
            model.train()
        probs = scores.probs()
        entry = {"epoch": round(float(state.epoch or 0), 4), "step": state.global_step,
                 "heldout_n": len(self.items),
                 "heldout_accuracy": accuracy(probs, scores.labels, scores.mask),
                 "heldout_ece": ece(probs, scores.labels, self.n_bins, mask=scores.mask)}
        state.log_history.append(entry)
        log.info("epoch %.2f: held-out accuracy %.3f, ECE %.3f on %d items", entry["epoch"],
                 entry["heldout_accuracy"], entry["heldout_ece"], entry["heldout_n"])
