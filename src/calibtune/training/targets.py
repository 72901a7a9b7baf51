"""RCFT's E-step: bin accuracies from the current model, and the rank-preserving targets.

For an item with top-option confidence in bin k and a = â_k, the top option's target is a; the
other K−1 options share 1 − a in the order of their current probabilities p_(2) ≥ … ≥ p_(K):
  q_(j) = (1 − a)(1 + tanh(γ p_(j))) / ((K − 1) + Σ_l tanh(γ p_(l))),  γ = ln(K − 1) / (p_(2)(1 − a)).
Generalised from the reference code's K = 4 (ln 3, 3) to any K ≥ 2 (docs/method.md §6).

Two readings of the M-step (`--ece-targets`):
- `live` (default, the reference code's and the EM reading): the E-step estimates only the bin
  accuracies â_k (and counts N_k); every M-step batch re-bins each item by its *current*
  confidence, takes its current argmax as the top option and builds q from its current
  probabilities (as a constant: the reference lets gradient flow through q, we do not).
- `frozen`: the item's bin, top option and whole target vector are fixed at the last E-step.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..defaults import N_BINS
from ..errors import InputError
from ..metrics.binning import BinTable, assign_bins, bin_edges, bin_statistics
from ..metrics.validation import softmax, top_label


def rank_preserving_targets(probs: np.ndarray, a: np.ndarray, mask: np.ndarray | None = None
                            ) -> np.ndarray:
    """Targets [n, K] for probabilities [n, K] (rows sum to 1 over `mask`) and top targets a [n].

    The top option is each row's argmax over its own options; masked options get 0. a = 1 gives
    zero non-max targets; a row whose other options all have probability 0 shares 1 − a equally.
    """
    one_row = np.ndim(probs) == 1
    p = np.atleast_2d(np.asarray(probs, dtype=np.float64))
    n, k = p.shape
    m = np.ones_like(p, bool) if mask is None else np.atleast_2d(np.asarray(mask, bool))
    a = np.broadcast_to(np.asarray(a, dtype=np.float64), (n,))
    rows = np.arange(n)
    top = np.where(m, p, -np.inf).argmax(axis=1)
    rest = m.copy()
    rest[rows, top] = False
    n_rest = rest.sum(axis=1)
    p_rest = np.where(rest, p, 0.0)
    p2 = p_rest.max(axis=1)
    spare = 1.0 - a
    with np.errstate(divide="ignore", invalid="ignore"):
        gamma = np.where((p2 > 0) & (spare > 0),
                         np.log(np.maximum(n_rest, 1)) / (p2 * spare), 0.0)
    t = np.where(rest, np.tanh(gamma[:, None] * p_rest), 0.0)
    share = spare[:, None] * (1.0 + t) / (n_rest + t.sum(axis=1))[:, None]
    q = np.where(rest, share, 0.0)
    q[spare <= 0] = 0.0  # a = 1: all mass on the top option
    q[rows, top] = a
    return q[0] if one_row else q


@dataclass
class EStepResult:
    """The bin table of the E-step and the frozen per-item targets [n, K_max] (0 where masked)."""

    targets: np.ndarray
    table: BinTable
    bin_of_item: np.ndarray
    bin_prior: float = 0.0

    @property
    def bin_accuracy(self) -> np.ndarray:
        """â_k for every bin, the top option's target (`target_accuracies`)."""
        return target_accuracies(self.table, self.bin_prior)

    @property
    def bin_count(self) -> np.ndarray:
        """N_k for every bin (the `bin` reduction's weights); an empty bin takes its nearest
        non-empty bin's count, whatever `bin_prior` is."""
        return fill_empty_bins(self.table.count.astype(np.float64), self.table.count)


def target_accuracies(table: BinTable, prior: float = 0.0) -> np.ndarray:
    """â_k for every bin of an E-step table.

    prior = 0: each bin's own accuracy; an empty bin takes the nearest non-empty bin's (the lower
    one on a tie), so an item that moves into it during the M-step still has a target.
    prior = m > 0: (S_k + m·A) / (N_k + m), with S_k the bin's correct items and A the accuracy of
    all the scored items: m pseudo-items at the overall accuracy, so a bin of a few lucky items
    does not set the target 1.0, and an empty bin takes A rather than a neighbour's accuracy that
    may rest on three items (how RCFT drifted into one-letter overconfidence in docs/alignment.md's
    study).
    """
    if prior == 0:
        return fill_empty_bins(table.accuracy, table.count)
    count = np.asarray(table.count, dtype=np.float64)
    if count.sum() == 0:
        raise InputError("every bin is empty: the E-step scored no item")
    correct = np.where(count > 0, np.nan_to_num(table.accuracy) * count, 0.0)
    overall = correct.sum() / count.sum()
    return (correct + prior * overall) / (count + prior)


def fill_empty_bins(values: np.ndarray, count: np.ndarray) -> np.ndarray:
    """`values` with each empty bin's entry taken from the nearest non-empty bin."""
    full = np.flatnonzero(count > 0)
    if full.size == 0:
        raise InputError("every bin is empty: the E-step scored no item")
    nearest = full[np.abs(np.arange(len(count))[:, None] - full[None, :]).argmin(axis=1)]
    return np.asarray(values, dtype=np.float64)[nearest]


def estep_targets(logits: np.ndarray, labels: np.ndarray, mask: np.ndarray, n_bins: int = N_BINS,
                  bin_prior: float = 0.0) -> EStepResult:
    """Bin items by current confidence; â_k = accuracy of bin k (`target_accuracies`, with
    `bin_prior` pseudo-items); frozen targets from â of each item's bin. Every bin takes part,
    [0.9, 1.0] included; an empty bin is never divided by."""
    p = softmax(logits, mask)
    conf, correct = top_label(p, labels)
    edges = bin_edges(conf, n_bins, "uniform")
    table = bin_statistics(conf, correct, edges)
    bins = assign_bins(conf, edges)
    targets = rank_preserving_targets(p, target_accuracies(table, bin_prior)[bins], mask)
    return EStepResult(targets=targets, table=table, bin_of_item=bins, bin_prior=bin_prior)


def live_targets(probs: np.ndarray, mask: np.ndarray, edges: np.ndarray,
                 bin_accuracy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(targets [n, K], bin of each item) from the items' *current* probabilities: each item is
    binned by its current confidence and its top target is that bin's E-step accuracy."""
    p = np.where(mask, probs, 0.0)
    bins = assign_bins(p.max(axis=1), edges)
    return rank_preserving_targets(p, bin_accuracy[bins], mask), bins


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
