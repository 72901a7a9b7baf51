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

    The top confidences are binned; ECE = Σ_k (|B_k|/n)·|accuracy(B_k) − mean confidence(B_k)|.
    Reference: Guo et al., "On Calibration of Modern Neural Networks", ICML 2017.

    Parameters
    ----------
    probs : ndarray of shape (n, K)
        Option probabilities, rows summing to 1 (or logits with ``from_logits=True``).
    labels : ndarray of shape (n,)
        Index of the correct option of each item.
    n_bins : int, default 10
        Number of confidence bins.
    strategy : {"uniform", "quantile"}, default "uniform"
        Equal-width bins, or equal-mass ("adaptive") bins.
    norm : {"l1", "l2", "max"}, default "l1"
        ECE; the RMS calibration error; the maximum calibration error (MCE) over non-empty bins.
    mask : ndarray of shape (n, K), optional
        True where an option exists, for items with fewer than K options.
    from_logits : bool, default False
        `probs` holds logits; the softmax over each row's options is taken.

    Returns
    -------
    float
        The calibration error, in [0, 1].

    Examples
    --------
    Four items, confidences 0.9 (right), 0.8 (wrong), 0.7 and 0.6 (right), each alone in its
    bin: (0.1 + 0.8 + 0.3 + 0.4) / 4.

    >>> import numpy as np
    >>> from calibtune.metrics import ece
    >>> probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    >>> labels = np.array([0, 1, 1, 0])
    >>> round(ece(probs, labels), 6)
    0.4
    >>> round(ece(probs, labels, norm="max"), 6)
    0.8
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

    Every option's probability is binned against how often that option is right, not only the
    top one's. Reference: Kull et al., "Beyond temperature scaling", NeurIPS 2019; Xiao et al.,
    ICML 2025.

    Parameters
    ----------
    probs : ndarray of shape (n, K)
        Option probabilities (or logits with ``from_logits=True``).
    labels : ndarray of shape (n,)
        Index of the correct option of each item.
    n_bins : int, default 10
        Equal-width bins per class.
    mask : ndarray of shape (n, K), optional
        True where an option exists; items without option j take no part in class j.
    from_logits : bool, default False
        `probs` holds logits.

    Returns
    -------
    float
        The mean over classes of each class's binned calibration error.

    Examples
    --------
    >>> import numpy as np
    >>> from calibtune.metrics import classwise_ece
    >>> probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    >>> round(classwise_ece(probs, np.array([0, 1, 1, 0])), 6)
    0.4
    """
    tables = classwise_tables(probs, labels, n_bins, mask, from_logits=from_logits)
    return float(np.mean([calibration_error_from_table(t, "l1") for t in tables]))
