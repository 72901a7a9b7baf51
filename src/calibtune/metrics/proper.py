"""Accuracy and proper scoring rules on the option distribution."""
from __future__ import annotations

import numpy as np

from .validation import check_inputs, log_softmax

PROB_FLOOR = 1e-15  # NLL of a probability-0 answer is reported as −log(1e-15) ≈ 34.5, not inf


def accuracy(probs: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None, *,
             from_logits: bool = False) -> float:
    """Share of items whose argmax option (first on ties) is the gold one."""
    p, y, _ = check_inputs(probs, labels, mask, from_logits=from_logits)
    return float(np.mean(p.argmax(axis=1) == y))


def brier(probs: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None, *,
          from_logits: bool = False) -> float:
    """Multiclass Brier score: mean over items of Σ_j (p_ij − 1[y_i = j])², in [0, 2]."""
    p, y, m = check_inputs(probs, labels, mask, from_logits=from_logits)
    onehot = np.zeros_like(p)
    onehot[np.arange(len(y)), y] = 1.0
    return float(np.mean(np.sum(np.where(m, (p - onehot) ** 2, 0.0), axis=1)))


def gold_nll(logits: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean −log softmax(logits)[label] over items, exact, without input checks: the one NLL
    from logits behind `nll`, `summarize` and the temperature fit (which calls it per step)."""
    return float(-np.mean(log_softmax(logits, mask)[np.arange(len(labels)), labels]))


def nll(probs: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None, *,
        from_logits: bool = False) -> float:
    """Mean negative log-likelihood of the gold option (exact from logits; floored from probs)."""
    if from_logits:
        _, y, m = check_inputs(probs, labels, mask, from_logits=True)
        return gold_nll(np.asarray(probs, float), y, m)
    p, y, _ = check_inputs(probs, labels, mask)
    return float(-np.mean(np.log(np.maximum(p[np.arange(len(y)), y], PROB_FLOOR))))
