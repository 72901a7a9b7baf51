"""Accuracy and ECE at the end of every epoch, held-out and on training items, for every method.

These are the points of a run's trajectory in the accuracy–ECE plane (`calibtune report
--plane`): each point carries a bootstrap interval and the noise floor's q95 of its own
confidences, so the plane can show when ECE leaves the noise band (docs/theory.md §4).
"""
from __future__ import annotations

import logging
from typing import Any, Callable

import numpy as np
from transformers import TrainerCallback

from ..data.items import MCQItem
from ..metrics.proper import accuracy
from ..metrics.uncertainty import bootstrap_ci, ece_noise_floor
from ..metrics.validation import top_label

log = logging.getLogger(__name__)
N_BOOT = 200  # per epoch point: enough for a 95% interval of a trajectory


def point_metrics(probs: np.ndarray, labels: np.ndarray, mask: np.ndarray, n_bins: int,
                  prefix: str, seed: int = 0) -> dict:
    """{prefix}_n / _accuracy / _ece / _confidence with 95% intervals and the noise floor q95."""
    from ..metrics.calibration import ece as ece_fn

    conf, correct = top_label(probs, labels)
    acc = bootstrap_ci(lambda c: float(np.mean(c)), correct.astype(float), n_boot=N_BOOT,
                       seed=seed)
    err = bootstrap_ci(lambda p, y, m: ece_fn(p, y, n_bins, mask=m), probs, labels, mask,
                       n_boot=N_BOOT, seed=seed)
    floor = ece_noise_floor(conf, n_bins, n_sim=200, seed=seed)
    return {f"{prefix}_n": int(len(labels)),
            f"{prefix}_accuracy": accuracy(probs, labels, mask),
            f"{prefix}_accuracy_ci": [acc.low, acc.high],
            f"{prefix}_confidence": float(conf.mean()),
            f"{prefix}_ece": err.estimate, f"{prefix}_ece_ci": [err.low, err.high],
            f"{prefix}_noise_q95": floor.q95}


class EpochEvalCallback(TrainerCallback):
    """Scores a fixed held-out sample (and a fixed sample of training items) with the current
    model at each epoch end and adds the points to the log history."""

    def __init__(self, items: list[MCQItem], scorer_for: Callable[[Any], Any], n_bins: int,
                 train_items: list[MCQItem] | None = None) -> None:
        self.items, self.scorer_for, self.n_bins = items, scorer_for, n_bins
        self.train_items = train_items or []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        """The training items before the first step (epoch 0): the baseline of the gap between
        training and held-out accuracy that `diagnose --train-run` subtracts (G − G₀). Only the
        training items: the held-out baseline is eval_before. Not again on a resume."""
        if not self.train_items or state.global_step > 0 or model is None:
            return
        (train,) = self._score(model, self.train_items)
        entry = {"epoch": 0.0, "step": 0} | point_metrics(
            train.probs(), train.labels, train.mask, self.n_bins, "train")
        state.log_history.append(entry)
        log.info("before training: training items accuracy %.3f, ECE %.3f on %d",
                 entry["train_accuracy"], entry["train_ece"], entry["train_n"])

    def _score(self, model, *item_lists: list[MCQItem]) -> list:
        """The current model's scores of each list (None for an empty one), in eval mode."""
        was_training = model.training
        model.eval()
        scorer = self.scorer_for(model)
        scores = [scorer.score(items) if items else None for items in item_lists]
        if was_training:
            model.train()
        return scores

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        scores, train = self._score(model, self.items, self.train_items)
        entry = {"epoch": round(float(state.epoch or 0), 4), "step": state.global_step}
        entry |= point_metrics(scores.probs(), scores.labels, scores.mask, self.n_bins, "heldout")
        if train is not None:
            entry |= point_metrics(train.probs(), train.labels, train.mask, self.n_bins, "train")
        state.log_history.append(entry)
        log.info("epoch %.2f: held-out accuracy %.3f, ECE %.3f on %d items%s", entry["epoch"],
                 entry["heldout_accuracy"], entry["heldout_ece"], entry["heldout_n"],
                 f"; training items accuracy {entry['train_accuracy']:.3f}, ECE "
                 f"{entry['train_ece']:.3f} on {entry['train_n']}" if train is not None else "")
