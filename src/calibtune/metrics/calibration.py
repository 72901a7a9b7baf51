"""Binned calibration errors: top-label ECE / MCE / RMS-CE and the paper's classwise ECE."""
from __future__ import annotations

import numpy as np

from ..defaults import N_BINS
from .binning import BinTable, bin_edges, bin_statistics, calibration_error_from_table
from .validation import check_inputs, top_label


def bin_table(probs: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS, strategy: str = "uniform",
              mask: np.ndarray | None = None, *, from_logits: bool = False) -> BinTable:
    """Per-bin count, accuracy and mean confidence of the top-label prediction."""
    p, y, _ = check_inputs(probs, labels, mask, from_logits=from_logits)
    conf, correct = top_label(p, y)
    return bin_statistics(conf, correct, bin_edges(conf, n_bins, strategy))


def ece(probs: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS, strategy: str = "uniform",
        norm: str = "l1", mask: np.ndarray | None = None, *, from_logits: bool = False) -> float:
    """Top-label expected calibration error (docs/method.md §3, docs/metrics.md).

    `strategy="quantile"` gives equal-mass ("adaptive") bins; `norm="l2"` the RMS calibration
    error, `norm="max"` the maximum calibration error (MCE) over non-empty bins.
    Reference: Guo et al., "On Calibration of Modern Neural Networks", ICML 2017.
    """
    table = bin_table(probs, labels, n_bins, strategy, mask, from_logits=from_logits)
    return calibration_error_from_table(table, norm)


def classwise_tables(probs: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS,
                     mask: np.ndarray | None = None, *, from_logits: bool = False
                     ) -> list[BinTable]:
    """One bin table per option class j: p_ij binned against the frequency of y = j.

    Items that do not have option j (masked) do not take part in class j.
    """
    p, y, m = check_inputs(probs, labels, mask, from_logits=from_logits)
    edges = bin_edges(None, n_bins, "uniform")
    return [bin_statistics(p[m[:, j], j], (y[m[:, j]] == j), edges) for j in range(p.shape[1])
            if m[:, j].any()]


def classwise_ece(probs: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS,
                  mask: np.ndarray | None = None, *, from_logits: bool = False) -> float:
    """The paper's cw-ECE: (1/K) Σ_j Σ_k (|B_jk|/n_j)·|freq(y=j in B_jk) − mean p_ij in B_jk|.

    Reference: Kull et al., "Beyond temperature scaling", NeurIPS 2019; Xiao et al., ICML 2025.
    """
    tables = classwise_tables(probs, labels, n_bins, mask, from_logits=from_logits)
    return float(np.mean([calibration_error_from_table(t, "l1") for t in tables]))
