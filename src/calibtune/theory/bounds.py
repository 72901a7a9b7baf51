"""Lower bounds on the binned ECE, and bounds on its sampling noise floor.

Every statement here is calibtune's own derivation, proved in docs/theory.md (the proposition
numbers below refer to it). None of them is a statement of Xiao et al. (ICML 2025): we have not
read the paper's theorem statements; docs/theory.md §0 quotes the one sentence of the project's
notes on them (in short: the paper bounds ECE in terms of accuracy and splits models into a
calibratable and a non-calibratable regime).

Inputs are plain arrays: `conf` [n] the top-label confidences c_i = max_j p_ij, `correct` [n] the
0/1 outcomes 1[argmax p_i = y_i]; `calibtune.metrics.top_label` produces both. Binning is the one of
`calibtune.metrics.binning` (bins [k/M, (k+1)/M), the last also holds 1.0); nothing is re-binned here.

The bounds that use the number of options (Propositions 2 and 4, Corollary 3) rest on c_i ≥ 1/K_i,
which holds exactly for rows that sum to 1. `metrics.check_inputs` accepts rows whose sum misses 1 by
up to 1e-6 without renormalising them; on such rows these bounds can exceed the ECE by about 1e-6.
`theory.diagnose` renormalises the rows first, so its checks hold to floating-point precision (TOL).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ..defaults import N_BINS
from ..metrics.binning import bin_edges, bin_statistics, calibration_error_from_table
from ..metrics.validation import MetricInputError

TOL = 1e-12  # floating-point slack when a bound is compared with the ECE it bounds


def _conf_correct(conf: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray(conf, dtype=np.float64).ravel()
    y = np.asarray(correct, dtype=np.float64).ravel()
    if c.size == 0:
        raise MetricInputError("need at least one item")
    if y.shape != c.shape:
        raise MetricInputError(f"conf has {c.size} items but correct has {y.size}")
    if not np.all(np.isfinite(c)) or c.min() < 0 or c.max() > 1:
        raise MetricInputError("confidences must be finite and in [0, 1]")
    if not np.all((y == 0) | (y == 1)):
        raise MetricInputError("correct must hold 0/1 outcomes")
    return c, y


def _table(c: np.ndarray, y: np.ndarray, n_bins: int, strategy: str):
    return bin_statistics(c, y, bin_edges(c, n_bins, strategy))


def binned_ece(conf: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS,
               strategy: str = "uniform") -> float:
    """The top-label binned ECE of these confidences/outcomes (same value as `metrics.ece`)."""
    c, y = _conf_correct(conf, correct)
    return calibration_error_from_table(_table(c, y, n_bins, strategy), "l1")


def mean_gap_bound(conf: np.ndarray, correct: np.ndarray) -> float:
    """Proposition 1: |mean confidence − accuracy|, a lower bound of the binned ECE for any binning."""
    c, y = _conf_correct(conf, correct)
    return float(abs(c.mean() - y.mean()))


def over_under(conf: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS,
               strategy: str = "uniform") -> tuple[float, float]:
    """(O, U): the over- and under-confident parts of the ECE, Σ w_k (c̄_k − a_k)₊ and Σ w_k (a_k − c̄_k)₊.

    ECE = O + U and O − U = mean confidence − accuracy, hence ECE = |O − U| + 2 min(O, U).
    """
    c, y = _conf_correct(conf, correct)
    t = _table(c, y, n_bins, strategy)
    full = t.count > 0
    d = (t.confidence - t.accuracy)[full]
    w = t.weight[full]
    return float(np.sum(w * np.maximum(d, 0.0))), float(np.sum(w * np.maximum(-d, 0.0)))


def _inverse_k(n_options, n: int) -> np.ndarray:
    k = np.broadcast_to(np.asarray(n_options), (n,)).astype(np.float64)
    if not np.all(np.isfinite(k)) or (k < 2).any() or np.any(k != np.round(k)):
        raise MetricInputError("n_options must be integers >= 2 (one per item, or one for all)")
    return 1.0 / k


def _check_above_chance(c: np.ndarray, inv_k: np.ndarray) -> None:
    low = c < inv_k - 1e-6  # check_inputs lets a row sum miss 1 by 1e-6
    if low.any():
        i = int(np.flatnonzero(low)[0])
        raise MetricInputError(f"confidence {c[i]:.6g} of item {i} is below 1/K = {inv_k[i]:.6g}: "
                               "pass the top-label probability max_j p_ij")


def accuracy_only_floor(correct: np.ndarray, n_options) -> float:
    """Proposition 4: (mean_i 1/K_i − accuracy)₊, a lower bound of ECE given accuracy alone.

    Valid for any option counts (it follows from Proposition 2); the best such bound (attained for
    every accuracy) when all items have the same K, not always attained with mixed K_i.
    """
    y = np.asarray(correct, dtype=np.float64).ravel()
    if y.size == 0 or not np.all((y == 0) | (y == 1)):
        raise MetricInputError("correct must be a non-empty array of 0/1 outcomes")
    return float(max(_inverse_k(n_options, y.size).mean() - y.mean(), 0.0))


def below_chance_floor(conf: np.ndarray, correct: np.ndarray, n_options, n_bins: int = N_BINS,
                       strategy: str = "uniform") -> float:
    """Proposition 2: Σ_k w_k (h_k − a_k)₊ with h_k the bin's mean of 1/K_i.

    A top-label confidence is at least 1/K_i, so a bin whose accuracy a_k is below h_k is
    over-confident by at least h_k − a_k. `n_options` is K (int) or K_i per item (unmasked options).
    """
    c, y = _conf_correct(conf, correct)
    inv_k = _inverse_k(n_options, c.size)
    _check_above_chance(c, inv_k)
    edges = bin_edges(c, n_bins, strategy)
    acc = bin_statistics(c, y, edges)
    chance = bin_statistics(c, inv_k, edges)  # "accuracy" column = per-bin mean of 1/K_i
    full = acc.count > 0
    return float(np.sum(acc.weight[full] * np.maximum(chance.accuracy[full] - acc.accuracy[full], 0)))


def combined_floor(conf: np.ndarray, correct: np.ndarray, n_options, n_bins: int = N_BINS,
                   strategy: str = "uniform") -> float:
    """Corollary 3: max(D, 2P − D) with D = mean confidence − accuracy and P = below_chance_floor.

    The exact minimum of Σ w_k|d_k| over the relaxed constraints d_k ≥ h_k − a_k, Σ w_k d_k = D (it
    ignores that each bin's mean confidence must lie in its bin, so the least ECE of actual score
    sets can be larger); it is at least max(|D|, P).
    """
    c, y = _conf_correct(conf, correct)
    d = float(c.mean() - y.mean())
    p = below_chance_floor(c, y, n_options, n_bins, strategy)
    return max(d, 2.0 * p - d)


def noise_floor_bound(n: int, n_bins: int, *, delta: float | None = None) -> float:
    """Proposition 5, worst case over confidences: E[ECE] ≤ sqrt(M/(4n)) for a calibrated model.

    With `delta`, a bound on the (1 − δ) quantile instead: sqrt(M/(4n)) + sqrt(ln(1/δ)/(2n)).
    """
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise MetricInputError(f"n must be a positive integer, got {n!r}")
    if not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise MetricInputError(f"n_bins must be a positive integer, got {n_bins!r}")
    mean = math.sqrt(n_bins / (4.0 * n))
    if delta is None:
        return mean
    if not 0 < delta < 1:
        raise MetricInputError(f"delta must be in (0, 1), got {delta}")
    return mean + math.sqrt(math.log(1.0 / delta) / (2.0 * n))


@dataclass(frozen=True)
class NoiseBounds:
    """Proposition 5 on given confidences: lower ≤ E[ECE] ≤ upper ≤ worst_case under calibration,
    and the (1 − delta) quantile of ECE ≤ quantile_bound. `clt` is an approximation, not a bound."""

    lower: float
    upper: float
    worst_case: float
    quantile_bound: float
    clt: float
    delta: float
    n: int
    n_bins: int
    n_nonempty: int

    def to_dict(self) -> dict:
        return asdict(self)


def noise_floor_bounds(conf: np.ndarray, n_bins: int = N_BINS, strategy: str = "uniform",
                       delta: float = 0.05) -> NoiseBounds:
    """Bounds on the ECE that a perfectly calibrated model with these confidences shows.

    Null model (the one `metrics.ece_noise_floor` simulates): the bins are fixed by `conf` and
    correct_i ~ Bernoulli(c_i) independently. With V_k = Σ_{i∈B_k} c_i(1 − c_i):
    (1/n) Σ_k V_k / sqrt(1 + 3V_k) ≤ E[ECE] ≤ (1/n) Σ_k sqrt(V_k) ≤ sqrt(M'/(4n)) (M' non-empty bins).
    """
    c = np.asarray(conf, dtype=np.float64).ravel()
    _conf_correct(c, np.zeros_like(c))
    if not 0 < delta < 1:
        raise MetricInputError(f"delta must be in (0, 1), got {delta}")
    n = c.size
    t = bin_statistics(c, c * (1.0 - c), bin_edges(c, n_bins, strategy))
    full = t.count > 0
    v = t.count[full] * t.accuracy[full]  # V_k: count × mean of c(1 − c)
    upper = float(np.sum(np.sqrt(v)) / n)
    lower = float(np.sum(v / np.sqrt(1.0 + 3.0 * v)) / n)
    return NoiseBounds(lower=lower, upper=upper, worst_case=math.sqrt(int(full.sum()) / (4.0 * n)),
                       quantile_bound=upper + math.sqrt(math.log(1.0 / delta) / (2.0 * n)),
                       clt=math.sqrt(2.0 / math.pi) * upper, delta=delta, n=n, n_bins=n_bins,
                       n_nonempty=int(full.sum()))


@dataclass(frozen=True)
class GapFloor:
    """Proposition 6: held-out ECE ≥ |G| − |τ| with G = A_T − A_H and τ = C_H − A_T.

    `fit_slack` g_T = C_T − A_T and `transfer_slack` Δ = C_H − C_T split τ = g_T + Δ when the
    training items' mean confidence is known (None otherwise). Both are signed, so that
    fit_slack + transfer_slack = C_H − A_T exactly; `tracking_slack` is |τ|.
    """

    train_accuracy: float
    accuracy: float
    confidence: float
    train_confidence: float | None
    gap: float
    tracking_slack: float
    fit_slack: float | None
    transfer_slack: float | None
    floor: float

    def to_dict(self) -> dict:
        return asdict(self)


def _unit(name: str, x) -> float:
    v = float(x)
    if not math.isfinite(v) or not 0 <= v <= 1:
        raise MetricInputError(f"{name} must be in [0, 1], got {x!r}")
    return v


def generalisation_gap_floor(train_accuracy: float, accuracy: float, confidence: float,
                             train_confidence: float | None = None) -> GapFloor:
    """Proposition 6 (calibtune's): ECE_H ≥ |C_H − A_H| ≥ (|A_T − A_H| − |C_H − A_T|)₊.

    `train_accuracy` / `train_confidence`: the fine-tuned model's accuracy and mean confidence on
    its own training items; `accuracy` / `confidence`: the same model on held-out items.
    """
    a_t = _unit("train_accuracy", train_accuracy)
    a_h = _unit("accuracy", accuracy)
    c_h = _unit("confidence", confidence)
    c_t = None if train_confidence is None else _unit("train_confidence", train_confidence)
    gap = a_t - a_h
    tau = c_h - a_t
    return GapFloor(train_accuracy=a_t, accuracy=a_h, confidence=c_h, train_confidence=c_t,
                    gap=gap, tracking_slack=abs(tau),
                    fit_slack=None if c_t is None else c_t - a_t,
                    transfer_slack=None if c_t is None else c_h - c_t,
                    floor=max(abs(gap) - abs(tau), 0.0))


def binned_generalisation_floor(train_conf: np.ndarray, train_correct: np.ndarray,
                                conf: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS) -> float:
    """Proposition 7: held-out ECE ≥ Σ_k w^H_k (|a^T_k − a^H_k| − |c̄^T_k − a^T_k| − |c̄^T_k − c̄^H_k|)₊.

    Both sets are binned on the same uniform edges; bins empty in either set contribute 0. Since
    both bin means lie in the same bin, |c̄^T_k − c̄^H_k| ≤ 1/M whatever the model does.
    """
    ct, yt = _conf_correct(train_conf, train_correct)
    ch, yh = _conf_correct(conf, correct)
    edges = bin_edges(None, n_bins, "uniform")
    tt, th = bin_statistics(ct, yt, edges), bin_statistics(ch, yh, edges)
    both = (tt.count > 0) & (th.count > 0)
    term = (np.abs(tt.accuracy - th.accuracy) - np.abs(tt.confidence - tt.accuracy)
            - np.abs(tt.confidence - th.confidence))[both]
    return float(np.sum(th.weight[both] * np.maximum(term, 0.0)))
