"""Calibration metrics inside Inspect: a scorer that keeps the option probabilities, and metrics.

Inspect (UK AISI, https://inspect.aisi.org.uk/) has no calibration metric built in. Add
`choice_probabilities()` as a scorer of a multiple-choice task run with ``logprobs=True,
top_logprobs=K``; it reads the option-letter probabilities from the output's log-probabilities
exactly as ``calibtune eval --from inspect`` does (calibtune.interop.inspect_log: answer
position, letters outside the top-k = probability 0) and stores them in the Score's metadata,
where `ece()`, `cw_ece()` and `brier()` read them. ECE comes with the 95th percentile of its
noise floor (the ECE a perfectly calibrated model with these confidences shows on this many
items), reported as ``ece_noise_q95``: an ECE below it cannot be told from sampling noise.

Confidence is the largest option probability (calibtune's top-label confidence), not P(target).
A sample whose answer position holds no option letter in its top-k scores NOANSWER (counted
wrong by `accuracy()`) and is left out of the calibration metrics. With several epochs Inspect's
reducers carry the first epoch's metadata, so the metrics see the first epoch's probabilities.

Needs inspect_ai (``pip install 'calibtune[inspect]'``); calibtune itself does not.
"""
from __future__ import annotations

import numpy as np

from .data.items import LETTERS
from .interop.inspect_log import INSTALL_HINT, id_order, letter_probabilities, output_tokens
from .metrics import brier as _brier
from .metrics import classwise_ece, ece_noise_floor, top_label
from .metrics import ece as _ece
from .scores import pad_option_rows

try:
    from inspect_ai.scorer import (CORRECT, INCORRECT, NOANSWER, Metric, SampleScore, Score,
                                   Target, accuracy, metric, scorer, stderr)
    from inspect_ai.solver import TaskState
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError(INSTALL_HINT) from err

KEY = "calibtune"  # the Score.metadata entry holding {"probs": [...], "label": int}

__all__ = ["brier", "choice_probabilities", "cw_ece", "ece", "score_arrays"]


def score_arrays(scores: list[SampleScore]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(probs [n, K_max], labels [n], mask) of the scores that carry option probabilities."""
    rows, labels = [], []
    for s in sorted(scores, key=lambda s: id_order(s.sample_id)):  # the import's order
        data = (s.score.metadata or {}).get(KEY)
        if data and data.get("probs"):
            rows.append(data["probs"])
            labels.append(int(data["label"]))
    if not rows:
        return np.zeros((0, 2)), np.zeros(0, dtype=np.int64), np.zeros((0, 2), dtype=bool)
    probs, mask = pad_option_rows(rows)
    return probs, np.array(labels), mask


@metric
def ece(n_bins: int = 10) -> Metric:
    """Top-label ECE (equal-width bins) and its noise floor's 95th percentile (``ece_noise_q95``)."""
    def compute(scores: list[SampleScore]) -> dict[str, float]:
        probs, labels, mask = score_arrays(scores)
        if not len(labels):
            return {"ece": float("nan"), "ece_noise_q95": float("nan")}
        conf, _ = top_label(probs, labels)
        return {"ece": _ece(probs, labels, n_bins, mask=mask),
                "ece_noise_q95": ece_noise_floor(conf, n_bins).q95}
    return compute


@metric
def cw_ece(n_bins: int = 10) -> Metric:
    """Classwise ECE: the binned calibration error of every option's probability, averaged."""
    def compute(scores: list[SampleScore]) -> float:
        probs, labels, mask = score_arrays(scores)
        return classwise_ece(probs, labels, n_bins, mask=mask) if len(labels) else float("nan")
    return compute


@metric
def brier() -> Metric:
    """Multiclass Brier score over the options (calibtune.metrics.brier)."""
    def compute(scores: list[SampleScore]) -> float:
        probs, labels, mask = score_arrays(scores)
        return _brier(probs, labels, mask) if len(labels) else float("nan")
    return compute


@scorer(metrics=[accuracy(), stderr(), ece(), cw_ece(), brier()])
def choice_probabilities():
    """Score a multiple-choice sample by its most probable option letter and keep every option's
    probability in ``metadata["calibtune"]`` for the calibration metrics."""
    async def score(state: TaskState, target: Target) -> Score:
        k = len(state.choices)
        gold = LETTERS.index(target.text.strip().upper())
        tokens, top = output_tokens(state.output, file="inspect task", sample=str(state.sample_id))
        lp = letter_probabilities(tokens, top, k)
        if lp is None:
            return Score(value=NOANSWER, explanation="no option letter in the answer's top_logprobs",
                         metadata={KEY: {"probs": None, "label": gold}})
        best = int(np.argmax(lp.probs))
        return Score(value=CORRECT if best == gold else INCORRECT, answer=LETTERS[best],
                     explanation=" ".join(f"{LETTERS[i]}={p:.3f}" for i, p in enumerate(lp.probs)),
                     metadata={KEY: {"probs": lp.probs, "label": gold, "rule": lp.rule,
                                     "unseen_mass": lp.unseen_mass, "missing": lp.missing}})
    return score
