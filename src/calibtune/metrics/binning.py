"""Binning, written once and used by every ECE variant, the RCFT E-step and the diagrams.

Bins are left-closed [e_k, e_{k+1}) except the last, which also holds 1.0 (docs/metrics.md, Definitions).
Equal-width edges are exactly k/M (one correctly rounded division each), so a confidence of
exactly 0.3 lies in the bin that starts at 0.3; `np.linspace` would give 0.30000000000000004.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .validation import MetricInputError

STRATEGIES = ("uniform", "quantile")


def bin_edges(values: np.ndarray, n_bins: int, strategy: str = "uniform") -> np.ndarray:
    """n_bins + 1 edges on [0, 1]: equal width, or equal mass (quantiles of `values`)."""
    if not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise MetricInputError(f"n_bins must be a positive integer, got {n_bins!r}")
    if strategy == "uniform":
        return np.arange(n_bins + 1, dtype=np.float64) / n_bins
    if strategy == "quantile":
        edges = np.quantile(np.asarray(values, dtype=np.float64), np.linspace(0, 1, n_bins + 1))
        edges[0], edges[-1] = 0.0, 1.0
        return np.maximum.accumulate(edges)
    raise MetricInputError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")


def assign_bins(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index of each value: k with e_k <= v < e_{k+1}; v = 1.0 goes to the last bin."""
    n_bins = len(edges) - 1
    idx = np.searchsorted(edges, values, side="right") - 1
    return np.clip(idx, 0, n_bins - 1)


@dataclass(frozen=True)
class BinTable:
    """Per-bin statistics: the data behind a reliability diagram and every binned metric.

    `accuracy` and `confidence` are NaN for empty bins; `gap` = accuracy − confidence.
    """

    edges: np.ndarray
    count: np.ndarray
    accuracy: np.ndarray
    confidence: np.ndarray
    n: int

    @property
    def gap(self) -> np.ndarray:
        return self.accuracy - self.confidence

    @property
    def weight(self) -> np.ndarray:
        return self.count / self.n

    def to_dict(self) -> dict:
        d = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in asdict(self).items()}
        d["gap"] = self.gap.tolist()
        return d


def bin_statistics(values: np.ndarray, outcomes: np.ndarray, edges: np.ndarray) -> BinTable:
    """Counts, mean outcome and mean value per bin of `values` (one pass with bincount)."""
    values = np.asarray(values, dtype=np.float64)
    outcomes = np.asarray(outcomes, dtype=np.float64)
    n_bins = len(edges) - 1
    idx = assign_bins(values, edges)
    count = np.bincount(idx, minlength=n_bins).astype(np.float64)
    sum_out = np.bincount(idx, weights=outcomes, minlength=n_bins)
    sum_val = np.bincount(idx, weights=values, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(count > 0, sum_out / count, np.nan)
        conf = np.where(count > 0, sum_val / count, np.nan)
    return BinTable(edges=np.asarray(edges, dtype=np.float64), count=count.astype(np.int64),
                    accuracy=acc, confidence=conf, n=len(values))


def calibration_error_from_table(table: BinTable, norm: str = "l1") -> float:
    """Σ w_k|gap_k| (l1), sqrt(Σ w_k gap_k²) (l2) or max over non-empty bins |gap_k| (max)."""
    full = table.count > 0
    gap = np.abs(table.gap[full])
    w = table.weight[full]
    if norm == "l1":
        return float(np.sum(w * gap))
    if norm == "l2":
        return float(np.sqrt(np.sum(w * gap ** 2)))
    if norm == "max":
        return float(gap.max()) if gap.size else 0.0
    raise MetricInputError(f"norm must be 'l1', 'l2' or 'max', got {norm!r}")
