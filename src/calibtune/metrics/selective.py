"""Confidence as a ranking of correctness: AUROC, selective accuracy, accuracy–coverage curve."""
from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from .validation import MetricInputError, check_inputs, top_label


def auroc_from_confidence(conf: np.ndarray, correct: np.ndarray) -> float:
    """Probability that a correct item has higher confidence than a wrong one (ties count ½).

    NaN when all items are correct or all wrong (AUROC is undefined then).
    """
    pos = correct.astype(bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(conf)  # average ranks handle ties (Mann–Whitney U)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auroc(probs: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None, *,
          from_logits: bool = False) -> float:
    """AUROC of top-label confidence as a score for "the answer is correct"."""
    p, y, _ = check_inputs(probs, labels, mask, from_logits=from_logits)
    return auroc_from_confidence(*top_label(p, y))


def accuracy_coverage_curve(conf: np.ndarray, correct: np.ndarray
                            ) -> tuple[np.ndarray, np.ndarray]:
    """(coverage, accuracy) when answering only the m most confident items, m = 1..n.

    Items with equal confidence enter together, so the curve does not depend on item order.
    """
    order = np.argsort(-conf, kind="stable")
    c_sorted, ok_sorted = conf[order], correct[order]
    cum = np.cumsum(ok_sorted)
    ends = np.r_[np.flatnonzero(np.diff(c_sorted) != 0), len(c_sorted) - 1]  # last of each tie
    m = ends + 1
    return m / len(conf), cum[ends] / m


def selective_accuracy(probs: np.ndarray, labels: np.ndarray, coverage: float,
                       mask: np.ndarray | None = None, *, from_logits: bool = False) -> float:
    """Accuracy over the ⌈coverage·n⌉ most confident items (ties at the cut shared pro rata)."""
    if not 0.0 < coverage <= 1.0:
        raise MetricInputError(f"coverage must be in (0, 1], got {coverage}")
    p, y, _ = check_inputs(probs, labels, mask, from_logits=from_logits)
    k = int(np.ceil(coverage * len(y)))
    return float(selective_accuracies(*top_label(p, y))[k - 1])


def area_under_accuracy_coverage(probs: np.ndarray, labels: np.ndarray,
                                 mask: np.ndarray | None = None, *, from_logits: bool = False
                                 ) -> float:
    """Mean selective accuracy over coverages 1/n, 2/n, …, 1 (higher is better; 1 − AURC)."""
    p, y, _ = check_inputs(probs, labels, mask, from_logits=from_logits)
    return float(np.mean(selective_accuracies(*top_label(p, y))))


def selective_accuracies(conf: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """Selective accuracy at every k = 1..n, ties shared pro rata, in O(n log n)."""
    order = np.argsort(-conf, kind="stable")
    c, ok = conf[order], correct[order]
    n = len(c)
    starts = np.r_[0, np.flatnonzero(np.diff(c) != 0) + 1]
    group = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, n]))
    group_mean = np.bincount(group, ok) / np.bincount(group)
    cum_before = np.r_[0.0, np.cumsum(ok)][starts]  # correct answers before each tie group
    k = np.arange(1, n + 1)
    g = group[k - 1]
    return (cum_before[g] + (k - starts[g]) * group_mean[g]) / k
