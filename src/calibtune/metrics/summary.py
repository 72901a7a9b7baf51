"""Every metric of a run in one dict: what `metrics.json` holds and reports print."""
from __future__ import annotations

from functools import partial

import numpy as np

from ..defaults import N_BINS, N_BOOT
from .binning import bin_edges, bin_statistics, calibration_error_from_table
from .calibration import classwise_ece, ece
from .debiased import debiased_ce_interval, debiased_squared_ce
from .proper import brier, gold_nll, nll
from .selective import auroc_from_confidence, selective_accuracies
from .smooth import smooth_ece_from_confidence
from .uncertainty import bootstrap_ci, ece_noise_floor
from .validation import check_inputs, top_label


def summarize(probs: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None, *,
              n_bins: int = N_BINS, n_boot: int = N_BOOT, seed: int = 0,
              logits: np.ndarray | None = None) -> dict:
    """Accuracy, the ECE family, proper scores, selective prediction, intervals, noise floor.

    The intervals under "ci" are percentile bootstrap intervals of the estimators at this n;
    "rms_ce_debiased_ci" is an interval for the population binned calibration error itself.

    Parameters
    ----------
    probs : ndarray of shape (n, K)
        Option probabilities, rows summing to 1.
    labels : ndarray of shape (n,)
        Index of the correct option of each item.
    mask : ndarray of shape (n, K), optional
        True where an option exists, for items with fewer than K options.
    n_bins : int, default 10
        Confidence bins of the binned metrics.
    n_boot : int, default 1000
        Bootstrap resamples of the intervals; 0: no "ci".
    seed : int, default 0
        Seeds the bootstrap and the noise-floor simulation.
    logits : ndarray of shape (n, K), optional
        The logits behind `probs`: NLL is then exact rather than floored.

    Returns
    -------
    dict
        Plain numbers (JSON-ready but for NaN): what metrics.json holds, less what
        `calibtune.evaluate` adds (collapse, conformal, groups).

    Examples
    --------
    >>> import numpy as np
    >>> from calibtune.metrics import summarize
    >>> probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    >>> m = summarize(probs, np.array([0, 1, 1, 0]), n_boot=0)
    >>> m["n"], m["accuracy"], round(m["ece"], 6), round(m["overconfidence"], 6)
    (4, 0.75, 0.4, 0.0)

    Four items cannot tell an ECE of 0.4 from calibration: a calibrated model with these
    confidences reaches 0.55 one time in twenty (the noise floor's q95).

    >>> round(m["ece_noise_floor"]["q95"], 2)
    0.55
    """
    p, y, m = check_inputs(probs, labels, mask)
    conf, correct = top_label(p, y)
    table = bin_statistics(conf, correct, bin_edges(conf, n_bins, "uniform"))
    n = len(y)
    sel = selective_accuracies(conf, correct)
    out: dict = {
        "n": n,
        "n_options_max": int(m.shape[1]),
        "accuracy": float(correct.mean()),
        "mean_confidence": float(conf.mean()),
        "ece": calibration_error_from_table(table, "l1"),
        "mce": calibration_error_from_table(table, "max"),
        "rms_ce": calibration_error_from_table(table, "l2"),
        "ece_adaptive": ece(p, y, n_bins, "quantile", mask=m),
        "cw_ece": classwise_ece(p, y, n_bins, mask=m),
        "smooth_ece": smooth_ece_from_confidence(conf, correct),
        "brier": brier(p, y, m),
        "nll": gold_nll(logits, y, m) if logits is not None else nll(p, y, m),
        "auroc": auroc_from_confidence(conf, correct),
        "selective_accuracy_at_50": float(sel[int(np.ceil(0.5 * n)) - 1]),
        "area_under_accuracy_coverage": float(sel.mean()),
        "overconfidence": float(conf.mean() - correct.mean()),
        "n_bins": n_bins,
        "bins": table.to_dict(),
    }
    out["rms_ce_debiased"] = float(np.sqrt(max(0.0, debiased_squared_ce(conf, correct, n_bins))))
    floor = ece_noise_floor(conf, n_bins, seed=seed)
    out["ece_noise_floor"] = floor.to_dict()
    if n_boot > 0:
        out["ci"] = {
            "accuracy": bootstrap_ci(lambda a, b: float(np.mean(a == b)), p.argmax(1), y,
                                     n_boot=n_boot, seed=seed).to_dict(),
            "ece": bootstrap_ci(partial(_ece_conf, n_bins=n_bins), conf, correct,
                                n_boot=n_boot, seed=seed).to_dict(),
            "cw_ece": bootstrap_ci(lambda pp, yy, mm: classwise_ece(pp, yy, n_bins, mm), p, y, m,
                                   n_boot=n_boot, seed=seed).to_dict(),
        }
        out["rms_ce_debiased_ci"] = debiased_ce_interval(conf, correct, n_bins, n_boot=max(2, n_boot),
                                                         seed=seed).to_dict()
    return out


def _ece_conf(conf: np.ndarray, correct: np.ndarray, n_bins: int) -> float:
    return calibration_error_from_table(
        bin_statistics(conf, correct, bin_edges(conf, n_bins, "uniform")), "l1")
