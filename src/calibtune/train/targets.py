"""RCFT's E-step targets: bin accuracies from the current model and the rank-preserving map.

For an item in E-step bin k with a = â_k, the top option's target is a; the other K−1 options
share 1 − a in the order of their current probabilities p_(2) ≥ … ≥ p_(K):
  q_(j) = (1 − a)(1 + tanh(γ p_(j))) / ((K − 1) + Σ_l tanh(γ p_(l))),  γ = ln(K − 1) / (p_(2)(1 − a)).
Generalised from the reference code's K = 4 (ln 3, 3) to any K ≥ 2 (METHOD.md §6).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..metrics.binning import BinTable, assign_bins, bin_edges, bin_statistics
from ..metrics.validation import softmax, top_label


def rank_preserving_targets(probs: np.ndarray, a: float) -> np.ndarray:
    """Target distribution for one item's K probabilities (K = len(probs)) and bin accuracy a."""
    p = np.asarray(probs, dtype=np.float64)
    k = len(p)
    top = int(np.argmax(p))
    q = np.zeros(k)
    q[top] = a
    rest = np.delete(np.arange(k), top)
    if a >= 1.0:
        return q  # all mass on the top option: non-max targets are exactly zero
    p_rest = p[rest]
    p2 = p_rest.max()
    if p2 <= 0.0:  # degenerate: nothing to rank, share equally
        q[rest] = (1.0 - a) / (k - 1)
        return q
    gamma = np.log(k - 1) / (p2 * (1.0 - a))
    t = np.tanh(gamma * p_rest)
    q[rest] = (1.0 - a) * (1.0 + t) / ((k - 1) + t.sum())
    return q


@dataclass
class EStepResult:
    """Per-item targets over option indices [n, K_max] (0 where masked) and the bin table."""

    targets: np.ndarray
    table: BinTable
    bin_of_item: np.ndarray


def estep_targets(logits: np.ndarray, labels: np.ndarray, mask: np.ndarray, n_bins: int = 10
                  ) -> EStepResult:
    """Bin items by current confidence; â_k = accuracy of bin k; targets from â of each item's bin.

    Every bin takes part, [0.9, 1.0] included; an empty bin holds no item, so it is never read
    (no division by zero).
    """
    p = softmax(logits, mask)
    conf, correct = top_label(p, labels)
    edges = bin_edges(conf, n_bins, "uniform")
    table = bin_statistics(conf, correct, edges)
    bins = assign_bins(conf, edges)
    targets = np.zeros_like(p)
    for i in range(len(p)):
        targets[i, mask[i]] = rank_preserving_targets(p[i, mask[i]], float(table.accuracy[bins[i]]))
    return EStepResult(targets=targets, table=table, bin_of_item=bins)


def format_bin_table(table: BinTable) -> str:
    lines = ["bin            count  accuracy  confidence"]
    for k in range(len(table.count)):
        lo, hi = table.edges[k], table.edges[k + 1]
        if table.count[k]:
            lines.append(f"[{lo:.2f}, {hi:.2f})  {table.count[k]:6d}  {table.accuracy[k]:8.3f}  "
                         f"{table.confidence[k]:10.3f}")
        else:
            lines.append(f"[{lo:.2f}, {hi:.2f})  {0:6d}         -           -")
    return "\n".join(lines)
