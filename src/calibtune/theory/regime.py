"""The statistics behind diagnose's verdicts: a level-α test of P6's floor, and R0's power.

Both are calibtune's (docs/theory.md §5, "The regime test" and "R0's power"), not the paper's.

**Floor test.** For G′ = r − A_H > 0, with r = A_T − G₀ (training accuracy less the gap the item
sets had before fine-tuning, G₀ = 0 when the sets are exchangeable), P6's floor is
(|G′| − |C_H − r|)₊ = min(L1, L2)₊ with L1 = C_H − A_H (held-out mean gap) and
L2 = 2r − A_H − C_H. "Floor > 0" is the intersection of "L1 > 0" and "L2 > 0", so rejecting both
one-sided at level α is a level-α test (an intersection–union test needs no multiplicity
correction), and min(L1 − z·se1, L2 − z·se2) is a lower (1 − α) confidence bound of the floor.
se2 counts A_T's binomial error with its weight 2 (and G₀'s error, when G₀ is measured).
Normal approximation; its level is simulated in experiments/regime_level.py.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import norm

from ..defaults import N_BINS
from ..metrics.binning import assign_bins, bin_edges

ALPHA = 0.05


def proportion_var(p: float, n: int) -> float:
    """Variance of a proportion measured on n items, Laplace-smoothed so that it is never 0
    (a training accuracy of 1.0 on 150 items is not known exactly)."""
    q = (p * n + 1.0) / (n + 2.0)
    return q * (1.0 - q) / n


@dataclass(frozen=True)
class FloorTest:
    """The one-sided test of "P6's floor > 0" (see the module docstring for every term)."""

    reference: float          # r = A_T − G₀
    baseline: float           # G₀ used (0.0 when assumed from exchangeable item sets)
    mean_gap: float           # L1 = C_H − A_H
    se_mean_gap: float
    overshoot_margin: float   # L2 = 2r − A_H − C_H
    se_overshoot_margin: float
    floor: float              # min(L1, L2)₊ when r > A_H, else 0
    lower: float              # lower (1 − α) bound of the floor
    alpha: float
    reject: bool              # lower > 0: this run's held-out ECE has a part due to its gap

    def to_dict(self) -> dict:
        return asdict(self)


def floor_test(conf: np.ndarray, correct: np.ndarray, train_accuracy: float, train_n: int, *,
               baseline: float = 0.0, baseline_var: float = 0.0,
               alpha: float = ALPHA) -> FloorTest:
    """Test P6's floor > 0 from held-out (conf, correct), A_T on `train_n` items and G₀.

    `baseline_var` is the variance of the measured G₀ (0 when G₀ is assumed, not measured).
    Paired terms (the same items before and after) are added as if independent, which
    overstates the variance when they are positively correlated: conservative.
    """
    c = np.asarray(conf, dtype=np.float64).ravel()
    y = np.asarray(correct, dtype=np.float64).ravel()
    n = c.size
    z = float(norm.ppf(1.0 - alpha))
    r = float(train_accuracy) - float(baseline)
    a_h, c_h = float(y.mean()), float(c.mean())
    l1, l2 = c_h - a_h, 2.0 * r - a_h - c_h
    var_d = float(np.var(c - y, ddof=1)) if n > 1 else math.inf
    var_s = float(np.var(c + y, ddof=1)) if n > 1 else math.inf
    if n > 1:  # the same for Â_H: its variance also at the null's edge A_H = 2r − C_H
        q = min(max(2.0 * r - c_h, 0.0), 1.0)
        cov = float(np.cov(c, y)[0, 1])
        var_s = max(var_s, float(np.var(c, ddof=1)) + 2.0 * cov + q * (1.0 - q))
    se1 = math.sqrt(var_d / n)
    # A_T's variance at the null's edge (2r = A_H + C_H) when that is larger than at the
    # estimate: a plug-in variance shrinks exactly when Â_T is high, which is when the test errs
    a_null = min(max((a_h + c_h) / 2.0 + float(baseline), 0.0), 1.0)
    var_t = max(proportion_var(float(train_accuracy), int(train_n)),
                proportion_var(a_null, int(train_n)))
    se2 = math.sqrt(var_s / n + 4.0 * var_t + 4.0 * float(baseline_var))
    floor = max(min(l1, l2), 0.0) if r > a_h else 0.0
    # continuity correction: Â_T moves in steps of 1/n_T, so L2 in steps of 2/n_T
    lower = min(l1 - z * se1, l2 - 1.0 / int(train_n) - z * se2)
    return FloorTest(reference=r, baseline=float(baseline), mean_gap=l1, se_mean_gap=se1,
                     overshoot_margin=l2, se_overshoot_margin=se2, floor=floor, lower=lower,
                     alpha=alpha, reject=bool(lower > 0))


def r0_power(conf: np.ndarray, q95: float, gap: float, n_bins: int = N_BINS, n_sim: int = 500,
             seed: int = 0) -> float:
    """P(ECE > q95) when outcomes are Bernoulli(c_i − gap) (clipped to [0, 1]) on these
    confidences and their bins: the chance that R0 detects an over-confidence of `gap`."""
    c = np.asarray(conf, dtype=np.float64).ravel()
    n = c.size
    prob = np.clip(c - gap, 0.0, 1.0)
    idx = assign_bins(c, bin_edges(c, n_bins, "uniform"))
    sum_conf = np.bincount(idx, weights=c, minlength=n_bins)
    rng = np.random.default_rng(seed)
    hits = 0
    chunk = max(1, int(2e7 // n))
    for start in range(0, n_sim, chunk):
        m = min(n_sim, start + chunk) - start
        ok = rng.random((m, n)) < prob
        flat = (idx[None, :] + n_bins * np.arange(m)[:, None]).ravel()
        s = np.bincount(flat, weights=ok.ravel(), minlength=n_bins * m).reshape(m, n_bins)
        hits += int(np.sum(np.abs(s - sum_conf).sum(axis=1) / n > q95))
    return hits / n_sim
